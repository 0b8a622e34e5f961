//! Role-typed handles: [`SpProducer`]/[`MpProducer`] and [`ScConsumer`]/[`McConsumer`].
//!
//! A ring is created single- or multi- on each side, and only the matching handle can be
//! made. Single-role handles are not `Clone` and claim the role in shared memory (the
//! side's `owner` word holds the claimant's pid), so a second process or a second handle in
//! the same process is refused while the first lives; a dead claimant's role can be taken
//! over. Multi-role handles are `Clone`: give each thread its own clone.

use std::time::Duration;

use shm::liveness::Process;

use crate::core::{skip_holes, Behaviour, Published, RingCore, Waiter, STALL_TIMEOUT};
use crate::records::new_token;
use crate::sync::Ordering;
use crate::{Element, RingError};

#[path = "hooks.rs"]
mod hooks;

/// Clamps a slice length to what one operation can move.
#[inline(always)]
fn want(len: usize, capacity: u32) -> u32 {
    len.min(capacity as usize) as u32
}

/// Role claim in the side's [`Holder`](shm::liveness::Holder), released on drop. A dead
/// claimant's role (gone by [`shm::liveness::holder_gone`]: dead, a zombie, its pid
/// reused) is taken over; a live one's, this process's included, is refused.
struct Claim<T: Element> {
    core: RingCore<T>,
    producer: bool,
    me: Process,
}

impl<T: Element> Claim<T> {
    fn take(core: &RingCore<T>, producer: bool) -> Result<Claim<T>, RingError> {
        let me = Process::current();
        // What the new owner must see of the ring (the published tail) is read with
        // Acquire when the handle is made; the claim's own orderings are the Holder's.
        match core.owner(producer).claim(me, 0, true) {
            Ok(_) => Ok(Claim {
                core: core.clone(),
                producer,
                me,
            }),
            Err(h) => Err(RingError::RoleTaken {
                producer,
                pid: h.pid,
            }),
        }
    }
}

impl<T: Element> Drop for Claim<T> {
    fn drop(&mut self) {
        self.core.owner(self.producer).release(self.me);
    }
}

/// The single producer of a ring. Single producer; enforced by `&mut self` and by the
/// role claim in shared memory.
pub struct SpProducer<T: Element> {
    core: RingCore<T>,
    head: u32,
    cons_tail: u32,
    _claim: Claim<T>,
}

impl<T: Element> std::fmt::Debug for SpProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpProducer")
            .field("head", &self.head)
            .finish()
    }
}

impl<T: Element> SpProducer<T> {
    pub(crate) fn new(core: RingCore<T>) -> Result<Self, RingError> {
        let claim = Claim::take(&core, true)?;
        // A1-style Acquire: resume from what the previous producer (if any) published; a
        // reservation it never published is abandoned.
        let head = core.prod().tail.load(Ordering::Acquire);
        core.prod().head.store(head, Ordering::Relaxed);
        // A2: pairs with R2.
        let cons_tail = core.cons().tail.load(Ordering::Acquire);
        if head.wrapping_sub(cons_tail) > core.capacity {
            return Err(core.corrupt());
        }
        Ok(SpProducer {
            core,
            head,
            cons_tail,
            _claim: claim,
        })
    }

    /// The position the next enqueued element gets (free-running, as the ring's indices).
    pub fn position(&self) -> u32 {
        self.head
    }

    /// Free slots, refreshing the cached consumer tail when needed.
    #[inline(always)]
    fn free(&mut self, n: u32) -> Result<u32, RingError> {
        self.core
            .single_avail::<true>(self.head, &mut self.cons_tail, n)
    }

    #[inline(always)]
    fn enqueue_n(&mut self, items: &[T], how: Behaviour) -> Result<usize, RingError> {
        let n = want(items.len(), self.core.capacity);
        if how == Behaviour::Fixed && n as usize != items.len() {
            return Ok(0);
        }
        let free = self.free(n)?;
        let take = match how {
            Behaviour::Fixed if free < n => return Ok(0),
            _ => n.min(free),
        };
        // SAFETY: `take` slots from `head` are free (`free` checked them against
        // cons.tail with A2) and only this single producer writes them.
        unsafe { self.core.write_slots(self.head, &items[..take as usize]) };
        self.publish(take);
        Ok(take as usize)
    }

