//! Cache slots and dead owners: claiming a slot (taking over a dead owner's after
//! flushing it), settling a dead process's cache length from the free-ring operation it
//! recorded, flushing dead caches back to the free ring, and repairing what a dead process
//! left inside a free-ring operation.
//!
//! Where it sits: in [`crate::pool`]; [`Mempool::cache`] claims through it, and the
//! primary calls [`Mempool::flush_caches_of`] and [`Mempool::repair_free_ring`] when a
//! secondary dies (before the mbuf reclaim by tag, `crate::mbuf`).

use std::sync::atomic::Ordering;

use shm::liveness::{Claimed, Process};

use super::{Mempool, PoolShared, Trouble};
use crate::layout::*;
use crate::owner::OwnerTag;
use crate::PoolError;

impl PoolShared {
    /// How many leading cache positions of dead process `pid`'s cache in `slot` hold its
    /// objects: the published length, corrected by the free-ring operation it recorded
    /// (`CacheSlotHeader::op`) if it died inside one. The ring's record of that
    /// operation says whether it took effect: a refill that did has copied its objects
    /// (holes skipped, the rest holes) whether or not the length says so; a flush that
    /// did has sent its objects away whether or not the length was lowered. One that did
    /// not (or never started) moved nothing: the ring's repair voids or returns its range.
    fn recovered_len(&self, hdr: &CacheSlotHeader, dead: Process) -> u32 {
        let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
        // Acquire: pairs with `begin_op`'s Release (a recoverer racing nothing, in fact:
        // the owner is dead).
        let op = hdr.op.load(Ordering::Acquire);
        if op == 0 {
            return len;
        }
        let (kind, rec) = (op & 3, ((op >> 8) & 0xff) as usize);
        let (seq, from) = (
            hdr.op_seq.load(Ordering::Relaxed),
            hdr.op_from.load(Ordering::Relaxed).min(CACHE_OBJS),
        );
        let ours = |v: &shm_ring::RecordView| {
            v.index == rec
                && v.producer == (kind == CACHE_OP_FLUSH)
                && v.seq == seq
                && v.state == shm_ring::OpState::Done
        };
        // Under the dead pid, or handed over to the ring (it finished its copy, then waited
        // for an earlier peer: it took effect all the same).
        let took = self
            .ring
            .record_of(dead.pid, dead.start_time)
            .into_iter()
            .find(ours)
            .or_else(|| self.ring.handed_record(rec).filter(ours));
        hdr.op.store(0, Ordering::Relaxed);
        match (kind, took) {
            (CACHE_OP_REFILL, Some(v)) => len
                .max(from.saturating_add(v.len).saturating_add(v.adopted))
                .min(CACHE_OBJS),
            // A flush sends from `from` down; the ring took `v.len` of them.
            (CACHE_OP_FLUSH, Some(v)) => from.saturating_sub(v.len).min(len),
            _ => len,
        }
    }

