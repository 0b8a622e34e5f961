//! Reservation records: what makes a multi-producer (multi-consumer) ring repairable when a
//! process dies, or stops (SIGSTOP, a debugger), between its head CAS and its tail
//! publication.
//!
//! Every multi-role handle ([`crate::MpProducer`], [`crate::McConsumer`], each clone)
//! claims one [`OpRecord`] in the ring's header (a fixed table of
//! [`REC_COUNT`](crate::layout::REC_COUNT)) with its pid and process start time, and
//! describes each operation there before it can own slots:
//!
//! ```text
//!  producer #s: range=(h,n) INTENT ─ head CAS ─ CAS INTENT→BUSY ─ copy ─┬ tail==h: store tail, DONE
//!               (two private stores) (R3/A5)   (fails: voided, retry) └ else DONE (R6), wait, CAS tail
//!  consumer #s: range=(h,n) INTENT ─ head CAS ─ copy ─ CAS INTENT→BUSY ─┬ (as above)
//!                                                    (fails: voided: discard the copy, retry)
//!
//!  states:  IDLE ─→ INTENT ─→ BUSY ─→ DONE        only the owner: INTENT→BUSY→DONE, IDLE
//!                     │                 │          a waiter: INTENT→VOIDED (CAS), publishes
//!                     └──→ VOIDED       └ published by the owner or any waiter (tail CAS)
//!
//!  side of the ring:   tail                                  head
//!                       │ rec 7: INTENT │ rec 2: DONE │ rec 9: BUSY │ (free slots)
//!                       t               t+n7          ...
//!  every range in [tail, head) is the range of exactly one record that is not IDLE
//!  (unless an unrecorded handle made it: untrusted host handles, or a full table)
//! ```
//!
//! - **Attributable at every instant**: the record is written before the CAS that gives
//!   the range away, and the CAS's Release publishes it to whoever loads the head (A5);
//!   a record whose CAS failed is reset to IDLE before the next attempt. So the range
//!   starting at the tail `t` is the range of a record `(t, n)`; a stale INTENT `(t, m)`
//!   whose CAS failed can exist only while its owner sits between that failed CAS and the
//!   reset (or died there), and nobody decides between two INTENTs at `t` while any of
//!   them is live (see below).
//! - **BUSY: the owner's exclusive right to finish**. A producer takes it before its copy,
//!   a consumer after it, each with one CAS on its own record's line. Nobody voids or
//!   publishes a live owner's BUSY range, so an owner at the tail publishes with a plain
//!   store; an owner that must wait for an earlier peer goes DONE first (R6) and from then
//!   on publishes with a CAS of the tail, as anyone may publish a DONE range for it.
//! - **Waiters repair what blocks them** (every [`REPAIR_EVERY`] after [`REPAIR_FIRST`],
//!   and operations of the other side short of room while ranges are handed over): the
//!   record at the tail is
//!   - DONE (live or gone owner): published (a tail CAS from `t`);
//!   - INTENT of a gone owner (pid dead or reused, or handed over), or of a **live owner
//!     whose range has held the tail longer than [`VOID_AFTER`]** (a stopped one): voided,
//!     a CAS INTENT→VOIDED that the owner's INTENT→BUSY then fails on. A producer range
//!     becomes holes ([`crate::Element::HOLE`], skipped by consumers); a consumer range is
//!     adopted into the waiter's own output after its own elements when it has room (the
//!     elements are still in the slots), else left (a dead one then goes to
//!     [`crate::Ring::repair_dead`], a live one finishes when it resumes). The voided
//!     owner, when it resumes, waits until its range is published and retries the same
//!     operation (same sequence number): nothing of it happened.
//!   - BUSY of a gone owner: a producer's (copy maybe half done) is voided like INTENT, a
//!     consumer's (copy done) published; BUSY of a live owner is waited for (a copy is a
//!     few ns: a process stopped inside one still holds the tail until it resumes);
//!   - VOIDED: a repairer that died before publishing: published again (a producer's
//!     holes rewritten first).
//!
//!   The held time is stamped in [`TailLine::stuck`](crate::layout::TailLine::stuck) by
//!   the first look at a tail value and compared by later ones, from any process.
//!   Every repair happens under the record's repair right (a CAS of the repairer's token
//!   into `repairer`; a dead repairer's right is taken over, a live one's waited for),
//!   released after the tail CAS.
//! - **Hand-over instead of a stall**: an owner that has finished its copy (DONE) and
//!   still waits for an earlier peer after [`HANDOVER_AFTER`] gives its record to the
//!   ring (owner pid 0: "gone") and returns success; whoever next waits at that range, or
//!   runs short of room on the other side, publishes it. The handle claims a fresh record
//!   for its next operation.
//! - **The primary repairs a reclaimed process** with [`crate::Ring::repair_dead`]:
//!   every record of that pid+start time is voided (producer INTENT or BUSY: holes),
//!   returned (consumer INTENT: the elements come back in the report for the caller to put
//!   back) or kept (DONE, consumer BUSY), published when at the tail, and freed.
//! - **Records of dead owners** whose operation is no longer pending are recovered by
//!   the next claimer when no record is free, and keep their last state until then, so
//!   [`crate::Ring::record_of`] can tell a caller whether operation `#s` took effect
//!   (Done: DONE, a consumer's BUSY, or a producer's BUSY no longer pending; Voided and
//!   Reserving: it did not, or will not once repaired).
//!
//! **Why nothing is lost or duplicated.** *The tail moves past each range once*: it moves
//! from `t` only by the owner of the range at `t` (a plain store only while BUSY, which
//! excludes every helper; otherwise a CAS from `t`) or by a holder of that record's repair
//! right (a CAS from `t`, after checking under the right that the record still describes
//! `[t, t+n)` at the tail: the right's Acquire sees an earlier holder's tail CAS). *A
//! producer range is all written or all holes, never a mix*: exactly one of the owner's
//! INTENT→BUSY and a voider's INTENT→VOIDED succeeds on the same state word; the owner
//! writes only after winning, and a voider (or the repairer of a dead owner, who writes
//! nothing more) writes holes only after winning, so no element of a voided operation
//! reaches a slot, and a VOIDED record reads as "nothing enqueued" while its caller still
//! holds the elements (the retry enqueues them once). *A consumer's elements go to exactly
//! one place*: the owner keeps its copy only if its INTENT→BUSY wins; a voider keeps the
//! copy it made (while the tail was still before the range, so the slots were intact) only
//! if its INTENT→VOIDED wins, and records it in its own record (`adopted`) before the
//! range leaves the ring. A voided owner rewrites its record only after its range has been
//! published, so a stale view of the old attempt never matches the new one (same sequence
//! number, other range, tail moved).
//!
//! **Adoption, exact across a death on either side of the CAS.** A waiter adopting a
//! voided consumer range (record `i`, operation `s`, `n` elements) first says so in its
//! own record: `adopt_from = (i, s)` and a *tentative* count `n` in its DONE state word
//! (Release, R8), then CASes `i` from INTENT to VOIDED **naming its own record** `k`,
//! then moves the count to *confirmed*. A reader of `k` (a recovery after `k`'s death)
//! counts the tentative part only while record `i` still says VOIDED by `k` at `s`;
//! whoever publishes that voided range (under its repair right, so only once `k` is done
//! with it or dead) settles `k`'s count first ([`RingCore::settle_adoption`]), and only
//! then can `i`'s owner rewrite its record, so the evidence is never lost while the count
//! is still tentative. Killed after the tentative store and before the CAS, `k` counts
//! nothing and the range stays in the ring for the next waiter; killed after the CAS, it
//! counts the elements once (`tests/tests/stopped_peer.rs` kills an adopter at both
//! points: without the tentative count, 30 mbufs were then allocated twice).
//!
//! **Dead records kept for recovery** ([`crate::Ring::keep_dead_records`], a mempool's
//! free ring): a new handle never recycles a dead process's record (only free and
//! handed-over ones); the primary's [`crate::Ring::repair_dead`] frees them after the
//! recoveries that read them. The table ([`REC_COUNT`](crate::layout::REC_COUNT) = 192)
//! holds the two handles of each of a pool's 64 caches and 64 more; a handle made when
//! it is full is unrecorded and counted ([`crate::Ring::unrecorded_handles`]).
//!
//! Left open: a repairer stopped while it holds a right (a few instructions) holds that
//! range until it resumes, and so does an owner stopped inside its BUSY copy; two live
//! INTENTs at the same start (one a failed attempt stopped before its reset) are not
//! told apart; a consumer range voided while no waiter has room for it stays until one
//! has. (A mempool refill gives the rest of its cache array as room, at least as much as
//! any refill reserves, so a stopped refill is adopted by the next refill that waits
//! behind it after [`VOID_AFTER`]; meanwhile a flush that finds the ring short of room
//! keeps what it refuses cached. A bulk get larger than the cache, which goes to the ring
//! with no room, is adopted only by a waiter with room for it.) A handed-over record is
//! recycled once its range is published, so a process killed between a hand-over and
//! its caller's bookkeeping (a cache's length) is recovered exactly only while the table
//! has a free record.
//!
//! Memory-ordering pairs (labels continue those of `core.rs`):
//! - **A5**: a repairer loads the head with Acquire before reading records: every record
//!   written before a CAS that moved the head is visible (pairs with R3).
//! - **R6/A6**: an owner's DONE store is Release (its slot copies are done); a repairer
//!   loads the state with Acquire before publishing those slots.
//! - **R7/A7**: a repairer's hole writes, `holes` count and VOIDED state are published
//!   by its tail CAS with Release (it is R1/R2 for those slots); the next holder of the
//!   right acquires them with its CAS of `repairer`, released after the tail CAS.
//! - **R8**: an adopter's state store with its tentative count, the settlement (its own
//!   store or a publisher's CAS) and a record's every later state store (INTENT, IDLE,
//!   DONE: plain stores on x86) are Release; a reader of an adopter's count loads it and
//!   the voided record's state with Acquire, so a voided record seen to move on implies
//!   the settlement is seen too.
//! - The INTENT→BUSY and INTENT→VOIDED CASes need no ordering of their own (Relaxed for
//!   the owner): they only decide who touches the range; slot accesses stay ordered by
//!   A1/A2 and R1/R2 (R7).