    #[inline(always)]
    fn publish(&mut self, n: u32) {
        let new = self.head.wrapping_add(n);
        let prod = self.core.prod();
        prod.head.store(new, Ordering::Relaxed);
        // R1: publishes the slots written above; pairs with A1 in consumers.
        prod.tail.store(new, Ordering::Release);
        self.head = new;
    }

    /// Single producer. Enqueues all of `items` or none; returns `items.len()` or 0.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the ring's indices are impossible.
    #[inline]
    pub fn enqueue_bulk(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, Behaviour::Fixed)
    }

    /// Single producer. Enqueues as many of `items` as fit, in order; returns how many.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the ring's indices are impossible.
    #[inline]
    pub fn enqueue_burst(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, Behaviour::Variable)
    }

    /// Single producer. Enqueues one element, handing it back if the ring is full.
    ///
    /// # Errors
    /// [`RingFull::Full`] with the element, or [`RingFull::Ring`] with the ring's error.
    #[inline]
    pub fn enqueue(&mut self, item: T) -> Result<(), RingFull<T>> {
        match self.free(1) {
            Ok(0) => Err(RingFull::Full(item)),
            Ok(_) => {
                // SAFETY: one free slot at `head` (checked by `free`), reserved for us.
                unsafe { self.core.slot_ptr(self.head).write(item) };
                self.publish(1);
                Ok(())
            }
            Err(e) => Err(RingFull::Ring(e)),
        }
    }

    /// Single producer. Zero-copy: reserves up to `n` free slots to be written in place
    /// and published with [`WriteSlots::commit`]. Dropping the reservation publishes
    /// nothing.
    ///
    /// # Errors
    /// [`RingError::Corrupt`].
    pub fn reserve(&mut self, n: usize) -> Result<WriteSlots<'_, T>, RingError> {
        let n = want(n, self.core.capacity);
        let take = n.min(self.free(n)?);
        Ok(WriteSlots {
            prod: self,
            len: take,
        })
    }

    /// Elements in the ring.
    pub fn count(&self) -> usize {
        self.core.count() as usize
    }

    /// Free slots.
    pub fn free_count(&self) -> usize {
        (self.core.capacity - self.core.count()) as usize
    }
}

/// Slots reserved by [`SpProducer::reserve`], written in place.
#[derive(Debug)]
pub struct WriteSlots<'a, T: Element> {
    prod: &'a mut SpProducer<T>,
    len: u32,
}

impl<T: Element> WriteSlots<'_, T> {
    /// Number of reserved slots.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when nothing could be reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reserved slots as up to two slices (the second is non-empty when the
    /// reservation wraps around the end of the ring). Their contents are stale until
    /// written.
    pub fn slices(&mut self) -> (&mut [T], &mut [T]) {
        // SAFETY: the slots [head, head + len) are free (checked against cons.tail with
        // A2) and reserved for this producer, which is borrowed mutably for the lifetime
        // of the slices; len <= capacity.
        unsafe { self.prod.core.slots_mut(self.prod.head, self.len) }
    }

    /// Publishes the first `n` reserved slots (clamped to the reservation).
    pub fn commit(self, n: usize) {
        let n = (n.min(self.len as usize)) as u32;
        self.prod.publish(n);
    }
}

/// A producer of a multi-producer ring. Multi-producer safe: clone it for each thread.
///
/// Each handle (each clone) holds a reservation record in the ring (see the crate docs),
/// so that its operations can be repaired if its process dies mid-way; when the table is
/// full the handle is unrecorded ([`MpProducer::record`] is None) and works as before.
pub struct MpProducer<T: Element> {
    core: RingCore<T>,
    cons_tail: u32,
    stall_timeout: Duration,
    rec: Option<u32>,
    seq: u32,
    token: u64,
}

impl<T: Element> Clone for MpProducer<T> {
    fn clone(&self) -> Self {
        MpProducer {
            core: self.core.clone(),
            cons_tail: self.cons_tail,
            stall_timeout: self.stall_timeout,
            rec: self.core.claim_record(true, 0),
            seq: 0,
            token: new_token(),
        }
    }
}

impl<T: Element> Drop for MpProducer<T> {
    fn drop(&mut self) {
        if let Some(i) = self.rec {
            self.core.release_record(i);
        }
    }
}