    /// Flushes the cache in `slot` of dead process `dead` to the free ring; the slot's
    /// claim must already be ours (taken over from `dead`). Returns objects flushed.
    ///
    /// The producer it pushes with is made after the cache's length is settled: making it
    /// claims a ring record, which may recycle the dead process's records that the
    /// settling reads.
    fn flush_slot(&self, slot: u32, dead: Process) -> u32 {
        let hdr = self.slot_header(slot);
        let len = self.recovered_len(hdr, dead);
        let mut tmp = vec![0u32; len as usize];
        // SAFETY: `len <= CACHE_OBJS` indices inside the slot's array; the owner is dead
        // (or is us) so nobody writes them now; plain u32 reads.
        unsafe {
            std::ptr::copy_nonoverlapping(self.slot_objs(slot), tmp.as_mut_ptr(), len as usize)
        };
        // Holes a refill's dequeue left (the ring's skipped positions) are no objects.
        tmp.retain(|&i| i != u32::MAX);
        let n = self.info.obj_count;
        let before = tmp.len();
        tmp.retain(|&i| i < n);
        let bad = before - tmp.len();
        // An index at two positions is one object: a refill killed inside the ring's
        // compaction of skipped holes (shm-ring `skip_holes`: a move is two stores) leaves
        // it twice (shm-ring's `tests/loom_cache.rs` shows it).
        let before = tmp.len();
        tmp.sort_unstable();
        tmp.dedup();
        let dups = before - tmp.len();
        if self.info.flags & POOL_F_MBUF != 0 {
            // A buffer being allocated or freed when its owner died is in the cache with
            // the owner's tag: marked free here, so the reclaim by tag that follows does
            // not free it a second time.
            for &i in &tmp {
                let hdr = mbuf_header_ptr(self.objs, self.info.obj_size, i);
                // SAFETY: `i < obj_count`: the header lies in the objects span checked at
                // open; only its atomic fields are touched (host pools only: export pools
                // are never flushed).
                let h = unsafe { &*hdr };
                let (owner, refcnt) = (&h.owner, &h.refcnt);
                // Relaxed: the owner is dead; the ring's Release publishes them onwards.
                owner.store(crate::owner::OwnerTag::FREE.0, Ordering::Relaxed);
                refcnt.store(0, Ordering::Relaxed);
            }
        }
        if bad != 0 {
            self.trouble(
                Trouble::BadHandle,
                bad as u64,
                "a dead owner's cache held out-of-range indices",
            );
        }
        if dups != 0 {
            // Not counted as a double free: a kill at the wrong instant does it.
            tracing::info!(
                "mempool {}: {dups} index(es) twice in a dead cache",
                self.name
            );
        }
        // The cleaned list becomes the cache's contents and goes out as a recorded flush,
        // as a live cache's does (`PoolCache::push_top`): a recoverer killed while pushing
        // it is recovered exactly in turn (the next one pushes only what the ring's record
        // says it did not take), instead of pushing everything a second time.
        let m = tmp.len() as u32;
        // SAFETY: `m <= len <= CACHE_OBJS` positions of the slot's array, which we hold.
        unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), self.slot_objs(slot), tmp.len()) };
        // Release: the array before the length, the length before the operation.
        hdr.len.store(m, Ordering::Release);
        let mut producer = self.ring.mp_producer().expect("MP/MC");
        if let Some(rec) = producer.record() {
            hdr.op_seq.store(producer.next_op_seq(), Ordering::Relaxed);
            hdr.op_from.store(m, Ordering::Relaxed);
            hdr.op
                .store(CACHE_OP_FLUSH | (rec as u32 & 0xff) << 8, Ordering::Release);
        }
        // All or none first; a refused one moves nothing and keeps the sequence number.
        let mut pushed = producer.enqueue_bulk(&tmp).unwrap_or(0) as u32;
        if pushed == 0 && m > 0 {
            pushed = super::cache::push_reversed(&mut producer, &tmp);
        }
        if pushed < m {
            self.trouble(
                Trouble::PutFail,
                u64::from(m - pushed),
                "free ring full while flushing a cache (duplicate indices?)",
            );
        }
        // Release: the length before the end of the operation (as `end_op`).
        hdr.len.store(0, Ordering::Release);
        hdr.op.store(0, Ordering::Release);
        pushed
    }
}

