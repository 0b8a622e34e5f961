//! Test hooks of the multi-role handles: an operation split at its crash points, and a
//! handle whose process "dies" there. Used by the unit tests and the loom models; hidden
//! from the docs. A real death needs none of this.

use super::{want, McConsumer, MpProducer};
use crate::core::{Behaviour, Published, Waiter};
use crate::records::{pack_range, pack_state, ST_DONE, ST_INTENT};
use crate::Ring;

impl<T: Element> Ring<T> {
    /// Test hook: how long a range must hold the tail before a live owner's untouched
    /// reservation may be voided, for the handles made after this call (0 = at once,
    /// `u32::MAX` = never; default [`crate::records::VOID_AFTER`], never under loom).
    #[doc(hidden)]
    pub fn __set_void_after_ms(&mut self, ms: u32) {
        self.core.void_after_ms = ms;
    }
}
use crate::sync::Ordering;
use crate::{Element, RingError};

impl<T: Element> MpProducer<T> {
    /// Test hook (crash models): the first half of an enqueue: reserves, and writes the
    /// slots and marks the record DONE if `copy`; returns `(start, taken)`. Finish with
    /// [`MpProducer::__publish`] or stop there for good with [`MpProducer::__die`].
    #[doc(hidden)]
    pub fn __reserve(&mut self, items: &[T], copy: bool) -> Result<(u32, u32), RingError> {
        let n = want(items.len(), self.core.capacity);
        let seq = self.seq.wrapping_add(1);
        let rec = self.rec.map(|i| self.core.record(i as usize));
        let (old, take) = self.core.multi_reserve::<true>(
            n,
            Behaviour::Variable,
            &mut self.cons_tail,
            self.rec,
            seq,
        )?;
        self.seq = seq;
        if copy && take > 0 {
            assert!(rec.is_none_or(|r| self.core.begin_busy(r, seq)));
            // SAFETY: as in `enqueue_n`.
            unsafe { self.core.write_slots(old, &items[..take as usize]) };
            if let Some(r) = rec {
                // R6, as in `publish_after_peers`.
                r.state.store(pack_state(seq, ST_DONE), Ordering::Release);
            }
        }
        Ok((old, take))
    }