impl<T: Element> std::fmt::Debug for MpProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpProducer").finish_non_exhaustive()
    }
}

impl<T: Element> MpProducer<T> {
    pub(crate) fn new(core: RingCore<T>) -> Self {
        // A2: pairs with R2.
        let cons_tail = core.cons().tail.load(Ordering::Acquire);
        let rec = core.claim_record(true, 0);
        MpProducer {
            core,
            cons_tail,
            stall_timeout: STALL_TIMEOUT,
            rec,
            seq: 0,
            token: new_token(),
        }
    }

    /// How long an unrecorded handle waits for an earlier producer to publish before
    /// giving up with [`RingError::Stalled`] (default [`STALL_TIMEOUT`]). A recorded
    /// handle never gives up: it hands its finished range over after
    /// [`crate::HANDOVER_AFTER`] and returns success.
    pub fn set_stall_timeout(&mut self, limit: Duration) {
        self.stall_timeout = limit;
    }

    /// Index of this handle's reservation record, None if unrecorded (table full).
    pub fn record(&self) -> Option<usize> {
        self.rec.map(|i| i as usize)
    }

    /// Sequence number the next operation that reserves slots will carry in the record
    /// (an operation that moves nothing does not use one up). Log it before the
    /// operation; [`crate::Ring::record_of`] tells later whether it completed.
    pub fn next_op_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    /// After a hand-over: the old record belongs to the ring now, claim another.
    #[cold]
    #[inline(never)]
    fn reclaim(&mut self) {
        self.rec = self.core.claim_record(true, self.seq);
    }

    #[inline(always)]
    fn enqueue_n(&mut self, items: &[T], how: Behaviour) -> Result<usize, RingError> {
        let n = want(items.len(), self.core.capacity);
        if how == Behaviour::Fixed && n as usize != items.len() {
            return Ok(0);
        }
        let seq = self.seq.wrapping_add(1);
        let rec = self.rec.map(|i| (i, self.core.record(i as usize)));
        let (old, take) = loop {
            let (old, take) =
                self.core
                    .multi_reserve::<true>(n, how, &mut self.cons_tail, self.rec, seq)?;
            if take == 0 {
                return Ok(0);
            }
            self.seq = seq;
            shm::crash_point!("ring.mp_after_head_cas");
            match rec {
                Some((_, r)) if !self.core.begin_busy(r, seq) => {
                    // Voided while we were stopped: nothing was enqueued; the same
                    // operation (same seq) tries again once the voided range is published.
                    self.core.wait_voided::<true>(old, self.token);
                }
                _ => break (old, take),
            }
        };
        // SAFETY: the CAS in `multi_reserve` gave this producer `[old, old + take)`, which
        // the consumers had released (A2); BUSY keeps any waiter from voiding it now.
        unsafe { self.core.write_slots(old, &items[..take as usize]) };
        shm::crash_point!("ring.mp_after_copy");
        let mut w = Waiter {
            rec,
            seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        let p = self
            .core
            .publish_after_peers::<true>(old, take, &mut w, &mut [])?;
        if let Published::HandedOver { .. } = p {
            self.reclaim();
        }
        Ok(take as usize)
    }

    /// Multi-producer safe. Enqueues all of `items` or none; returns `items.len()` or 0.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], [`RingError::Stalled`].
    #[inline]
    pub fn enqueue_bulk(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, Behaviour::Fixed)
    }

    /// Multi-producer safe. Enqueues as many of `items` as fit; returns how many.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], [`RingError::Stalled`].
    #[inline]
    pub fn enqueue_burst(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, Behaviour::Variable)
    }

    /// Multi-producer safe. Enqueues one element, handing it back if the ring is full.
    ///
    /// # Errors
    /// [`RingFull::Full`] with the element, or the ring's error.
    #[inline]
    pub fn enqueue(&mut self, item: T) -> Result<(), RingFull<T>> {
        match self.enqueue_n(std::slice::from_ref(&item), Behaviour::Fixed) {
            Ok(1) => Ok(()),
            Ok(_) => Err(RingFull::Full(item)),
            Err(e) => Err(RingFull::Ring(e)),
        }
    }

    /// Elements in the ring.
    pub fn count(&self) -> usize {
        self.core.count() as usize
    }

    /// Free slots.
    pub fn free_count(&self) -> usize {
        (self.core.capacity - self.core.count()) as usize
    }
}

