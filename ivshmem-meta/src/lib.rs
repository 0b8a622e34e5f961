//! `ivshmem-meta`: the versioned, little-endian metadata block at a fixed place in an
//! IVSHMEM export segment that names every ring, pool and port exported to one guest, with
//! a validator that never trusts its input.
//!
//! Filled in by the IVSHMEM issue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
