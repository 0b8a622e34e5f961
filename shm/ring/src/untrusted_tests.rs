//! Unit tests of the untrusted handles: a peer that moves the head every time, impossible
//! tails, a reservation never published, shadow indices, and a trusted peer on the other
//! end moving sequence numbers.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::*;
use crate::layout::HeadTail;
use crate::{Ring, SyncMode};
use shm::{Memseg, Region};

fn seg() -> Memseg {
    let seg = Memseg::create_in_region(Region::heap(1 << 20), "untrusted", 1).unwrap();
    seg.mark_ready();
    seg
}

thread_local! {
    /// Set: a "peer" moves the head just before each of this thread's CAS attempts.
    static MOVE_HEAD: Cell<bool> = const { Cell::new(false) };
    /// CAS attempts this thread made.
    static CAS_TRIES: Cell<u32> = const { Cell::new(0) };
}

/// Test hook run before every untrusted head CAS.
pub(super) fn before_cas(own: &HeadTail) {
    CAS_TRIES.with(|c| c.set(c.get() + 1));
    if MOVE_HEAD.with(Cell::get) {
        own.head.fetch_add(1, Ordering::Relaxed);
    }
}

fn ht(ring: &Ring<u64>, prod: bool) -> &HeadTail {
    if prod {
        ring.core.prod()
    } else {
        ring.core.cons()
    }
}

fn set(ring: &Ring<u64>, prod: bool, head: bool, v: u32) {
    let h = ht(ring, prod);
    let w = if head { &h.head } else { &*h.tail };
    w.store(v, Ordering::Relaxed);
}

fn get(ring: &Ring<u64>, prod: bool, head: bool) -> u32 {
    let h = ht(ring, prod);
    let w = if head { &h.head } else { &*h.tail };
    w.load(Ordering::Relaxed)
}

#[test]
fn untrusted_handles_move_elements_in_every_mode_across_wraparound() {
    let seg = seg();
    for (i, mode) in [
        SyncMode::SP_SC,
        SyncMode::MP_MC,
        SyncMode::MP_SC,
        SyncMode::SP_MC,
    ]
    .into_iter()
    .enumerate()
    {
        let ring = Ring::<u64>::create(&seg, &format!("m{i}"), 6, mode).unwrap();
        let mut p = ring.untrusted_producer();
        let mut c = ring.untrusted_consumer();
        let mut next = 0u64;
        let mut want = 0u64;
        for round in 0..20 {
            let items: Vec<u64> = (next..next + 4).collect();
            let n = p.enqueue_burst(&items).unwrap();
            next += n as u64;
            assert_eq!(
                p.enqueue_bulk(&[0; 7]).unwrap(),
                0,
                "more than the capacity"
            );
            let mut out = [0u64; 8];
            let k = c.dequeue_burst(&mut out[..(round % 5) + 1]).unwrap();
            for &v in &out[..k] {
                assert_eq!(v, want, "{mode:?}");
                want += 1;
            }
        }
        while let Some(v) = c.dequeue().unwrap() {
            assert_eq!(v, want);
            want += 1;
        }
        assert_eq!(want, next);
        assert_eq!((p.pending(), c.pending()), (0, 0));
    }
}

#[test]
fn a_peer_moving_the_head_every_time_gets_busy_after_a_fixed_number_of_tries() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "busy", 16, SyncMode::MP_MC).unwrap();
    let mut p = ring.untrusted_producer();
    let mut c = ring.untrusted_consumer();
    // Something to dequeue and room to enqueue, whatever the peer's moves.
    assert_eq!(p.enqueue_bulk(&[1; 8]).unwrap(), 8);
    MOVE_HEAD.with(|m| m.set(true));
    CAS_TRIES.with(|t| t.set(0));
    let mut out = [0u64; 1];
    assert_eq!(c.dequeue_burst(&mut out), Err(RingError::Busy));
    assert_eq!(CAS_TRIES.with(Cell::get), UNTRUSTED_CAS_TRIES);
    CAS_TRIES.with(|t| t.set(0));
    assert_eq!(p.enqueue_burst(&[4]), Err(RingError::Busy));
    assert_eq!(CAS_TRIES.with(Cell::get), UNTRUSTED_CAS_TRIES);
    MOVE_HEAD.with(|m| m.set(false));
    // The ctrl block (guest-writable) is neither trusted nor touched.
    assert!(!ring.is_failed());
    assert_eq!(ring.corrupt_events(), 0);
}

