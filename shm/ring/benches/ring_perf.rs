//! Mirrors DPDK's `ring_perf_autotest` (app/test/test_ring_perf.c, 22.11) on a ring of
//! 4096 elements: single element enqueue+dequeue, burst and bulk of 8 and 32 on one core,
//! empty dequeue, and bulk 8/32 with the producer on one core and the consumer on another.
//!
//! One criterion iteration = what DPDK times per loop: one-core figures are
//! "enqueue n + dequeue n" (divide by n for ns/element, as `bench/ring-vs-dpdk.sh` does);
//! two-core figures are one bulk of n moved from one core to the other.
//! IDs: `ring/<mode>/<op>/<n>`, `ring16/...` for 16-byte elements.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shm::{Memseg, Region};
use shm_ring::{Element, Ring, SyncMode};

const RING_SIZE: u32 = 4096;

/// A producer/consumer pair of either kind, dispatched once per call (the branch is
/// perfectly predicted, as DPDK's per-call sync-type switch is).
enum Side<T: Element> {
    S(shm_ring::SpProducer<T>, shm_ring::ScConsumer<T>),
    M(shm_ring::MpProducer<T>, shm_ring::McConsumer<T>),
}

fn ring<T: Element>(mode: SyncMode) -> Ring<T> {
    let seg = Memseg::create_in_region(Region::heap(1 << 20), "bench", 1).unwrap();
    seg.mark_ready();
    Ring::create(&seg, "perf", RING_SIZE, mode).unwrap()
}

fn sides<T: Element>(r: &Ring<T>) -> Side<T> {
    if r.mode().single_producer {
        Side::S(r.sp_producer().unwrap(), r.sc_consumer().unwrap())
    } else {
        Side::M(r.mp_producer().unwrap(), r.mc_consumer().unwrap())
    }
}

fn one_core<T: Element>(c: &mut Criterion, group: &str, mode: SyncMode, tag: &str) {
    let r = ring::<T>(mode);
    let mut s = sides(&r);
    let mut g = c.benchmark_group(group);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{tag}/single/1"), |b| {
        let v = T::new_zeroed();
        b.iter(|| match &mut s {
            Side::S(p, c) => {
                let _ = p.enqueue(black_box(v));
                black_box(c.dequeue().unwrap())
            }
            Side::M(p, c) => {
                let _ = p.enqueue(black_box(v));
                black_box(c.dequeue().unwrap())
            }
        })
    });
    for n in [8usize, 32] {
        let src = vec![T::new_zeroed(); n];
        let mut dst = vec![T::new_zeroed(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{tag}/burst/{n}"), |b| {
            b.iter(|| match &mut s {
                Side::S(p, c) => {
                    p.enqueue_burst(black_box(&src)).unwrap();
                    c.dequeue_burst(black_box(&mut dst)).unwrap()
                }
                Side::M(p, c) => {
                    p.enqueue_burst(black_box(&src)).unwrap();
                    c.dequeue_burst(black_box(&mut dst)).unwrap()
                }
            })
        });
        g.bench_function(format!("{tag}/bulk/{n}"), |b| {
            b.iter(|| match &mut s {
                Side::S(p, c) => {
                    p.enqueue_bulk(black_box(&src)).unwrap();
                    c.dequeue_bulk(black_box(&mut dst)).unwrap()
                }
                Side::M(p, c) => {
                    p.enqueue_bulk(black_box(&src)).unwrap();
                    c.dequeue_bulk(black_box(&mut dst)).unwrap()
                }
            })
        });
    }
    let mut dst = vec![T::new_zeroed(); 8];
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{tag}/empty_deq/8"), |b| {
        b.iter(|| match &mut s {
            Side::S(_, c) => c.dequeue_bulk(black_box(&mut dst)).unwrap(),
            Side::M(_, c) => c.dequeue_bulk(black_box(&mut dst)).unwrap(),
        })
    });
    g.finish();
}

/// Pins the calling thread to one CPU (by number, whatever the current mask is).
fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn two_cores<T: Element>(c: &mut Criterion, group: &str, mode: SyncMode, tag: &str) {
    let mut g = c.benchmark_group(group);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for n in [8usize, 32] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{tag}/2core_bulk/{n}"), |b| {
            b.iter_custom(|iters| {
                let r = ring::<T>(mode);
                let s = sides(&r);
                let barrier = Arc::new(Barrier::new(2));
                let (mut_p, mut_c) = match s {
                    Side::S(p, c) => (Side2::Sp(p), Side2C::Sc(c)),
                    Side::M(p, c) => (Side2::Mp(p), Side2C::Mc(c)),
                };
                let bp = barrier.clone();
                let producer = std::thread::spawn(move || {
                    pin(0);
                    let mut p = mut_p;
                    let src = vec![T::new_zeroed(); n];
                    bp.wait();
                    for _ in 0..iters {
                        while p.bulk(&src) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                });
                pin(1);
                let mut cons = mut_c;
                let mut dst = vec![T::new_zeroed(); n];
                barrier.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    while cons.bulk(&mut dst) == 0 {
                        std::hint::spin_loop();
                    }
                }
                let dt = t0.elapsed();
                producer.join().unwrap();
                dt
            })
        });
    }
    g.finish();
}

enum Side2<T: Element> {
    Sp(shm_ring::SpProducer<T>),
    Mp(shm_ring::MpProducer<T>),
}
impl<T: Element> Side2<T> {
    #[inline]
    fn bulk(&mut self, x: &[T]) -> usize {
        match self {
            Side2::Sp(p) => p.enqueue_bulk(x).unwrap(),
            Side2::Mp(p) => p.enqueue_bulk(x).unwrap(),
        }
    }
}
enum Side2C<T: Element> {
    Sc(shm_ring::ScConsumer<T>),
    Mc(shm_ring::McConsumer<T>),
}
impl<T: Element> Side2C<T> {
    #[inline]
    fn bulk(&mut self, x: &mut [T]) -> usize {
        match self {
            Side2C::Sc(c) => c.dequeue_bulk(x).unwrap(),
            Side2C::Mc(c) => c.dequeue_bulk(x).unwrap(),
        }
    }
}

fn benches(c: &mut Criterion) {
    pin(0);
    one_core::<u64>(c, "ring", SyncMode::SP_SC, "sp_sc");
    one_core::<u64>(c, "ring", SyncMode::MP_MC, "mp_mc");
    one_core::<[u64; 2]>(c, "ring16", SyncMode::SP_SC, "sp_sc");
    one_core::<[u64; 2]>(c, "ring16", SyncMode::MP_MC, "mp_mc");
    two_cores::<u64>(c, "ring", SyncMode::SP_SC, "sp_sc");
    two_cores::<u64>(c, "ring", SyncMode::MP_MC, "mp_mc");
}

criterion_group!(ring_perf, benches);
criterion_main!(ring_perf);
