//! Unit tests: every mode and operation, wrap-around, full/empty edges, roles, zero-copy,
//! and corrupted indices. Sizes shrink under Miri.

use super::*;
use shm::Memseg;

fn seg() -> Memseg {
    let seg = Memseg::create_in_region(Region::heap(1 << 20), "ringtest", 1).unwrap();
    seg.mark_ready();
    seg
}

const MODES: [SyncMode; 4] = [
    SyncMode::SP_SC,
    SyncMode::MP_MC,
    SyncMode::MP_SC,
    SyncMode::SP_MC,
];

/// Either kind of producer/consumer, so one test body covers all four modes.
enum P<T: Element> {
    S(SpProducer<T>),
    M(MpProducer<T>),
}
enum C<T: Element> {
    S(ScConsumer<T>),
    M(McConsumer<T>),
}

impl<T: Element> P<T> {
    fn of(r: &Ring<T>) -> Self {
        if r.mode().single_producer {
            P::S(r.sp_producer().unwrap())
        } else {
            P::M(r.mp_producer().unwrap())
        }
    }
    fn bulk(&mut self, x: &[T]) -> usize {
        match self {
            P::S(p) => p.enqueue_bulk(x).unwrap(),
            P::M(p) => p.enqueue_bulk(x).unwrap(),
        }
    }
    fn burst(&mut self, x: &[T]) -> usize {
        match self {
            P::S(p) => p.enqueue_burst(x).unwrap(),
            P::M(p) => p.enqueue_burst(x).unwrap(),
        }
    }
    fn one(&mut self, x: T) -> Result<(), RingFull<T>> {
        match self {
            P::S(p) => p.enqueue(x),
            P::M(p) => p.enqueue(x),
        }
    }
}

/// Handles for rings whose indices a test scribbles on: a wait for a peer that will
/// never publish gives up after 50 ms instead of the default 10 s.
fn scribbled<T: Element>(r: &Ring<T>) -> (P<T>, C<T>) {
    let (mut p, mut c) = (P::of(r), C::of(r));
    let limit = std::time::Duration::from_millis(50);
    if let P::M(p) = &mut p {
        p.set_stall_timeout(limit);
    }
    if let C::M(c) = &mut c {
        c.set_stall_timeout(limit);
    }
    (p, c)
}

impl<T: Element> C<T> {
    fn of(r: &Ring<T>) -> Self {
        if r.mode().single_consumer {
            C::S(r.sc_consumer().unwrap())
        } else {
            C::M(r.mc_consumer().unwrap())
        }
    }
    fn bulk(&mut self, x: &mut [T]) -> usize {
        match self {
            C::S(c) => c.dequeue_bulk(x).unwrap(),
            C::M(c) => c.dequeue_bulk(x).unwrap(),
        }
    }
    fn burst(&mut self, x: &mut [T]) -> usize {
        match self {
            C::S(c) => c.dequeue_burst(x).unwrap(),
            C::M(c) => c.dequeue_burst(x).unwrap(),
        }
    }
    fn one(&mut self) -> Option<T> {
        match self {
            C::S(c) => c.dequeue().unwrap(),
            C::M(c) => c.dequeue().unwrap(),
        }
    }
}

