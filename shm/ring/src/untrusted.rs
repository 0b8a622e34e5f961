//! Host handles on rings that live in memory a guest can write: [`UntrustedProducer`] and
//! [`UntrustedConsumer`].
//!
//! The trusted handles assume every peer follows the protocol: a multi-producer retries
//! its head CAS until it wins and waits (up to [`crate::STALL_TIMEOUT`]) for earlier peers
//! to publish, and single-role handles claim the side's `owner` word in a CAS loop. A guest
//! that keeps rewriting a head, or reserves and never publishes, would hold a host lcore
//! in those loops for as long as it likes. These handles give every operation a fixed
//! bound instead:
//!
//! - **Bounded**: at most [`UNTRUSTED_CAS_TRIES`] head CAS attempts and
//!   [`UNTRUSTED_PUBLISH_SPINS`] re-reads of the tail; no yield, sleep or timeout; the
//!   `owner` word is never claimed (the caller makes the role exclusive on the host side,
//!   e.g. with the port's queue claim in host memory).
//! - **Shadow indices**: on a single-producer (consumer) side the host is the only mover,
//!   so the handle keeps its head privately and never reads its own head or tail back: a
//!   guest rewriting them cannot steer where the host writes or reads next.
//! - **Read once, validated**: each shared index is loaded once per attempt and the
//!   distance to the other side checked against the capacity before it is used.
//! - **Copies**: slots are read and written one element at a time with volatile accesses,
//!   never through a `&[T]` into the ring.
//! - **Errors, not state**: an impossible state is [`RingError::Corrupt`], a budget spent
//!   is [`RingError::Busy`]; both mean nothing moved. The ring's ctrl block (failed flag,
//!   corruption counter) is guest-writable and is neither read nor written here: the
//!   caller counts the errors in host memory.
//!
//! A multi-producer (consumer) whose CAS won `[old, old + n)` but finds an earlier peer
//! still unpublished after the spin budget keeps the publication *pending* in the handle:
//! the call still returns `n` (producer: the elements are in the slots and belong to the
//! ring; consumer: they were copied out and are the caller's). Every later call first
//! tries to publish it with one load and returns [`RingError::Busy`] while it cannot. A
//! guest that never publishes thus costs one load per call and loses only capacity of its
//! own ring.

use crate::core::RingCore;
use crate::layout::HeadTail;
use crate::sync::{spin, Ordering};
use crate::{Element, RingError, RingFull};

/// Most head CAS attempts one untrusted operation makes before giving up with
/// [`RingError::Busy`].
pub const UNTRUSTED_CAS_TRIES: u32 = 4;

/// Most extra re-reads of the tail an untrusted multi-producer (consumer) makes while an
/// earlier peer publishes, before leaving its own publication pending.
pub const UNTRUSTED_PUBLISH_SPINS: u32 = 16;

/// Shared state of both untrusted roles; `PROD` picks the side.
struct Side<T: Element, const PROD: bool> {
    core: RingCore<T>,
    /// The side is multi-role (CAS on the shared head); else the head is `shadow`.
    multi: bool,
    /// Single-role side: this handle's private head (= its tail after each call).
    shadow: u32,
    /// Last seen tail of the other side.
    other_tail: u32,
    /// A won reservation `(old, n)` whose tail publication waits for an earlier peer.
    pending: Option<(u32, u32)>,
}

impl<T: Element, const PROD: bool> Side<T, PROD> {
    fn new(core: RingCore<T>, multi: bool) -> Self {
        let (own, other) = Self::sides(&core);
        // Single-role side: start from what this side published last (a guest may have
        // rewritten it; the distance checks below bound the damage to its own ring).
        // A1/A2-style Acquire: what the previous holder published or released.
        let shadow = own.tail.load(Ordering::Acquire);
        // A2 (producers: pairs with R2) / A1 (consumers: pairs with R1).
        let other_tail = other.tail.load(Ordering::Acquire);
        Side {
            core,
            multi,
            shadow,
            other_tail,
            pending: None,
        }
    }

    #[inline(always)]
    fn sides(core: &RingCore<T>) -> (&HeadTail, &HeadTail) {
        if PROD {
            (core.prod(), core.cons())
        } else {
            (core.cons(), core.prod())
        }
    }