    /// Test hook: an owner stopped after [`MpProducer::__reserve`] (without its copy)
    /// resumes: copies and publishes as `enqueue_n` does, or returns 0 without writing
    /// anything if a waiter voided the reservation meanwhile.
    #[doc(hidden)]
    pub fn __resume(&mut self, old: u32, items: &[T]) -> Result<usize, RingError> {
        let take = items.len() as u32;
        let rec = self.rec.map(|i| (i, self.core.record(i as usize)));
        if let Some((_, r)) = rec {
            if !self.core.begin_busy(r, self.seq) {
                self.core.wait_voided::<true>(old, self.token);
                return Ok(0);
            }
        }
        // SAFETY: as in `enqueue_n` (BUSY: nobody voids it now).
        unsafe { self.core.write_slots(old, items) };
        let mut w = Waiter {
            rec,
            seq: self.seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        if let Published::HandedOver { .. } =
            self.core
                .publish_after_peers::<true>(old, take, &mut w, &mut [])?
        {
            self.reclaim();
        }
        Ok(take as usize)
    }

    /// Test hook: the second half of an enqueue begun with [`MpProducer::__reserve`]
    /// with its copy (the record is DONE: published as a waiter publishes).
    #[doc(hidden)]
    pub fn __publish(&mut self, old: u32, take: u32) -> Result<(), RingError> {
        let mut w = Waiter {
            rec: self.rec.map(|i| (i, self.core.record(i as usize))),
            seq: self.seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        if let Published::HandedOver { .. } =
            self.core.publish_done::<true>(old, take, &mut w, &mut [])?
        {
            self.reclaim();
        }
        Ok(())
    }

    /// Test hook: this handle's process "dies" now: its record is relabelled with the
    /// dead `pid` (as if that process had held it) and left as it is.
    #[doc(hidden)]
    pub fn __die(mut self, pid: u32) {
        if let Some(i) = self.rec.take() {
            let r = self.core.record(i as usize);
            // Release: as a real owner's stores before its death are visible.
            r.owner.store(
                crate::records::SIDE_PROD << 32 | u64::from(pid),
                Ordering::Release,
            );
        }
    }

    /// Test hook (crash models): as [`McConsumer::__failed_attempt`].
    #[doc(hidden)]
    pub fn __failed_attempt(&mut self, start: u32, len: u32) {
        if let Some(i) = self.rec {
            let r = self.core.record(i as usize);
            r.range.store(pack_range(start, len), Ordering::Relaxed);
            r.state.store(
                pack_state(self.seq.wrapping_add(1), ST_INTENT),
                Ordering::Release,
            );
        }
    }
}

impl<T: Element> McConsumer<T> {
    /// Test hook (crash models): the first half of a dequeue: reserves up to
    /// `out.len()`, and copies and marks the record DONE if `copy`; returns
    /// `(start, taken)`. Finish with [`McConsumer::__publish`] or [`McConsumer::__die`].
    #[doc(hidden)]
    pub fn __reserve(&mut self, out: &mut [T], copy: bool) -> Result<(u32, u32), RingError> {
        let n = want(out.len(), self.core.capacity);
        let seq = self.seq.wrapping_add(1);
        let rec = self.rec.map(|i| self.core.record(i as usize));
        let (old, take) = self.core.multi_reserve::<false>(
            n,
            Behaviour::Variable,
            &mut self.prod_tail,
            self.rec,
            seq,
        )?;
        self.seq = seq;
        if copy && take > 0 {
            // SAFETY: as in `dequeue_raw`.
            unsafe { self.core.read_slots(old, &mut out[..take as usize]) };
            assert!(rec.is_none_or(|r| self.core.begin_busy(r, seq)));
            if let Some(r) = rec {
                // R6, as in `publish_after_peers`.
                r.state.store(pack_state(seq, ST_DONE), Ordering::Release);
            }
        }
        Ok((old, take))
    }

    /// Test hook: a consumer stopped after [`McConsumer::__reserve`] (without its copy)
    /// resumes: copies `take` elements into `out` and publishes, or returns 0 (its copy
    /// discarded) if a waiter voided the reservation meanwhile.
    #[doc(hidden)]
    pub fn __resume(&mut self, old: u32, take: u32, out: &mut [T]) -> Result<usize, RingError> {
        let rec = self.rec.map(|i| (i, self.core.record(i as usize)));
        // SAFETY: as in `dequeue_raw`.
        unsafe { self.core.read_slots(old, &mut out[..take as usize]) };
        if let Some((_, r)) = rec {
            if !self.core.begin_busy(r, self.seq) {
                self.core.wait_voided::<false>(old, self.token);
                return Ok(0);
            }
        }
        let mut w = Waiter {
            rec,
            seq: self.seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        let (mine, room) = out.split_at_mut(take as usize);
        let _ = mine;
        if let Published::HandedOver { .. } = self
            .core
            .publish_after_peers::<false>(old, take, &mut w, room)?
        {
            self.reclaim();
        }
        Ok(take as usize)
    }

    /// Test hook: the second half of a dequeue begun with [`McConsumer::__reserve`]
    /// with its copy (as [`MpProducer::__publish`]).
    #[doc(hidden)]
    pub fn __publish(&mut self, old: u32, take: u32) -> Result<(), RingError> {
        let mut w = Waiter {
            rec: self.rec.map(|i| (i, self.core.record(i as usize))),
            seq: self.seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        if let Published::HandedOver { .. } =
            self.core
                .publish_done::<false>(old, take, &mut w, &mut [])?
        {
            self.reclaim();
        }
        Ok(())
    }

    /// Test hook: as [`MpProducer::__die`].
    #[doc(hidden)]
    pub fn __die(mut self, pid: u32) {
        if let Some(i) = self.rec.take() {
            let r = self.core.record(i as usize);
            // Release: as in `MpProducer::__die`.
            r.owner.store(
                crate::records::SIDE_CONS << 32 | u64::from(pid),
                Ordering::Release,
            );
        }
    }

    /// Test hook (crash models): the record of an attempt whose head CAS failed, left as
    /// a process killed right after that CAS leaves it: INTENT for `[start, start+len)`,
    /// the head untouched.
    #[doc(hidden)]
    pub fn __failed_attempt(&mut self, start: u32, len: u32) {
        if let Some(i) = self.rec {
            let r = self.core.record(i as usize);
            r.range.store(pack_range(start, len), Ordering::Relaxed);
            r.state.store(
                pack_state(self.seq.wrapping_add(1), ST_INTENT),
                Ordering::Release,
            );
        }
    }
}