use std::sync::atomic::AtomicU32 as StdAtomicU32;

#[path = "repair.rs"]
mod repair;

use crate::core::RingCore;
use crate::layout::{HeadTail, OpRecord};
use crate::sync::Ordering;
use crate::Element;

/// Records scanned: the whole table, or a few under loom (every atomic is a model object).
pub(crate) const SCAN: usize = if cfg!(loom) {
    3
} else {
    crate::layout::REC_COUNT
};

/// How long a waiter waits for the tail before its first look at the records. A peer
/// preempted mid-copy holds the tail for a time slice (milliseconds); looking costs a
/// scan of the table and a `kill(pid, 0)` per candidate and never disturbs a live
/// owner, so it can start early.
pub const REPAIR_FIRST: std::time::Duration = std::time::Duration::from_micros(200);
/// Interval between later looks.
pub const REPAIR_EVERY: std::time::Duration = std::time::Duration::from_millis(1);
/// How long a finished owner waits for an earlier peer before handing its range over.
/// Longer than the preemption of a peer on a loaded two-core machine (a CFS slice is a
/// few ms), so a healthy ring never hands over; short enough that a producer behind a
/// dead or stopped peer returns at once for a caller.
pub const HANDOVER_AFTER: std::time::Duration = std::time::Duration::from_millis(20);
/// How long a range must have held its side's tail (as seen by waiters and helpers, see
/// [`crate::layout::TailLine::stuck`]) before a waiter may void a *live* owner's
/// untouched (INTENT) reservation. Far above any preemption of a runnable thread (a CFS
/// slice is a few ms, an overloaded two-core machine delays a thread tens of ms), so a
/// healthy ring never voids; a stopped (SIGSTOP, debugger) or swapped-out owner is
/// voided within it. A wrong guess costs nothing but time: a voided owner that was in
/// fact running retries its operation, nothing is lost or duplicated.
pub const VOID_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Record states (low half of `state`).
pub(crate) const ST_IDLE: u32 = 0;
/// Range written, head CAS about to happen or done; slots not (all) copied.
pub(crate) const ST_INTENT: u32 = 1;
/// Producer: slots written. Consumer: slots copied out.
pub(crate) const ST_DONE: u32 = 2;
/// Repaired: producer slots are holes; consumer elements went to a repairer.
pub(crate) const ST_VOIDED: u32 = 3;
/// The owner finishes it and nobody else touches it while the owner lives: a producer
/// copying (set before the copy), a consumer publishing (set after its copy).
pub(crate) const ST_BUSY: u32 = 4;