    /// The whole operation: settle a pending publication, reserve, copy, publish.
    /// `copy(start, take)` moves the elements of `[start, start + take)`.
    #[inline]
    fn run(
        &mut self,
        n: u32,
        fixed: bool,
        copy: impl FnOnce(&RingCore<T>, u32, u32),
    ) -> Result<u32, RingError> {
        if self.pending.is_some() && !self.complete()? {
            return Err(RingError::Busy);
        }
        let n = n.min(self.core.capacity);
        if n == 0 {
            return Ok(0);
        }
        let (old, take) = if self.multi {
            self.reserve_multi(n, fixed)?
        } else {
            self.reserve_single(n, fixed)?
        };
        if take == 0 {
            return Ok(0);
        }
        copy(&self.core, old, take);
        let new = old.wrapping_add(take);
        let (own, _) = Self::sides(&self.core);
        if self.multi {
            if !self.publish_after_peers(old, take, UNTRUSTED_PUBLISH_SPINS)? {
                self.pending = Some((old, take));
            }
        } else {
            own.head.store(new, Ordering::Relaxed);
            // R1 (producers: publishes the slots written, pairs with A1 in consumers) /
            // R2 (consumers: the slots read are free again, pairs with A2 in producers).
            own.tail.store(new, Ordering::Release);
            self.shadow = new;
        }
        Ok(take)
    }

    /// How many of `n` a side whose head is `head` may move against `other_tail`, or
    /// `None` when the distance is impossible.
    #[inline(always)]
    fn have(&self, head: u32, other_tail: u32) -> Option<u32> {
        let have = self.core.available::<PROD>(head, other_tail);
        (have <= self.core.capacity).then_some(have)
    }

    #[inline(always)]
    fn take(have: u32, n: u32, fixed: bool) -> u32 {
        if fixed && have < n {
            0
        } else {
            n.min(have)
        }
    }

    /// Single-role side: the head is private, so an impossible distance after a fresh
    /// read of the other tail is corruption.
    fn reserve_single(&mut self, n: u32, fixed: bool) -> Result<(u32, u32), RingError> {
        let head = self.shadow;
        let have = match self.have(head, self.other_tail) {
            Some(h) if h >= n => h,
            _ => {
                let (_, other) = Self::sides(&self.core);
                // A2 (producers: pairs with R2) / A1 (consumers: pairs with R1).
                let t = other.tail.load(Ordering::Acquire);
                self.other_tail = t;
                self.have(head, t)
                    .ok_or_else(|| self.corrupt(head, head, t))?
            }
        };
        Ok((head, Self::take(have, n, fixed)))
    }

    /// Multi-role side: at most [`UNTRUSTED_CAS_TRIES`] CAS attempts on the shared head.
    fn reserve_multi(&mut self, n: u32, fixed: bool) -> Result<(u32, u32), RingError> {
        let (own, other) = Self::sides(&self.core);
        // A3: Acquire so that the other tail, loaded after it, is not older than the one
        // that justified this head (pairs with R3).
        let mut old = own.head.load(Ordering::Acquire);
        for _ in 0..UNTRUSTED_CAS_TRIES {
            let have = match self.have(old, self.other_tail) {
                Some(h) if h >= n => h,
                _ => {
                    // A2 (producers: pairs with R2) / A1 (consumers: pairs with R1).
                    let t = other.tail.load(Ordering::Acquire);
                    self.other_tail = t;
                    match self.have(old, t) {
                        Some(h) => h,
                        None => {
                            // A stale head (a peer moved it: another attempt) or
                            // impossible indices.
                            // A3 (as above).
                            let again = own.head.load(Ordering::Acquire);
                            if again == old {
                                return Err(self.corrupt(old, old, t));
                            }
                            old = again;
                            continue;
                        }
                    }
                }
            };
            let take = Self::take(have, n, fixed);
            if take == 0 {
                return Ok((old, 0));
            }
            #[cfg(all(test, not(loom)))]
            tests::before_cas(own);
            // R3: Release, so a peer loading this head with Acquire (A3) also sees the
            // other tail that justified the move (see core.rs).
            match own.head.compare_exchange(
                old,
                old.wrapping_add(take),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((old, take)),
                Err(cur) => old = cur,
            }
        }
        Err(RingError::Busy)
    }

