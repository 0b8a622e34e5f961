//! Unit tests of the reservation records: a handle "dies" at each step of an MP enqueue or
//! MC dequeue (test hooks relabel its record with a dead pid), survivors keep working and
//! repair, the primary's `repair_dead` returns what a dead consumer never copied, and a
//! waiter behind a live slow peer hands its range over instead of stalling.

use super::*;
use std::time::{Duration, Instant};

fn ring(mode: SyncMode) -> Ring<u64> {
    let region = Region::heap(64 << 10);
    Ring::init(&region, 0, 64 << 10, "repair", 16, mode).unwrap()
}

/// A pid that no process has now: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!pid_alive(pid));
    pid
}

fn drain(c: &mut ScConsumer<u64>) -> Vec<u64> {
    let mut out = [0u64; 16];
    let n = c.dequeue_burst(&mut out).unwrap();
    out[..n].to_vec()
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_producer_dead_after_its_head_cas_becomes_holes_and_survivors_go_on() {
    let r = ring(SyncMode::MP_SC);
    let mut dead = r.mp_producer().unwrap();
    let mut live = dead.clone();
    let mut c = r.sc_consumer().unwrap();
    live.enqueue_bulk(&[1]).unwrap();
    let seq = dead.next_op_seq();
    assert_eq!(dead.__reserve(&[100, 101], false).unwrap().1, 2);
    let pid = dead_pid();
    dead.__die(pid);
    // Repaired at once, or (on a loaded machine, the first look later than the
    // hand-over bound) handed over and published by the consumer's help: same result.
    assert_eq!(live.enqueue_bulk(&[2, 3]).unwrap(), 2);
    assert_eq!(r.count(), 5, "holes count until skipped");
    assert_eq!(drain(&mut c), [1, 2, 3]);
    assert!(r.repairs() >= 1);
    let v = r.record_of(pid, 0);
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].seq, v[0].state, v[0].pending),
        (seq, OpState::Voided, false)
    );
    assert!(!v[0].completed(seq));
    let rep = r.repair_dead(pid, 0);
    assert_eq!((rep.records, rep.voided, rep.left_pending), (1, 0, 0));
    assert!(r.record_of(pid, 0).is_empty(), "freed");
    // The ring is whole: fill it to capacity and drain it.
    let all: Vec<u64> = (10..26).collect();
    assert_eq!(live.enqueue_bulk(&all).unwrap(), 16);
    assert_eq!(drain(&mut c), all);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_producer_dead_after_its_copy_is_published_by_the_survivor() {
    let r = ring(SyncMode::MP_MC);
    let mut dead = r.mp_producer().unwrap();
    let mut live = dead.clone();
    let mut c = r.mc_consumer().unwrap();
    let seq = dead.next_op_seq();
    dead.__reserve(&[100, 101], true).unwrap();
    let pid = dead_pid();
    dead.__die(pid);
    assert_eq!(live.enqueue_burst(&[1]).unwrap(), 1);
    let mut out = [0u64; 8];
    assert_eq!(c.dequeue_burst(&mut out).unwrap(), 3);
    assert_eq!(out[..3], [100, 101, 1]);
    let v = r.record_of(pid, 0);
    assert!(v[0].completed(seq), "{v:?}");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_consumer_dead_after_its_head_cas_is_adopted_by_a_survivor_with_room() {
    let r = ring(SyncMode::SP_MC);
    let mut p = r.sp_producer().unwrap();
    p.enqueue_bulk(&[1, 2, 3, 4, 5, 6]).unwrap();
    let mut dead = r.mc_consumer().unwrap();
    let mut live = dead.clone();
    let mut buf = [0u64; 2];
    assert_eq!(dead.__reserve(&mut buf, false).unwrap(), (0, 2));
    let pid = dead_pid();
    dead.__die(pid);
    let mut out = [0u64; 8];
    let n = live.dequeue_burst(&mut out).unwrap();
    assert_eq!(
        out[..n],
        [3, 4, 5, 6, 1, 2],
        "own elements, then the adopted ones"
    );
    assert_eq!(r.count(), 0);
    assert_eq!(r.record_of(pid, 0)[0].state, OpState::Voided);
    // The survivor's own record says so (a caller dying now would know from it).
    let mine = r.record_of(std::process::id(), 0);
    let v = mine
        .iter()
        .find(|v| Some(v.index) == live.record())
        .unwrap();
    assert_eq!((v.seq, v.len, v.adopted), (live.next_op_seq() - 1, 4, 2));
    assert!(v.completed(v.seq));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_dead_consumers_elements_come_back_from_repair_dead_when_no_survivor_has_room() {
    let r = ring(SyncMode::MP_MC);
    let mut p = r.mp_producer().unwrap();
    p.enqueue_bulk(&[1, 2, 3, 4]).unwrap();
    let mut dead = r.mc_consumer().unwrap();
    let mut live = dead.clone();
    let mut buf = [0u64; 2];
    dead.__reserve(&mut buf, false).unwrap();
    let pid = dead_pid();
    dead.__die(pid);
    // The survivor's bulk has no room: it hands its own range over and returns.
    let mut out = [0u64; 2];
    let t = Instant::now();
    assert_eq!(live.dequeue_bulk(&mut out).unwrap(), 2);
    assert_eq!(out, [3, 4]);
    assert!(t.elapsed() >= HANDOVER_AFTER);
    // The primary reclaims the dead process: its two elements come back, and the tail
    // passes both ranges.
    let rep = r.repair_dead(pid, 0);
    assert_eq!(rep.returned, [1, 2]);
    assert_eq!(rep.left_pending, 0);
    assert_eq!(r.count(), 0);
    let all: Vec<u64> = (10..26).collect();
    assert_eq!(p.enqueue_bulk(&all).unwrap(), 16, "every slot usable again");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_live_slow_peers_finished_range_is_published_by_the_waiter_behind_it() {
    let r = ring(SyncMode::MP_SC);
    let mut slow = r.mp_producer().unwrap();
    let mut fast = slow.clone();
    let mut c = r.sc_consumer().unwrap();
    // The slow one has copied (DONE) and stops before publishing: the fast one publishes
    // both ranges itself, no hand-over.
    let (old, take) = slow.__reserve(&[7], true).unwrap();
    let rec = fast.record();
    assert_eq!(fast.enqueue_bulk(&[8]).unwrap(), 1);
    assert_eq!(fast.record(), rec, "published, not handed over");
    assert_eq!(r.count(), 2, "both published before any consumer helped");
    assert_eq!(drain(&mut c), [7, 8]);
    // The slow one resumes: its range is already published (its CAS sees the tail past).
    slow.__publish(old, take).unwrap();
    assert!(drain(&mut c).is_empty());
    assert_eq!(fast.enqueue_bulk(&[9]).unwrap(), 1);
    assert_eq!(slow.enqueue_bulk(&[10]).unwrap(), 1);
    assert_eq!(drain(&mut c), [9, 10]);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_producer_behind_a_live_untouched_peer_hands_over_until_the_bound() {
    let mut r = ring(SyncMode::MP_SC);
    r.__set_void_after_ms(u32::MAX);
    let mut slow = r.mp_producer().unwrap();
    let mut fast = slow.clone();
    let mut c = r.sc_consumer().unwrap();
    let (old, _) = slow.__reserve(&[7], false).unwrap();
    // Live and never voided (bound infinite here): the fast one hands over.
    let (rec, seq) = (fast.record().unwrap(), fast.next_op_seq());
    assert!(r.handed_record(rec).is_none(), "in use, not handed over");
    let t = Instant::now();
    assert_eq!(fast.enqueue_bulk(&[8]).unwrap(), 1);
    assert!(t.elapsed() >= HANDOVER_AFTER);
    // Its operation is no longer listed under its pid, but the handed record says it
    // took effect (what a cache's recovery asks after a kill right here).
    let v = r.handed_record(rec).expect("handed over");
    assert_eq!(
        (v.seq, v.state, v.producer, v.pending),
        (seq, OpState::Done, true, true)
    );
    assert!(
        fast.record().is_some(),
        "a fresh record after the hand-over"
    );
    assert!(
        drain(&mut c).is_empty(),
        "nothing published before the slow one"
    );
    assert_eq!(slow.__resume(old, &[7]).unwrap(), 1);
    // The consumer, short of elements, publishes the handed-over range.
    assert_eq!(drain(&mut c), [7, 8]);
    assert_eq!(fast.enqueue_bulk(&[9]).unwrap(), 1);
    assert_eq!(drain(&mut c), [9]);
}

fn own_record(r: &Ring<u64>, index: Option<usize>) -> RecordView {
    r.record_of(std::process::id(), 0)
        .into_iter()
        .find(|v| Some(v.index) == index)
        .unwrap()
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_stopped_producer_is_voided_after_the_bound_and_resumes_to_nothing_enqueued() {
    let mut r = ring(SyncMode::MP_SC);
    let bound = Duration::from_millis(60);
    r.__set_void_after_ms(bound.as_millis() as u32);
    let mut stopped = r.mp_producer().unwrap();
    let mut live = stopped.clone();
    let mut c = r.sc_consumer().unwrap();
    let seq = stopped.next_op_seq();
    // Stopped between its head CAS and its copy (INTENT, untouched).
    let (old, take) = stopped.__reserve(&[100, 101], false).unwrap();
    assert_eq!(take, 2);
    let t = Instant::now();
    // Not voidable yet: the live producer hands over after HANDOVER_AFTER...
    assert_eq!(live.enqueue_bulk(&[1]).unwrap(), 1);
    // ...and the consumer, short, voids the stopped range once it held the tail longer
    // than the bound, then publishes the handed-over one.
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "never voided");
        got = drain(&mut c);
        std::thread::yield_now();
    }
    assert!(t.elapsed() >= bound, "voided early: {:?}", t.elapsed());
    assert_eq!(got, [1]);
    let v = own_record(&r, stopped.record());
    assert_eq!((v.seq, v.state, v.pending), (seq, OpState::Voided, false));
    assert!(r.repairs() >= 1);
    // The stopped one resumes: voided, nothing written, 0 enqueued (its caller still
    // holds the elements); its next enqueue works.
    assert_eq!(stopped.__resume(old, &[100, 101]).unwrap(), 0);
    assert!(drain(&mut c).is_empty(), "no stale element published");
    assert_eq!(stopped.enqueue_bulk(&[100, 101]).unwrap(), 2);
    assert_eq!(drain(&mut c), [100, 101]);
    // The ring is whole: fill it to capacity and drain it.
    let all: Vec<u64> = (10..26).collect();
    assert_eq!(live.enqueue_bulk(&all).unwrap(), 16);
    assert_eq!(drain(&mut c), all);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_stopped_producer_voided_inside_a_full_enqueue_retries_the_same_operation() {
    // The void lands between the head CAS and the copy of a real `enqueue_bulk` (a
    // thread holds it there): the enqueue retries with the same sequence number and
    // delivers once.
    let mut r = ring(SyncMode::MP_SC);
    r.__set_void_after_ms(0);
    let mut a = r.mp_producer().unwrap();
    let mut b = a.clone();
    let mut c = r.sc_consumer().unwrap();
    let (old, _) = a.__reserve(&[5], false).unwrap();
    assert_eq!(
        b.enqueue_bulk(&[6]).unwrap(),
        1,
        "voids a at its first look"
    );
    assert_eq!(a.__resume(old, &[5]).unwrap(), 0);
    let seq = a.next_op_seq();
    assert_eq!(a.enqueue_bulk(&[5]).unwrap(), 1);
    assert_eq!(drain(&mut c), [6, 5]);
    assert!(own_record(&r, a.record()).completed(seq));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_stopped_consumer_is_voided_and_adopted_by_a_waiter_with_room() {
    let mut r = ring(SyncMode::SP_MC);
    r.__set_void_after_ms(0);
    let mut p = r.sp_producer().unwrap();
    p.enqueue_bulk(&[1, 2, 3, 4, 5, 6]).unwrap();
    let mut stopped = r.mc_consumer().unwrap();
    let mut live = stopped.clone();
    let mut buf = [0u64; 2];
    let (old, take) = stopped.__reserve(&mut buf, false).unwrap();
    assert_eq!((old, take), (0, 2));
    let mut out = [0u64; 8];
    let n = live.dequeue_burst(&mut out).unwrap();
    assert_eq!(
        out[..n],
        [3, 4, 5, 6, 1, 2],
        "own elements, then the adopted ones"
    );
    let v = own_record(&r, live.record());
    assert_eq!((v.len, v.adopted), (4, 2));
    assert_eq!(own_record(&r, stopped.record()).state, OpState::Voided);
    // The stopped one resumes: its copy is discarded, nothing dequeued.
    assert_eq!(stopped.__resume(old, take, &mut buf).unwrap(), 0);
    assert_eq!(r.count(), 0);
    p.enqueue_bulk(&[7]).unwrap();
    let mut one = [0u64; 1];
    assert_eq!(stopped.dequeue_bulk(&mut one).unwrap(), 1);
    assert_eq!(one, [7]);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_stopped_consumer_is_left_when_no_waiter_has_room() {
    let mut r = ring(SyncMode::MP_MC);
    r.__set_void_after_ms(0);
    let mut p = r.mp_producer().unwrap();
    p.enqueue_bulk(&[1, 2, 3, 4]).unwrap();
    let mut stopped = r.mc_consumer().unwrap();
    let mut live = stopped.clone();
    let mut buf = [0u64; 2];
    let (old, take) = stopped.__reserve(&mut buf, false).unwrap();
    // An exact bulk has no room to adopt into: it hands over, the stopped range stays.
    let mut out = [0u64; 2];
    assert_eq!(live.dequeue_bulk(&mut out).unwrap(), 2);
    assert_eq!(out, [3, 4]);
    assert_eq!(own_record(&r, stopped.record()).state, OpState::Reserving);
    // It resumes and completes normally; the handed-over range is then published.
    assert_eq!(stopped.__resume(old, take, &mut buf).unwrap(), 2);
    assert_eq!(buf, [1, 2]);
    // The handed-over range behind it is published by the next operation short of room.
    let all: Vec<u64> = (10..26).collect();
    assert_eq!(p.enqueue_bulk(&all).unwrap(), 16, "every slot usable again");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn records_are_claimed_per_clone_freed_on_drop_and_recovered_from_dead_owners() {
    let r = ring(SyncMode::MP_MC);
    let mut hs: Vec<MpProducer<u64>> = Vec::new();
    let first = r.mp_producer().unwrap();
    for _ in 1..layout::REC_COUNT {
        hs.push(first.clone());
    }
    let idx: std::collections::HashSet<_> = hs.iter().map(|h| h.record().unwrap()).collect();
    assert_eq!(idx.len(), layout::REC_COUNT - 1);
    assert!(first.clone().record().is_none(), "table full: unrecorded");
    // A dead owner's idle record is recovered by the next claimer.
    let pid = dead_pid();
    hs.pop().unwrap().__die(pid);
    assert!(first.clone().record().is_some());
    drop(hs);
    assert!(r.mc_consumer().unwrap().record().is_some());
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn unrecorded_handles_still_time_out() {
    let mut r = ring(SyncMode::MP_SC);
    r.__set_void_after_ms(u32::MAX);
    let mut hs: Vec<MpProducer<u64>> = Vec::new();
    let mut slow = r.mp_producer().unwrap();
    for _ in 1..layout::REC_COUNT {
        hs.push(slow.clone());
    }
    let mut un = slow.clone();
    assert!(un.record().is_none());
    un.set_stall_timeout(Duration::from_millis(30));
    // A live untouched range, never voided here.
    slow.__reserve(&[1], false).unwrap();
    assert_eq!(un.enqueue_bulk(&[2]), Err(RingError::Stalled));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn skipped_holes_leave_holes_not_stale_copies_behind_the_kept_elements() {
    let r = ring(SyncMode::MP_MC);
    let mut dead = r.mp_producer().unwrap();
    let mut live = dead.clone();
    live.enqueue_bulk(&[1]).unwrap();
    dead.__reserve(&[100, 101], false).unwrap();
    dead.__die(dead_pid());
    live.enqueue_bulk(&[2, 3]).unwrap();
    let mut c = r.mc_consumer().unwrap();
    let mut out = [0u64; 8];
    assert_eq!(c.dequeue_burst(&mut out).unwrap(), 3);
    assert_eq!(out[..5], [1, 2, 3, u64::HOLE, u64::HOLE]);
    assert_eq!(out[5..], [0; 3], "untouched beyond what was taken");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_failed_attempt_at_the_same_start_as_a_dead_winner_is_stale_not_returned_again() {
    // Two threads of one process at the same head: one's CAS won and it copied (DONE),
    // the other's failed; the process was killed before either went on.
    let r = ring(SyncMode::MP_MC);
    let mut p = r.mp_producer().unwrap();
    p.enqueue_bulk(&[1, 2, 3, 4]).unwrap();
    let mut winner = r.mc_consumer().unwrap();
    let mut loser = winner.clone();
    let mut buf = [0u64; 2];
    assert_eq!(winner.__reserve(&mut buf, true).unwrap(), (0, 2));
    loser.__failed_attempt(0, 2);
    let pid = dead_pid();
    winner.__die(pid);
    loser.__die(pid);
    let rep = r.repair_dead(pid, 0);
    assert!(rep.returned.is_empty(), "the winner copied them: {rep:?}");
    assert_eq!((rep.stale, rep.published), (1, 1));
    assert_eq!(r.count(), 2, "only 3 and 4 are left");
    // The same with the winner not yet copied: its elements come back once.
    let mut p2 = r.mp_producer().unwrap();
    p2.enqueue_bulk(&[5]).unwrap();
    let mut winner = r.mc_consumer().unwrap();
    let mut loser = winner.clone();
    let mut buf = [0u64; 2];
    assert_eq!(winner.__reserve(&mut buf, false).unwrap(), (2, 2));
    loser.__failed_attempt(2, 2);
    let pid = dead_pid();
    winner.__die(pid);
    loser.__die(pid);
    let rep = r.repair_dead(pid, 0);
    assert_eq!(rep.returned, [3, 4], "{rep:?}");
    assert_eq!(rep.stale, 1);
    assert_eq!(r.count(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn a_dead_producers_failed_attempt_does_not_hole_a_published_range() {
    let r = ring(SyncMode::MP_MC);
    let mut winner = r.mp_producer().unwrap();
    let mut loser = winner.clone();
    assert_eq!(winner.__reserve(&[7, 8], true).unwrap(), (0, 2));
    loser.__failed_attempt(0, 3);
    let pid = dead_pid();
    winner.__die(pid);
    loser.__die(pid);
    let rep = r.repair_dead(pid, 0);
    assert_eq!((rep.voided, rep.stale, rep.published), (0, 1, 1), "{rep:?}");
    let mut c = r.mc_consumer().unwrap();
    let mut out = [0u64; 4];
    assert_eq!(c.dequeue_burst(&mut out).unwrap(), 2);
    assert_eq!(out[..2], [7, 8]);
}

#[test]
#[cfg_attr(miri, ignore = "threads and timing")]
fn objects_cycling_through_a_free_ring_survive_a_stopped_producer_exactly() {
    // The mempool's use: N objects cycle (dequeue a bulk, enqueue it back) through an
    // MP/MC ring with spare room while one producer is stopped inside an enqueue for a
    // while (voided meanwhile) and then resumes: every object is in the ring once at the end.
    let region = Region::heap(1 << 20);
    let mut r: Ring<u64> = Ring::init(&region, 0, 1 << 20, "cyc", 1024, SyncMode::MP_MC).unwrap();
    r.__set_void_after_ms(20);
    let n_obj = 500u64;
    let mut p = r.mp_producer().unwrap();
    p.enqueue_bulk(&(0..n_obj).collect::<Vec<_>>()).unwrap();
    let mut stopped = r.mp_producer().unwrap();
    let mut sc = r.mc_consumer().unwrap();
    let mut held = [0u64; 8];
    assert_eq!(sc.dequeue_bulk(&mut held).unwrap(), 8);
    let (old, take) = stopped.__reserve(&held, false).unwrap();
    assert_eq!(take, 8);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for k in 0..3usize {
            let (mut p, mut c) = (r.mp_producer().unwrap(), r.mc_consumer().unwrap());
            let stop = &stop;
            s.spawn(move || {
                let mut buf = vec![0u64; 1 + k * 7];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = c.dequeue_bulk(&mut buf).unwrap();
                    let mut off = 0;
                    while off < got {
                        off += p.enqueue_burst(&buf[off..got]).unwrap();
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(stopped.__resume(old, &held).unwrap(), 0, "voided meanwhile");
        assert_eq!(stopped.enqueue_bulk(&held).unwrap(), 8);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut all = Vec::new();
    let mut buf = [0u64; 64];
    loop {
        let k = sc.dequeue_burst(&mut buf).unwrap();
        if k == 0 && r.count() == 0 {
            break;
        }
        all.extend_from_slice(&buf[..k]);
    }
    all.sort_unstable();
    assert_eq!(all, (0..n_obj).collect::<Vec<_>>());
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process for a dead pid, and probes /proc")]
fn with_dead_records_kept_a_full_table_waits_for_repair_dead() {
    let r = ring(SyncMode::MP_MC);
    r.keep_dead_records();
    let first = r.mp_producer().unwrap();
    let mut hs: Vec<MpProducer<u64>> = (1..layout::REC_COUNT).map(|_| first.clone()).collect();
    let pid = dead_pid();
    let dead = hs.pop().unwrap();
    let idx = dead.record().unwrap();
    dead.__die(pid);
    let un = first.clone();
    assert!(
        un.record().is_none(),
        "the dead record is kept for recovery"
    );
    assert_eq!(r.unrecorded_handles(), 1);
    assert_eq!(r.record_of(pid, 0).len(), 1, "a recovery still reads it");
    let rep = r.repair_dead(pid, 0);
    assert_eq!(rep.records, 1);
    assert_eq!(first.clone().record(), Some(idx), "freed by repair_dead");
}

/// The adoption protocol's record words, as a dead adopter leaves them: a tentative count
/// counts only while the record it names is VOIDED by the adopter, and whoever publishes
/// that voided range settles the count first.
#[test]
fn a_tentative_adoption_counts_only_if_the_voided_cas_happened() {
    let r = ring(SyncMode::MP_MC);
    let adopter = r.mc_consumer().unwrap();
    let victim = r.mc_consumer().unwrap();
    let (k, i) = (adopter.record().unwrap(), victim.record().unwrap());
    let core = &r.core;
    let (m, v) = (core.record(k), core.record(i));
    use crate::sync::Ordering::SeqCst;
    m.range.store(super::records::pack_range(0, 4), SeqCst);
    m.adopt_from.store(super::records::adopt_word(i, 9), SeqCst);
    m.state.store(super::records::done_word(5, 2, 3), SeqCst);
    v.range.store(super::records::pack_range(4, 3), SeqCst);
    // The CAS never happened: the victim is still INTENT.
    v.state.store(
        super::records::pack_state(9, super::records::ST_INTENT),
        SeqCst,
    );
    assert_eq!(core.__view(k).adopted, 2);
    // It happened: the victim is VOIDED by the adopter.
    v.state
        .store(super::records::voided_word(9, Some(k as u32)), SeqCst);
    assert_eq!(core.__view(k).adopted, 5);
    // VOIDED by another adopter: not ours.
    v.state
        .store(super::records::voided_word(9, Some(k as u32 + 1)), SeqCst);
    assert_eq!(core.__view(k).adopted, 2);
    // Settled by the publisher of the voided range: confirmed, whatever the victim does.
    v.state
        .store(super::records::voided_word(9, Some(k as u32)), SeqCst);
    core.settle_adoption(k, i, 9, 3);
    assert_eq!(m.state.load(SeqCst), super::records::done_word(5, 5, 0));
    v.state.store(
        super::records::pack_state(9, super::records::ST_INTENT),
        SeqCst,
    );
    assert_eq!(core.__view(k).adopted, 5);
    // A settlement for another range changes nothing.
    m.state.store(super::records::done_word(5, 2, 3), SeqCst);
    core.settle_adoption(k, i, 9, 4);
    core.settle_adoption(k, i, 8, 3);
    assert_eq!(m.state.load(SeqCst), super::records::done_word(5, 2, 3));
}