#[test]
fn every_mode_bulk_burst_single_and_wraparound() {
    let seg = seg();
    for (i, mode) in MODES.into_iter().enumerate() {
        let ring = Ring::<u64>::create(&seg, &format!("r{i}"), 8, mode).unwrap();
        assert_eq!(ring.capacity(), 8);
        let (mut p, mut c) = (P::of(&ring), C::of(&ring));
        let mut next = 0u64;
        let mut expect = 0u64;
        // Many rounds so indices wrap around the 8 slots many times.
        for round in 0..if cfg!(miri) { 20 } else { 500 } {
            let k = 1 + round % 8;
            let items: Vec<u64> = (next..next + k as u64).collect();
            assert_eq!(p.bulk(&items), k);
            next += k as u64;
            let mut out = vec![0u64; k];
            assert_eq!(c.bulk(&mut out), k);
            for v in out {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        // Full and empty edges.
        assert!(ring.is_empty());
        assert_eq!(p.bulk(&[1; 9]), 0, "bulk larger than capacity");
        assert_eq!(p.bulk(&[1, 2, 3, 4, 5, 6]), 6);
        assert_eq!(p.bulk(&[7, 8, 9]), 0, "bulk does not fit: nothing");
        assert_eq!(p.burst(&[7, 8, 9]), 2, "burst takes what fits");
        assert!(ring.is_full());
        assert_eq!(ring.free_count(), 0);
        assert_eq!(p.one(10), Err(RingFull::Full(10)));
        let mut out = [0u64; 16];
        assert_eq!(c.bulk(&mut out[..9]), 0, "bulk more than present");
        assert_eq!(c.burst(&mut out[..3]), 3);
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(c.burst(&mut out), 5);
        assert_eq!(&out[..5], &[4, 5, 6, 7, 8]);
        assert_eq!(c.one(), None);
        assert_eq!(c.burst(&mut out), 0);
        p.one(42).unwrap();
        assert_eq!(ring.count(), 1);
        assert_eq!(c.one(), Some(42));
        assert!(!ring.is_failed());
    }
}

#[test]
fn capacity_is_exact_for_any_count() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "five", 5, SyncMode::SP_SC).unwrap();
    let mut p = ring.sp_producer().unwrap();
    assert_eq!(p.enqueue_burst(&[0; 10]).unwrap(), 5);
    assert_eq!(ring.free_count(), 0);
    assert!(Ring::<u64>::create(&seg, "zero", 0, SyncMode::SP_SC).is_err());
}

#[test]
fn sixteen_and_thirty_two_byte_elements() {
    let seg = seg();
    let r16 = Ring::<[u64; 2]>::create(&seg, "e16", 4, SyncMode::MP_MC).unwrap();
    let r32 = Ring::<[u64; 4]>::create(&seg, "e32", 4, SyncMode::SP_SC).unwrap();
    let mut p16 = r16.mp_producer().unwrap();
    let mut c16 = r16.mc_consumer().unwrap();
    let mut p32 = r32.sp_producer().unwrap();
    let mut c32 = r32.sc_consumer().unwrap();
    for i in 0..10u64 {
        p16.enqueue_bulk(&[[i, !i], [i + 1, !(i + 1)], [i + 2, 0]])
            .unwrap();
        let mut o = [[0; 2]; 3];
        assert_eq!(c16.dequeue_bulk(&mut o).unwrap(), 3);
        assert_eq!(o[1], [i + 1, !(i + 1)]);
        p32.enqueue([i, 1, 2, 3]).unwrap();
        p32.enqueue([i, 4, 5, 6]).unwrap();
        assert_eq!(c32.dequeue().unwrap(), Some([i, 1, 2, 3]));
        assert_eq!(c32.dequeue().unwrap(), Some([i, 4, 5, 6]));
    }
    // The element size is part of the ring: opening it as another type is refused.
    assert!(matches!(
        Ring::<u64>::lookup(&seg, "e16"),
        Err(RingError::BadRing(_))
    ));
    assert!(Ring::<[u64; 2]>::lookup(&seg, "e16").is_ok());
}

#[test]
fn roles_are_enforced() {
    let seg = seg();
    let sp = Ring::<u64>::create(&seg, "sp", 4, SyncMode::SP_SC).unwrap();
    let p = sp.sp_producer().unwrap();
    assert!(matches!(
        sp.sp_producer(),
        Err(RingError::RoleTaken { producer: true, .. })
    ));
    // A second open of the same ring (as another process would) sees the claim too.
    let again = Ring::<u64>::lookup(&seg, "sp").unwrap();
    assert!(again.sp_producer().is_err());
    drop(p);
    assert!(again.sp_producer().is_ok(), "released on drop");
    assert!(matches!(sp.mp_producer(), Err(RingError::WrongMode { .. })));
    assert!(matches!(sp.mc_consumer(), Err(RingError::WrongMode { .. })));
    let c = sp.sc_consumer().unwrap();
    assert!(sp.sc_consumer().is_err());
    drop(c);
    let mp = Ring::<u64>::create(&seg, "mp", 4, SyncMode::MP_MC).unwrap();
    assert!(mp.sp_producer().is_err());
    assert!(mp.sc_consumer().is_err());
    let a = mp.mp_producer().unwrap();
    let _b = a.clone();
}

