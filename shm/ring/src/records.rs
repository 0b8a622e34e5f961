//! Reservation records: what makes a multi-producer (multi-consumer) ring repairable when a
//! process dies between its head CAS and its tail publication.
//!
//! Every multi-role handle ([`crate::MpProducer`], [`crate::McConsumer`], each clone)
//! claims one [`OpRecord`] in the ring's header (a fixed table of
//! [`REC_COUNT`](crate::layout::REC_COUNT)) with its pid and process start time, and
//! describes each operation there before it can own slots:
//!
//! ```text
//!   owner op #s:  range=(h,n) state=(s,INTENT) ── head CAS h→h+n ── copy ── state=(s,DONE) ── tail h→h+n
//!                 └─ two private stores ──┘      (publishes them,      └ one store ┘
//!                                                 R3/A5)
//!
//!   side of the ring:   tail                                  head
//!                        │ rec 7: INTENT │ rec 2: DONE │ rec 9: INTENT │
//!                        t               t+n7          ...             (free slots)
//!   every range in [tail, head) is the range of exactly one record that is not IDLE
//!   (unless an unrecorded handle made it: untrusted host handles, or a full table)
//! ```
//!
//! - **Attributable at every instant**: the record is written before the CAS that gives
//!   the range away, and the CAS's Release publishes it to whoever loads the head (A5);
//!   a record whose CAS failed is rewritten before the next attempt (or reset to IDLE).
//!   So the range starting at the tail `t` is the range of a record `(t, n)`; a stale
//!   INTENT `(t, m)` whose CAS failed can exist only if its owner died right after the
//!   failed CAS, and a survivor repairs nothing while that is ambiguous (see below).
//! - **Blocked survivors repair dead owners**: a multi-producer (consumer) waiting for
//!   the tail longer than [`REPAIR_FIRST`] scans the records for the range at the tail
//!   (every [`REPAIR_EVERY`] after that). If a live owner claims it, it waits. If its
//!   owner is gone (pid dead or reused, or handed over, see below), it takes the
//!   record's repair right (a CAS of its own token into `repairer`; the right of a dead
//!   repairer can be taken over) and: a producer range in INTENT becomes holes
//!   ([`crate::Element::HOLE`], skipped by consumers) and VOIDED; a consumer range in
//!   INTENT is adopted into the survivor's own output when it has room (the elements are
//!   still in the slots), else left for [`crate::Ring::repair_dead`]; a DONE or VOIDED
//!   range is only published. The tail is then moved with a CAS from `t`.
//! - **Hand-over instead of a stall**: an owner that has finished its copy (DONE) and
//!   still waits for an earlier peer after [`HANDOVER_AFTER`] gives its record to the
//!   ring (owner pid 0: "gone") and returns success; whoever next waits at that range
//!   publishes it. The handle claims a fresh record for its next operation.
//! - **The primary repairs a reclaimed process** with [`crate::Ring::repair_dead`]:
//!   every record of that pid+start time is voided (producer INTENT: holes), returned
//!   (consumer INTENT: the elements come back in the report for the caller to put back)
//!   or kept (DONE), published when at the tail, and freed.
//! - **Records of dead owners** whose operation is no longer pending are recovered by
//!   the next claimer when no record is free, and keep their last state until then, so
//!   [`crate::Ring::record_of`] can tell a caller whether operation `#s` completed.
//!
//! **Why nothing is lost or duplicated.** Only two kinds of writer move a tail from `t`:
//! the live owner of the range at `t` (a plain store, after seeing the tail at `t`), and
//! the holder of the repair right of a *gone* owner's record at `t` (a CAS from `t`); a
//! gone owner never stores again, and the right is exclusive (a repairer's token in the
//! record; a dead repairer's right is taken over, a live one's waited for), so the tail
//! moves past each range once. A repairer writes holes only into a dead producer's range
//! (nobody else writes it: it is reserved and its owner is dead) and reads a dead
//! consumer's range only while the tail is still before it (producers cannot reuse it).
//! A producer's elements are either all published (DONE: its copy finished before the
//! death) or all holes (the owner died before DONE; its caller still has them, and
//! [`crate::Ring::record_of`] says VOIDED): never a prefix of one operation. A dead
//! consumer's elements are either with its caller (DONE) or handed to the adopter or to
//! the primary ([`RepairReport::returned`]).
//!
//! **Not done: voiding a live, stopped owner.** A producer stopped (SIGSTOP) after its
//! CAS still holds the tail until it resumes: waiters behind it hand over and return
//! success, consumers see nothing new meanwhile. Voiding it safely needs more than a CAS
//! on the state: a producer stopped *in the middle of its copy* would, on resuming,
//! write into slots that were turned into holes, published, consumed and possibly reused
//! (a stale element in someone else's slot). So the owner must first move its record
//! INTENT→WRITING with an RMW (only an untouched INTENT range may be voided, a WRITING one
//! is waited for), and move WRITING→DONE with a second RMW (a voided-meanwhile owner
//! returns 0); its tail publication must become a CAS (a helper may have published a
//! DONE range). That is two RMWs on a private line and an RMW on the tail per operation,
//! the cost to measure before adopting it. A consumer can be voided more cheaply (its
//! late reads are harmless; one CAS INTENT→DONE after the copy), but the voider then
//! needs room for the elements, as for a dead one.
//!
//! Memory-ordering pairs (labels continue those of `core.rs`):
//! - **A5**: a repairer loads the head with Acquire before reading records: every record
//!   written before a CAS that moved the head is visible (pairs with R3).
//! - **R6/A6**: an owner's DONE store is Release (its slot copies are done); a repairer
//!   loads the state with Acquire before publishing those slots.
//! - **R7/A7**: a repairer's hole writes, `holes` count and VOIDED state are published
//!   by its tail CAS with Release (it is R1/R2 for those slots).