    /// Publishes `[old, old + n)` once the side's tail reached `old`, re-reading it at
    /// most `spins` more times; `Ok(false)` when an earlier peer has still not published.
    fn publish_after_peers(&self, old: u32, n: u32, spins: u32) -> Result<bool, RingError> {
        let (own, _) = Self::sides(&self.core);
        for i in 0..=spins {
            // A4: Acquire, so our Release below also carries the earlier peers' slot
            // accesses (pairs with R1/R2 of those peers).
            let tail = own.tail.load(Ordering::Acquire);
            if tail == old {
                // R1 (producers) / R2 (consumers), as in `run`.
                own.tail.store(old.wrapping_add(n), Ordering::Release);
                return Ok(true);
            }
            // Earlier reservations are at most the capacity behind ours.
            if old.wrapping_sub(tail) > self.core.capacity {
                return Err(self.corrupt(old, tail, self.other_tail));
            }
            if i < spins {
                spin();
            }
        }
        Ok(false)
    }

    /// Tries (one load) to publish the pending reservation; `Ok(true)` when none is left.
    fn complete(&mut self) -> Result<bool, RingError> {
        let Some((old, n)) = self.pending else {
            return Ok(true);
        };
        let done = self.publish_after_peers(old, n, 0)?;
        if done {
            self.pending = None;
        }
        Ok(done)
    }

    /// The error for an impossible state, from the indices as seen (`own_head`,
    /// `own_tail` of this side, `other_tail`): nothing is re-read, and the guest-writable
    /// ctrl block is left alone. The other side's head is not read (reported as its tail).
    #[cold]
    fn corrupt(&self, own_head: u32, own_tail: u32, other_tail: u32) -> RingError {
        if PROD {
            RingError::Corrupt {
                prod_head: own_head,
                prod_tail: own_tail,
                cons_head: other_tail,
                cons_tail: other_tail,
            }
        } else {
            RingError::Corrupt {
                prod_head: other_tail,
                prod_tail: other_tail,
                cons_head: own_head,
                cons_tail: own_tail,
            }
        }
    }
}

impl<T: Element, const PROD: bool> Drop for Side<T, PROD> {
    fn drop(&mut self) {
        // One last look; if an earlier peer still has not published, the reservation is
        // abandoned: the guest's ring stays behind by it (its own loss).
        let _ = self.complete();
    }
}

/// Host producer of a ring in guest-writable memory; works on SP and MP rings. Every
/// operation is bounded (see the module docs). On an SP ring the caller must make this the
/// only producer (the shared role word is not claimed).
pub struct UntrustedProducer<T: Element> {
    side: Side<T, true>,
}

impl<T: Element> std::fmt::Debug for UntrustedProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntrustedProducer")
            .field("multi", &self.side.multi)
            .field("pending", &self.side.pending)
            .finish_non_exhaustive()
    }
}

impl<T: Element> UntrustedProducer<T> {
    pub(crate) fn new(core: RingCore<T>, multi: bool) -> Self {
        UntrustedProducer {
            side: Side::new(core, multi),
        }
    }

    fn enqueue_n(&mut self, items: &[T], fixed: bool) -> Result<usize, RingError> {
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        if fixed && n > self.side.core.capacity {
            return Ok(0);
        }
        let take = self.side.run(n, fixed, |core, start, take| {
            for (i, v) in items[..take as usize].iter().enumerate() {
                // SAFETY: `slot_ptr` masks the index into the slot array (in bounds and
                // aligned, checked at open); a volatile store of a plain `Copy` element,
                // so a guest touching the slot at the same time gets some bytes, never
                // a Rust reference.
                unsafe {
                    core.slot_ptr(start.wrapping_add(i as u32))
                        .write_volatile(*v)
                };
            }
        })?;
        Ok(take as usize)
    }