/// Side tags in the owner word's high half.
pub(crate) const SIDE_PROD: u64 = 1;
pub(crate) const SIDE_CONS: u64 = 2;

#[inline(always)]
pub(crate) fn pack_state(seq: u32, st: u32) -> u64 {
    u64::from(seq) << 32 | u64::from(st)
}

#[inline(always)]
pub(crate) fn pack_range(start: u32, len: u32) -> u64 {
    u64::from(len) << 32 | u64::from(start)
}

fn unpack(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

/// A state word as (state, seq). The low half's bits 8..32 carry more (see
/// [`done_word`] and [`voided_word`]).
fn unpack_state(w: u64) -> (u32, u32) {
    (w as u32 & 0xff, (w >> 32) as u32)
}

/// Most elements one consumer operation adopts (the state word's 12-bit fields).
pub(crate) const ADOPT_MAX: u32 = 0xfff;

/// A consumer's DONE state word: `adopted` elements of voided ranges are in its output
/// after its own, and `tentative` more are being adopted (the range named by its
/// `adopt_from`; whether they count is settled by the voided record, see "adoption").
pub(crate) fn done_word(seq: u32, adopted: u32, tentative: u32) -> u64 {
    debug_assert!(adopted <= ADOPT_MAX && tentative <= ADOPT_MAX);
    pack_state(seq, ST_DONE | adopted << 8 | tentative << 20)
}

/// A VOIDED state word, naming the record of the consumer that adopted the range
/// (`voider`), if any.
pub(crate) fn voided_word(seq: u32, voider: Option<u32>) -> u64 {
    pack_state(seq, ST_VOIDED | voider.map_or(0, |k| k + 1) << 8)
}

/// True when `w` is operation `seq` voided (by anyone).
pub(crate) fn is_voided(w: u64, seq: u32) -> bool {
    unpack_state(w) == (ST_VOIDED, seq)
}

/// The `adopt_from` word naming record `i`'s operation `seq`.
pub(crate) fn adopt_word(i: usize, seq: u32) -> u64 {
    (i as u64 + 1) << 32 | u64::from(seq)
}

/// Confirmed adopted count of a DONE word.
fn adopted_of(w: u64) -> u32 {
    w as u32 >> 8 & ADOPT_MAX
}

/// Tentative adopted count of a DONE word.
fn tentative_of(w: u64) -> u32 {
    w as u32 >> 20 & ADOPT_MAX
}

/// Record index + 1 of a VOIDED word's adopter (0: none recorded).
fn voider_of(w: u64) -> u32 {
    w as u32 >> 8 & ADOPT_MAX
}

/// A repair token unique to one handle (or one `repair_dead` call) of this process.
pub(crate) fn new_token() -> u64 {
    // Relaxed: an id generator; uniqueness comes from the RMW.
    static NEXT: StdAtomicU32 = StdAtomicU32::new(1);
    u64::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) << 32
        | u64::from(std::process::id())
}

