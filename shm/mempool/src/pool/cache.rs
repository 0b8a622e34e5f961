//! The per-thread handle on a pool, [`PoolCache`]: get and put by index through a cache
//! in shared memory (DPDK's per-lcore cache), with the fast paths inline and the refill,
//! flush and bypass paths out of line; each free-ring operation is recorded in the slot
//! header first, so a process killed inside one can be recovered (`recovery.rs`).
//!
//! Where it sits: in [`crate::pool`]; made by [`Mempool::cache`] and
//! [`Mempool::uncached`] (`mempool.rs`); `crate::mbuf`'s allocator wraps one, and uses
//! the crash-exact `peek_top`/`take_top` steps.

use std::sync::atomic::{AtomicU32, Ordering};

use shm_ring::{McConsumer, MpProducer};

use super::{Mempool, Trouble};
use crate::layout::*;
use crate::PoolError;

/// How long a flush keeps offering objects to a free ring that refuses them before it
/// drops them (counted): the ring is short of room only while a stopped consumer holds its
/// tail, which a waiting refill voids after shm-ring's `VOID_AFTER` (100 ms) plus the
/// hand-overs before it; a ring still full after this was filled by double frees.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Copies object indices and reports whether any is out of range (`>= limit`), in one
/// pass: eight at a time as fixed-size arrays (plain vector moves and compares, no
/// `memcpy` call), then the rest one by one. (A lane-accumulator form of the check that
/// vectorizes on baseline x86-64 was tried: it made `get_bulk` too large to inline and
/// the one-object figures fell from 237 to 153 Mobj/s, so this form stays.)
#[inline(always)]
fn copy_checked(dst: &mut [u32], src: &[u32], limit: u32) -> bool {
    let mut bad = false;
    let (d8, d1) = dst.as_chunks_mut::<8>();
    let (s8, s1) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
        bad |= s.iter().fold(false, |b, &i| b | (i >= limit));
    }
    for (d, s) in d1.iter_mut().zip(s1) {
        *d = *s;
        bad |= *s >= limit;
    }
    bad
}

/// True when any of `objs` is `>= limit` (as [`copy_checked`], without the copy).
#[inline(always)]
fn any_out_of_range(objs: &[u32], limit: u32) -> bool {
    objs.iter()
        .fold(0u32, |acc, &i| acc | out_of_range_bits(i, limit))
        >> 31
        != 0
}

/// A word whose top bit is set when `i >= limit`, for `1 <= limit <= 2^31` (object counts
/// are below 2^31): `limit - 1 - i` goes negative for `limit <= i < limit + 2^31`, and `i`
/// itself has the top bit from 2^31 on. (For `limit == 0` every `i` sets it.)
#[inline(always)]
fn out_of_range_bits(i: u32, limit: u32) -> u32 {
    limit.wrapping_sub(1).wrapping_sub(i) | i
}

/// Enqueues `top` (the top of a cache's stack) topmost first, as many as the ring takes;
/// returns how many (the topmost ones): what it refuses is the bottom of `top`.
#[cold]
#[inline(never)]
pub(super) fn push_reversed(producer: &mut MpProducer<u32>, top: &[u32]) -> u32 {
    let mut rev = [std::mem::MaybeUninit::<u32>::uninit(); CACHE_OBJS as usize];
    let rev = &mut rev[..top.len()];
    for (d, &o) in rev.iter_mut().zip(top.iter().rev()) {
        d.write(o);
    }
    // SAFETY: every one of the `top.len()` elements was written just above.
    let rev = unsafe { std::slice::from_raw_parts(rev.as_ptr().cast::<u32>(), top.len()) };
    producer.enqueue_burst(rev).unwrap_or(0) as u32
}

