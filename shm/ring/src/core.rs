//! The ring algorithms over raw shared memory: head reservation (single or multi), slot
//! copies with wrap-around, and tail publication. Handles (`handles.rs`) wrap these with
//! the right role types.
//!
//! Memory-ordering pairs (each label appears at both sites):
//! - **R1/A1**: a producer's Release store (or CAS, once its record is DONE: a waiter may
//!   publish it too) of `prod.tail` publishes the slots it wrote; a
//!   consumer's Acquire load of `prod.tail` makes them visible before it reads them.
//! - **R2/A2**: a consumer's Release store of `cons.tail` says it has finished reading
//!   slots; a producer's Acquire load of `cons.tail` orders that before it overwrites them.
//! - **R3/A3**: a multi-producer (consumer) head is moved by a CAS with Release and
//!   loaded with Acquire, so that the other side's tail, loaded after the head, is never
//!   older than the tail the head's mover saw (no false corruption on weak memory).
//! - **A4**: the wait for earlier multi-producers (consumers) to publish loads `tail` with
//!   Acquire, so our Release of the later tail carries their slot writes too (DPDK uses a
//!   relaxed load here, which the C11 model does not justify).
//!
//! Corruption: indices live in shared memory that a crashed or hostile peer may overwrite.
//! Every slot access is masked, so nothing outside the slots is ever touched. A distance
//! `head - other_tail` above the capacity is impossible in a healthy ring; when it persists
//! after re-reading our own head, the operation returns [`RingError::Corrupt`], bumps the
//! ring's corruption counter and marks it failed. A multi-producer (consumer) waiting for
//! an earlier peer to publish repairs the peer's range if its owner is gone, publishes it
//! if it is finished, voids it if its live owner left it untouched longer than
//! [`crate::VOID_AFTER`] (stopped), and hands its own finished range over after
//! [`crate::HANDOVER_AFTER`] (see `records.rs`); only
//! an unrecorded handle (record table full) gives up, with [`RingError::Stalled`] after
//! its [`STALL_TIMEOUT`].

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use shm::Region;

use crate::layout::{HeadTail, OpRecord, RingCtrl, TailLine, REC_STRIDE};
use crate::records::{
    pack_range, pack_state, Step, HANDOVER_AFTER, REPAIR_EVERY, REPAIR_FIRST, ST_BUSY, ST_DONE,
    ST_IDLE, ST_INTENT, VOID_AFTER,
};
use crate::sync::{spin, yield_now, Ordering};
use crate::{Element, RingError};

/// How long an unrecorded multi-producer (consumer) waits for an earlier one to publish,
/// unless the handle sets another limit.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a short operation takes what it can (burst) or nothing (bulk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// All `n` or none.
    Fixed,
    /// As many as possible, up to `n`.
    Variable,
}

/// Pointers into one ring plus the parameters validated when the ring was opened. The
/// parameters are never re-read from shared memory.
pub(crate) struct RingCore<T> {
    prod: NonNull<HeadTail>,
    cons: NonNull<HeadTail>,
    ctrl: NonNull<RingCtrl>,
    recs: NonNull<u8>,
    slots: NonNull<T>,
    pub(crate) mask: u32,
    pub(crate) capacity: u32,
    /// How long (ms) a range must have held the tail before a waiter may void a live
    /// owner's untouched reservation ([`VOID_AFTER`]; 0 = at once, `u32::MAX` = never:
    /// the loom models choose, as time does not pass there).
    pub(crate) void_after_ms: u32,
    region: Region,
    _elem: PhantomData<T>,
}

impl<T> Clone for RingCore<T> {
    fn clone(&self) -> Self {
        RingCore {
            region: self.region.clone(),
            ..*self
        }
    }
}

// SAFETY: the pointers target shared memory kept mapped by `region`; all shared state is
// reached through atomics, and slot contents are `T: Element` (plain bytes), so moving a
// core to another thread is as safe as moving a `Region`.
unsafe impl<T: Element> Send for RingCore<T> {}
// SAFETY: as for Send; `&RingCore` only allows atomic operations and masked slot access.
unsafe impl<T: Element> Sync for RingCore<T> {}