impl Mempool {
    pub(super) fn claim_slot(&self, owner: OwnerTag) -> Result<u32, PoolError> {
        let me = Process::current();
        let sh = &self.shared;
        // Free slots first, then gone holders' slots (shm::liveness's rule).
        for take_over in [false, true] {
            for slot in 0..CACHE_SLOTS {
                let hdr = sh.slot_header(slot);
                // The claim's Acquire pairs with the Release that freed the slot (or the
                // dead owner's last stores, visible since it is gone), so its `len` and
                // array are current.
                match hdr.holder.claim(me, owner.0, take_over) {
                    Ok(Claimed::Free) => {}
                    Ok(Claimed::FromGone(dead)) => {
                        sh.flush_slot(slot, dead);
                        sh.counters()
                            .caches_recovered
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            "mempool {}: cache slot {slot} of dead pid {} recovered",
                            sh.name,
                            dead.pid
                        );
                    }
                    Err(_) => continue,
                }
                hdr.len.store(0, Ordering::Relaxed);
                return Ok(slot);
            }
        }
        Err(PoolError::NoCacheSlot {
            pool: sh.name.clone(),
            slots: CACHE_SLOTS,
        })
    }

    /// Flushes the caches held by `pid` back to the free ring and frees their slots;
    /// returns how many objects went back. The caller knows the process is gone; with
    /// `start_time` (its /proc start time) a slot claimed by a later process that reused
    /// the pid is left alone.
    pub fn flush_caches_of(&self, pid: u32, start_time: Option<u64>) -> u64 {
        self.recover_slots(|h| {
            h.pid == pid && (h.start_time == 0 || start_time.is_none_or(|t| t == h.start_time))
        })
    }

    /// Repairs what dead process `pid` (started at `start_time`, 0 = any) left inside an
    /// operation on the free ring (shm-ring's `repair_dead`: a reservation it never wrote
    /// becomes holes, one it wrote is published, the objects of one it was taking out are
    /// returned) and puts the returned objects back. Call after
    /// [`flush_caches_of`](Self::flush_caches_of), whose recovery reads the ring's records
    /// of that process first. Returns how many objects went back.
    pub fn repair_free_ring(&self, pid: u32, start_time: u64) -> u64 {
        let sh = &self.shared;
        let report = sh.ring.repair_dead(pid, start_time);
        let n = sh.info.obj_count;
        let mut back: Vec<u32> = report.returned.into_iter().filter(|&i| i < n).collect();
        if report.left_pending + report.published > 0 {
            // A range handed to the ring is released by the next consumer at the tail: be
            // that consumer now (one object out, and back in below), so the ring is whole
            // again before anyone counts it.
            if let Ok(mut c) = sh.ring.mc_consumer() {
                let mut one = [0u32; 1];
                if let Ok(1) = c.dequeue_burst(&mut one) {
                    back.extend(one.iter().filter(|&&i| i < n));
                }
            }
        }
        if back.is_empty() {
            return 0;
        }
        let mut producer = sh.ring.mp_producer().expect("MP/MC");
        let pushed = producer.enqueue_burst(&back).unwrap_or(0);
        if pushed < back.len() {
            sh.trouble(
                Trouble::PutFail,
                (back.len() - pushed) as u64,
                "free ring full while repairing a dead process's reservation",
            );
        }
        pushed as u64
    }

    /// Cache slots held by `pid`.
    pub fn caches_of(&self, pid: u32) -> u32 {
        (0..CACHE_SLOTS)
            .filter(|&slot| self.shared.slot_header(slot).holder.pid() == pid)
            .count() as u32
    }

    /// Flushes every cache whose owner process is gone (shm::liveness's rule: dead, a
    /// zombie, or its pid reused); returns how many objects went back.
    pub fn flush_dead_caches(&self) -> u64 {
        self.recover_slots(|h| h.is_gone())
    }

    /// Takes over every slot whose holder `dead` accepts and flushes it, holding the slot
    /// under this process's identity meanwhile (if this process dies there, the slot is
    /// a gone holder's again, for the next claimer).
    fn recover_slots(&self, dead: impl Fn(Process) -> bool) -> u64 {
        let sh = &self.shared;
        let me = Process::current();
        let mut total = 0u64;
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            let Some(h) = hdr.holder.holder() else {
                continue;
            };
            if !dead(h) || !hdr.holder.take_over_from(h, me, 0) {
                continue;
            }
            total += u64::from(sh.flush_slot(slot, h));
            sh.counters()
                .caches_recovered
                .fetch_add(1, Ordering::Relaxed);
            // The claim's release (Release) makes the flush visible to the next claimer.
            hdr.holder.release(me);
        }
        total
    }
}