/// A per-thread handle on a pool: get and put objects by index, through this thread's cache
/// (when the pool has caches) or straight from the free ring. Dropping it flushes the cache
/// and frees its slot.
pub struct PoolCache {
    pub(super) pool: Mempool,
    pub(super) producer: MpProducer<u32>,
    pub(super) consumer: McConsumer<u32>,
    pub(super) slot: Option<u32>,
    /// The slot's index array (null without a slot).
    pub(super) objs: *mut u32,
    /// Authoritative length (the shared copy is written after each change).
    pub(super) len: u32,
    /// The slot's shared `len` word, or `_spare_len` without a slot.
    pub(super) shared_len: *const AtomicU32,
    /// Where a handle without a slot writes its (always zero) length, so the store in the
    /// fast path needs no branch.
    pub(super) _spare_len: Box<AtomicU32>,
    pub(super) size: u32,
    pub(super) flush_threshold: u32,
    pub(super) n: u32,
    /// When the free ring last refused part of a flush (it is full only while a stopped
    /// consumer holds its tail, see `push_top`): a later flush that finds it still full
    /// waits at most [`FLUSH_WAIT`] from then before dropping what does not fit.
    pub(super) refused_since: Option<std::time::Instant>,
}

// SAFETY: `objs` points into the pool's region, kept mapped by `pool`; the slot belongs to
// this handle (claimed in shared memory), not to a thread, so the handle may move.
unsafe impl Send for PoolCache {}

impl std::fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCache")
            .field("pool", &self.pool.name())
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish()
    }
}

impl PoolCache {
    /// The pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The claimed cache slot, if any.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// Objects in this handle's cache.
    pub fn cached(&self) -> u32 {
        self.len
    }

    /// Writes the cache length where a reclaimer finds it.
    #[inline(always)]
    fn publish_len(&self) {
        // SAFETY: `shared_len` points at the claimed slot's `len` atomic, inside the pool's
        // region which `self.pool` keeps mapped, or at `_spare_len`, owned by `self`.
        let len = unsafe { &*self.shared_len };
        // Relaxed: only a reclaimer reads it, after this process is dead.
        len.store(self.len, Ordering::Relaxed);
    }

