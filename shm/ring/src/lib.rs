//! `shm-ring`: fixed-capacity lock-free rings that live inside a memseg, created by the
//! primary in a memzone and looked up by name from secondaries and guests.
//!
//! Filled in by the ring issue: SP/MP x SC/MC modes, bulk/burst operations, zero-copy
//! reserve/commit, and defences against corrupted indices.
#![deny(missing_docs)]