impl<T: Element> RingCore<T> {
    /// # Safety
    /// `prod`, `cons` and `ctrl` must point at initialised, aligned structures, `recs` at
    /// [`crate::records::SCAN`] initialised [`OpRecord`]s [`REC_STRIDE`] bytes apart,
    /// and `slots` at `mask + 1` aligned `T` slots, all inside `region`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        region: Region,
        prod: NonNull<HeadTail>,
        cons: NonNull<HeadTail>,
        ctrl: NonNull<RingCtrl>,
        recs: NonNull<u8>,
        slots: NonNull<T>,
        mask: u32,
        capacity: u32,
    ) -> Self {
        RingCore {
            prod,
            cons,
            ctrl,
            recs,
            slots,
            mask,
            capacity,
            void_after_ms: if cfg!(loom) {
                u32::MAX
            } else {
                VOID_AFTER.as_millis() as u32
            },
            region,
            _elem: PhantomData,
        }
    }

    #[inline(always)]
    pub(crate) fn prod(&self) -> &HeadTail {
        // SAFETY: `new`'s contract: initialised and aligned, kept mapped by `self.region`.
        unsafe { self.prod.as_ref() }
    }

    #[inline(always)]
    pub(crate) fn cons(&self) -> &HeadTail {
        // SAFETY: as for `prod`.
        unsafe { self.cons.as_ref() }
    }

    #[inline(always)]
    pub(crate) fn ctrl(&self) -> &RingCtrl {
        // SAFETY: as for `prod`.
        unsafe { self.ctrl.as_ref() }
    }

    /// Reservation record `i` (`i < SCAN`; callers index only below it).
    #[inline(always)]
    pub(crate) fn record(&self, i: usize) -> &OpRecord {
        debug_assert!(i < crate::records::SCAN);
        // SAFETY: `new`'s contract: SCAN records REC_STRIDE apart start at `recs`, so the
        // offset stays inside the table.
        let p = unsafe { self.recs.as_ptr().add(i * REC_STRIDE as usize) };
        // SAFETY: an initialised, aligned record kept mapped by `self.region`.
        unsafe { &*p.cast::<OpRecord>() }
    }

    /// Address of the slot for free-running index `idx` (masked: always in bounds).
    #[inline(always)]
    pub(crate) fn slot_ptr(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask < mask + 1` slots, all inside the region (`new`'s contract).
        unsafe { self.slots.as_ptr().add((idx & self.mask) as usize) }
    }

    /// Records corruption and returns the error describing it.
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupt(&self) -> RingError {
        self.ctrl().failed.store(1, Ordering::Relaxed);
        self.ctrl().corrupt_events.fetch_add(1, Ordering::Relaxed);
        RingError::Corrupt {
            prod_head: self.prod().head.load(Ordering::Relaxed),
            prod_tail: self.prod().tail.load(Ordering::Relaxed),
            cons_head: self.cons().head.load(Ordering::Relaxed),
            cons_tail: self.cons().tail.load(Ordering::Relaxed),
        }
    }

    /// The slots `[start, start + len)` as up to two slices (the second is non-empty when
    /// the span wraps past the last slot).
    ///
    /// # Safety
    /// `len <= capacity`, and the caller must own these slots for the lifetime of the
    /// slices: reserved by it (head moved past them) and released by the other side
    /// (A2 for producers) or published by it (A1 for consumers), so no peer that follows
    /// the protocol touches them meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slots_mut(&self, start: u32, len: u32) -> (&mut [T], &mut [T]) {
        let first = ((self.mask + 1) - (start & self.mask)).min(len);
        // SAFETY: `first` slots from `start & mask` end at or before the last slot; the
        // caller owns them (contract above).
        let a = unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(start), first as usize) };
        // SAFETY: the rest starts at slot 0 and is shorter than the slot array because
        // `len <= capacity <= slots`; owned by the caller as above.
        let b =
            unsafe { std::slice::from_raw_parts_mut(self.slots.as_ptr(), (len - first) as usize) };
        (a, b)
    }

    /// Copies `items` into the slots starting at index `start` (wrapping).
    ///
    /// # Safety
    /// As [`RingCore::slots_mut`] for `items.len()` slots.
    #[inline(always)]
    pub(crate) unsafe fn write_slots(&self, start: u32, items: &[T]) {
        let idx = start & self.mask;
        if idx as usize + items.len() <= self.mask as usize + 1 {
            // Common case, no wrap: one run.
            // SAFETY: `items.len()` slots from `idx` end at or before the last slot; the
            // caller owns them (contract above).
            let a = unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(start), items.len()) };
            copy_small(a, items);
            return;
        }
        // SAFETY: forwarded contract.
        let (a, b) = unsafe { self.slots_mut(start, items.len() as u32) };
        let (x, y) = items.split_at(a.len());
        copy_small(a, x);
        copy_small(b, y);
    }

    /// Copies slots starting at index `start` (wrapping) into `out`.
    ///
    /// # Safety
    /// As [`RingCore::slots_mut`] for `out.len()` slots.
    #[inline(always)]
    pub(crate) unsafe fn read_slots(&self, start: u32, out: &mut [T]) {
        let idx = start & self.mask;
        if idx as usize + out.len() <= self.mask as usize + 1 {
            // Common case, no wrap: one run.
            // SAFETY: `out.len()` slots from `idx` end at or before the last slot; the
            // caller owns them (contract above).
            let a = unsafe { std::slice::from_raw_parts(self.slot_ptr(start), out.len()) };
            copy_small(out, a);
            return;
        }
        // SAFETY: forwarded contract (read-only use).
        let (a, b) = unsafe { self.slots_mut(start, out.len() as u32) };
        let (x, y) = out.split_at_mut(a.len());
        copy_small(x, a);
        copy_small(y, b);
    }

    /// What a side whose head is `head` may move, given the other side's tail: free
    /// slots for producers (`PROD`), published elements for consumers. A value above the
    /// capacity means a stale pairing or corrupt indices.
    #[inline(always)]
    pub(crate) fn available<const PROD: bool>(&self, head: u32, other_tail: u32) -> u32 {
        if PROD {
            let used = head.wrapping_sub(other_tail);
            if used > self.capacity {
                u32::MAX
            } else {
                self.capacity - used
            }
        } else {
            other_tail.wrapping_sub(head)
        }
    }

    /// For a single producer (`PROD`) or consumer, whose head is private: what it may move,
    /// re-reading the other side's tail into `cache` only when the cached value says fewer
    /// than `n`. Since nobody else moves this side's head, an impossible value after the
    /// re-read is corruption.
    #[inline(always)]
    pub(crate) fn single_avail<const PROD: bool>(
        &self,
        head: u32,
        cache: &mut u32,
        n: u32,
    ) -> Result<u32, RingError> {
        let have = self.available::<PROD>(head, *cache);
        if have <= self.capacity && have >= n {
            return Ok(have);
        }
        let other = if PROD { self.cons() } else { self.prod() };
        // A2 (producers: consumers released the slots, pairs with R2) / A1 (consumers: the
        // slots were written, pairs with R1).
        *cache = other.tail.load(Ordering::Acquire);
        let mut have = self.available::<PROD>(head, *cache);
        if have < n && other.tail.handed.load(Ordering::Relaxed) != 0 {
            // Short: maybe the other (multi) side has finished ranges nobody published.
            self.help_publish(!PROD);
            *cache = other.tail.load(Ordering::Acquire);
            have = self.available::<PROD>(head, *cache);
        }
        if have > self.capacity {
            return Err(self.corrupt());
        }
        Ok(have)
    }

    /// Multi-producer (`PROD = true`) or multi-consumer head reservation: claims
    /// `[old, old + take)` with a CAS on this side's head. `cache` is this handle's last seen
    /// tail of the other side (a stale value only under-estimates what is available).
    #[inline(always)]
    ///
    /// With a record (index `rec`), each attempt first writes `(old, take)` and `(seq,
    /// INTENT)` into it (two stores on the handle's own line), published by the CAS's
    /// Release (R3, read by repairers with A5); a failed attempt resets it to IDLE.
    pub(crate) fn multi_reserve<const PROD: bool>(
        &self,
        n: u32,
        how: Behaviour,
        cache: &mut u32,
        rec: Option<u32>,
        seq: u32,
    ) -> Result<(u32, u32), RingError> {
        let (own, other) = if PROD {
            (self.prod(), self.cons())
        } else {
            (self.cons(), self.prod())
        };
        let avail = |head: u32, other_tail: u32| self.available::<PROD>(head, other_tail);
        // A3: Acquire so that the other side's tail, loaded below, is not older than the
        // tail that justified this head (pairs with R3).
        let mut old = own.head.load(Ordering::Acquire);
        loop {
            let mut have = avail(old, *cache);
            if have > self.capacity || have < n {
                // A2 (producers: pairs with R2) / A1 (consumers: pairs with R1).
                *cache = other.tail.load(Ordering::Acquire);
                have = avail(old, *cache);
                if have < n
                    && have <= self.capacity
                    && other.tail.handed.load(Ordering::Relaxed) != 0
                {
                    // Short: maybe the other side has finished ranges nobody published.
                    self.help_publish(!PROD);
                    *cache = other.tail.load(Ordering::Acquire);
                    have = avail(old, *cache);
                }
                if have > self.capacity {
                    // Either our head is stale (a peer moved it: retry) or the indices are
                    // impossible.
                    let again = own.head.load(Ordering::Acquire);
                    if again == old {
                        return Err(self.corrupt());
                    }
                    old = again;
                    continue;
                }
            }
            let take = match how {
                Behaviour::Fixed if have < n => 0,
                _ => n.min(have),
            };
            if take == 0 {
                return Ok((old, 0));
            }
            if let Some(i) = rec {
                let r = self.record(i as usize);
                // Relaxed: published by the CAS below (R3/A5). The state is Release as
                // well (R8, a plain store on x86): a reader that sees this record move
                // on from a voided operation also sees the settlement of its adopter.
                r.range.store(pack_range(old, take), Ordering::Relaxed);
                r.state.store(pack_state(seq, ST_INTENT), Ordering::Release);
            }
            // R3: Release, so a peer that loads this head with Acquire (A3) also sees the
            // other side's tail that justified the move; without it a peer could pair our
            // head with an older tail and see an impossible distance (found by loom).
            // Slot visibility itself is carried by R1/R2 on the tails.
            match own.head.compare_exchange_weak(
                old,
                old.wrapping_add(take),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((old, take)),
                Err(cur) => {
                    if let Some(i) = rec {
                        // An IDLE record claims nothing, whoever sees it; the next
                        // attempt (if any) rewrites it. Release: R8, as above.
                        self.record(i as usize)
                            .state
                            .store(pack_state(seq, ST_IDLE), Ordering::Release);
                    }
                    old = cur;
                }
            }
        }
    }

    /// Takes the owner's exclusive right to finish its reservation: its record moves
    /// from INTENT to BUSY (a producer before its copy, a consumer after it). False when
    /// a waiter voided the reservation first (the owner then calls
    /// [`RingCore::wait_voided`] and tries again: a producer's caller still holds its
    /// elements, a consumer discards its copy).
    #[inline(always)]
    pub(crate) fn begin_busy(&self, r: &OpRecord, seq: u32) -> bool {
        // Relaxed: only exclusion is needed (a voider's CAS of INTENT to VOIDED and this one
        // cannot both succeed); slot accesses are ordered by R1/R2 and by the tail loads
        // (A1/A2) that justified the reservation.
        r.state
            .compare_exchange(
                pack_state(seq, ST_INTENT),
                pack_state(seq, ST_BUSY),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Waits until earlier multi-producers (`PROD`) or consumers have published up to
    /// `old`, then publishes `[old, old + n)` (R1 for producers, R2 for consumers). The
    /// caller's record (if any) is BUSY: nobody else publishes a BUSY range, so at the
    /// tail a plain Release store publishes it and the record becomes DONE afterwards.
    /// Otherwise the record becomes DONE first (R6: from then on a waiter may publish it
    /// for us) and [`RingCore::publish_done`] waits. While waiting it repairs ranges of
    /// gone or long-stopped owners at the tail (`records.rs`); a consumer adopts a dead
    /// (voided) consumer's uncopied elements into `room` when they fit. With a record it
    /// hands its range over after [`HANDOVER_AFTER`] instead of waiting on.
    #[inline(always)]
    pub(crate) fn publish_after_peers<const PROD: bool>(
        &self,
        old: u32,
        n: u32,
        w: &mut Waiter<'_>,
        room: &mut [T],
    ) -> Result<Published, RingError> {
        let ht = if PROD { self.prod() } else { self.cons() };
        // A4: Acquire, so our Release below also carries the earlier peers' slot accesses.
        if ht.tail.load(Ordering::Acquire) == old {
            // R1 (producers) / R2 (consumers). A store, not a CAS: our record is BUSY (or
            // we have none), and no helper publishes a BUSY range.
            ht.tail.store(old.wrapping_add(n), Ordering::Release);
            if let Some((_, r)) = w.rec {
                // BUSY with the range no longer pending already reads as done
                // (`records_of`); DONE only tidies the record. Release: R8 (a plain
                // store on x86).
                r.state.store(pack_state(w.seq, ST_DONE), Ordering::Release);
            }
            return Ok(Published::Done { adopted: 0 });
        }
        if let Some((_, r)) = w.rec {
            // R6: our copy is finished (pairs with A6 in helpers, who may now publish it).
            r.state.store(pack_state(w.seq, ST_DONE), Ordering::Release);
        }
        self.publish_done::<PROD>(old, n, w, room)
    }

    /// The slow half of [`RingCore::publish_after_peers`], for a reservation whose record
    /// is DONE (or that has none): waits for the tail, then publishes with a CAS (a
    /// helper may have published a DONE range for us: then the tail is past `old`).
    #[cold]
    #[inline(never)]
    pub(crate) fn publish_done<const PROD: bool>(
        &self,
        old: u32,
        n: u32,
        w: &mut Waiter<'_>,
        room: &mut [T],
    ) -> Result<Published, RingError> {
        let ht = if PROD { self.prod() } else { self.cons() };
        let mut spins: u32 = 0;
        let mut since: Option<Instant> = None;
        let mut next_look = REPAIR_FIRST;
        let mut adopted = 0u32;
        loop {
            // A4 (as above).
            let tail = ht.tail.load(Ordering::Acquire);
            if tail == old {
                // R1 (producers) / R2 (consumers); a CAS: a helper may publish a DONE
                // range too (exactly one of us moves the tail from `old`).
                if ht
                    .tail
                    .compare_exchange(
                        old,
                        old.wrapping_add(n),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Ok(Published::Done { adopted });
                }
                continue;
            }
            // A healthy tail is behind our reservation by at most the capacity.
            if old.wrapping_sub(tail) > self.capacity {
                if w.rec.is_some() {
                    // Past our start: a helper published our DONE range (only a record's
                    // range is helped), and the ring may have gone on any distance since.
                    return Ok(Published::Done { adopted });
                }
                return Err(self.corrupt());
            }
            spins = spins.wrapping_add(1);
            // Spin a little first (the peer is usually mid-copy on another core); under
            // loom, yield at once so the model can schedule the peer.
            if spins < if cfg!(loom) { 0 } else { 256 } {
                spin();
                continue;
            }
            // The earlier peer may be preempted (more threads than cores): let it run.
            // (Under loom after the look: a yield there runs the peer on, and the models
            // must also see a look while the peer is stopped.)
            if !cfg!(loom) {
                yield_now();
            }
            if cfg!(loom) || spins.is_multiple_of(64) {
                // Under loom time does not pass: look at the records on every turn.
                let waited = if cfg!(loom) {
                    Duration::MAX
                } else {
                    since.get_or_insert_with(Instant::now).elapsed()
                };
                if waited >= next_look {
                    next_look = waited.saturating_add(REPAIR_EVERY);
                    if let Step::Moved =
                        self.repair_at(PROD, tail, w.token, room, &mut adopted, w.rec)
                    {
                        continue;
                    }
                }
                if let Some((idx, _)) = w.rec {
                    // Not under loom, where time does not pass: the models wait for the
                    // peer (a hand-over is covered by the unit tests).
                    if !cfg!(loom) && waited >= HANDOVER_AFTER {
                        self.hand_over(idx, PROD);
                        return Ok(Published::HandedOver { adopted });
                    }
                } else if waited > w.stall_timeout {
                    return Err(RingError::Stalled);
                }
            }
            if cfg!(loom) {
                yield_now();
            }
        }
    }

    /// After [`RingCore::begin_busy`] failed: waits until the voided range `[old, ..)`
    /// of side `PROD` is published by its voider (helping if the voider died), so that
    /// the owner's next attempt may rewrite its record.
    #[cold]
    #[inline(never)]
    pub(crate) fn wait_voided<const PROD: bool>(&self, old: u32, token: u64) {
        let ht = if PROD { self.prod() } else { self.cons() };
        let mut spins: u32 = 0;
        loop {
            // A4-style Acquire: the voider's tail CAS (R7) and what came before it (its
            // hole writes) happen before our next attempt.
            let tail = ht.tail.load(Ordering::Acquire);
            let head = ht.head.load(Ordering::Acquire);
            if old.wrapping_sub(tail) >= head.wrapping_sub(tail) {
                return;
            }
            spins = spins.wrapping_add(1);
            yield_now();
            if cfg!(loom) || spins.is_multiple_of(64) {
                let mut none: [T; 0] = [];
                let mut adopted = 0;
                let _ = self.repair_at(PROD, tail, token, &mut none, &mut adopted, None);
            }
        }
    }

    /// Elements in the ring now (clamped to the capacity when the indices are corrupt).
    pub(crate) fn count(&self) -> u32 {
        // A1/A2-style Acquire loads: a snapshot for reporting, not for slot access.
        let cons_tail = self.cons().tail.load(Ordering::Acquire);
        let prod_tail = self.prod().tail.load(Ordering::Acquire);
        prod_tail.wrapping_sub(cons_tail).min(self.capacity)
    }

    /// The role claim of a single-role side.
    pub(crate) fn owner(&self, producer: bool) -> &shm::liveness::Holder {
        if producer {
            &self.prod().owner
        } else {
            &self.cons().owner
        }
    }
}

/// What a multi-producer (consumer) waiting at the tail brings along: its record (index
/// and reference) if it has one, its operation's sequence number, its repair token, and
/// its stall limit (used only without a record).
pub(crate) struct Waiter<'a> {
    pub(crate) rec: Option<(u32, &'a OpRecord)>,
    /// Sequence number of the operation (what its record's state carries).
    pub(crate) seq: u32,
    pub(crate) token: u64,
    pub(crate) stall_timeout: Duration,
}

/// How a multi-role operation's range got published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// By us; `adopted` elements of a dead consumer were copied into the room too.
    Done {
        /// Elements adopted.
        adopted: u32,
    },
    /// Handed over to the ring (the handle needs a new record).
    HandedOver {
        /// Elements adopted.
        adopted: u32,
    },
}

impl Published {
    pub(crate) fn adopted(self) -> u32 {
        match self {
            Published::Done { adopted } | Published::HandedOver { adopted } => adopted,
        }
    }
}

/// Drops hole elements from `buf` (keeping the order of the rest, and leaving holes in
/// the positions freed at its end) if any hole may be in the ring, and returns how many
/// elements are left. One Relaxed load when there are
/// none: a hole's count is raised before the tail CAS that published it (R7), and our
/// slots were made visible by an Acquire of that tail or a later one (A1).
#[inline(always)]
pub(crate) fn skip_holes<T: Element>(line: &TailLine, buf: &mut [T]) -> usize {
    if line.holes.load(Ordering::Relaxed) == 0 {
        return buf.len();
    }
    skip_holes_slow(line, buf)
}

#[cold]
#[inline(never)]
fn skip_holes_slow<T: Element>(line: &TailLine, buf: &mut [T]) -> usize {
    let mut kept = 0;
    for i in 0..buf.len() {
        if !buf[i].is_hole() {
            buf[kept] = buf[i];
            kept += 1;
        }
    }
    let skipped = (buf.len() - kept) as u32;
    // The vacated tail of `buf` gets holes again, not stale copies: a recovery that
    // reads the record's `len + adopted` positions and drops holes finds each element
    // once.
    for x in &mut buf[kept..] {
        *x = T::HOLE;
    }
    if skipped != 0 {
        // Relaxed: a hint (see `TailLine::holes`).
        let _ = line
            .holes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(skipped))
            });
    }
    kept
}

/// Copies a short run of elements (`dst` and `src` of equal length) four at a time as
/// fixed-size arrays, which compile to plain moves: for the burst sizes of the hot path
/// this beats a `memcpy` call.
#[inline(always)]
fn copy_small<T: Copy>(dst: &mut [T], src: &[T]) {
    let (d8, d1) = dst.as_chunks_mut::<8>();
    let (s8, s1) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
    }
    for (d, s) in d1.iter_mut().zip(s1) {
        *d = *s;
    }
}
