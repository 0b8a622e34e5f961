//! Model checks of the ring protocols with loom: every interleaving (up to the preemption
//! bound) of producers and consumers on a tiny ring delivers each element exactly once,
//! in each producer's order, and never reports corruption.
//!
//! The repair models: a producer (consumer) that "dies" right after its head CAS or its
//! copy (the thread stops; its record is relabelled with a pid no process has) and a
//! survivor that must finish anyway, repairing the dead one's range.
//!
//! The live-voiding models: a producer (consumer) preempted between its head CAS and its
//! copy is voided by the one waiting behind it (bound 0), races the void on its record, and
//! retries: each element still arrives once.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p shm-ring --release --test loom`
#![cfg(loom)]

use shm::Region;
use shm_ring::{Ring, SyncMode};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

fn ring(capacity: u32, mode: SyncMode) -> Ring<u64> {
    let region = Region::heap(32768);
    Ring::init(&region, 0, 32768, "loom", capacity, mode).unwrap()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

#[test]
fn sp_sc_delivers_in_order_across_wraparound() {
    model(|| {
        let r = ring(2, SyncMode::SP_SC);
        let mut p = r.sp_producer().unwrap();
        let mut c = r.sc_consumer().unwrap();
        let t = loom::thread::spawn(move || {
            for v in 1..=3u64 {
                while p.enqueue(v).is_err() {
                    loom::thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.dequeue().unwrap() {
                Some(v) => got.push(v),
                None => loom::thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, [1, 2, 3]);
    });
}

#[test]
fn two_multi_producers_each_deliver_once() {
    // Two producers race on the head CAS and on publishing the tail in order; the
    // consumer must see both elements, once each, and nothing before it is published.
    model(|| {
        let r = ring(2, SyncMode::MP_SC);
        let mut a = r.mp_producer().unwrap();
        let mut b = a.clone();
        let ta = loom::thread::spawn(move || assert_eq!(a.enqueue_bulk(&[1]).unwrap(), 1));
        let tb = loom::thread::spawn(move || assert_eq!(b.enqueue_burst(&[2]).unwrap(), 1));
        // One look while the producers run: whatever it sees must be fully published.
        let mut c = r.sc_consumer().unwrap();
        let mut got: Vec<u64> = c.dequeue().unwrap().into_iter().collect();
        ta.join().unwrap();
        tb.join().unwrap();
        while let Some(v) = c.dequeue().unwrap() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn two_multi_consumers_each_take_a_distinct_element() {
    // Two consumers race on the head CAS and on releasing the tail in order, while a
    // producer refills the slot the first release frees.
    model(|| {
        let r = ring(2, SyncMode::SP_MC);
        let mut p = r.sp_producer().unwrap();
        p.enqueue_bulk(&[7, 8]).unwrap();
        let mut c1 = r.mc_consumer().unwrap();
        let mut c2 = c1.clone();
        let t1 = loom::thread::spawn(move || c1.dequeue().unwrap());
        let t2 = loom::thread::spawn(move || {
            let mut out = [0u64; 1];
            (c2.dequeue_burst(&mut out).unwrap() == 1).then_some(out[0])
        });
        let refilled = p.enqueue(9).is_ok();
        let mut got = [t1.join().unwrap(), t2.join().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [Some(7), Some(8)]);
        assert_eq!(r.count(), if refilled { 1 } else { 0 });
    });
}

#[test]
fn an_untrusted_host_producer_and_a_trusted_guest_producer_each_deliver_once() {
    // The guest pool's free ring: a guest's trusted MP producer and the host's bounded one
    // race; the host may leave its publication pending behind the guest's and settles it
    // with `complete`. Whatever the consumer sees is fully published, each element once.
    model(|| {
        let r = ring(2, SyncMode::MP_MC);
        let mut guest = r.mp_producer().unwrap();
        let mut host = r.untrusted_producer();
        let tg = loom::thread::spawn(move || assert_eq!(guest.enqueue_bulk(&[1]).unwrap(), 1));
        let th = loom::thread::spawn(move || {
            // Busy only if the CAS budget ran out against the guest: try once more.
            let n = match host.enqueue_burst(&[2]) {
                Ok(n) => n,
                Err(shm_ring::RingError::Busy) => host.enqueue_burst(&[2]).unwrap_or(0),
                Err(e) => panic!("{e}"),
            };
            while !host.complete().unwrap() {
                loom::thread::yield_now();
            }
            n
        });
        let mut c = r.untrusted_consumer();
        let mut got: Vec<u64> = c.dequeue().unwrap_or(None).into_iter().collect();
        tg.join().unwrap();
        let sent = th.join().unwrap();
        while let Ok(Some(v)) = c.dequeue() {
            got.push(v);
        }
        assert!(c.complete().unwrap());
        got.sort_unstable();
        assert_eq!(got, if sent == 1 { vec![1, 2] } else { vec![1] });
        assert!(!r.is_failed());
    });
}

/// A pid no thread of the model has: the dying handle's "process".
const DEAD: u32 = u32::MAX - 7;

#[test]
fn a_producer_dying_after_its_head_cas_is_repaired_by_the_survivor() {
    // Two producers and a consumer; one producer stops for good after its CAS (with or
    // without its copy). The survivor's element is delivered once; the dead one's
    // elements are either all there (copied) or absent (holes), never a stale slot.
    for copy in [false, true] {
        model(move || {
            let r = ring(2, SyncMode::MP_SC);
            let mut a = r.mp_producer().unwrap();
            let mut b = a.clone();
            let ta = loom::thread::spawn(move || {
                let (_, n) = a.__reserve(&[1], copy).unwrap();
                a.__die(DEAD);
                n
            });
            let tb = loom::thread::spawn(move || assert_eq!(b.enqueue_bulk(&[2]).unwrap(), 1));
            let mut c = r.sc_consumer().unwrap();
            let mut got: Vec<u64> = c.dequeue().unwrap().into_iter().collect();
            let reserved = ta.join().unwrap();
            tb.join().unwrap();
            // Nobody may be waiting behind the dead range: the primary's reclaim
            // repairs it.
            let rep = r.repair_dead(DEAD, 0);
            assert_eq!(rep.records, 1);
            while let Some(v) = c.dequeue().unwrap() {
                got.push(v);
            }
            assert_eq!(reserved, 1);
            let want: &[u64] = if copy { &[1, 2] } else { &[2] };
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, want, "got {got:?}");
            assert!(!r.is_failed());
        });
    }
}

#[test]
fn a_consumer_dying_after_its_head_cas_is_adopted_by_the_survivor() {
    // Two elements, two consumers; one stops after its CAS for one element (before or
    // after its copy). The survivor asks for two: it gets its own and, if the dead one
    // had not copied, the dead one's too; nothing is seen twice and the ring ends empty.
    for copy in [false, true] {
        model(move || {
            let r = ring(2, SyncMode::SP_MC);
            let mut p = r.sp_producer().unwrap();
            p.enqueue_bulk(&[7, 8]).unwrap();
            let mut c1 = r.mc_consumer().unwrap();
            let mut c2 = c1.clone();
            let t1 = loom::thread::spawn(move || {
                let mut one = [0u64; 1];
                let (_, n) = c1.__reserve(&mut one, copy).unwrap();
                c1.__die(DEAD);
                (n == 1 && copy).then_some(one[0])
            });
            let mut out = [0u64; 2];
            let mut got: Vec<u64> = Vec::new();
            while got.len() + usize::from(copy) < 2 {
                let n = c2.dequeue_burst(&mut out).unwrap();
                got.extend_from_slice(&out[..n]);
                loom::thread::yield_now();
            }
            if let Some(v) = t1.join().unwrap() {
                got.push(v);
            }
            got.sort_unstable();
            assert_eq!(got, [7, 8]);
            assert_eq!(r.count(), 0);
        });
    }
}

#[test]
fn a_live_producer_voided_between_its_head_cas_and_its_copy_delivers_once() {
    // Live voiding at once (the bound is 0 here, as time does not pass under loom): a
    // producer stopped between its head CAS and its copy may be voided by the one waiting
    // behind it; whichever wins the record's CAS (its INTENT->BUSY or the waiter's
    // INTENT->VOIDED), each element arrives exactly once and no hole is delivered.
    model(|| {
        // Three slots: a voided enqueue's retry always fits (a hole and the other's
        // element take two).
        let mut r = ring(3, SyncMode::MP_SC);
        r.__set_void_after_ms(0);
        let mut a = r.mp_producer().unwrap();
        let mut b = a.clone();
        let ta = loom::thread::spawn(move || assert_eq!(a.enqueue_bulk(&[1]).unwrap(), 1));
        let tb = loom::thread::spawn(move || assert_eq!(b.enqueue_bulk(&[2]).unwrap(), 1));
        // One look while the producers run: whatever it sees must be fully published.
        let mut c = r.sc_consumer().unwrap();
        let mut got: Vec<u64> = c.dequeue().unwrap().into_iter().collect();
        ta.join().unwrap();
        tb.join().unwrap();
        while let Some(v) = c.dequeue().unwrap() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2], "each once, no hole delivered");
        assert!(!r.is_failed());
        if r.repairs() > 0 {
            VOIDED_P.store(true, Relaxed);
        }
    });
    assert!(
        VOIDED_P.load(Relaxed),
        "no explored interleaving voided the live producer"
    );
}

static VOIDED_P: AtomicBool = AtomicBool::new(false);
static VOIDED_C: AtomicBool = AtomicBool::new(false);

#[test]
fn a_live_consumer_voided_before_its_copy_counts_is_adopted_once() {
    // Two elements, two live consumers, voiding at once: the second consumer asks for two
    // and may void and adopt the first one's untouched reservation; the first then retries
    // (and finds the ring empty) or keeps its element. Each element is taken once.
    model(|| {
        let mut r = ring(2, SyncMode::SP_MC);
        r.__set_void_after_ms(0);
        let mut p = r.sp_producer().unwrap();
        p.enqueue_bulk(&[7, 8]).unwrap();
        let mut c1 = r.mc_consumer().unwrap();
        let mut c2 = c1.clone();
        let t1 = loom::thread::spawn(move || {
            let mut one = [0u64; 1];
            let n = c1.dequeue_burst(&mut one).unwrap();
            one[..n].to_vec()
        });
        let mut out = [0u64; 2];
        let n = c2.dequeue_burst(&mut out).unwrap();
        let mut got = out[..n].to_vec();
        got.extend(t1.join().unwrap());
        got.sort_unstable();
        assert_eq!(got, [7, 8]);
        assert_eq!(r.count(), 0);
        if r.repairs() > 0 {
            VOIDED_C.store(true, Relaxed);
        }
    });
    assert!(
        VOIDED_C.load(Relaxed),
        "no explored interleaving voided the live consumer"
    );
}
