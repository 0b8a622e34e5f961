//! Mirrors DPDK's `ring_perf_autotest` (app/test/test_ring_perf.c, 22.11) on a ring of
//! 4096 elements: single element enqueue+dequeue, burst and bulk of 8 and 32 on one core,
//! empty dequeue, and bulk 8/32 with the producer on one core and the consumer on another.
//!
//! Like DPDK, each figure times a tight loop of operations (`iter_custom`), so no
//! per-call harness overhead is included, and the loop is monomorphised per handle type
//! (DPDK's equivalent is a compile-time-constant sync type behind its test macros).
//! One criterion iteration = what DPDK reports per loop: one-core figures are
//! "enqueue n + dequeue n" (`bench/ring-vs-dpdk.sh` divides by n for ns/element);
//! two-core figures are one bulk of n moved from one core to the other, timed on both
//! cores and summed (DPDK prints enqueue-side plus dequeue-side cycles per element).
//! IDs: `ring/<mode>/<op>/<n>`, `ring16/...` for 16-byte elements.
//!
//! Each one-core sample starts at a ring position that is a multiple of 8 elements (see
//! [`Position`]), as DPDK's loops leave its ring (their counts are powers of two);
//! criterion's iteration counts are arbitrary, and without this a burst of 32 8-byte
//! elements straddled five cache lines instead of four in every later figure.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shm::{Memseg, Region};
use shm_ring::{Element, McConsumer, MpProducer, Ring, ScConsumer, SpProducer, SyncMode};

const RING_SIZE: u32 = 4096;

/// The producer operations the bench times, for both producer kinds.
trait Produce<T: Element>: Send + 'static {
    fn one(&mut self, v: T) -> bool;
    fn burst(&mut self, x: &[T]) -> usize;
    fn bulk(&mut self, x: &[T]) -> usize;
}
/// The consumer operations the bench times, for both consumer kinds.
trait Consume<T: Element>: Send + 'static {
    fn one(&mut self) -> Option<T>;
    fn burst(&mut self, x: &mut [T]) -> usize;
    fn bulk(&mut self, x: &mut [T]) -> usize;
}

macro_rules! impl_roles {
    ($p:ident, $c:ident) => {
        impl<T: Element> Produce<T> for $p<T> {
            #[inline(always)]
            fn one(&mut self, v: T) -> bool {
                self.enqueue(v).is_ok()
            }
            #[inline(always)]
            fn burst(&mut self, x: &[T]) -> usize {
                self.enqueue_burst(x).unwrap()
            }
            #[inline(always)]
            fn bulk(&mut self, x: &[T]) -> usize {
                self.enqueue_bulk(x).unwrap()
            }
        }
        impl<T: Element> Consume<T> for $c<T> {
            #[inline(always)]
            fn one(&mut self) -> Option<T> {
                self.dequeue().unwrap()
            }
            #[inline(always)]
            fn burst(&mut self, x: &mut [T]) -> usize {
                self.dequeue_burst(x).unwrap()
            }
            #[inline(always)]
            fn bulk(&mut self, x: &mut [T]) -> usize {
                self.dequeue_bulk(x).unwrap()
            }
        }
    };
}
impl_roles!(SpProducer, ScConsumer);
impl_roles!(MpProducer, McConsumer);

fn ring<T: Element>(mode: SyncMode) -> Ring<T> {
    let seg = Memseg::create_in_region(Region::heap(1 << 20), "bench", 1).unwrap();
    seg.mark_ready();
    Ring::create(&seg, "perf", RING_SIZE, mode).unwrap()
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g
}

/// Where the one-core figures left the (empty) ring: elements moved so far.
struct Position(u64);

impl Position {
    /// Moves elements through the empty ring until its position is a multiple of 8
    /// elements, outside any timing (with a bulk, so the timed single-element loop's
    /// calls keep their own inlining).
    #[inline(never)]
    fn align<T: Element, P: Produce<T>, C: Consume<T>>(&mut self, p: &mut P, q: &mut C) {
        let k = ((8 - self.0 % 8) % 8) as usize;
        if k > 0 {
            let mut v = [T::new_zeroed(); 8];
            assert_eq!(p.bulk(&v[..k]), k);
            assert_eq!(q.bulk(&mut v[..k]), k);
            self.0 += k as u64;
        }
    }
}

