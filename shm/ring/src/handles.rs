//! Role-typed handles: [`SpProducer`]/[`MpProducer`] and [`ScConsumer`]/[`McConsumer`].
//!
//! A ring is created single- or multi- on each side, and only the matching handle can be
//! made. Single-role handles are not `Clone` and claim the role in shared memory (the
//! side's `owner` word holds the claimant's pid), so a second process or a second handle in
//! the same process is refused while the first lives; a dead claimant's role can be taken
//! over. Multi-role handles are `Clone`: give each thread its own clone.

use std::time::Duration;

use crate::core::{Behaviour, RingCore, STALL_TIMEOUT};
use crate::sync::Ordering;
use crate::{Element, RingError};

/// Clamps a slice length to what one operation can move.
#[inline(always)]
fn want(len: usize, capacity: u32) -> u32 {
    len.min(capacity as usize) as u32
}

/// Role claim in the ring's `owner` word, released on drop.
struct Claim<T: Element> {
    core: RingCore<T>,
    producer: bool,
    token: u32,
}

impl<T: Element> Claim<T> {
    fn take(core: &RingCore<T>, producer: bool) -> Result<Claim<T>, RingError> {
        let me = std::process::id();
        let word = core.owner(producer);
        // Relaxed suffices for the claim: what the new owner must see of the ring (the
        // published tail) is read with Acquire when the handle is made.
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            if cur != 0 && (cur == me || pid_alive(cur)) {
                return Err(RingError::RoleTaken { producer, pid: cur });
            }
            match word.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    return Ok(Claim {
                        core: core.clone(),
                        producer,
                        token: me,
                    })
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl<T: Element> Drop for Claim<T> {
    fn drop(&mut self) {
        let _ = self.core.owner(self.producer).compare_exchange(
            self.token,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

fn pid_alive(pid: u32) -> bool {
    #[cfg(loom)]
    {
        let _ = pid;
        true
    }
    #[cfg(not(loom))]
    {
        use nix::errno::Errno;
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
            Err(Errno::ESRCH)
        )
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
pub struct MpProducer<T: Element> {
    core: RingCore<T>,
    cons_tail: u32,
    stall_timeout: Duration,
}

impl<T: Element> Clone for MpProducer<T> {
    fn clone(&self) -> Self {
        MpProducer {
            core: self.core.clone(),
            cons_tail: self.cons_tail,
            stall_timeout: self.stall_timeout,
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
        MpProducer {
            core,
            cons_tail,
            stall_timeout: STALL_TIMEOUT,
        }
    }

    /// How long to wait for an earlier producer to publish before declaring the ring
    /// stalled (default [`STALL_TIMEOUT`]).
    pub fn set_stall_timeout(&mut self, limit: Duration) {
        self.stall_timeout = limit;
    }

    #[inline(always)]
    fn enqueue_n(&mut self, items: &[T], how: Behaviour) -> Result<usize, RingError> {
        let n = want(items.len(), self.core.capacity);
        if how == Behaviour::Fixed && n as usize != items.len() {
            return Ok(0);
        }
        let (old, take) = self
            .core
            .multi_reserve::<true>(n, how, &mut self.cons_tail)?;
        if take == 0 {
            return Ok(0);
        }
        // SAFETY: the CAS in `multi_reserve` gave this producer `[old, old + take)`, which
        // the consumers had released (A2).
        unsafe { self.core.write_slots(old, &items[..take as usize]) };
        self.core
            .publish_after_peers(self.core.prod(), old, take, self.stall_timeout)?;
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
    pub(crate) fn new(core: RingCore<T>) -> Result<Self, RingError> {
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

    /// Single consumer. Dequeues exactly `out.len()` elements or none; returns the count.
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
        if self.avail(1)? == 0 {
            return Ok(None);
        }
        // SAFETY: the slot at `head` was published (A1 in `avail`) and is ours until we
        // release it.
        let v = unsafe { self.core.slot_ptr(self.head).read() };
        self.release(1);
        Ok(Some(v))
    }

    /// Single consumer. Zero-copy: looks at up to `n` available elements in place; release
    /// them with [`ReadSlots::release`] (dropping the view releases nothing).
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
pub struct McConsumer<T: Element> {
    core: RingCore<T>,
    prod_tail: u32,
    stall_timeout: Duration,
}

impl<T: Element> Clone for McConsumer<T> {
    fn clone(&self) -> Self {
        McConsumer {
            core: self.core.clone(),
            prod_tail: self.prod_tail,
            stall_timeout: self.stall_timeout,
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
        McConsumer {
            core,
            prod_tail,
            stall_timeout: STALL_TIMEOUT,
        }
    }

    /// How long to wait for an earlier consumer to release before declaring the ring
    /// stalled (default [`STALL_TIMEOUT`]).
    pub fn set_stall_timeout(&mut self, limit: Duration) {
        self.stall_timeout = limit;
    }

    #[inline(always)]
    fn dequeue_n(&mut self, out: &mut [T], how: Behaviour) -> Result<usize, RingError> {
        let n = want(out.len(), self.core.capacity);
        if how == Behaviour::Fixed && n as usize != out.len() {
            return Ok(0);
        }
        let (old, take) = self
            .core
            .multi_reserve::<false>(n, how, &mut self.prod_tail)?;
        if take == 0 {
            return Ok(0);
        }
        // SAFETY: the CAS in `multi_reserve` gave this consumer `[old, old + take)`, which
        // the producers had published (A1).
        unsafe { self.core.read_slots(old, &mut out[..take as usize]) };
        self.core
            .publish_after_peers(self.core.cons(), old, take, self.stall_timeout)?;
        Ok(take as usize)
    }

    /// Multi-consumer safe. Dequeues exactly `out.len()` elements or none.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], [`RingError::Stalled`].
    #[inline]
    pub fn dequeue_bulk(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Fixed)
    }

    /// Multi-consumer safe. Dequeues up to `out.len()` elements; returns how many.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], [`RingError::Stalled`].
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.dequeue_n(out, Behaviour::Variable)
    }

    /// Multi-consumer safe. Dequeues one element, `Ok(None)` when empty.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], [`RingError::Stalled`].
    #[inline]
    pub fn dequeue(&mut self) -> Result<Option<T>, RingError> {
        let mut v = [T::new_zeroed()];
        Ok((self.dequeue_n(&mut v, Behaviour::Fixed)? == 1).then_some(v[0]))
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