    /// Untrusted single or multi producer; bounded. Enqueues all of `items` or none;
    /// returns `items.len()` or 0.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] (impossible indices), [`RingError::Busy`] (budget spent or
    /// an earlier publication still pending): nothing was enqueued.
    #[inline]
    pub fn enqueue_bulk(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, true)
    }

    /// Untrusted single or multi producer; bounded. Enqueues as many of `items` as fit, in
    /// order; returns how many.
    ///
    /// # Errors
    /// As [`UntrustedProducer::enqueue_bulk`].
    #[inline]
    pub fn enqueue_burst(&mut self, items: &[T]) -> Result<usize, RingError> {
        self.enqueue_n(items, false)
    }

    /// Untrusted single or multi producer; bounded. Enqueues one element, handing it back
    /// if the ring is full.
    ///
    /// # Errors
    /// [`RingFull::Full`] with the element, or [`RingFull::Ring`] with the error.
    pub fn enqueue(&mut self, item: T) -> Result<(), RingFull<T>> {
        match self.enqueue_n(std::slice::from_ref(&item), true) {
            Ok(1) => Ok(()),
            Ok(_) => Err(RingFull::Full(item)),
            Err(e) => Err(RingFull::Ring(e)),
        }
    }

    /// Publishes a reservation left pending by an earlier call, with one load; `Ok(true)`
    /// when nothing is pending any more. Call it when idle.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the side's tail is impossible.
    pub fn complete(&mut self) -> Result<bool, RingError> {
        self.side.complete()
    }

    /// Elements written but not yet published (0 unless an earlier peer is slow).
    pub fn pending(&self) -> usize {
        self.side.pending.map_or(0, |(_, n)| n as usize)
    }

    /// Most elements the ring holds.
    pub fn capacity(&self) -> usize {
        self.side.core.capacity as usize
    }
}

/// Host consumer of a ring in guest-writable memory; works on SC and MC rings. Every
/// operation is bounded (see the module docs). On an SC ring the caller must make this the
/// only consumer (the shared role word is not claimed).
pub struct UntrustedConsumer<T: Element> {
    side: Side<T, false>,
}

impl<T: Element> std::fmt::Debug for UntrustedConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntrustedConsumer")
            .field("multi", &self.side.multi)
            .field("pending", &self.side.pending)
            .finish_non_exhaustive()
    }
}

impl<T: Element> UntrustedConsumer<T> {
    pub(crate) fn new(core: RingCore<T>, multi: bool) -> Self {
        UntrustedConsumer {
            side: Side::new(core, multi),
        }
    }

    fn dequeue_n(&mut self, out: &mut [T], fixed: bool) -> Result<usize, RingError> {
        let n = u32::try_from(out.len()).unwrap_or(u32::MAX);
        if fixed && n > self.side.core.capacity {
            return Ok(0);
        }
        let take = self.side.run(n, fixed, |core, start, take| {
            for (i, v) in out[..take as usize].iter_mut().enumerate() {
                // SAFETY: `slot_ptr` masks the index into the slot array (in bounds and
                // aligned, checked at open); a volatile load of a plain element of which
                // any bit pattern is valid, copied once: the caller validates the copy.
                *v = unsafe { core.slot_ptr(start.wrapping_add(i as u32)).read_volatile() };
            }
        })?;
        Ok(take as usize)
    }

    /// Untrusted single or multi consumer; bounded. Dequeues exactly `out.len()` elements
    /// or none; returns the count. The elements are copies the caller must validate.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] (impossible indices), [`RingError::Busy`] (budget spent or
    /// an earlier publication still pending): nothing was dequeued.
    #[inline]
    pub fn dequeue_bulk(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, true)
    }

    /// Untrusted single or multi consumer; bounded. Dequeues up to `out.len()` elements;
    /// returns how many.
    ///
    /// # Errors
    /// As [`UntrustedConsumer::dequeue_bulk`].
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, false)
    }

    /// Untrusted single or multi consumer; bounded. Dequeues one element, `Ok(None)` when
    /// empty.
    ///
    /// # Errors
    /// As [`UntrustedConsumer::dequeue_bulk`].
    pub fn dequeue(&mut self) -> Result<Option<T>, RingError> {
        let mut v = [T::new_zeroed()];
        Ok((self.dequeue_n(&mut v, true)? == 1).then_some(v[0]))
    }

    /// As [`UntrustedProducer::complete`], for the release of dequeued slots.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the side's tail is impossible.
    pub fn complete(&mut self) -> Result<bool, RingError> {
        self.side.complete()
    }

    /// Elements dequeued whose slots are not yet released to the producers.
    pub fn pending(&self) -> usize {
        self.side.pending.map_or(0, |(_, n)| n as usize)
    }

    /// Most elements the ring holds.
    pub fn capacity(&self) -> usize {
        self.side.core.capacity as usize
    }
}

#[cfg(all(test, not(loom)))]
#[path = "untrusted_tests.rs"]
mod tests;
