//! What a pool holds: a snapshot of its occupancy and counters ([`Mempool::stats`]) and
//! the free-list audit of a quiescent pool ([`Mempool::audit`]).
//!
//! Where it sits: in [`crate::pool`]; read by the primary's and secondaries' tools and by
//! tests, never on the data path.

use std::sync::atomic::Ordering;

use super::{CacheStats, Mempool, PoolStats};
use crate::layout::*;

impl Mempool {
    /// A snapshot of the pool's occupancy and counters.
    pub fn stats(&self) -> PoolStats {
        let sh = &self.shared;
        let in_ring = sh.ring.count() as u64;
        let mut caches = Vec::new();
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            let pid = hdr.holder.pid();
            if pid == 0 {
                continue;
            }
            caches.push(CacheStats {
                slot,
                pid,
                owner: hdr.holder.tag(),
                len: hdr.len.load(Ordering::Relaxed).min(CACHE_OBJS),
            });
        }
        let in_caches: u64 = caches.iter().map(|c| u64::from(c.len)).sum();
        let available = (in_ring + in_caches).min(u64::from(sh.info.obj_count));
        let c = sh.counters();
        PoolStats {
            name: sh.name.clone(),
            pool_id: sh.info.pool_id,
            count: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            cache_size: sh.info.cache_size,
            available,
            in_use: u64::from(sh.info.obj_count) - available,
            in_ring,
            in_caches,
            caches,
            get_fail: c.get_fail.load(Ordering::Relaxed),
            put_fail: c.put_fail.load(Ordering::Relaxed),
            bad_handle: c.bad_handle.load(Ordering::Relaxed),
            double_free: c.double_free.load(Ordering::Relaxed),
            corrupt_header: c.corrupt_header.load(Ordering::Relaxed),
            reclaimed: c.reclaimed.load(Ordering::Relaxed),
            caches_recovered: c.caches_recovered.load(Ordering::Relaxed),
        }
    }

    /// Checks the free list of a **quiescent** pool: every index in the ring and in every
    /// cache, counted once. A healthy idle pool has `free == count`, no duplicates and
    /// nothing out of range.
    pub fn audit(&self) -> Audit {
        let sh = &self.shared;
        let n = sh.info.obj_count;
        let mut seen = vec![false; n as usize];
        let mut audit = Audit::default();
        let mut note = |i: u32, audit: &mut Audit| {
            if i >= n {
                audit.out_of_range += 1;
            } else if std::mem::replace(&mut seen[i as usize], true) {
                audit.duplicates += 1;
            } else {
                audit.free += 1;
            }
        };
        let mut ring = Vec::new();
        sh.ring.snapshot_into(&mut ring);
        audit.in_ring = ring.len() as u64;
        for &i in &ring {
            note(i, &mut audit);
        }
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            if hdr.holder.pid() == 0 {
                continue;
            }
            let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
            audit.in_caches += u64::from(len);
            for k in 0..len as usize {
                // SAFETY: `k < len <= CACHE_OBJS`, inside the slot's array; a racy read
                // of a live cache only gives a stale value (documented: quiescent pools).
                let i = unsafe { sh.slot_objs(slot).wrapping_add(k).read_volatile() };
                note(i, &mut audit);
            }
        }
        audit.missing = u64::from(n) - audit.free;
        audit
    }
}

/// Result of [`Mempool::audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Audit {
    /// Distinct valid free indices found.
    pub free: u64,
    /// Entries in the ring.
    pub in_ring: u64,
    /// Entries in caches.
    pub in_caches: u64,
    /// Indices seen more than once.
    pub duplicates: u64,
    /// Indices not below the object count.
    pub out_of_range: u64,
    /// Objects not found free (handed out, or lost).
    pub missing: u64,
}