use std::sync::atomic::AtomicU32 as StdAtomicU32;

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

/// Record states (low half of `state`).
pub(crate) const ST_IDLE: u32 = 0;
/// Range written, head CAS about to happen or done; slots not (all) copied.
pub(crate) const ST_INTENT: u32 = 1;
/// Producer: slots written. Consumer: slots copied out.
pub(crate) const ST_DONE: u32 = 2;
/// Repaired: producer slots are holes; consumer elements went to a repairer.
pub(crate) const ST_VOIDED: u32 = 3;

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

/// A state word as (state, seq); its bits 8.. of the low half are the adopted count.
fn unpack_state(w: u64) -> (u32, u32) {
    (w as u32 & 0xff, (w >> 32) as u32)
}

/// Elements a consumer operation adopted (bits 8..32 of the state's low half).
fn adopted_of(w: u64) -> u32 {
    w as u32 >> 8
}

/// True while the process `pid` exists (a zombie counts as existing).
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(loom)]
    {
        // Under loom every thread is this process; a "dead" handle is given another pid.
        pid == std::process::id()
    }
    #[cfg(not(loom))]
    {
        use nix::errno::Errno;
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        if raw <= 0 {
            return false;
        }
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
            Err(Errno::ESRCH)
        )
    }
}

/// True once a process has finished: no such pid, or a zombie (exited, not yet reaped by
/// its parent: its memory is gone, it writes nothing more). A process still running its
/// exit path counts as alive. Reads `/proc` (cold paths only).
pub fn process_gone(pid: u32) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    if cfg!(any(loom, miri)) {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x"))
}

/// Start time of process `pid` (`/proc/PID/stat` field 22, clock ticks since boot), or
/// None when unknown. Together with the pid it names one process, even after pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    if cfg!(any(loom, miri)) {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn my_start_time() -> u64 {
    static MINE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MINE.get_or_init(|| process_start_time(std::process::id()).unwrap_or(0))
}

/// A repair token unique to one handle (or one `repair_dead` call) of this process.
pub(crate) fn new_token() -> u64 {
    // Relaxed: an id generator; uniqueness comes from the RMW.
    static NEXT: StdAtomicU32 = StdAtomicU32::new(1);
    u64::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) << 32
        | u64::from(std::process::id())
}

