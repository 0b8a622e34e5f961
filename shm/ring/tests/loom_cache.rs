//! Model check of the mempool cache's crash-exact refill and flush (shm-mempool's
//! `pool.rs`: `PoolCache::refill`, `flush_excess`, `flush`, `put_slow`, `begin_op` /
//! `end_op`, and the recovery `PoolShared::recovered_len` + `flush_slot` +
//! `Mempool::repair_free_ring`) against the real free ring (MP/MC, u32).
//!
//! A "process" holding a cache runs one refill or flush and stops for good after step `k`
//! (for every `k`: its ring records are relabelled with a pid no thread has, as the other
//! ring models do), while a survivor thread takes from (or gives to) the same free ring
//! and may adopt or repair the dead one's range. Then the recovery, written to follow
//! pool.rs line by line, runs, and the audit checks that every object index is in the
//! free ring or in live hands exactly once. (The recovery runs after the survivor's
//! operation, not during it: a survivor spinning at the tail while the recovery runs makes
//! loom's state space explode. So a race between `recovered_len`'s reading of the records
//! and a survivor's repair of them is not explored here.)
//!
//! Steps (`dying`): refill = begin_op, ring dequeue reserved (INTENT), copied (DONE),
//! published, each store of the hole compaction (`skip_holes`), len raised, end_op;
//! flush (`push_top`: the top objects, topmost first, so a ring that takes only a prefix
//! leaves the bottom of the stack in place) = begin_op (from = len), ring enqueue
//! reserved, written (DONE), published, (put_slow: new objects copied on top), len
//! lowered by what the ring took, end_op. (pool.rs first offers the top in stack order,
//! all or none, and only when that is refused the reversed partial push; the model always
//! pushes reversed, which with room for all sends the same objects.)
//!
//! The cache is a few loom atomics shaped as `CacheSlotHeader` (`len`, `op`, `op_seq`,
//! `op_from`) and its index array. Objects in the dying caller's hands (a `put_slow`'s
//! new objects) carry the caller's tag, as mbufs do, and are returned by the reclaim by
//! tag that follows the cache recovery (mbuf.rs `reclaim_owner`).
//!
//! One difference from pool.rs, which changes no state a death can leave: pool.rs's
//! dequeue copies straight into the cache array before the ring record's DONE store; the
//! ring's test hook copies into a local buffer (and marks DONE), and the model stores it
//! into the cache array with no death point in between.
//!
//! Not covered: a ring operation that hands its range over (`HANDOVER_AFTER`, disabled
//! under loom) gives its record to the ring, so `record_of(dead pid)` no longer lists it
//! and the recovery reads the cache's `len` as is: a death between such a refill's return
//! and its `publish_len` loses its objects, and such a flush's duplicates them. Nor a
//! handle without a record (full record table), for which `begin_op` records nothing.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p shm-ring --release --test loom_cache`
//! (about 2 s; the default bound is 2).
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use shm::Region;
use shm_ring::{McConsumer, MpProducer, OpState, Ring, SyncMode};

/// The dead "process" (no thread has this pid).
const DEAD: u32 = u32::MAX - 7;
/// A pid that made holes in the ring during the setup.
const HOLE_MAKER: u32 = u32::MAX - 9;
/// Objects in the pool (indices `0..OBJS`).
const OBJS: u32 = 5;
/// Index array of the model cache (pool.rs: `CACHE_OBJS`).
const CACHE_OBJS: u32 = 4;
/// The ring's hole marker (`Element::HOLE` for u32).
const HOLE: u32 = u32::MAX;
/// `CACHE_OP_REFILL` / `CACHE_OP_FLUSH` (layout.rs).
const OP_REFILL: u32 = 1;
const OP_FLUSH: u32 = 2;
/// Owner tags of objects (mbuf header `owner`): free, or held by the dead process.
const TAG_FREE: u32 = 0;
const TAG_DEAD: u32 = 1;

