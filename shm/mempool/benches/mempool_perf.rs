//! Mirrors DPDK's `mempool_perf_autotest` (app/test/test_mempool_perf.c, 22.11) for the
//! subset the mempool issue asks for: cache 0 and 512, 1 and 2 cores, bulk 1 and 32, with
//! `n_keep` = 128 (each core gets 128 objects in bulks of n, then puts them back in bulks
//! of n). One criterion iteration = one such get-128/put-128 cycle on every core, so the
//! throughput is 128 objects per core per iteration and criterion's elements/s is DPDK's
//! summed `rate_persec` (objects per second, all cores).
//!
//! The pool holds `cores x (512 + 512) - 1` objects of 2048 bytes, as DPDK sizes its test
//! pool (`lcores x (MAX_KEEP + CACHE_MAX_SIZE) - 1`); neither side touches the objects.
//! IDs: `mempool/cache<C>/<K>core/bulk<N>`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shm::{Memseg, Region};
use shm_mempool::{Mempool, OwnerTag, PoolCache, PoolParams};

const N_KEEP: usize = 128;
const MAX_KEEP: u32 = 512;

fn pool(cache: u32, cores: u32) -> Mempool {
    let count = cores * (MAX_KEEP + 512) - 1;
    let seg = Memseg::create_in_region(Region::heap(16 << 20), "bench", 1).unwrap();
    seg.mark_ready();
    Mempool::create(
        &seg,
        "perf",
        &PoolParams {
            count,
            obj_size: 2048,
            cache_size: cache,
            pool_id: 1,
            flags: 0,
            headroom: 0,
            data_room: 0,
        },
    )
    .unwrap()
}

/// One DPDK cycle: get N_KEEP objects in bulks of `n`, put them back in bulks of `n`.
#[inline(always)]
fn cycle(h: &mut PoolCache, table: &mut [u32; N_KEEP], n: usize) {
    let mut idx = 0;
    while idx < N_KEEP {
        h.get_bulk(&mut table[idx..idx + n])
            .expect("the pool is sized so gets never fail");
        idx += n;
    }
    idx = 0;
    while idx < N_KEEP {
        h.put_bulk(&table[idx..idx + n]);
        idx += n;
    }
}

fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mempool");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(20);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cache in [0u32, 512] {
        for cores in [1u32, 2] {
            if cores as usize > cpus {
                continue;
            }
            for n in [1usize, 32] {
                g.throughput(Throughput::Elements((N_KEEP as u32 * cores).into()));
                let id = format!("cache{cache}/{cores}core/bulk{n}");
                let p = pool(cache, cores);
                g.bench_function(&id, |b| {
                    b.iter_custom(|iters| run(&p, cores, n, iters));
                });
            }
        }
    }
    g.finish();
}

/// Runs `iters` cycles on each of `cores` threads (pinned to cores 0..) and returns the
/// wall time from a common start until the last thread is done.
fn run(pool: &Mempool, cores: u32, n: usize, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(cores as usize));
    let mut helpers = Vec::new();
    for core in 1..cores {
        let pool = pool.clone();
        let start = start.clone();
        helpers.push(std::thread::spawn(move || {
            pin(core as usize);
            let mut h = pool.cache(OwnerTag(2 + core)).unwrap();
            let mut table = [0u32; N_KEEP];
            start.wait();
            for _ in 0..iters {
                cycle(&mut h, &mut table, n);
            }
        }));
    }
    pin(0);
    let mut h = pool.cache(OwnerTag(2)).unwrap();
    let mut table = [0u32; N_KEEP];
    start.wait();
    let t0 = Instant::now();
    for _ in 0..iters {
        cycle(&mut h, &mut table, n);
    }
    for t in helpers {
        t.join().unwrap();
    }
    t0.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