/// The single consumer of a ring. Single consumer; enforced by `&mut self` and by the
/// role claim in shared memory.
pub struct ScConsumer<T: Element> {
    core: RingCore<T>,
    head: u32,
    prod_tail: u32,
    /// The producer side is multi: repaired reservations may leave holes.
    holes: bool,
    _claim: Claim<T>,
}

impl<T: Element> std::fmt::Debug for ScConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScConsumer")
            .field("head", &self.head)
            .finish()
    }
}

impl<T: Element> ScConsumer<T> {
    pub(crate) fn new(core: RingCore<T>, holes: bool) -> Result<Self, RingError> {
        let claim = Claim::take(&core, false)?;
        // Resume after what the previous consumer released (R2's value).
        let head = core.cons().tail.load(Ordering::Acquire);
        core.cons().head.store(head, Ordering::Relaxed);
        // A1: pairs with R1.
        let prod_tail = core.prod().tail.load(Ordering::Acquire);
        if prod_tail.wrapping_sub(head) > core.capacity {
            return Err(core.corrupt());
        }
        Ok(ScConsumer {
            core,
            head,
            prod_tail,
            holes,
            _claim: claim,
        })
    }

    /// The position of the next element to dequeue (free-running, as the ring's indices).
    pub fn position(&self) -> u32 {
        self.head
    }

    /// Published elements, refreshing the cached producer tail when needed.
    #[inline(always)]
    fn avail(&mut self, n: u32) -> Result<u32, RingError> {
        self.core
            .single_avail::<false>(self.head, &mut self.prod_tail, n)
    }

    #[inline(always)]
    fn dequeue_n(&mut self, out: &mut [T], how: Behaviour) -> Result<usize, RingError> {
        let n = want(out.len(), self.core.capacity);
        if how == Behaviour::Fixed && n as usize != out.len() {
            return Ok(0);
        }
        let avail = self.avail(n)?;
        let take = match how {
            Behaviour::Fixed if avail < n => return Ok(0),
            _ => n.min(avail),
        };
        // SAFETY: `take` elements from `head` are published (A1 in `avail`) and only this
        // single consumer reads them before releasing.
        unsafe { self.core.read_slots(self.head, &mut out[..take as usize]) };
        self.release(take);
        if self.holes {
            return Ok(skip_holes(
                &self.core.prod().tail,
                &mut out[..take as usize],
            ));
        }
        Ok(take as usize)
    }

    #[inline(always)]
    fn release(&mut self, n: u32) {
        let new = self.head.wrapping_add(n);
        let cons = self.core.cons();
        cons.head.store(new, Ordering::Relaxed);
        // R2: the slots read above are free again; pairs with A2 in producers.
        cons.tail.store(new, Ordering::Release);
        self.head = new;
    }

    /// Single consumer. Dequeues exactly `out.len()` elements or none; returns the count
    /// (lower when holes were skipped, on a multi-producer ring: see
    /// [`McConsumer::dequeue_bulk`]).
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the ring's indices are impossible.
    #[inline]
    pub fn dequeue_bulk(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Fixed)
    }

    /// Single consumer. Dequeues up to `out.len()` elements; returns how many.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the ring's indices are impossible.
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Variable)
    }

    /// Single consumer. Dequeues one element, `Ok(None)` when empty.
    ///
    /// # Errors
    /// [`RingError::Corrupt`].
    #[inline]
    pub fn dequeue(&mut self) -> Result<Option<T>, RingError> {
        loop {
            if self.avail(1)? == 0 {
                return Ok(None);
            }
            // SAFETY: the slot at `head` was published (A1 in `avail`) and is ours until
            // we release it.
            let mut v = [unsafe { self.core.slot_ptr(self.head).read() }];
            self.release(1);
            if !self.holes || skip_holes(&self.core.prod().tail, &mut v) == 1 {
                return Ok(Some(v[0]));
            }
        }
    }

    /// Single consumer. Zero-copy: looks at up to `n` available elements in place; release
    /// them with [`ReadSlots::release`] (dropping the view releases nothing). On a
    /// multi-producer ring the view may hold holes ([`Element::is_hole`]): skip them.
    ///
    /// # Errors
    /// [`RingError::Corrupt`].
    pub fn peek(&mut self, n: usize) -> Result<ReadSlots<'_, T>, RingError> {
        let n = want(n, self.core.capacity);
        let take = n.min(self.avail(n)?);
        Ok(ReadSlots {
            cons: self,
            len: take,
        })
    }

    /// Elements in the ring.
    pub fn count(&self) -> usize {
        self.core.count() as usize
    }
}