/// True when the process named by an owner word (`side << 32 | pid`) is gone: pid 0
/// (handed over), or gone by the rule of [`shm::liveness::holder_gone`] (dead, a zombie,
/// or its pid reused: start time differs).
pub(crate) fn owner_gone(owner: u64, start_time: u64) -> bool {
    shm::liveness::holder_gone(owner as u32, start_time)
}

/// `CLOCK_MONOTONIC` in ms (wrapping), the same clock in every process of the machine.
fn now_ms() -> u32 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000) as u32)
        .unwrap_or(0)
}

fn token_gone(tok: u64) -> bool {
    tok != 0 && owner_gone(tok & 0xffff_ffff, 0)
}

/// What a record says, as seen by [`crate::Ring::record_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// No operation in progress (the last one finished, or none yet).
    Idle,
    /// Range written, head CAS about to happen or done, copy not finished.
    Reserving,
    /// Copy finished (producer: slots written; consumer: slots copied out).
    Done,
    /// Repaired by another process: producer slots became holes (nothing enqueued);
    /// consumer elements went to the repairer (nothing dequeued).
    Voided,
}

/// One record as seen by [`crate::Ring::record_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// Index in the table.
    pub index: usize,
    /// Producer record (else consumer).
    pub producer: bool,
    /// Sequence number of the handle's last operation that wrote the record.
    pub seq: u32,
    /// Its state.
    pub state: OpState,
    /// First index of its range.
    pub start: u32,
    /// Length of its range.
    pub len: u32,
    /// The range is still between that side's tail and head (not yet published).
    pub pending: bool,
    /// Consumer records: elements of a dead consumer's reservation that this operation
    /// adopted, stored in its output after its own `len` (so the output holds
    /// `len + adopted` slots' worth, holes skipped). Recorded before the adopted range
    /// leaves the ring, so a caller that dies mid-operation loses nothing.
    pub adopted: u32,
}

