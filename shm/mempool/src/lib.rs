//! `shm-mempool`: fixed-size object pools and packet buffers (mbufs) in a memseg, with
//! per-lcore caches in shared memory and reclaim of a dead process's buffers.
//!
//! Filled in by the mempool issue.
#![deny(missing_docs)]
