//! Raw snapshots of a pool for exact audits (`shmdp-secondary pool-audit --exact`): the
//! free ring's entries, every claimed cache slot's entries, and every mbuf header's owner
//! tag, copied as they are (nothing is validated or repaired here; the auditor classifies).
//!
//! Only a **quiescent** pool (no live process working on it) gives an exact picture; on a
//! live pool the copies are racy snapshots (each word read atomically or volatilely, never
//! through a reference to shared memory a peer may write).

use std::sync::atomic::Ordering;

use crate::layout::CACHE_OBJS;
use crate::layout::CACHE_SLOTS;
use crate::mbuf::header_ptr;
use crate::{MbufPool, Mempool};

/// One claimed cache slot as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSnapshot {
    /// Slot number.
    pub slot: u32,
    /// Pid recorded as its owner.
    pub pid: u32,
    /// Owner tag recorded with it.
    pub owner_tag: u32,
    /// The indices it holds (its recorded length, clamped to the slot's capacity).
    pub objs: Vec<u32>,
}

/// Where a pool's free objects are, as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeListSnapshot {
    /// The free ring's entries, oldest first.
    pub ring: Vec<u32>,
    /// Every claimed cache slot.
    pub caches: Vec<CacheSnapshot>,
}

impl Mempool {
    /// Copies the free ring and every claimed cache slot (see the module docs: exact only
    /// for a quiescent pool).
    pub fn free_list_snapshot(&self) -> FreeListSnapshot {
        let sh = &self.shared;
        let mut out = FreeListSnapshot::default();
        sh.ring.snapshot_into(&mut out.ring);
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            // Acquire (in `pid`): pairs with the owner's Release of its slot claim.
            let pid = hdr.holder.pid();
            if pid == 0 {
                continue;
            }
            let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
            let objs = (0..len as usize)
                .map(|k| {
                    // SAFETY: `k < len <= CACHE_OBJS`, inside the slot's array (checked at
                    // open); a volatile read of a plain u32 (a racy value on a live pool).
                    unsafe { sh.slot_objs(slot).wrapping_add(k).read_volatile() }
                })
                .collect();
            out.caches.push(CacheSnapshot {
                slot,
                pid,
                owner_tag: hdr.holder.tag(),
                objs,
            });
        }
        out
    }
}

impl MbufPool {
    /// Every mbuf header's owner tag, by index.
    pub fn owner_tags(&self) -> Vec<u32> {
        let sh = &self.mempool().shared;
        (0..sh.info.obj_count)
            .map(|i| {
                let hdr = header_ptr(sh.objs, sh.info.obj_size, i);
                // SAFETY: `i < obj_count`: in the objects span, aligned; a reference to
                // the atomic field only, never to the header.
                let tag = unsafe { &(*hdr).owner };
                // Acquire: pairs with the Release stores that hand a buffer over.
                tag.load(Ordering::Acquire)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{MbufPool, MbufPoolParams, OwnerTag};
    use shm::{Memseg, Region};

    #[test]
    fn snapshots_list_the_ring_the_caches_and_the_tags() {
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "snap", 1).unwrap();
        seg.mark_ready();
        let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(64, 8, 3)).unwrap();
        let s = pool.mempool().free_list_snapshot();
        assert_eq!(s.ring.len(), 64);
        assert!(s.caches.is_empty());
        let cache = pool.cache(OwnerTag::process(2)).unwrap();
        let m = cache.alloc().unwrap();
        let s = pool.mempool().free_list_snapshot();
        assert_eq!(s.caches.len(), 1);
        let cached = s.caches[0].objs.len();
        assert_eq!(s.ring.len() + cached, 63);
        let tags = pool.owner_tags();
        assert_eq!(tags[m.index() as usize], OwnerTag::process(2).0);
        assert_eq!(tags.iter().filter(|&&t| t != 0).count(), 1);
    }
}