impl RecordView {
    /// Operation `seq` took effect: copied and published (or published by a helper).
    pub fn completed(&self, seq: u32) -> bool {
        self.seq == seq && self.state == OpState::Done && !self.pending
    }
}

/// What [`crate::Ring::repair_dead`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport<T> {
    /// Records of that process found (and freed unless still pending).
    pub records: u32,
    /// Producer reservations voided (their slots became holes: nothing was enqueued).
    pub voided: u32,
    /// Finished reservations published.
    pub published: u32,
    /// Elements of consumer reservations that were never copied out: they are no
    /// longer in the ring, and the caller puts them back (or frees them).
    pub returned: Vec<T>,
    /// Records left pending behind an earlier reservation (already repaired: any
    /// waiter publishes them when the tail reaches them).
    pub left_pending: u32,
    /// Records whose owner is alive (not touched).
    pub alive: u32,
    /// Stale reservations freed: a head CAS that failed (another record took that
    /// range) before the owner rewrote its record.
    pub stale: u32,
}

/// Whether a dead owner's INTENT record took its range ([`RingCore::intent_claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Its head CAS took the range.
    Won,
    /// Another record took it (this one is a failed attempt).
    Lost,
    /// Not decidable now (a live rival, or dead rivals of different lengths that the
    /// head and the other records do not tell apart).
    Unknown,
}

/// Outcome of one repair attempt at the tail.
pub(crate) enum Step {
    /// The tail moved (by us or someone else).
    Moved,
    /// Nothing to do now.
    Nothing,
}

impl<T: Element> RingCore<T> {
    fn side(&self, prod: bool) -> (&HeadTail, u64) {
        if prod {
            (self.prod(), SIDE_PROD)
        } else {
            (self.cons(), SIDE_CONS)
        }
    }

    /// True when `[start, start+len)` is between the tail and head of side `prod`.
    fn pending(&self, prod: bool, start: u32) -> bool {
        let (ht, _) = self.side(prod);
        // A5-style Acquire loads: a decision about a record, not slot access.
        let head = ht.head.load(Ordering::Acquire);
        let tail = ht.tail.load(Ordering::Acquire);
        start.wrapping_sub(tail) < head.wrapping_sub(tail)
    }

    /// A record may be given to a new handle: free or gone, with nothing pending and no
    /// live repairer.
    fn claimable(&self, r: &OpRecord, owner: u64, recover: bool) -> bool {
        if owner != 0 && !(recover && owner_gone(owner, r.start_time.load(Ordering::Relaxed))) {
            return false;
        }
        if owner == 0 {
            return true;
        }
        // Relaxed: a policy word set before the ring was shared.
        if owner as u32 != 0 && self.ctrl().keep_dead.load(Ordering::Relaxed) != 0 {
            // A dead process's record: its recovery may still read it; the primary's
            // `repair_dead` frees it.
            return false;
        }
        let tok = r.repairer.load(Ordering::Acquire);
        if tok != 0 && !token_gone(tok) {
            return false;
        }
        let (st, _) = unpack_state(r.state.load(Ordering::Acquire));
        let (start, _) = unpack(r.range.load(Ordering::Relaxed));
        st == ST_IDLE || !self.pending(owner >> 32 == SIDE_PROD, start)
    }