#[test]
fn a_peer_thread_rewriting_heads_cannot_hold_an_untrusted_call() {
    // A real concurrent scribbler: every call returns within a small bound whatever it
    // does, with an element count, Busy or Corrupt.
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "scribble", 64, SyncMode::MP_MC).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 1u32;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                set(&ring, x & 1 == 0, x & 2 == 0, x >> 20);
            }
        });
        let mut p = ring.untrusted_producer();
        let mut c = ring.untrusted_consumer();
        let calls = if cfg!(miri) { 50 } else { 20_000 };
        let mut worst = Duration::ZERO;
        let mut out = [0u64; 32];
        for _ in 0..calls {
            let t = Instant::now();
            let _ = p.enqueue_burst(&[7; 32]);
            let _ = c.dequeue_burst(&mut out);
            worst = worst.max(t.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        if !cfg!(miri) {
            // Generous for a shared CI machine (preemption), but far below any stall.
            assert!(worst < Duration::from_millis(100), "{worst:?}");
        }
    });
}

#[test]
fn impossible_tails_are_corrupt_on_both_sides_and_leave_ctrl_alone() {
    let seg = seg();
    for (i, mode) in [SyncMode::SP_SC, SyncMode::MP_MC].into_iter().enumerate() {
        let ring = Ring::<u64>::create(&seg, &format!("t{i}"), 8, mode).unwrap();
        let mut p = ring.untrusted_producer();
        let mut c = ring.untrusted_consumer();
        assert_eq!(p.enqueue_bulk(&[1, 2]).unwrap(), 2);
        // Producer tail far ahead of the consumer: 2^31 elements "available".
        set(&ring, true, false, 0x8000_0000);
        set(&ring, true, true, 0x8000_0000);
        let mut out = [0u64; 8];
        let r = c.dequeue_burst(&mut out);
        assert!(
            matches!(r, Err(RingError::Corrupt { .. })),
            "{mode:?} {r:?}"
        );
        // Consumer tail ahead of the producer head: negative occupancy.
        set(&ring, true, false, 2);
        set(&ring, true, true, 2);
        set(&ring, false, false, 1000);
        set(&ring, false, true, 1000);
        let r = p.enqueue_burst(&[9; 8]);
        assert!(
            matches!(r, Err(RingError::Corrupt { .. })),
            "{mode:?} {r:?}"
        );
        assert!(!ring.is_failed());
        assert_eq!(ring.corrupt_events(), 0);
    }
}

#[test]
fn a_single_side_keeps_its_own_index_whatever_the_guest_writes_there() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "shadow", 8, SyncMode::SP_SC).unwrap();
    let mut p = ring.untrusted_producer();
    assert_eq!(p.enqueue_bulk(&[10, 11]).unwrap(), 2);
    // The guest rewrites the host's own head and tail: the host's next slot is still 2.
    set(&ring, true, true, 5);
    set(&ring, true, false, 6);
    assert_eq!(p.enqueue_bulk(&[12]).unwrap(), 1);
    assert_eq!(get(&ring, true, false), 3, "published from the shadow head");
    let mut c = ring.untrusted_consumer();
    let mut out = [0u64; 3];
    assert_eq!(c.dequeue_bulk(&mut out).unwrap(), 3);
    assert_eq!(out, [10, 11, 12]);
    // Same on the consumer side.
    set(&ring, false, true, 1);
    set(&ring, false, false, 0);
    assert_eq!(p.enqueue_bulk(&[13]).unwrap(), 1);
    assert_eq!(c.dequeue().unwrap(), Some(13));
    assert_eq!(get(&ring, false, false), 4);
}