/// Elements viewed in place by [`ScConsumer::peek`].
#[derive(Debug)]
pub struct ReadSlots<'a, T: Element> {
    cons: &'a mut ScConsumer<T>,
    len: u32,
}

impl<T: Element> ReadSlots<'_, T> {
    /// Number of elements viewed.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the ring was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements as up to two slices (the second non-empty on wrap-around).
    pub fn slices(&self) -> (&[T], &[T]) {
        // SAFETY: [head, head + len) were published (A1) and stay unchanged until this
        // consumer (borrowed for the slices' lifetime) releases them; len <= capacity.
        let (a, b) = unsafe { self.cons.core.slots_mut(self.cons.head, self.len) };
        (a, b)
    }

    /// Releases the first `n` viewed elements back to the producers.
    pub fn release(self, n: usize) {
        let n = (n.min(self.len as usize)) as u32;
        self.cons.release(n);
    }
}

/// A consumer of a multi-consumer ring. Multi-consumer safe: clone it for each thread.
///
/// Recorded like [`MpProducer`]. Dequeues skip holes (what a repaired producer
/// reservation leaves, see the crate docs), and a consumer waiting behind a dead
/// consumer's uncopied range takes those elements too when its output has room.
pub struct McConsumer<T: Element> {
    core: RingCore<T>,
    prod_tail: u32,
    stall_timeout: Duration,
    rec: Option<u32>,
    seq: u32,
    token: u64,
}

impl<T: Element> Clone for McConsumer<T> {
    fn clone(&self) -> Self {
        McConsumer {
            core: self.core.clone(),
            prod_tail: self.prod_tail,
            stall_timeout: self.stall_timeout,
            rec: self.core.claim_record(false, 0),
            seq: 0,
            token: new_token(),
        }
    }
}

impl<T: Element> Drop for McConsumer<T> {
    fn drop(&mut self) {
        if let Some(i) = self.rec {
            self.core.release_record(i);
        }
    }
}

impl<T: Element> std::fmt::Debug for McConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McConsumer").finish_non_exhaustive()
    }
}

impl<T: Element> McConsumer<T> {
    pub(crate) fn new(core: RingCore<T>) -> Self {
        // A1: pairs with R1.
        let prod_tail = core.prod().tail.load(Ordering::Acquire);
        let rec = core.claim_record(false, 0);
        McConsumer {
            core,
            prod_tail,
            stall_timeout: STALL_TIMEOUT,
            rec,
            seq: 0,
            token: new_token(),
        }
    }

    /// As [`MpProducer::set_stall_timeout`], for an earlier consumer.
    pub fn set_stall_timeout(&mut self, limit: Duration) {
        self.stall_timeout = limit;
    }

    /// Index of this handle's reservation record, None if unrecorded (table full).
    pub fn record(&self) -> Option<usize> {
        self.rec.map(|i| i as usize)
    }

    /// As [`MpProducer::next_op_seq`].
    pub fn next_op_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    #[cold]
    #[inline(never)]
    fn reclaim(&mut self) {
        self.rec = self.core.claim_record(false, self.seq);
    }