    /// Claims a record for a new handle of side `prod` whose next operation is `seq`:
    /// a free one first, else one of a gone owner with nothing pending. None if the
    /// table is full (the handle is then unrecorded).
    pub(crate) fn claim_record(&self, prod: bool, seq: u32) -> Option<u32> {
        let side = if prod { SIDE_PROD } else { SIDE_CONS };
        let token = side << 32 | u64::from(std::process::id());
        for recover in [false, true] {
            for i in 0..SCAN {
                let r = self.record(i);
                // Acquire: pairs with the Release of a release or hand-over, so the
                // record's last state is seen before deciding it is free.
                let cur = r.owner.load(Ordering::Acquire);
                if !self.claimable(r, cur, recover) {
                    continue;
                }
                if r.owner
                    .compare_exchange(cur, token, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    r.start_time.store(
                        shm::liveness::Process::current().start_time,
                        Ordering::Relaxed,
                    );
                    r.repairer.store(0, Ordering::Relaxed);
                    r.range.store(0, Ordering::Relaxed);
                    r.state.store(pack_state(seq, ST_IDLE), Ordering::Release);
                    return Some(i as u32);
                }
            }
        }
        // Relaxed: statistics.
        self.ctrl().unrecorded.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Frees a handle's record when the handle is dropped. Its last operation finished
    /// (published), unless it was handed over, which the caller does not release.
    pub(crate) fn release_record(&self, idx: u32) {
        let r = self.record(idx as usize);
        // Release: the record's last state is seen by the next claimer (Acquire above).
        r.owner.store(0, Ordering::Release);
    }

    /// Gives a finished (DONE) range to the ring: whoever waits at it publishes it.
    pub(crate) fn hand_over(&self, idx: u32, prod: bool) {
        let side = if prod { SIDE_PROD } else { SIDE_CONS };
        // Release: the DONE state (R6) is seen by whoever finds the record gone.
        self.record(idx as usize)
            .owner
            .store(side << 32, Ordering::Release);
        // Relaxed: a hint read by helpers, who then load the owner words with Acquire.
        self.side(prod)
            .0
            .tail
            .handed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes ranges handed over on side `prod` that are at its tail, if any were
    /// handed over: called by operations short of slots (elements) and by waiters.
    #[cold]
    #[inline(never)]
    pub(crate) fn help_publish(&self, prod: bool) {
        // Relaxed: a hint (see `hand_over`).
        if self.side(prod).0.tail.handed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut none: [T; 0] = [];
        let (ht, _) = self.side(prod);
        let token = new_token();
        for _ in 0..SCAN {
            let t = ht.tail.load(Ordering::Acquire);
            let mut adopted = 0;
            match self.repair_at(prod, t, token, &mut none, &mut adopted, None) {
                Step::Moved if ht.tail.load(Ordering::Acquire) != t => continue,
                _ => break,
            }
        }
    }

    /// Record `i` if it was handed over (owner pid 0, a side set: see `hand_over`), as
    /// [`crate::Ring::handed_record`] gives it.
    pub(crate) fn handed_view(&self, i: usize) -> Option<RecordView> {
        if i >= SCAN {
            return None;
        }
        // Acquire: pairs with `hand_over`'s Release (the DONE state before the owner word).
        let owner = self.record(i).owner.load(Ordering::Acquire);
        if owner as u32 != 0 || owner >> 32 == 0 {
            return None;
        }
        Some(self.view(i, owner >> 32 == SIDE_PROD))
    }

    /// Every record whose owner word names `pid` (and `start_time` when both are known).
    pub(crate) fn records_of(&self, pid: u32, start_time: u64) -> Vec<(usize, RecordView)> {
        let mut out = Vec::new();
        for i in 0..SCAN {
            let r = self.record(i);
            let owner = r.owner.load(Ordering::Acquire);
            let st0 = r.start_time.load(Ordering::Relaxed);
            if owner as u32 != pid || pid == 0 {
                continue;
            }
            if start_time != 0 && st0 != 0 && st0 != start_time {
                continue;
            }
            out.push((i, self.view(i, owner >> 32 == SIDE_PROD)));
        }
        out
    }

    /// What record `i` (of side `producer`) says, as a [`RecordView`].
    fn view(&self, i: usize, producer: bool) -> RecordView {
        let r = self.record(i);
        // A6-style Acquire: the state before the slots it describes.
        let sw = r.state.load(Ordering::Acquire);
        let (st, seq) = unpack_state(sw);
        let (start, len) = unpack(r.range.load(Ordering::Relaxed));
        let pending = st != ST_IDLE && len != 0 && self.pending(producer, start);
        let state = match st {
            ST_INTENT => OpState::Reserving,
            // A producer's copy is done once its owner published it (nobody else
            // publishes a BUSY range); a consumer's BUSY comes after its copy.
            ST_BUSY if producer && pending => OpState::Reserving,
            ST_BUSY | ST_DONE => OpState::Done,
            ST_VOIDED => OpState::Voided,
            _ => OpState::Idle,
        };
        RecordView {
            index: i,
            producer,
            seq,
            state,
            start,
            len,
            pending,
            adopted: self.adopted_count(i, sw),
        }
    }

    /// [`RingCore::view`] of a consumer record, for the unit tests.
    #[cfg(test)]
    pub(crate) fn __view(&self, i: usize) -> RecordView {
        self.view(i, false)
    }

    /// The elements consumer record `i` (state word `sw`) holds adopted: its confirmed
    /// count, plus its tentative one if that adoption took effect ("adoption" in the
    /// module docs). The owner, or a repairer settling for a dead one, may change the
    /// word meanwhile: then it is read again.
    fn adopted_count(&self, i: usize, mut sw: u64) -> u32 {
        for _ in 0..4 {
            if unpack_state(sw).0 != ST_DONE {
                return 0;
            }
            let (total, tent) = (adopted_of(sw), tentative_of(sw));
            if tent == 0 || self.adoption_took(i) {
                return total + tent;
            }
            // Acquire (R8): a settlement since the first load is seen here, since the
            // voided record moved on (which made `adoption_took` false) only after it.
            let again = self.record(i).state.load(Ordering::Acquire);
            if again == sw {
                return total;
            }
            sw = again;
        }
        adopted_of(sw)
    }

    /// Whether the tentative adoption of record `k` (whose DONE word the caller loaded
    /// with Acquire, which made its `adopt_from` visible) took effect: the record it
    /// names is still VOIDED by `k` at that operation.
    fn adoption_took(&self, k: usize) -> bool {
        let from = self.record(k).adopt_from.load(Ordering::Relaxed);
        let (vi, vseq) = ((from >> 32) as usize, from as u32);
        if vi == 0 || vi > SCAN {
            return false;
        }
        // Acquire (R8): pairs with the Release of whatever the voided record's owner
        // wrote after its range was published.
        let v = self.record(vi - 1).state.load(Ordering::Acquire);
        v == voided_word(vseq, Some(k as u32))
    }

    /// Settles the tentative adoption that the consumer of record `k` made of record
    /// `i`'s operation `vseq` (`len` elements), which is VOIDED by `k`: its count
    /// becomes confirmed. Called by whoever publishes that voided range (under the
    /// range's repair right, before the tail CAS), so the evidence that the adoption
    /// took effect is never lost: the voided owner rewrites its record only after the
    /// publication. Does nothing when `k` settled it itself (or its record moved on).
    pub(crate) fn settle_adoption(&self, k: usize, i: usize, vseq: u32, len: u32) {
        if k >= SCAN {
            return;
        }
        let m = self.record(k);
        let sw = m.state.load(Ordering::Acquire);
        if unpack_state(sw).0 != ST_DONE
            || tentative_of(sw) != len
            || m.adopt_from.load(Ordering::Relaxed) != adopt_word(i, vseq)
        {
            return;
        }
        let done = done_word(unpack_state(sw).1, adopted_of(sw) + len, 0);
        // R8: Release, before the tail CAS that publishes the voided range.
        let _ = m
            .state
            .compare_exchange(sw, done, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// [`crate::Ring::repair_dead`].
    pub(crate) fn repair_dead(&self, pid: u32, start_time: u64) -> RepairReport<T> {
        let mut rep = RepairReport {
            records: 0,
            voided: 0,
            published: 0,
            returned: Vec::new(),
            left_pending: 0,
            alive: 0,
            stale: 0,
        };
        let token = new_token();
        let mut handed = Vec::new();
        for (i, v) in self.records_of(pid, start_time) {
            let r = self.record(i);
            let owner = r.owner.load(Ordering::Acquire);
            if !owner_gone(owner, r.start_time.load(Ordering::Relaxed)) {
                rep.alive += 1;
                continue;
            }
            rep.records += 1;
            if v.pending && v.state == OpState::Reserving {
                // Take the right (waiting out a live repairer: it finishes quickly).
                loop {
                    let tok = r.repairer.load(Ordering::Acquire);
                    if (tok == 0 || token_gone(tok))
                        && r.repairer
                            .compare_exchange(tok, token, Ordering::AcqRel, Ordering::Relaxed)
                            .is_ok()
                    {
                        break;
                    }
                    crate::sync::yield_now();
                }
                let sw = r.state.load(Ordering::Acquire);
                let st = unpack_state(sw).0;
                let mut claim = Claim::Won;
                if st == ST_INTENT {
                    // A live rival at the same start decides within its operation.
                    for _ in 0..10_000 {
                        claim = self.intent_claim(v.producer, i, v.start, v.len);
                        if claim != Claim::Unknown {
                            break;
                        }
                        crate::sync::yield_now();
                    }
                }
                if claim == Claim::Lost {
                    // A failed attempt: nothing of the range was ever this record's.
                    r.repairer.store(0, Ordering::Release);
                    r.owner.store(0, Ordering::Release);
                    rep.stale += 1;
                    continue;
                }
                // A dead producer's BUSY range may be half written: voided as INTENT.
                if (st == ST_INTENT || (st == ST_BUSY && v.producer))
                    && claim == Claim::Won
                    && self.pending(v.producer, v.start)
                {
                    if v.producer {
                        // A2, as in `repair_record`.
                        let _ = self.cons().tail.load(Ordering::Acquire);
                        for k in 0..v.len {
                            // SAFETY: the dead owner's reservation; we hold the right.
                            unsafe { self.slot_ptr(v.start.wrapping_add(k)).write(T::HOLE) };
                        }
                        self.prod().tail.holes.fetch_add(v.len, Ordering::Relaxed);
                        rep.voided += 1;
                    } else {
                        // A1, as in `repair_record`.
                        let _ = self.prod().tail.load(Ordering::Acquire);
                        let at = rep.returned.len();
                        rep.returned.resize(at + v.len as usize, T::HOLE);
                        // SAFETY: a dead consumer's reservation of published slots.
                        unsafe { self.read_slots(v.start, &mut rep.returned[at..]) };
                        rep.returned.retain(|x| !x.is_hole());
                    }
                    // R7.
                    r.state
                        .store(voided_word(unpack_state(sw).1, None), Ordering::Release);
                }
                r.repairer.store(0, Ordering::Release);
            } else if v.pending {
                rep.published += 1;
            }
            if v.pending {
                // Gone for good: anyone at the tail publishes it, a claimer frees it.
                let side = if v.producer { SIDE_PROD } else { SIDE_CONS };
                r.owner.store(side << 32, Ordering::Release);
                self.side(v.producer)
                    .0
                    .tail
                    .handed
                    .fetch_add(1, Ordering::Relaxed);
                handed.push((v.producer, v.start));
            } else {
                r.owner.store(0, Ordering::Release);
            }
        }
        // Move both tails past whatever is now publishable.
        let mut none: [T; 0] = [];
        for prod in [true, false] {
            loop {
                let (ht, _) = self.side(prod);
                let t = ht.tail.load(Ordering::Acquire);
                let mut adopted = 0;
                match self.repair_at(prod, t, token, &mut none, &mut adopted, None) {
                    Step::Moved if ht.tail.load(Ordering::Acquire) != t => continue,
                    _ => break,
                }
            }
        }
        rep.left_pending = handed
            .iter()
            .filter(|&&(prod, start)| self.pending(prod, start))
            .count() as u32;
        rep
    }
}