#[test]
fn a_reservation_the_peer_never_publishes_leaves_ours_pending_and_bounded() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "pending", 8, SyncMode::MP_MC).unwrap();
    let mut p = ring.untrusted_producer();
    // The guest reserves two slots and never publishes them.
    set(&ring, true, true, 2);
    let t = Instant::now();
    assert_eq!(p.enqueue_burst(&[1, 2, 3]).unwrap(), 3, "ours are written");
    assert_eq!(p.pending(), 3);
    // Later calls cost one look each and move nothing.
    for _ in 0..if cfg!(miri) { 10 } else { 1000 } {
        assert_eq!(p.enqueue_burst(&[4]), Err(RingError::Busy));
        assert_eq!(p.complete(), Ok(false));
    }
    // (Miri runs far slower than any bound worth checking.)
    assert!(cfg!(miri) || t.elapsed() < Duration::from_secs(1));
    assert_eq!(ring.count(), 0, "nothing visible yet");
    // The guest publishes at last: ours lands behind it, in order.
    set(&ring, true, false, 2);
    assert_eq!(p.complete(), Ok(true));
    assert_eq!(p.pending(), 0);
    assert_eq!(ring.count(), 5);
    let mut c = ring.untrusted_consumer();
    let mut out = [0u64; 5];
    assert_eq!(c.dequeue_bulk(&mut out).unwrap(), 5);
    assert_eq!(&out[2..], &[1, 2, 3]);

    // Consumer side: the guest takes slots and never releases; ours are copied out at once
    // and their release waits.
    assert_eq!(p.enqueue_bulk(&[5, 6, 7]).unwrap(), 3);
    set(&ring, false, true, 6); // the guest took element 5
    let mut out = [0u64; 2];
    assert_eq!(c.dequeue_bulk(&mut out).unwrap(), 2);
    assert_eq!(out, [6, 7]);
    assert_eq!(c.pending(), 2);
    assert_eq!(c.dequeue(), Err(RingError::Busy));
    // Dropping a handle with a pending publication abandons it without waiting.
    let t = Instant::now();
    drop(c);
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(
        get(&ring, false, false),
        5,
        "never released: the guest's own loss"
    );
}

#[test]
fn a_trusted_guest_and_an_untrusted_host_move_sequence_numbers_exactly_once() {
    // The guest pool's free ring: guest threads (trusted MP/MC handles) and a host thread
    // (untrusted handles) move the same elements round and round.
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "pool", 64, SyncMode::MP_MC).unwrap();
    let total: u64 = 64;
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    let mut fill = ring.mp_producer().unwrap();
    let all: Vec<u64> = (0..total).collect();
    assert_eq!(fill.enqueue_bulk(&all).unwrap(), 64);
    std::thread::scope(|s| {
        let guest = s.spawn(|| {
            let mut p = ring.mp_producer().unwrap();
            let mut c = ring.mc_consumer().unwrap();
            let mut buf = [0u64; 8];
            for _ in 0..rounds {
                let k = c.dequeue_burst(&mut buf).unwrap();
                let mut done = 0;
                while done < k {
                    done += p.enqueue_burst(&buf[done..k]).unwrap();
                }
            }
        });
        let mut p = ring.untrusted_producer();
        let mut c = ring.untrusted_consumer();
        let mut buf = [0u64; 8];
        for _ in 0..rounds {
            let k = c.dequeue_burst(&mut buf).unwrap_or(0);
            let mut done = 0;
            while done < k {
                done += p.enqueue_burst(&buf[done..k]).unwrap_or(0);
                // A release of ours left pending holds the free slots this put needs
                // (capacity == elements, as in a pool): settle it while retrying.
                c.complete().unwrap();
            }
        }
        guest.join().unwrap();
        while !(p.complete().unwrap() && c.complete().unwrap()) {
            std::hint::spin_loop();
        }
    });
    let mut left = Vec::new();
    ring.snapshot_into(&mut left);
    left.sort_unstable();
    assert_eq!(left, all, "every element exactly once");
}