/// One-core figures for one mode: single, burst/bulk 8 and 32, empty dequeue.
fn one_core<T: Element, P: Produce<T>, C: Consume<T>>(
    c: &mut Criterion,
    name: &str,
    tag: &str,
    p: &mut P,
    q: &mut C,
) {
    let mut g = group(c, name);
    g.throughput(Throughput::Elements(1));
    let mut pos = Position(0);
    g.bench_function(format!("{tag}/single/1"), |b| {
        b.iter_custom(|iters| {
            pos.align(p, q);
            let v = T::new_zeroed();
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(p.one(black_box(v)));
                black_box(q.one());
            }
            let dt = t0.elapsed();
            pos.0 += iters;
            dt
        })
    });
    for n in [8usize, 32] {
        let src = vec![T::new_zeroed(); n];
        let mut dst = vec![T::new_zeroed(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{tag}/burst/{n}"), |b| {
            b.iter_custom(|iters| {
                pos.align(p, q);
                let t0 = Instant::now();
                for _ in 0..iters {
                    black_box(p.burst(black_box(&src)));
                    black_box(q.burst(black_box(&mut dst)));
                }
                let dt = t0.elapsed();
                pos.0 += iters * n as u64;
                dt
            })
        });
        g.bench_function(format!("{tag}/bulk/{n}"), |b| {
            b.iter_custom(|iters| {
                pos.align(p, q);
                let t0 = Instant::now();
                for _ in 0..iters {
                    black_box(p.bulk(black_box(&src)));
                    black_box(q.bulk(black_box(&mut dst)));
                }
                let dt = t0.elapsed();
                pos.0 += iters * n as u64;
                dt
            })
        });
    }
    let mut dst = vec![T::new_zeroed(); 8];
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{tag}/empty_deq/8"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(q.bulk(black_box(&mut dst)));
            }
            t0.elapsed()
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

/// Keeps a value on cache lines of its own. The two-core loops keep each thread's handle
/// and buffer in one: a handle left in the heap box that carried it to its thread can share
/// a line with the other thread's buffer, and that false sharing (not the ring) then sets
/// the figure.
#[repr(align(128))]
struct Lines<T>(T);

/// Two-core figures: the producer on CPU 0, the consumer on CPU 1, each timed; the figure
/// is the sum of both sides' times, as DPDK's `run_on_core_pair` prints it (enqueue
/// cycles per element plus dequeue cycles per element), so it is about twice the wall time
/// per element.
fn two_cores<T: Element, P: Produce<T>, C: Consume<T>>(
    c: &mut Criterion,
    name: &str,
    tag: &str,
    mode: SyncMode,
    make: fn(&Ring<T>) -> (P, C),
) {
    let mut g = group(c, name);
    g.measurement_time(Duration::from_secs(3));
    for n in [8usize, 32] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{tag}/2core_bulk/{n}"), |b| {
            b.iter_custom(|iters| {
                let r = ring::<T>(mode);
                let (p, q) = make(&r);
                let barrier = Arc::new(Barrier::new(2));
                let bp = barrier.clone();
                let producer = std::thread::spawn(move || {
                    pin(0);
                    // Handle and buffer on this thread's own lines (see `Lines`).
                    let mut p = Lines(p);
                    let src = Lines([T::new_zeroed(); 32]);
                    let src = &src.0[..n];
                    bp.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        while p.0.bulk(src) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                    t0.elapsed()
                });
                pin(1);
                let mut q = Lines(q);
                let mut dst = Lines([T::new_zeroed(); 32]);
                let dst = &mut dst.0[..n];
                barrier.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    while q.0.bulk(dst) == 0 {
                        std::hint::spin_loop();
                    }
                }
                let dt = t0.elapsed();
                let dt_producer = producer.join().unwrap();
                pin(0);
                // As DPDK's run_on_core_pair: the producer's time plus the consumer's.
                dt + dt_producer
            })
        });
    }
    g.finish();
}

fn sp_sc<T: Element>(r: &Ring<T>) -> (SpProducer<T>, ScConsumer<T>) {
    (r.sp_producer().unwrap(), r.sc_consumer().unwrap())
}

fn mp_mc<T: Element>(r: &Ring<T>) -> (MpProducer<T>, McConsumer<T>) {
    (r.mp_producer().unwrap(), r.mc_consumer().unwrap())
}

fn modes<T: Element>(c: &mut Criterion, name: &str) {
    let r = ring::<T>(SyncMode::SP_SC);
    let (mut p, mut q) = sp_sc(&r);
    one_core(c, name, "sp_sc", &mut p, &mut q);
    let r = ring::<T>(SyncMode::MP_MC);
    let (mut p, mut q) = mp_mc(&r);
    one_core(c, name, "mp_mc", &mut p, &mut q);
}

fn benches(c: &mut Criterion) {
    pin(0);
    modes::<u64>(c, "ring");
    modes::<[u64; 2]>(c, "ring16");
    two_cores::<u64, _, _>(c, "ring", "sp_sc", SyncMode::SP_SC, sp_sc);
    two_cores::<u64, _, _>(c, "ring", "mp_mc", SyncMode::MP_MC, mp_mc);
}

criterion_group!(ring_perf, benches);
criterion_main!(ring_perf);