    /// Gets `out.len()` objects, all or none (DPDK's `rte_mempool_get_bulk`).
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] (counted) when fewer are free; `out` is then unspecified.
    #[inline]
    pub fn get_bulk(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        let n = out.len() as u32;
        // Fast path: the cache has them. (Handles without a cache have size 0.)
        if n <= self.len && n < self.size {
            self.len -= n;
            // SAFETY: `len - n .. len` with `len <= CACHE_OBJS`: inside this slot's index
            // array, which this handle owns.
            let cached = unsafe {
                std::slice::from_raw_parts(self.objs.wrapping_add(self.len as usize), n as usize)
            };
            let bad = copy_checked(out, cached, self.n);
            self.publish_len();
            if bad {
                return self.reject_bad_get(out);
            }
            return Ok(());
        }
        if self.size == 0 {
            return self.get_uncached(out);
        }
        self.get_slow(out)
    }

    /// [`PoolCache::get_bulk`] without a cache: straight from the ring (kept out of line
    /// so the cached fast path stays small enough to inline well).
    #[inline(never)]
    fn get_uncached(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        self.get_from_ring(out)
    }

    /// Refill (or bypass) path of [`PoolCache::get_bulk`].
    #[inline(never)]
    fn get_slow(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        let n = out.len() as u32;
        if n >= self.size {
            return self.get_from_ring(out);
        }
        // Refill (recorded): what is asked plus enough to bring the cache back to its size.
        if !self.refill(n) {
            return self.get_from_ring(out);
        }
        self.get_bulk(out)
    }

    #[inline(always)]
    fn get_from_ring(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        match self.consumer.dequeue_bulk(out) {
            Ok(k) if k == out.len() => {
                let limit = self.n;
                if any_out_of_range(out, limit) {
                    return self.reject_bad_get(out);
                }
                Ok(())
            }
            Ok(k) if k > 0 => {
                // Fewer than asked (the ring skipped holes): all or none, so they go back.
                let back: Vec<u32> = out[..k].to_vec();
                self.put_to_ring(&back);
                self.get_failed(out.len())
            }
            Ok(_) | Err(_) => self.get_failed(out.len()),
        }
    }

    #[cold]
    fn get_failed(&self, wanted: usize) -> Result<(), PoolError> {
        self.pool
            .shared
            .counters()
            .get_fail
            .fetch_add(1, Ordering::Relaxed);
        Err(PoolError::Exhausted {
            pool: self.pool.name().to_string(),
            wanted,
        })
    }

    /// Free-list entries come from shared memory: an out-of-range one is dropped (counted)
    /// and the whole get fails rather than hand out a bad index.
    #[cold]
    fn reject_bad_get(&mut self, got: &mut [u32]) -> Result<(), PoolError> {
        let n = self.n;
        let bad = got.iter().filter(|&&i| i >= n).count();
        self.pool.shared.trouble(
            Trouble::BadHandle,
            bad as u64,
            "free list held out-of-range object indices",
        );
        let good: Vec<u32> = got.iter().copied().filter(|&i| i < n).collect();
        self.put_bulk(&good);
        Err(PoolError::Exhausted {
            pool: self.pool.name().to_string(),
            wanted: got.len(),
        })
    }

    /// Gets one object.
    #[inline]
    pub fn get(&mut self) -> Option<u32> {
        // Fast path, as `get_bulk`'s for one object: the cache has it.
        if self.len > 0 && self.size > 1 {
            // SAFETY: `len - 1 < len <= CACHE_OBJS`: inside this slot's index array, which
            // this handle owns.
            let obj = unsafe { self.objs.wrapping_add(self.len as usize - 1).read() };
            if obj < self.n {
                self.len -= 1;
                self.publish_len();
                return Some(obj);
            }
        }
        let mut one = [0u32];
        self.get_bulk(&mut one).ok().map(|()| one[0])
    }

    /// Returns objects to the pool (DPDK's `rte_mempool_put_bulk`). Indices out of range
    /// are dropped and counted; returns how many went back.
    #[inline]
    pub fn put_bulk(&mut self, objs: &[u32]) -> usize {
        let n = objs.len() as u32;
        // Fast path: room in the cache below the flush threshold (0 without a cache).
        if self.len + n <= self.flush_threshold {
            // SAFETY: `len + n <= flush_threshold <= 768 < CACHE_OBJS`: inside the owned
            // index array.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    self.objs.wrapping_add(self.len as usize),
                    n as usize,
                )
            };
            // Copied first, committed (len) only if every index is valid.
            if !copy_checked(dst, objs, self.n) {
                self.len += n;
                self.publish_len();
                return objs.len();
            }
        }
        if self.flush_threshold == 0 {
            return self.put_uncached(objs);
        }
        self.put_slow(objs)
    }

    /// [`PoolCache::put_bulk`] without a cache: straight to the ring (out of line, as
    /// `get_uncached`).
    #[inline(never)]
    fn put_uncached(&mut self, objs: &[u32]) -> usize {
        let nobj = self.n;
        if any_out_of_range(objs, nobj) {
            return self.put_filtered(objs);
        }
        self.put_to_ring(objs)
    }

    /// Flush (or bypass) path of [`PoolCache::put_bulk`], and where bad indices are weeded.
    #[inline(never)]
    fn put_slow(&mut self, objs: &[u32]) -> usize {
        let nobj = self.n;
        if any_out_of_range(objs, nobj) {
            return self.put_filtered(objs);
        }
        let n = objs.len() as u32;
        if self.slot.is_none() || n > CACHE_MAX_SIZE {
            return self.put_to_ring(objs);
        }
        // Over the threshold: flush the whole cache (what the ring refuses stays at the
        // bottom), then put these on top.
        self.push_top(self.len);
        while self.len + n > CACHE_OBJS {
            if !self.wait_for_ring() {
                // The ring stayed full (objects freed twice filled it): these are lost.
                self.put_failed(objs.len());
                return 0;
            }
            self.push_top(self.len);
        }
        // SAFETY: `len + n <= CACHE_OBJS`: inside the owned array.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(self.objs.wrapping_add(self.len as usize), n as usize)
        };
        dst.copy_from_slice(objs);
        self.len += n;
        self.publish_len();
        objs.len()
    }

    /// Sends the top `m` (`<= len`) objects of the cache to the free ring, topmost first,
    /// recorded (`begin_op`), and lowers the length by what the ring took; returns that.
    /// The ring takes a prefix of what it is given, so what it refuses is the bottom of
    /// those `m`, which stays where it is: no object is dropped and none is sent twice. A
    /// recovery after a kill computes the length the same way: the recorded start length
    /// less what the ring's record says the operation enqueued. (The ring is short of room
    /// only while a consumer stopped inside a dequeue holds its tail: a refill behind it
    /// adopts that range after `VOID_AFTER`, see `refill`.)
    #[inline(never)]
    fn push_top(&mut self, m: u32) -> u32 {
        if m == 0 {
            return 0;
        }
        // SAFETY: `m <= len <= CACHE_OBJS` indices in the owned array, which stays ours
        // (and unchanged) while the ring copies them.
        let top = unsafe {
            std::slice::from_raw_parts(self.objs.wrapping_add((self.len - m) as usize), m as usize)
        };
        let (rec, seq) = (self.producer.record(), self.producer.next_op_seq());
        self.begin_op(CACHE_OP_FLUSH, rec, seq);
        // Nearly always the ring has room for all: then the order does not matter. A
        // refused all-or-none enqueue moves nothing and keeps the sequence number, so the
        // recorded operation is the partial one that follows.
        let mut pushed = self.producer.enqueue_bulk(top).unwrap_or(0) as u32;
        if pushed == 0 {
            pushed = push_reversed(&mut self.producer, top);
        }
        crate::crash_point!("cache.flush_after_enqueue");
        self.len -= pushed;
        self.publish_len();
        self.end_op();
        if pushed < m {
            self.refused_since
                .get_or_insert_with(std::time::Instant::now);
        } else {
            self.refused_since = None;
        }
        pushed
    }

    /// The free ring refused part of a flush and the cache array has no room for more:
    /// waits a little for it to take objects again (a voided stopped consumer, see
    /// `push_top`); false once it has refused for [`FLUSH_WAIT`].
    #[cold]
    fn wait_for_ring(&mut self) -> bool {
        let since = *self
            .refused_since
            .get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > FLUSH_WAIT {
            return false;
        }
        std::thread::yield_now();
        true
    }

    #[inline(always)]
    fn put_to_ring(&mut self, objs: &[u32]) -> usize {
        let pushed = self.producer.enqueue_burst(objs).unwrap_or(0);
        if pushed < objs.len() {
            self.put_failed(objs.len() - pushed);
        }
        pushed
    }

    #[cold]
    fn put_failed(&self, lost: usize) {
        self.pool.shared.trouble(
            Trouble::PutFail,
            lost as u64,
            "free ring full on put (an object was freed twice?)",
        );
    }

    #[cold]
    fn put_filtered(&mut self, objs: &[u32]) -> usize {
        let n = self.n;
        let good: Vec<u32> = objs.iter().copied().filter(|&i| i < n).collect();
        self.pool.shared.trouble(
            Trouble::BadHandle,
            (objs.len() - good.len()) as u64,
            "put of out-of-range object indices",
        );
        self.put_bulk(&good)
    }

    /// Crash-exact allocation, step 1: makes sure the cache holds at least one object
    /// (refilling it from the free ring) and returns the top one, still in the cache: the
    /// caller records its new owner (the mbuf header's tag) and then takes it with
    /// [`take_top`](Self::take_top). A process killed in between leaves the object in its
    /// cache, whose recovery frees it whatever its tag says. `None`: the pool is empty (or
    /// this handle has no cache; use [`get`](Self::get) then).
    #[inline]
    pub(crate) fn peek_top(&mut self) -> Option<u32> {
        if self.len == 0 && (self.size <= 1 || !self.refill(1)) {
            return None;
        }
        // SAFETY: `0 < len <= CACHE_OBJS`: inside this slot's index array, owned here.
        let obj = unsafe { self.objs.wrapping_add(self.len as usize - 1).read() };
        if obj < self.n {
            return Some(obj);
        }
        // A bad index in our own cache: dropped (counted), try the next.
        self.len -= 1;
        self.publish_len();
        self.pool
            .shared
            .trouble(Trouble::BadHandle, 1, "a cache held an out-of-range index");
        self.peek_top()
    }

    /// Crash-exact bulk allocation, step 1 (as [`peek_top`](Self::peek_top) for up to
    /// `out.len()` objects, at most the cache's size): refills the cache if it holds fewer
    /// and copies its top objects, still in the cache, into `out`, topmost last; returns
    /// how many (0: the pool is empty). The caller tags them and then takes them with
    /// [`take_top_n`](Self::take_top_n). `None`: this handle has no cache.
    #[inline]
    pub(crate) fn peek_top_bulk(&mut self, out: &mut [u32]) -> Option<usize> {
        if self.size <= 1 {
            return None;
        }
        let want = (out.len() as u32).min(self.size);
        if self.len < want && !self.refill(want) {
            // Fewer free than asked: whatever the cache holds (the caller fails all or
            // none, and its drops put them back).
            if self.len == 0 {
                return Some(0);
            }
        }
        let k = want.min(self.len);
        // SAFETY: `k <= len <= CACHE_OBJS`: the top `k` positions of this slot's index
        // array, which this handle owns.
        let top = unsafe {
            std::slice::from_raw_parts(self.objs.wrapping_add((self.len - k) as usize), k as usize)
        };
        if copy_checked(&mut out[..k as usize], top, self.n) {
            // A bad index in our own cache: the one-at-a-time path weeds it (counted).
            return Some(usize::from(self.peek_top().is_some_and(|i| {
                out[0] = i;
                true
            })));
        }
        Some(k as usize)
    }

    /// Crash-exact bulk allocation, step 2: takes the `k` objects
    /// [`peek_top_bulk`](Self::peek_top_bulk) returned out of the cache.
    #[inline(always)]
    pub(crate) fn take_top_n(&mut self, k: u32) {
        self.len -= k;
        self.publish_len();
    }

    /// Crash-exact allocation, step 2: takes the object [`peek_top`](Self::peek_top)
    /// returned out of the cache.
    #[inline(always)]
    pub(crate) fn take_top(&mut self) {
        self.len -= 1;
        self.publish_len();
    }

    /// Refills the cache so that it holds at least `k` (`k <= size`) objects; false when
    /// the free ring has too few.
    ///
    /// It asks for what brings the cache to its size (to `k` if that is more), or, if the
    /// ring has fewer, to just `k`; the rest of the cache array is the dequeue's room.
    /// Asking for no more than `max(k, size) <= 512` leaves at least 512 slots of room, as
    /// much as any other refill ever reserves, so a refill waiting behind one that was
    /// stopped inside the free ring can always adopt that range (see shm-ring's records):
    /// the consumer tail moves on, and the stopped refill retries when it resumes.
    #[inline(never)]
    fn refill(&mut self, k: u32) -> bool {
        if self.len >= k {
            return true;
        }
        for req in [k.max(self.size) - self.len, k - self.len] {
            // SAFETY: `len < k <= 512`, so `[len, CACHE_OBJS)` is inside this slot's
            // array, which this handle owns.
            let room = unsafe {
                std::slice::from_raw_parts_mut(
                    self.objs.wrapping_add(self.len as usize),
                    (CACHE_OBJS - self.len) as usize,
                )
            };
            let (rec, seq) = (self.consumer.record(), self.consumer.next_op_seq());
            self.begin_op(CACHE_OP_REFILL, rec, seq);
            let got = self
                .consumer
                .dequeue_bulk_with_room(room, req as usize)
                .unwrap_or(0) as u32;
            // (Fewer than asked when the ring skipped holes, more when it adopted a
            // stopped refill's range: what came is ours all the same.)
            crate::crash_point!("cache.refill_after_dequeue");
            self.len += got;
            self.publish_len();
            self.end_op();
            if self.len >= k {
                return true;
            }
        }
        false
    }

    /// Records the free-ring operation about to start (see [`CacheSlotHeader::op`]):
    /// its kind, the ring record of the handle doing it and its sequence number, and the
    /// cache length it starts from (a refill copies above it, a flush sends from it down:
    /// see `push_top`). Nothing is
    /// recorded without a slot or when the ring had no record for the handle.
    #[inline(always)]
    fn begin_op(&self, kind: u32, rec: Option<usize>, seq: u32) {
        let (Some(slot), Some(rec)) = (self.slot, rec) else {
            return;
        };
        let from = self.len;
        let h = self.pool.shared.slot_header(slot);
        // Relaxed, then Release on `op`: a recoverer reads them after this process died
        // (its stores are all visible then); the order keeps a live reader consistent.
        h.op_seq.store(seq, Ordering::Relaxed);
        h.op_from.store(from, Ordering::Relaxed);
        h.op.store(kind | ((rec as u32 & 0xff) << 8), Ordering::Release);
    }

    /// The operation [`begin_op`](Self::begin_op) recorded is over (its effect published
    /// in the cache length).
    #[inline(always)]
    fn end_op(&self) {
        if let Some(slot) = self.slot {
            // Release: after the length that holds the operation's effect.
            self.pool
                .shared
                .slot_header(slot)
                .op
                .store(0, Ordering::Release);
        }
    }

    /// Moves the objects above the cache's size to the free ring (DPDK's flush of a cache
    /// over its threshold), without allocating; what the ring refuses stays in the cache.
    #[inline(never)]
    pub(crate) fn flush_excess(&mut self) {
        if self.len <= self.size {
            return;
        }
        self.push_top(self.len - self.size);
    }

    /// True when [`put`](Self::put) of one object goes into the cache without a flush.
    #[inline(always)]
    pub(crate) fn has_room(&self) -> bool {
        self.len < self.flush_threshold
    }

    /// True when [`put_bulk`](Self::put_bulk) of `n` objects goes into the cache without a
    /// flush (its fast path), flushing the excess first if that makes room. False without
    /// a cache, or for more than a flush leaves room for.
    #[inline(always)]
    pub(crate) fn make_room(&mut self, n: u32) -> bool {
        if self.len + n <= self.flush_threshold {
            return true;
        }
        if self.slot.is_none() {
            return false;
        }
        self.flush_excess();
        self.len + n <= self.flush_threshold
    }

    /// Returns one object.
    #[inline]
    pub fn put(&mut self, obj: u32) -> bool {
        // Fast path, as `put_bulk`'s for one object: room below the flush threshold.
        if self.len < self.flush_threshold && obj < self.n {
            // SAFETY: `len < flush_threshold <= 768 < CACHE_OBJS`: inside the owned index
            // array.
            unsafe { self.objs.wrapping_add(self.len as usize).write(obj) };
            self.len += 1;
            self.publish_len();
            return true;
        }
        self.put_bulk(&[obj]) == 1
    }

    /// Drops the handle as a killed process would: the slot stays claimed and the cache
    /// keeps its objects (tests of recovery and reclaim).
    #[cfg(test)]
    pub(crate) fn abandon(mut self) {
        self.slot = None;
        self.len = 0;
        self.size = 0;
        self.flush_threshold = 0;
        self.shared_len = &*self._spare_len;
    }

    /// Moves every cached object back to the free ring. A ring that refuses some (full
    /// while a stopped consumer holds its tail) is retried for up to [`FLUSH_WAIT`]; what
    /// it still refuses then is dropped and counted (`put_fail`).
    pub fn flush(&mut self) {
        if self.slot.is_none() {
            return;
        }
        while self.len > 0 {
            if self.push_top(self.len) == 0 && !self.wait_for_ring() {
                let lost = self.len;
                self.put_failed(lost as usize);
                self.len = 0;
                self.publish_len();
                return;
            }
        }
    }
}

