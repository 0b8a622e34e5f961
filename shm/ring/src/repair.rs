//! The repair of the range at a tail (see [`crate::records`] for the protocol and its
//! proof): which record claims it, whether its owner is gone or has held the tail too
//! long, and the voiding, adoption and publication under the record's repair right.

use super::{
    adopt_word, done_word, is_voided, now_ms, owner_gone, pack_range, token_gone, unpack,
    unpack_state, voided_word, voider_of, Claim, Step, ADOPT_MAX, SCAN, ST_BUSY, ST_DONE, ST_IDLE,
    ST_INTENT, ST_VOIDED,
};
use crate::core::RingCore;
use crate::layout::{HeadTail, OpRecord};
use crate::sync::Ordering;
use crate::Element;

impl<T: Element> RingCore<T> {
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

    /// True once the range at tail `t` of the side `ht` has held it longer than
    /// [`RingCore::void_after_ms`]: the first look at `t` stamps the time into
    /// [`TailLine::stuck`](crate::layout::TailLine::stuck), later looks at the same `t`
    /// compare (tails only grow, so the same value means it never moved meanwhile).
    fn held_long(&self, ht: &HeadTail, t: u32) -> bool {
        match self.void_after_ms {
            0 => return true,
            u32::MAX => return false,
            _ => {}
        }
        let now = now_ms() | 1;
        // Relaxed: a time stamp shared as a hint; a wrong one only changes when a live
        // owner is voided, which is correct at any time.
        let w = ht.tail.stuck.load(Ordering::Relaxed);
        if w != 0 && (w >> 32) as u32 == t {
            // +2: both readings are truncated to whole ms and have their low bit forced.
            return now.wrapping_sub(w as u32) >= self.void_after_ms.saturating_add(2);
        }
        let _ = ht.tail.stuck.compare_exchange(
            w,
            u64::from(t) << 32 | u64::from(now),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// One look at the records for the range starting at the tail `t` of side `prod`;
    /// repairs it if its owner is gone, publishes it if it is DONE, voids it if its live
    /// owner has left it untouched (INTENT) longer than [`VOID_AFTER`]. `room` receives
    /// the elements of a dead or voided consumer's uncopied range when they fit
    /// (`adopted` counts them).
    pub(crate) fn repair_at(
        &self,
        prod: bool,
        t: u32,
        token: u64,
        room: &mut [T],
        adopted: &mut u32,
        mine: Option<(u32, &OpRecord)>,
    ) -> Step {
        let (ht, side) = self.side(prod);
        // A5: every record written before a head CAS up to here is visible.
        let head = ht.head.load(Ordering::Acquire);
        let span = head.wrapping_sub(t);
        if span == 0 || span > self.capacity {
            return Step::Nothing;
        }
        let long = self.held_long(ht, t);
        // The records that claim `t`: a non-INTENT one is the winner of the head CAS
        // from `t` (a failed attempt stays INTENT until its owner resets it); INTENT ones
        // are the winner or failed attempts.
        let mut winner: Option<(usize, u64, u32, bool)> = None;
        let mut first: Option<(usize, u64, u32, bool)> = None;
        let (mut intents, mut live_intents) = (0u32, 0u32);
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
            let gone = owner_gone(owner, r.start_time.load(Ordering::Relaxed));
            if st == ST_INTENT {
                intents += 1;
                live_intents += u32::from(!gone);
                first.get_or_insert((i, sw, len, gone));
            } else {
                winner = Some((i, sw, len, gone));
            }
        }
        if let Some((i, sw, len, gone)) = winner {
            if !gone && unpack_state(sw).0 == ST_BUSY {
                // A live owner copying (producer) or publishing (consumer): it finishes.
                return Step::Nothing;
            }
            return self.repair_record(prod, i, sw, t, len, gone, token, room, adopted, mine);
        }
        let Some((i, sw, len, gone)) = first else {
            return Step::Nothing;
        };
        if intents == 1 {
            // The only claimant: the winner. A live one is voided only once it has held
            // the tail longer than the bound (stopped, not merely preempted).
            if !gone && !long {
                return Step::Nothing;
            }
            return self.repair_record(prod, i, sw, t, len, gone, token, room, adopted, mine);
        }
        if live_intents > 0 {
            // A live rival decides within its operation (it copies, or resets a failed
            // attempt); which one won is not known now.
            return Step::Nothing;
        }
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
        self.repair_record(prod, i, sw, t, len, true, token, room, adopted, mine)
    }

    /// Repairs record `i` (state word `sw`, range `[t, t+len)`, owner `gone` or live):
    /// takes the repair right; voids an INTENT range (and a dead producer's BUSY one) with
    /// a CAS of its state to VOIDED, which a live owner's [`RingCore::begin_busy`] then
    /// fails on (producer: holes; consumer: adopted into `room` when it fits, else left);
    /// publishes the range when the tail is still at `t`.
    #[allow(clippy::too_many_arguments)]
    fn repair_record(
        &self,
        prod: bool,
        i: usize,
        sw: u64,
        t: u32,
        len: u32,
        gone: bool,
        token: u64,
        room: &mut [T],
        adopted: &mut u32,
        mine: Option<(u32, &OpRecord)>,
    ) -> Step {
        let (ht, _) = self.side(prod);
        let r = self.record(i);
        let tok = r.repairer.load(Ordering::Acquire);
        if tok != token && tok != 0 && !token_gone(tok) {
            return Step::Nothing;
        }
        // AcqRel: taking the right also acquires what an earlier holder did (its tail
        // CAS, so a range it published is not repaired again).
        if tok != token
            && r.repairer
                .compare_exchange(tok, token, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Step::Nothing;
        }
        // A6 again: the state may have moved on (the owner, or an earlier repairer of this
        // record, who voided it and died before publishing). The range must still be
        // this record's and still at the tail.
        let (st0, seq) = unpack_state(sw);
        let cur = r.state.load(Ordering::Acquire);
        if (cur != sw && !is_voided(cur, seq))
            || r.range.load(Ordering::Relaxed) != pack_range(t, len)
            || ht.tail.load(Ordering::Acquire) != t
        {
            r.repairer.store(0, Ordering::Release);
            return Step::Nothing;
        }
        let st = if is_voided(cur, seq) { ST_VOIDED } else { st0 };
        if prod && (st == ST_INTENT || (st == ST_BUSY && gone)) {
            // Exclusion first: once VOIDED, a live owner's INTENT->BUSY CAS fails and it
            // never writes these slots (a dead one writes nothing more).
            if r.state
                .compare_exchange(
                    cur,
                    voided_word(seq, None),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                r.repairer.store(0, Ordering::Release);
                return Step::Nothing;
            }
        }
        if prod && st != ST_DONE {
            // INTENT, a dead owner's BUSY, or VOIDED by a repairer that may have died
            // before its hole writes: (re)write the holes (nobody else writes the range).
            // A2: consumers released these slots (the owner's CAS was justified by such a
            // load; ours orders our writes after their reads).
            let _ = self.cons().tail.load(Ordering::Acquire);
            for k in 0..len {
                // SAFETY: a voided reservation still before the tail: its owner never
                // writes it (voided or dead) and we hold the repair right.
                unsafe { self.slot_ptr(t.wrapping_add(k)).write(T::HOLE) };
            }
            // Relaxed: published by the tail CAS (R7). Counted again after a repairer's
            // death: an over-count only makes consumers look for holes.
            self.prod().tail.holes.fetch_add(len, Ordering::Relaxed);
        }
        if !prod && st == ST_VOIDED && voider_of(cur) != 0 {
            // A consumer that adopted this range and died before settling its count.
            self.settle_adoption(voider_of(cur) as usize - 1, i, seq, len);
        }
        if !prod && st == ST_INTENT {
            if (room.len() as u32).saturating_sub(*adopted) < len || *adopted + len > ADOPT_MAX {
                r.repairer.store(0, Ordering::Release);
                return Step::Nothing;
            }
            // A1: the producers published these slots.
            let _ = self.prod().tail.load(Ordering::Acquire);
            let at = *adopted as usize;
            // SAFETY: an uncopied consumer reservation of published slots, before the
            // consumer tail (producers do not overwrite it) and we hold the right. A live
            // owner may read it too (reads only).
            unsafe { self.read_slots(t, &mut room[at..at + len as usize]) };
            // Only we write our record while we wait. Before the range can leave the
            // ring, our record says we are adopting it (tentative: whether it counts is
            // what the voided record says, so a death on either side of the CAS below is
            // exact); R8: Release publishes `adopt_from` with the count.
            let my = mine.map(|(k, m)| {
                let (_, my_seq) = unpack_state(m.state.load(Ordering::Relaxed));
                m.adopt_from.store(adopt_word(i, seq), Ordering::Relaxed);
                m.state
                    .store(done_word(my_seq, *adopted, len), Ordering::Release);
                (k, m, my_seq)
            });
            shm::crash_point!("ring.adopt_recorded");
            // The owner's copy and ours race: exactly one of its INTENT->BUSY and our
            // INTENT->VOIDED succeeds. Our VOIDED names our record (the evidence).
            let voided = voided_word(seq, my.map(|(k, _, _)| k));
            if r.state
                .compare_exchange(cur, voided, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                if let Some((_, m, my_seq)) = my {
                    // R8: the tentative count withdrawn.
                    m.state
                        .store(done_word(my_seq, *adopted, 0), Ordering::Release);
                }
                r.repairer.store(0, Ordering::Release);
                return Step::Nothing;
            }
            shm::crash_point!("ring.adopt_voided");
            if let Some((_, m, my_seq)) = my {
                // R8: settled by ourselves (a survivor publishing for us settles it if
                // we die before this store).
                m.state
                    .store(done_word(my_seq, *adopted + len, 0), Ordering::Release);
            }
            *adopted += len;
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
        // Release: after the tail CAS, so the next holder sees the range published.
        r.repairer.store(0, Ordering::Release);
        Step::Moved
    }
}
