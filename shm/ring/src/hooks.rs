//! Test hooks of the multi-role handles: an operation split at its crash points, and a
//! handle whose process "dies" there. Used by the unit tests and the loom models; hidden
//! from the docs. A real death needs none of this.

use super::{want, McConsumer, MpProducer};
use crate::core::{Behaviour, Published, Waiter};
use crate::records::{pack_range, pack_state, ST_DONE, ST_INTENT};
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
            // SAFETY: as in `enqueue_n`.
            unsafe { self.core.write_slots(old, &items[..take as usize]) };
            if let Some(r) = rec {
                // R6, as in `enqueue_n`.
                r.state.store(pack_state(seq, ST_DONE), Ordering::Release);
            }
        }
        Ok((old, take))
    }

    /// Test hook: the second half of an enqueue begun with [`MpProducer::__reserve`].
    #[doc(hidden)]
    pub fn __publish(&mut self, old: u32, take: u32) -> Result<(), RingError> {
        let mut w = Waiter {
            rec: self.rec.map(|i| (i, self.core.record(i as usize))),
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        if let Published::HandedOver { .. } =
            self.core
                .publish_after_peers::<true>(old, take, &mut w, &mut [])?
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
            if let Some(r) = rec {
                // R6, as in `dequeue_raw`.
                r.state.store(pack_state(seq, ST_DONE), Ordering::Release);
            }
        }
        Ok((old, take))
    }

    /// Test hook: the second half of a dequeue begun with [`McConsumer::__reserve`].
    #[doc(hidden)]
    pub fn __publish(&mut self, old: u32, take: u32) -> Result<(), RingError> {
        let mut w = Waiter {
            rec: self.rec.map(|i| (i, self.core.record(i as usize))),
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        if let Published::HandedOver { .. } =
            self.core
                .publish_after_peers::<false>(old, take, &mut w, &mut [])?
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