#[test]
#[cfg_attr(miri, ignore = "kill(2) is not supported by Miri")]
fn a_dead_owners_role_can_be_taken_over() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "dead", 4, SyncMode::SP_SC).unwrap();
    // No process has pid u32::MAX - 1 (pid_max is at most 2^22).
    let dead = shm::liveness::Process {
        pid: u32::MAX - 1,
        start_time: 0,
    };
    ring.core.owner(true).forge(dead, 0);
    assert!(ring.sp_producer().is_ok());
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process and reads /proc")]
fn a_role_held_under_a_reused_pid_is_taken_over_and_a_live_one_refused() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "reused", 4, SyncMode::SP_SC).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let live = shm::liveness::Process::of(child.id()).unwrap();
    // The live child holds the role: refused.
    ring.core.owner(false).forge(live, 0);
    assert!(matches!(
        ring.sc_consumer(),
        Err(RingError::RoleTaken { pid, .. }) if pid == live.pid
    ));
    // Recorded with another start time, the same pid is a previous process: taken over.
    let before = shm::liveness::Process {
        start_time: live.start_time - 1,
        ..live
    };
    ring.core.owner(false).forge(before, 0);
    let c = ring.sc_consumer().unwrap();
    assert_eq!(ring.consumer_pid(), std::process::id());
    drop(c);
    assert_eq!(ring.consumer_pid(), 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn zero_copy_reserve_commit_and_peek_release_wrap() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "zc", 8, SyncMode::SP_SC).unwrap();
    let mut p = ring.sp_producer().unwrap();
    let mut c = ring.sc_consumer().unwrap();
    // Move the indices to 6 so that a reservation of 5 wraps.
    p.enqueue_bulk(&[0; 6]).unwrap();
    c.dequeue_bulk(&mut [0; 6]).unwrap();
    let mut w = p.reserve(5).unwrap();
    assert_eq!(w.len(), 5);
    {
        let (a, b) = w.slices();
        assert_eq!((a.len(), b.len()), (2, 3));
        a.copy_from_slice(&[10, 11]);
        b.copy_from_slice(&[12, 13, 14]);
    }
    w.commit(4);
    assert_eq!(ring.count(), 4, "only the committed part is published");
    let r = c.peek(8).unwrap();
    assert_eq!(r.len(), 4);
    let (a, b) = r.slices();
    assert_eq!((a, b), (&[10u64, 11][..], &[12u64, 13][..]));
    r.release(3);
    assert_eq!(c.dequeue().unwrap(), Some(13));
    // Dropping a reservation or a peek publishes / releases nothing.
    let _unused = p.reserve(3).unwrap();
    assert!(ring.is_empty());
    p.enqueue(99).unwrap();
    let _unused = c.peek(1).unwrap();
    assert_eq!(ring.count(), 1);
    // A reservation is capped by free space.
    assert_eq!(p.reserve(100).unwrap().len(), 7);
}

fn poke(ring: &Ring<u64>, prod: bool, head: bool, v: u32) {
    let ht = if prod {
        ring.core.prod()
    } else {
        ring.core.cons()
    };
    let w = if head { &ht.head } else { &*ht.tail };
    w.store(v, sync::Ordering::Relaxed);
}

#[test]
fn corrupted_indices_are_reported_and_stay_in_bounds() {
    let seg = seg();
    for (i, mode) in MODES.into_iter().enumerate() {
        let name = format!("c{i}");
        let ring = Ring::<u64>::create(&seg, &name, 8, mode).unwrap();
        let (mut p, mut c) = scribbled(&ring);
        p.bulk(&[1, 2, 3]);
        // The producer tail jumps far ahead: a consumer must not hand out 4 billion
        // elements, nor read outside the slots.
        poke(&ring, true, false, 0x8000_0000);
        poke(&ring, true, true, 0x8000_0000);
        let mut out = [0u64; 32];
        let r = match &mut c {
            C::S(c) => c.dequeue_burst(&mut out),
            C::M(c) => c.dequeue_burst(&mut out),
        };
        assert!(
            matches!(r, Err(RingError::Corrupt { .. })),
            "{mode:?}: {r:?}"
        );
        assert!(ring.is_failed());
        assert!(ring.count() <= ring.capacity());
        // The consumer tail jumps ahead of the producer: producers refuse too.
        poke(&ring, true, false, 3);
        poke(&ring, true, true, 3);
        poke(&ring, false, false, 1000);
        poke(&ring, false, true, 1000);
        // Ask for more than the cached free space, so the shared tail is re-read (a
        // handle's private cache is only refreshed when it says the ring is full).
        let r = match &mut p {
            P::S(p) => p.enqueue_burst(&[9; 8]),
            P::M(p) => p.enqueue_burst(&[9; 8]),
        };
        assert!(
            matches!(r, Err(RingError::Corrupt { .. })),
            "{mode:?}: {r:?}"
        );
        assert!(ring.corrupt_events() >= 2);
    }
}

