//! A plain loop of MP/MC (or SP/SC with `sp`) enqueue-bulk 32 + dequeue-bulk 32 on one
//! thread, for instruction counting (`perf stat -e instructions`, callgrind) alongside
//! DPDK's ring_perf loop. usage: ring_loop [mp|sp] [ITERATIONS]
use shm::{Memseg, Region};
use shm_ring::{Ring, SyncMode};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "mp".into());
    let iters: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let sync = if mode == "sp" {
        SyncMode::SP_SC
    } else {
        SyncMode::MP_MC
    };
    let seg = Memseg::create_in_region(Region::heap(1 << 20), "loop", 1).expect("memseg");
    seg.mark_ready();
    let ring = Ring::<u64>::create(&seg, "loop", 4096, sync).expect("ring");
    let src = [7u64; 32];
    let mut dst = [0u64; 32];
    let mut moved = 0u64;
    if mode == "sp" {
        let (mut p, mut c) = (ring.sp_producer().unwrap(), ring.sc_consumer().unwrap());
        for _ in 0..iters {
            moved += p.enqueue_bulk(std::hint::black_box(&src)).unwrap() as u64;
            moved += c.dequeue_bulk(std::hint::black_box(&mut dst)).unwrap() as u64;
        }
    } else {
        let (mut p, mut c) = (ring.mp_producer().unwrap(), ring.mc_consumer().unwrap());
        for _ in 0..iters {
            moved += p.enqueue_bulk(std::hint::black_box(&src)).unwrap() as u64;
            moved += c.dequeue_bulk(std::hint::black_box(&mut dst)).unwrap() as u64;
        }
    }
    println!("{moved}");
}
