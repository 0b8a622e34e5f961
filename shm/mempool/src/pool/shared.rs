//! The process-local view of one pool's shared memory ([`PoolShared`], behind every
//! [`Mempool`] clone and [`PoolCache`]): its validated header copy, free ring, counters
//! and cache-slot and object spans, and the count-and-log-once of trouble found there.
//!
//! Where it sits: the bottom of [`crate::pool`]; `mempool.rs` makes it when a pool is
//! opened, everything else in the crate reaches shared memory through it.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use shm::Region;
use shm_ring::Ring;

#[cfg(doc)]
use super::{Mempool, PoolCache};
use crate::layout::*;

/// The process-local view of a pool; shared by its handles.
pub(crate) struct PoolShared {
    /// Keeps the mapping alive for the pointers below.
    pub(super) _region: Region,
    pub(crate) info: PoolInfo,
    pub(crate) name: String,
    pub(crate) ring: Ring<u32>,
    pub(super) counters: NonNull<PoolCounters>,
    pub(super) caches: NonNull<u8>,
    pub(crate) objs: NonNull<u8>,
    /// One log line per kind of trouble per process.
    pub(super) logged: [AtomicBool; 4],
}

// SAFETY: the pointers target shared memory kept mapped by `region`; the counters are
// atomics, cache slots are reached through their atomic headers and owner-exclusive
// arrays, objects through the handles' protocol; nothing is tied to a thread.
unsafe impl Send for PoolShared {}
// SAFETY: as for Send: `&PoolShared` only gives atomic access or owner-exclusive access.
unsafe impl Sync for PoolShared {}

/// Kinds of trouble logged once per process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trouble {
    BadHandle = 0,
    DoubleFree = 1,
    CorruptHeader = 2,
    PutFail = 3,
}

impl PoolShared {
    pub(crate) fn counters(&self) -> &PoolCounters {
        // SAFETY: bounds- and alignment-checked at open; kept mapped by `region`; atomics.
        unsafe { self.counters.as_ref() }
    }

    pub(crate) fn slot_header(&self, slot: u32) -> &CacheSlotHeader {
        debug_assert!(slot < CACHE_SLOTS);
        // SAFETY: `slot < CACHE_SLOTS` (callers iterate that range), so the header lies in
        // the span checked at open; 64-byte aligned; all fields are atomics.
        unsafe {
            &*self
                .caches
                .as_ptr()
                .wrapping_add(slot as usize * CACHE_SLOT_STRIDE as usize)
                .cast::<CacheSlotHeader>()
        }
    }

    pub(crate) fn slot_objs(&self, slot: u32) -> *mut u32 {
        // In bounds for `slot < CACHE_SLOTS`: the array follows the slot's 64-byte header.
        self.caches
            .as_ptr()
            .wrapping_add(slot as usize * CACHE_SLOT_STRIDE as usize + 64)
            .cast::<u32>()
    }

    /// Counts and logs (once per process per kind) a problem found in shared memory.
    #[cold]
    pub(crate) fn trouble(&self, kind: Trouble, n: u64, what: &str) {
        let c = self.counters();
        let counter = match kind {
            Trouble::BadHandle => &c.bad_handle,
            Trouble::DoubleFree => &c.double_free,
            Trouble::CorruptHeader => &c.corrupt_header,
            Trouble::PutFail => &c.put_fail,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if !self.logged[kind as usize].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "mempool {}: {what} (counted; further ones are only counted)",
                self.name
            );
        }
    }
}