#[test]
fn random_index_garbage_never_escapes_the_slots() {
    // Whatever the four words say, every operation either works within capacity or says
    // Corrupt; Miri checks that no access leaves the slot array.
    let seg = seg();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u32
    };
    for (i, mode) in MODES.into_iter().enumerate() {
        let ring = Ring::<u64>::create(&seg, &format!("g{i}"), 16, mode).unwrap();
        let (mut p, mut c) = scribbled(&ring);
        for _ in 0..if cfg!(miri) { 30 } else { 3000 } {
            let base = rnd();
            for (prod, head) in [(true, true), (true, false), (false, true), (false, false)] {
                // Mostly near each other (plausible), sometimes anywhere.
                let v = if rnd() % 4 == 0 {
                    rnd()
                } else {
                    base.wrapping_add(rnd() % 40)
                };
                poke(&ring, prod, head, v);
            }
            let mut out = [0u64; 8];
            let got = match &mut c {
                C::S(c) => c.dequeue_burst(&mut out),
                C::M(c) => c.dequeue_burst(&mut out),
            };
            if let Ok(n) = got {
                assert!(n <= 8);
            }
            let put = match &mut p {
                P::S(p) => p.enqueue_burst(&[5; 8]),
                P::M(p) => p.enqueue_burst(&[5; 8]),
            };
            if let Ok(n) = put {
                assert!(n <= 8);
            }
            assert!(ring.count() <= ring.capacity());
        }
    }
}

#[test]
fn garbage_ring_headers_are_refused() {
    let seg = seg();
    let ring = Ring::<u64>::create(&seg, "hdr", 8, SyncMode::SP_SC).unwrap();
    let zone = seg.lookup("hdr").unwrap();
    let r = zone.region();
    let good: RingInfo = r.read_copy(zone.offset).unwrap();
    drop(ring);
    let cases: [(u64, u32); 6] = [(0, 0), (8, 7), (12, 1), (16, 0x80), (24, 3), (28, 99)];
    for (field, val) in cases {
        r.write(zone.offset, &good).unwrap();
        r.write(zone.offset + field, &val).unwrap();
        assert!(
            Ring::<u64>::lookup(&seg, "hdr").is_err(),
            "field {field} = {val}"
        );
    }
    // A slot count larger than the zone.
    r.write(zone.offset, &good).unwrap();
    r.write(zone.offset + 24, &(1u32 << 20)).unwrap();
    r.write(zone.offset + 28, &(1u32 << 20)).unwrap();
    assert!(Ring::<u64>::lookup(&seg, "hdr").is_err());
    r.write(zone.offset, &good).unwrap();
    assert!(Ring::<u64>::lookup(&seg, "hdr").is_ok());
    // A memzone that is not a ring.
    seg.reserve("raw", 4096, 64, MemzoneKind::Raw).unwrap();
    assert!(Ring::<u64>::lookup(&seg, "raw").is_err());
}

#[test]
fn threads_move_ten_million_sequence_numbers_without_loss_duplication_or_reorder() {
    // 10^7 elements through SP/SC and through MP/MC (2 producers, 2 consumers); 10^6 through
    // the mixed modes. Far fewer under Miri.
    let seg = seg();
    for (i, mode) in MODES.into_iter().enumerate() {
        let ring = Ring::<u64>::create(&seg, &format!("t{i}"), 64, mode).unwrap();
        let producers = if mode.single_producer { 1 } else { 2 };
        let consumers = if mode.single_consumer { 1 } else { 2 };
        let total: u64 = if cfg!(miri) {
            200
        } else if i < 2 {
            10_000_000
        } else {
            1_000_000
        };
        stress::run(&ring, producers, consumers, total / producers);
    }
}