    /// Reserves, copies and publishes; returns (slots consumed, elements kept in `out`
    /// after dropping holes and adding adopted elements).
    #[inline(always)]
    fn dequeue_raw(
        &mut self,
        out: &mut [T],
        wanted: usize,
        how: Behaviour,
    ) -> Result<(u32, usize), RingError> {
        let wanted = wanted.min(out.len());
        let n = want(wanted, self.core.capacity);
        if how == Behaviour::Fixed && n as usize != wanted {
            return Ok((0, 0));
        }
        let seq = self.seq.wrapping_add(1);
        let rec = self.rec.map(|i| (i, self.core.record(i as usize)));
        let (old, take) = loop {
            let (old, take) =
                self.core
                    .multi_reserve::<false>(n, how, &mut self.prod_tail, self.rec, seq)?;
            if take == 0 {
                return Ok((0, 0));
            }
            self.seq = seq;
            shm::crash_point!("ring.mc_after_head_cas");
            // SAFETY: the CAS in `multi_reserve` gave this consumer `[old, old + take)`,
            // which the producers had published (A1); a waiter that voids it meanwhile
            // only reads it too, and our copy is then discarded.
            unsafe { self.core.read_slots(old, &mut out[..take as usize]) };
            match rec {
                Some((_, r)) if !self.core.begin_busy(r, seq) => {
                    // Voided while we were stopped: a waiter adopted these elements; our
                    // copy is stale. The same operation tries again.
                    self.core.wait_voided::<false>(old, self.token);
                }
                _ => break (old, take),
            }
        };
        shm::crash_point!("ring.mc_after_copy");
        let room = &mut out[take as usize..];
        let mut w = Waiter {
            rec,
            seq,
            token: self.token,
            stall_timeout: self.stall_timeout,
        };
        let p = self
            .core
            .publish_after_peers::<false>(old, take, &mut w, room)?;
        if let Published::HandedOver { .. } = p {
            self.reclaim();
        }
        let got = take as usize + p.adopted() as usize;
        Ok((take, skip_holes(&self.core.prod().tail, &mut out[..got])))
    }

    #[inline(always)]
    fn dequeue_n(&mut self, out: &mut [T], how: Behaviour) -> Result<usize, RingError> {
        Ok(self.dequeue_raw(out, out.len(), how)?.1)
    }

    /// As [`dequeue_bulk`](Self::dequeue_bulk) for `n` slots (`n <= out.len()`), with the
    /// rest of `out` as room: while this consumer waits behind a dead or long-stopped
    /// consumer's uncopied range, it adopts those elements into the room when they fit
    /// (after its own), so the range leaves the ring and unblocks it. Returns the elements
    /// stored at the front of `out` (holes skipped, adopted ones included): 0 when fewer
    /// than `n` slots were there. What a consumer that must never leave such a range
    /// behind gives (a pool cache refill: the rest of its cache array).
    ///
    /// # Errors
    /// As [`McConsumer::dequeue_bulk`].
    #[inline]
    pub fn dequeue_bulk_with_room(&mut self, out: &mut [T], n: usize) -> Result<usize, RingError> {
        if n == 0 {
            return Ok(0);
        }
        Ok(self.dequeue_raw(out, n, Behaviour::Fixed)?.1)
    }

    /// Multi-consumer safe. Takes exactly `out.len()` slots or none; returns the number of
    /// elements stored at the front of `out`, which is `out.len()` or 0 except when some
    /// of the slots taken were holes (a repaired producer reservation): they are skipped,
    /// so the count is lower.
    ///
    /// # Errors
    /// [`RingError::Corrupt`]; [`RingError::Stalled`] (unrecorded handles only).
    #[inline]
    pub fn dequeue_bulk(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Fixed)
    }

    /// Multi-consumer safe. Dequeues up to `out.len()` elements; returns how many (holes
    /// skipped; elements of a dead consumer's range adopted while waiting are included).
    ///
    /// # Errors
    /// As [`McConsumer::dequeue_bulk`].
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Variable)
    }

    /// Multi-consumer safe. Dequeues one element (skipping holes), `Ok(None)` when empty.
    ///
    /// # Errors
    /// As [`McConsumer::dequeue_bulk`].
    #[inline]
    pub fn dequeue(&mut self) -> Result<Option<T>, RingError> {
        let mut v = [T::new_zeroed()];
        loop {
            match self.dequeue_raw(&mut v, 1, Behaviour::Fixed)? {
                (_, 1) => return Ok(Some(v[0])),
                (0, _) => return Ok(None),
                _ => {}
            }
        }
    }

    /// Elements in the ring.
    pub fn count(&self) -> usize {
        self.core.count() as usize
    }
}

/// Why a single-element enqueue did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum RingFull<T> {
    /// The ring is full; here is the element back.
    Full(T),
    /// The ring is broken.
    Ring(RingError),
}