/// layout.rs `CacheSlotHeader` (the fields the protocol uses) and the index array.
struct Cache {
    len: AtomicU32,
    op: AtomicU32,
    op_seq: AtomicU32,
    op_from: AtomicU32,
    objs: [AtomicU32; CACHE_OBJS as usize],
    /// mbuf headers' owner tags, one per object.
    tags: [AtomicU32; OBJS as usize],
}

impl Cache {
    fn new(held: &[u32]) -> Cache {
        Cache {
            len: AtomicU32::new(held.len() as u32),
            op: AtomicU32::new(0),
            op_seq: AtomicU32::new(0),
            op_from: AtomicU32::new(0),
            objs: std::array::from_fn(|i| AtomicU32::new(held.get(i).copied().unwrap_or(0))),
            tags: std::array::from_fn(|_| AtomicU32::new(TAG_FREE)),
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

/// The free ring: capacity 8 (pool.rs sizes it `obj_count + HOLE_ROOM`, room for holes),
/// `holes` holes at `holes_at` (they take slots as a stopped consumer's range would).
fn free_ring(objs: &[u32], holes_at: Option<usize>, holes: usize) -> Ring<u32> {
    let region = Region::heap(32768);
    let r = Ring::init(&region, 0, 32768, "free", 8, SyncMode::MP_MC).unwrap();
    let mut p = r.mp_producer().unwrap();
    match holes_at {
        None => assert_eq!(p.enqueue_burst(objs).unwrap(), objs.len()),
        Some(at) => {
            // A producer that died after its head CAS, repaired: one hole in the ring.
            p.enqueue_burst(&objs[..at]).unwrap();
            let mut dead = r.mp_producer().unwrap();
            dead.__reserve(&vec![OBJS + 1; holes], false).unwrap();
            dead.__die(HOLE_MAKER);
            assert_eq!(r.repair_dead(HOLE_MAKER, 0).voided, 1);
            p.enqueue_burst(&objs[at..]).unwrap();
        }
    }
    r
}

/// What the dying process does.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `refill(k)` of an empty cache of size 2: one dequeue of `want` slots.
    Refill { want: u32 },
    /// `flush_excess` (`keep` = size) or `flush` (`keep` = 0): `push_top` of the objects
    /// above `keep`, topmost first.
    Flush { keep: u32 },
    /// `flush` of a cache of three into a free ring with room for two (a stopped
    /// consumer's range holds its tail): the ring takes the top two, the bottom one stays.
    FlushTight,
    /// `put_slow` of object 4 (held with the caller's tag) into a full cache.
    PutSlow,
}

/// The survivor's part: takes up to two objects from the free ring (a refill of its own
/// cache, adopting a dead consumer's range when it waits behind one), or flushes one.
#[derive(Clone, Copy, Debug)]
enum Survivor {
    Takes,
    Gives,
}

/// The dying process: pool.rs's steps in order; it stops for good after step `die_at`
/// (0: before the first). Whatever it did is in the cache and the ring.
fn dying(op: Op, die_at: u32, cache: &Cache, mut cons: McConsumer<u32>, mut prod: MpProducer<u32>) {
    let mut done = 0;
    // The handle's authoritative length (`PoolCache::len`).
    let mut len = cache.len.load(Ordering::Relaxed);
    'op: {
        // One step finished: the process may die here.
        macro_rules! step {
            () => {
                done += 1;
                if done == die_at {
                    break 'op;
                }
            };
        }
        if die_at == 0 {
            break 'op;
        }
        match op {
            Op::Refill { want } => {
                // pool.rs refill: `let (rec, seq) = (self.consumer.record(),
                // self.consumer.next_op_seq()); self.begin_op(CACHE_OP_REFILL, rec, seq)`
                // (from = len).
                begin_op(
                    cache,
                    OP_REFILL,
                    cons.record().unwrap(),
                    cons.next_op_seq(),
                    len,
                );
                step!(); // 1
                         // `self.consumer.dequeue_bulk(room)`, split at its steps: the head CAS
                         // (record INTENT) ...
                let mut local = vec![0u32; want as usize];
                if die_at == 2 {
                    cons.__reserve(&mut local, false).unwrap();
                }
                step!(); // 2
                         // ... the copy into the cache array, then DONE (see the module docs) ...
                let (old, take) = cons.__reserve(&mut local, true).unwrap();
                for (i, &x) in local[..take as usize].iter().enumerate() {
                    cache.objs[len as usize + i].store(x, Ordering::Relaxed);
                }
                step!(); // 3
                         // ... the tail publication ...
                cons.__publish(old, take).unwrap();
                step!(); // 4
                         // ... and `skip_holes` (core.rs `skip_holes_slow`) in the cache array,
                         // each store that changes it a step.
                let mut kept = 0;
                for i in 0..take {
                    let x = cache.objs[(len + i) as usize].load(Ordering::Relaxed);
                    if x != HOLE {
                        cache.objs[(len + kept) as usize].store(x, Ordering::Relaxed);
                        kept += 1;
                        if kept - 1 != i {
                            step!();
                        }
                    }
                }
                for i in kept..take {
                    cache.objs[(len + i) as usize].store(HOLE, Ordering::Relaxed);
                    step!();
                }
                // `self.len += got; self.publish_len();`
                len += kept;
                cache.len.store(len, Ordering::Relaxed);
                step!();
                // `self.end_op();`
                end_op(cache);
            }
            Op::Flush { .. } | Op::FlushTight | Op::PutSlow => {
                let keep = if let Op::Flush { keep } = op { keep } else { 0 };
                // pool.rs `push_top(len - keep)`: the top objects, topmost first, then
                // `self.begin_op(CACHE_OP_FLUSH, rec, seq)` (from = len).
                let items: Vec<u32> = (keep..len)
                    .rev()
                    .map(|i| cache.objs[i as usize].load(Ordering::Relaxed))
                    .collect();
                begin_op(
                    cache,
                    OP_FLUSH,
                    prod.record().unwrap(),
                    prod.next_op_seq(),
                    len,
                );
                step!(); // 1
                         // `self.producer.enqueue_burst(..)`, split: the head CAS (INTENT) ...
                if die_at == 2 {
                    prod.__reserve(&items, false).unwrap();
                }
                step!(); // 2
                         // ... the slots written, then DONE ...
                         // (A full ring takes a prefix: the top ones.)
                let (old, take) = prod.__reserve(&items, true).unwrap();
                step!(); // 3
                         // ... the tail publication.
                prod.__publish(old, take).unwrap();
                step!(); // 4
                         // `self.len -= pushed; self.publish_len();`
                len -= take;
                cache.len.store(len, Ordering::Relaxed);
                step!(); // 5
                         // `self.end_op();`
                end_op(cache);
                if let Op::PutSlow = op {
                    step!(); // 6
                             // put_slow, after `push_top`: `dst.copy_from_slice(objs)` on top (the
                             // new object: 4), then `self.len += n; self.publish_len();`.
                    cache.objs[len as usize].store(4, Ordering::Relaxed);
                    step!(); // 7
                    len += 1;
                    cache.len.store(len, Ordering::Relaxed);
                }
            }
        }
    }
    // Death (or the end of the operation: the process dies holding its cache).
    cons.__die(DEAD);
    prod.__die(DEAD);
}

/// pool.rs `begin_op`: op_seq, op_from (Relaxed), then op (Release).
fn begin_op(cache: &Cache, kind: u32, rec: usize, seq: u32, from: u32) {
    cache.op_seq.store(seq, Ordering::Relaxed);
    cache.op_from.store(from, Ordering::Relaxed);
    cache
        .op
        .store(kind | ((rec as u32 & 0xff) << 8), Ordering::Release);
}

/// pool.rs `end_op`.
fn end_op(cache: &Cache) {
    cache.op.store(0, Ordering::Release);
}

/// pool.rs `PoolShared::recovered_len`, line by line.
fn recovered_len(ring: &Ring<u32>, hdr: &Cache, pid: u32) -> u32 {
    let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
    let op = hdr.op.load(Ordering::Acquire);
    if op == 0 {
        return len;
    }
    let (kind, rec) = (op & 3, ((op >> 8) & 0xff) as usize);
    let (seq, from) = (
        hdr.op_seq.load(Ordering::Relaxed),
        hdr.op_from.load(Ordering::Relaxed).min(CACHE_OBJS),
    );
    let start = 0; // `hdr.start_time`: unknown under loom
    let took = ring.record_of(pid, start).into_iter().find(|v| {
        v.index == rec
            && v.producer == (kind == OP_FLUSH)
            && v.seq == seq
            && v.state == OpState::Done
    });
    hdr.op.store(0, Ordering::Relaxed);
    match (kind, took) {
        (OP_REFILL, Some(v)) => len
            .max(from.saturating_add(v.len).saturating_add(v.adopted))
            .min(CACHE_OBJS),
        (OP_FLUSH, Some(v)) => from.saturating_sub(v.len).min(len),
        _ => len,
    }
}

/// pool.rs `PoolShared::flush_slot` (the mbuf pool's branch: tags of what it frees are
/// marked free), with its de-duplication of the cache's positions.
fn flush_slot(ring: &Ring<u32>, hdr: &Cache, pid: u32, dedup: bool) -> u32 {
    let len = recovered_len(ring, hdr, pid);
    let mut tmp: Vec<u32> = (0..len)
        .map(|i| hdr.objs[i as usize].load(Ordering::Relaxed))
        .collect();
    tmp.retain(|&i| i != HOLE);
    tmp.retain(|&i| i < OBJS);
    if dedup {
        tmp.sort_unstable();
        tmp.dedup();
    }
    for &i in &tmp {
        hdr.tags[i as usize].store(TAG_FREE, Ordering::Relaxed);
    }
    let mut producer = ring.mp_producer().expect("MP/MC");
    let pushed = producer.enqueue_burst(&tmp).unwrap_or(0);
    assert_eq!(pushed, tmp.len(), "free ring full while flushing a cache");
    hdr.len.store(0, Ordering::Relaxed);
    pushed as u32
}

/// mbuf.rs `reclaim_owner`: objects still tagged with the dead owner go back.
fn reclaim_by_tag(ring: &Ring<u32>, hdr: &Cache) {
    let back: Vec<u32> = (0..OBJS)
        .filter(|&i| {
            hdr.tags[i as usize]
                .compare_exchange(TAG_DEAD, TAG_FREE, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
        .collect();
    let mut put = ring.mp_producer().unwrap();
    assert_eq!(put.enqueue_burst(&back).unwrap(), back.len());
}

/// pool.rs `Mempool::repair_free_ring`.
fn repair_free_ring(ring: &Ring<u32>, pid: u32) {
    let report = ring.repair_dead(pid, 0);
    let mut back: Vec<u32> = report.returned.into_iter().filter(|&i| i < OBJS).collect();
    if report.left_pending + report.published > 0 {
        if let Ok(mut c) = ring.mc_consumer() {
            let mut one = [0u32; 1];
            if let Ok(1) = c.dequeue_burst(&mut one) {
                back.extend(one.iter().filter(|&&i| i < OBJS));
            }
        }
    }
    if back.is_empty() {
        return;
    }
    let mut producer = ring.mp_producer().expect("MP/MC");
    let pushed = producer.enqueue_burst(&back).unwrap_or(0);
    assert_eq!(pushed, back.len(), "free ring full while repairing");
}

/// One scenario: the dying operation, the step it dies after, the survivor's part, a
/// hole in the ring at the start, the recovery's de-duplication on or off.
fn scenario(op: Op, die_at: u32, survivor: Option<Survivor>, holes: bool, dedup: bool) {
    eprintln!("model: {op:?} dies after step {die_at}, survivor {survivor:?}");
    model(move || {
        // Who holds what at the start: the ring, the dying cache, the survivor, the dying
        // caller (tagged, being put).
        let (in_ring, in_cache, survivor_holds, caller_holds): (&[u32], &[u32], &[u32], &[u32]) =
            match op {
                Op::Refill { .. } => (&[0, 1, 2], &[], &[3], &[]),
                Op::Flush { .. } => (&[3], &[0, 1, 2], &[4], &[]),
                Op::FlushTight => (&[3, 4], &[0, 1, 2], &[], &[]),
                Op::PutSlow => (&[3], &[0, 1], &[2], &[4]),
            };
        let mut all: Vec<u32> = [in_ring, in_cache, survivor_holds, caller_holds].concat();
        all.sort_unstable();
        let ring = if let Op::FlushTight = op {
            // Two objects and four holes: room for two.
            free_ring(in_ring, Some(2), 4)
        } else {
            free_ring(in_ring, holes.then_some(1), 1)
        };
        let cache = Arc::new(Cache::new(in_cache));
        for &i in caller_holds {
            cache.tags[i as usize].store(TAG_DEAD, Ordering::Relaxed);
        }
        // Handles made before the threads start, so each has a ring record (the table
        // has three under loom): the dying cache's two, the survivor's one.
        let (cons, prod) = (ring.mc_consumer().unwrap(), ring.mp_producer().unwrap());
        let alive = survivor.map(|s| match s {
            Survivor::Takes => {
                let mut c = ring.mc_consumer().unwrap();
                loom::thread::spawn(move || {
                    let mut out = [0u32; 3];
                    let n = c.dequeue_burst(&mut out).unwrap();
                    out[..n].to_vec()
                })
            }
            Survivor::Gives => {
                let mut p = ring.mp_producer().unwrap();
                let obj = survivor_holds.first().copied().unwrap_or(OBJS);
                loom::thread::spawn(move || {
                    assert_eq!(p.enqueue_burst(&[obj]).unwrap(), 1);
                    vec![u32::MAX]
                })
            }
        });
        // The consumer that makes room again in the tight case (unrecorded: the table is
        // full), made before the death: a handle made after it could recycle the dead
        // one's ring records before the recovery reads them (pool.rs `flush_slot` makes
        // its producer after `recovered_len` for the same reason).
        let drain = matches!(op, Op::FlushTight).then(|| ring.mc_consumer().unwrap());
        let c2 = cache.clone();
        let dead = loom::thread::spawn(move || dying(op, die_at, &c2, cons, prod));
        dead.join().unwrap();
        // The survivor finishes without the primary (it adopts or repairs the dead
        // range itself). Running the recovery concurrently with it is not explored: a
        // survivor spinning at the tail makes loom's state space explode.
        let got = alive.map(|t| t.join().unwrap());
        let mut drained = Vec::new();
        if let Some(mut c) = drain {
            // Room comes back (the stand-in for a stopped consumer's range, the holes,
            // leaves the ring as everything in it is taken), so the recovery has room.
            let mut out = [0u32; 8];
            let n = c.dequeue_burst(&mut out).unwrap();
            drained.extend_from_slice(&out[..n]);
        }
        // The primary reclaims the dead process: `flush_caches_of` (flush_slot), the
        // reclaim by tag, then `repair_free_ring`.
        flush_slot(&ring, &cache, DEAD, dedup);
        reclaim_by_tag(&ring, &cache);
        repair_free_ring(&ring, DEAD);
        let mut held: Vec<u32> = survivor_holds.to_vec();
        held.extend_from_slice(&drained);
        if let Some(got) = got {
            if got == [u32::MAX] {
                held.clear(); // it gave its object to the ring
            } else {
                held.extend_from_slice(&got);
            }
        }
        // Audit: drain the ring; every object once, in the ring or in live hands.
        let mut c = ring.mc_consumer().unwrap();
        let mut out = [0u32; 8];
        loop {
            let n = c.dequeue_burst(&mut out).unwrap();
            if n == 0 {
                break;
            }
            held.extend_from_slice(&out[..n]);
        }
        held.sort_unstable();
        assert_eq!(
            held, all,
            "{op:?} died after step {die_at}, survivor {survivor:?}: objects {held:?} (each must be there once)"
        );
        assert!(!ring.is_failed());
    });
}

/// Steps of each operation (the dying thread stops after 0..=STEPS of them).
const REFILL_STEPS: u32 = 6;
const FLUSH_STEPS: u32 = 6;
const PUT_SLOW_STEPS: u32 = 7;

#[test]
fn refill_death_at_every_step_alone() {
    for k in 0..=REFILL_STEPS {
        scenario(Op::Refill { want: 2 }, k, None, false, true);
    }
}

#[test]
fn refill_death_at_every_step_with_a_survivor_taking() {
    for k in 0..=REFILL_STEPS {
        scenario(
            Op::Refill { want: 2 },
            k,
            Some(Survivor::Takes),
            false,
            true,
        );
    }
}

#[test]
fn refill_death_at_every_step_with_a_survivor_giving() {
    for k in 0..=REFILL_STEPS {
        scenario(
            Op::Refill { want: 2 },
            k,
            Some(Survivor::Gives),
            false,
            true,
        );
    }
}

#[test]
fn flush_excess_death_at_every_step_with_a_survivor() {
    for k in 0..=FLUSH_STEPS {
        scenario(Op::Flush { keep: 1 }, k, None, false, true);
        scenario(Op::Flush { keep: 1 }, k, Some(Survivor::Takes), false, true);
    }
}

#[test]
fn flush_all_death_at_every_step_with_a_survivor() {
    for k in 0..=FLUSH_STEPS {
        scenario(Op::Flush { keep: 0 }, k, Some(Survivor::Takes), false, true);
        scenario(Op::Flush { keep: 0 }, k, Some(Survivor::Gives), false, true);
    }
}

/// A flush into a ring with room for only part of it (`push_top`): what the ring refuses
/// is the bottom of the stack and stays in the cache, whatever step the flusher dies at and
/// whether a survivor takes from the ring meanwhile (making room, or not yet).
#[test]
fn flush_into_a_tight_ring_death_at_every_step() {
    for k in 0..=FLUSH_STEPS {
        scenario(Op::FlushTight, k, None, false, true);
        scenario(Op::FlushTight, k, Some(Survivor::Takes), false, true);
    }
}

#[test]
fn put_slow_death_at_every_step_with_a_survivor() {
    for k in 0..=PUT_SLOW_STEPS {
        scenario(Op::PutSlow, k, Some(Survivor::Takes), false, true);
    }
}

/// A refill through a hole (a repaired dead producer's position): the dequeue compacts the
/// cache positions after its publication (`skip_holes`), and a death there leaves one
/// object at two positions. The recovery's de-duplication puts it back once.
#[test]
fn refill_through_a_hole_death_at_every_step() {
    for k in 0..=REFILL_STEPS + 2 {
        scenario(Op::Refill { want: 3 }, k, None, true, true);
    }
}

/// Without the de-duplication, a death in the middle of `skip_holes`'s compaction
/// duplicates an object.
#[test]
#[should_panic(expected = "each must be there once")]
fn refill_through_a_hole_without_dedup_duplicates() {
    // Steps: begin_op, reserved, copied, published, then the compaction's first move
    // (object 1 from position 2 to 1, still at 2 too): it dies there.
    scenario(Op::Refill { want: 3 }, 5, None, true, false);
}