pub(crate) mod stress {
    //! One stress harness for every sync mode: producers push (id << 48 | seq), consumers
    //! check that each producer's sequence arrives complete, unique and in order.
    use super::*;

    pub(crate) fn run(ring: &Ring<u64>, producers: u64, consumers: usize, per_producer: u64) {
        let total = producers * per_producer;
        let got = std::sync::Mutex::new(Vec::new());
        let taken = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for id in 0..producers {
                let mut p = P::of(ring);
                s.spawn(move || {
                    let mut seq = 0;
                    let mut buf = [0u64; 32];
                    while seq < per_producer {
                        let k = ((per_producer - seq) as usize).min(1 + (seq as usize % 32));
                        for (j, b) in buf[..k].iter_mut().enumerate() {
                            *b = id << 48 | (seq + j as u64);
                        }
                        let n = p.burst(&buf[..k]);
                        seq += n as u64;
                        if n == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..consumers {
                let mut c = C::of(ring);
                let (got, taken) = (&got, &taken);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut buf = [0u64; 32];
                    while taken.load(std::sync::atomic::Ordering::Relaxed) < total {
                        let n = c.burst(&mut buf);
                        if n == 0 {
                            std::thread::yield_now();
                            continue;
                        }
                        taken.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        // Per consumer, each producer's values must increase.
                        mine.extend_from_slice(&buf[..n]);
                    }
                    got.lock().unwrap().push(mine);
                });
            }
        });
        let got = got.into_inner().unwrap();
        // Each (producer, seq) must arrive exactly once: a bitmap per producer.
        let mut seen = vec![vec![0u64; per_producer.div_ceil(64) as usize]; producers as usize];
        let mut total_got = 0u64;
        for mine in &got {
            let mut last = vec![None::<u64>; producers as usize];
            for &v in mine {
                let (id, seq) = ((v >> 48) as usize, v & ((1 << 48) - 1));
                assert!(
                    id < producers as usize && seq < per_producer,
                    "garbage value {v:#x}"
                );
                if let Some(l) = last[id] {
                    assert!(seq > l, "producer {id}: {seq} after {l}");
                }
                last[id] = Some(seq);
                let (w, b) = ((seq / 64) as usize, seq % 64);
                assert_eq!(seen[id][w] >> b & 1, 0, "duplicate {v:#x}");
                seen[id][w] |= 1 << b;
                total_got += 1;
            }
        }
        assert_eq!(total_got, total, "none lost, none extra");
        assert!(ring.is_empty());
    }
}

#[test]
fn u32_elements_wrap_and_snapshot_reads_without_consuming() {
    let seg = seg();
    let r = Ring::<u32>::create(&seg, "idx", 5, SyncMode::MP_MC).unwrap();
    let mut p = r.mp_producer().unwrap();
    let mut c = r.mc_consumer().unwrap();
    let mut snap = Vec::new();
    assert_eq!(r.snapshot_into(&mut snap), 0);
    // Walk the indices past the end of the 8 slots a few times.
    let mut next = 0u32;
    let mut expect = 0u32;
    for _ in 0..7 {
        let batch: Vec<u32> = (next..next + 5).collect();
        next += 5;
        assert_eq!(p.enqueue_bulk(&batch).unwrap(), 5);
        assert_eq!(r.snapshot_into(&mut snap), 5);
        assert_eq!(snap, batch);
        let mut out = [0u32; 3];
        assert_eq!(c.dequeue_bulk(&mut out).unwrap(), 3);
        assert_eq!(out, [expect, expect + 1, expect + 2]);
        expect += 3;
        assert_eq!(r.snapshot_into(&mut snap), 2);
        assert_eq!(snap, [expect, expect + 1]);
        let mut rest = [0u32; 2];
        assert_eq!(c.dequeue_bulk(&mut rest).unwrap(), 2);
        expect += 2;
    }
    // Corrupt indices: the snapshot is clamped to the capacity.
    r.core.prod().tail.store(1000, sync::Ordering::Relaxed);
    assert_eq!(r.snapshot_into(&mut snap), 5);
}