impl Drop for PoolCache {
    fn drop(&mut self) {
        self.flush();
        if let Some(slot) = self.slot {
            let hdr = self.pool.shared.slot_header(slot);
            // Its Release pairs with the next claimer's Acquire CAS.
            hdr.holder.release(shm::liveness::Process::current());
        }
    }
}

#[cfg(test)]
mod range_check_tests {
    use super::{any_out_of_range, copy_checked, out_of_range_bits};

    #[test]
    fn the_signed_range_check_agrees_with_the_unsigned_compare() {
        for limit in [1u32, 2, 100, 2047, (1 << 31) - 1, 1 << 31] {
            for i in [
                0,
                limit - 1,
                limit,
                limit.wrapping_add(1),
                (1 << 31) - 1,
                1 << 31,
                (1u32 << 31).wrapping_add(limit),
                (1u32 << 31).wrapping_add(limit).wrapping_sub(1),
                u32::MAX,
            ] {
                assert_eq!(
                    out_of_range_bits(i, limit) >> 31 != 0,
                    i >= limit,
                    "{i} {limit}"
                );
            }
        }
        let src: Vec<u32> = (0..21).collect();
        let mut dst = vec![0; 21];
        assert!(!copy_checked(&mut dst, &src, 21));
        assert_eq!(dst, src);
        assert!(copy_checked(&mut dst, &src, 20));
        assert!(any_out_of_range(&src, 20) && !any_out_of_range(&src, 21));
    }
}