/// True when the process named by an owner word (`side << 32 | pid`) is gone: pid 0
/// (handed over), dead, or reused by another process (start time differs).
pub(crate) fn owner_gone(owner: u64, start_time: u64) -> bool {
    let pid = owner as u32;
    if pid == 0 {
        return true;
    }
    if pid == std::process::id() {
        return false;
    }
    // A zombie is gone: the primary repairs a killed process once it is one (its parent
    // may not have reaped it yet).
    if process_gone(pid) {
        return true;
    }
    start_time != 0 && process_start_time(pid).is_some_and(|t| t != start_time)
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
                    r.start_time.store(my_start_time(), Ordering::Relaxed);
                    r.repairer.store(0, Ordering::Relaxed);
                    r.range.store(0, Ordering::Relaxed);
                    r.state.store(pack_state(seq, ST_IDLE), Ordering::Release);
                    return Some(i as u32);
                }
            }
        }
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

    /// Whether the dead owner's INTENT record `i` (range `[start, start+len)` on side
    /// `prod`) is the one whose head CAS took that range. Several records can name the
    /// same start: an owner whose CAS failed keeps its INTENT until it rewrites it, and
    /// a process killed there (or a thread of it, killed with a peer that won) leaves a
    /// stale one. A finished (DONE) or repaired (VOIDED) rival is the winner; a live rival
    /// in INTENT decides itself soon (it copies, or rewrites its record). Among dead
    /// INTENT rivals only, the winner's range ends where the next one begins (the head,
    /// or another record's start); equal lengths cannot be told apart and need not be:
    /// the lowest index is taken as the winner, the others as stale.
    pub(crate) fn intent_claim(&self, prod: bool, i: usize, start: u32, len: u32) -> Claim {
        let (ht, side) = self.side(prod);
        let mut rivals: Vec<(usize, u32)> = Vec::new();
        for j in 0..SCAN {
            if j == i {
                continue;
            }
            let r = self.record(j);
            // Acquire, A6: as in `repair_at`.
            let owner = r.owner.load(Ordering::Acquire);
            if owner >> 32 != side {
                continue;
            }
            let (st, _) = unpack_state(r.state.load(Ordering::Acquire));
            let (s, l) = unpack(r.range.load(Ordering::Relaxed));
            if st == ST_IDLE || s != start || l == 0 {
                continue;
            }
            if st != ST_INTENT {
                return Claim::Lost;
            }
            if !owner_gone(owner, r.start_time.load(Ordering::Relaxed)) {
                return Claim::Unknown;
            }
            rivals.push((j, l));
        }
        if rivals.is_empty() {
            return Claim::Won;
        }
        // A5: the head and every record written before the CAS that moved it.
        let head = ht.head.load(Ordering::Acquire);
        let boundary = |l: u32| {
            let end = start.wrapping_add(l);
            end == head
                || (0..SCAN).any(|j| {
                    let r = self.record(j);
                    let owner = r.owner.load(Ordering::Acquire);
                    let (st, _) = unpack_state(r.state.load(Ordering::Acquire));
                    owner >> 32 == side
                        && st != ST_IDLE
                        && unpack(r.range.load(Ordering::Relaxed)).0 == end
                })
        };
        rivals.push((i, len));
        let fits: Vec<(usize, u32)> = rivals.into_iter().filter(|&(_, l)| boundary(l)).collect();
        match fits.first() {
            Some(&(_, l0)) if fits.iter().all(|&(_, l)| l == l0) => {
                if fits.iter().map(|&(j, _)| j).min() == Some(i) {
                    Claim::Won
                } else {
                    Claim::Lost
                }
            }
            _ => Claim::Unknown,
        }
    }

    /// One look at the records for the range starting at the tail `t` of side `prod`;
    /// repairs it if its owner is gone. `room` receives the elements of a dead
    /// consumer's uncopied range when they fit (`adopted` counts them).
    pub(crate) fn repair_at(
        &self,
        prod: bool,
        t: u32,
        token: u64,
        room: &mut [T],
        adopted: &mut u32,
        mine: Option<&OpRecord>,
    ) -> Step {
        let (ht, side) = self.side(prod);
        // A5: every record written before a head CAS up to here is visible.
        let head = ht.head.load(Ordering::Acquire);
        let span = head.wrapping_sub(t);
        if span == 0 || span > self.capacity {
            return Step::Nothing;
        }
        // The record at `t` and how many claim it; DONE/VOIDED ones are certainly real.
        let mut found: Option<(usize, u64, u32)> = None;
        let mut intents = 0;
        for i in 0..SCAN {
            let r = self.record(i);
            let owner = r.owner.load(Ordering::Acquire);
            if owner >> 32 != side {
                continue;
            }
            // A6: pairs with R6 (and with a repairer's Release of VOIDED).
            let sw = r.state.load(Ordering::Acquire);
            let (st, _) = unpack_state(sw);
            let (start, len) = unpack(r.range.load(Ordering::Relaxed));
            if st == ST_IDLE || start != t || len == 0 || len > span {
                continue;
            }
            if !owner_gone(owner, r.start_time.load(Ordering::Relaxed)) {
                // A live owner claims `t`: it finishes (or rewrites a failed attempt).
                return Step::Nothing;
            }
            if st == ST_INTENT {
                intents += 1;
                if found.is_some_and(|(_, w, _)| unpack_state(w).0 != ST_INTENT) {
                    continue;
                }
            }
            found = Some((i, sw, len));
        }
        let Some((i, sw, len)) = found else {
            return Step::Nothing;
        };
        if unpack_state(sw).0 == ST_INTENT && intents > 1 {
            // Several dead owners tried the same head; only one CAS succeeded: repair the
            // winner if the records tell which (`intent_claim`), else leave it.
            let winner = (0..SCAN).find_map(|j| {
                let r = self.record(j);
                let owner = r.owner.load(Ordering::Acquire);
                let w = r.state.load(Ordering::Acquire);
                let (s, l) = unpack(r.range.load(Ordering::Relaxed));
                (owner >> 32 == side
                    && unpack_state(w).0 == ST_INTENT
                    && s == t
                    && l != 0
                    && l <= span
                    && self.intent_claim(prod, j, t, l) == Claim::Won)
                    .then_some((j, w, l))
            });
            let Some((i, sw, len)) = winner else {
                return Step::Nothing;
            };
            return self.repair_record(prod, i, sw, t, len, token, room, adopted, mine);
        }
        self.repair_record(prod, i, sw, t, len, token, room, adopted, mine)
    }

    /// Repairs record `i` (state word `sw`, range `[t, t+len)`): takes the repair right,
    /// voids or adopts an INTENT range, publishes when the tail is at `t`.
    #[allow(clippy::too_many_arguments)]
    fn repair_record(
        &self,
        prod: bool,
        i: usize,
        sw: u64,
        t: u32,
        len: u32,
        token: u64,
        room: &mut [T],
        adopted: &mut u32,
        mine: Option<&OpRecord>,
    ) -> Step {
        let (ht, _) = self.side(prod);
        let r = self.record(i);
        let tok = r.repairer.load(Ordering::Acquire);
        if tok != token && tok != 0 && !token_gone(tok) {
            return Step::Nothing;
        }
        // AcqRel: taking the right also acquires what a dead repairer did before.
        if tok != token
            && r.repairer
                .compare_exchange(tok, token, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Step::Nothing;
        }
        // A6 again: the state may have moved on (a previous repairer of this record).
        let cur = r.state.load(Ordering::Acquire);
        if cur != sw && cur != sw & !0xffff_ffff | u64::from(ST_VOIDED) {
            r.repairer.store(0, Ordering::Release);
            return Step::Nothing;
        }
        let (st, seq) = unpack_state(cur);
        if st == ST_INTENT {
            if prod {
                // A2: consumers released these slots (the dead producer's CAS was
                // justified by such a load; ours orders our writes after their reads).
                let _ = self.cons().tail.load(Ordering::Acquire);
                for k in 0..len {
                    // SAFETY: the dead owner's reservation; nobody else writes it (the
                    // owner is gone and we hold the repair right).
                    unsafe { self.slot_ptr(t.wrapping_add(k)).write(T::HOLE) };
                }
                // Relaxed: published by the tail CAS (R7).
                self.prod().tail.holes.fetch_add(len, Ordering::Relaxed);
            } else {
                if (room.len() as u32).saturating_sub(*adopted) < len {
                    r.repairer.store(0, Ordering::Release);
                    return Step::Nothing;
                }
                // A1: the producers published these slots.
                let _ = self.prod().tail.load(Ordering::Acquire);
                let at = *adopted as usize;
                if let Some(m) = mine {
                    // Our own record says how many we adopted before they leave the
                    // ring (only we write it; the tail CAS below publishes it too).
                    let (_, my_seq) = unpack_state(m.state.load(Ordering::Relaxed));
                    let low = ST_DONE | (*adopted + len) << 8;
                    m.state.store(pack_state(my_seq, low), Ordering::Release);
                }
                // SAFETY: a dead consumer's reservation of published slots; producers
                // do not overwrite them before the tail passes, and we hold the right.
                unsafe { self.read_slots(t, &mut room[at..at + len as usize]) };
                *adopted += len;
            }
            // R7: Release (also published by the tail CAS below).
            r.state.store(pack_state(seq, ST_VOIDED), Ordering::Release);
        }
        // R7 (R1 for producers, R2 for consumers): publishes the repaired range.
        let moved = ht
            .tail
            .compare_exchange(t, t.wrapping_add(len), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            // Relaxed: statistics and a hint.
            self.ctrl().repairs.fetch_add(1, Ordering::Relaxed);
            if r.owner.load(Ordering::Relaxed) as u32 == 0 {
                let _ = ht
                    .tail
                    .handed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| h.checked_sub(1));
            }
        }
        r.repairer.store(0, Ordering::Release);
        Step::Moved
    }

    /// Record `i` if it was handed over (owner pid 0, a side set: see `hand_over`), as
    /// [`crate::Ring::handed_record`] gives it.
    pub(crate) fn handed_view(&self, i: usize) -> Option<RecordView> {
        if i >= SCAN {
            return None;
        }
        let r = self.record(i);
        // Acquire: pairs with `hand_over`'s Release (the DONE state before the owner word).
        let owner = r.owner.load(Ordering::Acquire);
        if owner as u32 != 0 || owner >> 32 == 0 {
            return None;
        }
        let producer = owner >> 32 == SIDE_PROD;
        let sw = r.state.load(Ordering::Acquire);
        let (st, seq) = unpack_state(sw);
        let (start, len) = unpack(r.range.load(Ordering::Relaxed));
        let state = match st {
            ST_INTENT => OpState::Reserving,
            ST_DONE => OpState::Done,
            ST_VOIDED => OpState::Voided,
            _ => OpState::Idle,
        };
        Some(RecordView {
            index: i,
            producer,
            seq,
            state,
            start,
            len,
            pending: st != ST_IDLE && len != 0 && self.pending(producer, start),
            adopted: adopted_of(sw),
        })
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
            let producer = owner >> 32 == SIDE_PROD;
            let sw = r.state.load(Ordering::Acquire);
            let (st, seq) = unpack_state(sw);
            let (start, len) = unpack(r.range.load(Ordering::Relaxed));
            let state = match st {
                ST_INTENT => OpState::Reserving,
                ST_DONE => OpState::Done,
                ST_VOIDED => OpState::Voided,
                _ => OpState::Idle,
            };
            let pending = st != ST_IDLE && len != 0 && self.pending(producer, start);
            out.push((
                i,
                RecordView {
                    index: i,
                    producer,
                    seq,
                    state,
                    start,
                    len,
                    pending,
                    adopted: adopted_of(sw),
                },
            ));
        }
        out
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
                let mut claim = Claim::Won;
                if unpack_state(sw).0 == ST_INTENT {
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
                if unpack_state(sw).0 == ST_INTENT
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
                        .store(pack_state(unpack_state(sw).1, ST_VOIDED), Ordering::Release);
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
