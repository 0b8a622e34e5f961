//! `shm-mempool`: fixed-size object pools and packet buffers (mbufs) in a memseg, with
//! per-lcore caches in shared memory and reclaim of a dead process's buffers.
//!
//! Where it sits: the primary creates pools in memzones ([`Mempool::create`],
//! [`MbufPool::create`]); secondaries (and later guests) look them up by name. Ports and
//! applications allocate mbufs, pass them between processes through rings as
//! [`MbufHandle`]s, and free them back.
//!
//! - **Free list**: a shm-ring MP/MC ring of `u32` object indices (capacity exactly the
//!   object count), plus per-lcore caches that also live in the pool's memzone
//!   ([`layout`]): get/put on the fast path touch only the caller's cache, refilling and
//!   flushing in bulk as DPDK does (refill to size, flush above 1.5 x size).
//! - **Nothing binary-specific in shared memory**: no function pointers and no handler
//!   index into a per-binary table (DPDK's `ops_index`); any build of this crate reads any
//!   pool the same way.
//! - **Handles, not pointers**: objects are addressed by index; every index or handle that
//!   comes from shared memory is range-checked before use, and a bad one is dropped and
//!   counted ([`PoolStats`]).
//! - **Cache slots** (lcore slots) are claimed in shared memory with the owner's pid and
//!   process start time; a dead owner's slot is recovered (its cache flushed) by the next
//!   claimer or by the primary ([`Mempool::flush_caches_of`]).
//! - **Reclaim**: mbuf headers carry an [`OwnerTag`]; when a process dies the primary flushes
//!   its caches and returns every buffer still tagged with it ([`MbufPool::reclaim_owner`]);
//!   a guest-writable pool holds no host cache slot and is reclaimed with bounded work
//!   through [`GuestPool::reclaim_dead`].
//!
//! Differences from DPDK worth knowing: free-list entries are 4-byte indices (half the
//! bytes of DPDK's pointers per refill or flush); `get_bulk` with `n >= cache_size` and
//! `put_bulk` with `n > 512` bypass the cache, as DPDK.
#![deny(missing_docs)]

pub mod guest;
mod handoff;
// The crash points of shm::crash, for this crate's protocols.
pub(crate) use shm::crash_point;
pub mod layout;
pub mod mbuf;
mod owner;
mod pool;
mod snapshot;

pub use guest::{
    GuestDrop, GuestPool, GuestReclaimed, GuestStats, GUEST_MAX_FRAME, GUEST_MAX_SEGS,
};
pub use mbuf::{
    Mbuf, MbufCache, MbufError, MbufHandle, MbufHeader, MbufPool, MbufPoolParams, Reclaimed,
    DEFAULT_DATA_ROOM, DEFAULT_HEADROOM,
};
pub use owner::{pid_alive, process_gone, process_start_time, OwnerTag};
pub use pool::{pool_bytes, Audit, CacheStats, Mempool, ObjInit, PoolCache, PoolParams, PoolStats};
pub use snapshot::{CacheSnapshot, FreeListSnapshot};

/// Mempool errors.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool could not be created.
    #[error("cannot create mempool: {0}")]
    Create(String),
    /// The memzone does not hold a valid pool.
    #[error("bad mempool: {0}")]
    BadPool(String),
    /// Fewer objects are free than asked for.
    #[error("mempool {pool}: fewer than {wanted} objects free")]
    Exhausted {
        /// Pool name.
        pool: String,
        /// How many were asked for.
        wanted: usize,
    },
    /// Every cache slot is held by a live thread.
    #[error("mempool {pool}: all {slots} cache slots are held by live threads; drop a handle or create the pool with cache 0")]
    NoCacheSlot {
        /// Pool name.
        pool: String,
        /// Slots per pool.
        slots: u32,
    },
}

#[cfg(test)]
mod tests;
