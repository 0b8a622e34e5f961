//! Our virtio-user port against our vhost-user port in one thread of one process: frames
//! go frontend tx -> backend rx -> backend tx -> frontend rx, a burst at a time, so the
//! figure is the cost of both data paths per frame without a second core (which the
//! two-process pair in `bench/vhost-vs-dpdk.sh` needs, and a busy machine does not give).
//! Ignored by default; run with
//! `cargo test --release -p pmds --test vhost_loop -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use pmds::{DevArgs, Port, PortSetup};
use shm::{Memseg, MemsegSpec};
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};

#[test]
#[ignore = "a measurement: run it with --ignored --release"]
fn vhost_pair_in_one_thread() {
    let dir = std::env::temp_dir();
    let tag = std::process::id();
    let file = dir.join(format!("shmdp-loop-{tag}.seg"));
    let sock = dir.join(format!("shmdp-loop-{tag}.sock"));
    let seg = Memseg::create(&MemsegSpec {
        name: "loop".into(),
        id: 0,
        size_bytes: 64 << 20,
        path: file.clone(),
        page_size: 4096,
        hugetlb: false,
        creator_pid: std::process::id(),
        generation: 1,
    })
    .unwrap();
    seg.mark_ready();
    let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(8191, 256, 1)).unwrap();
    let setup = |id: u16| PortSetup {
        port_id: id,
        nb_desc: 256,
        rx_pool: pool.clone(),
        mac: None,
    };
    let find = |n: &str| seg.lookup(n).ok();
    let devices = pmds::ethdev::Devices::new();
    let d = |t: String| DevArgs::parse(&t).unwrap();
    let vh = Port::create(
        &seg,
        &d(format!("net_vhost0,iface={}", sock.display())),
        &setup(0),
        &find,
        &devices,
    )
    .unwrap();
    let vu = Port::create(
        &seg,
        &d(format!("net_virtio_user1,path={}", sock.display())),
        &setup(1),
        &find,
        &devices,
    )
    .unwrap();
    vh.start();
    vu.start();
    let t0 = Instant::now();
    while !vh.link_up() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
    let mut vu_tx = vu.tx_queue(0, &cache).unwrap();
    let mut vu_rx = vu.rx_queue(0, &cache).unwrap();
    let mut vh_tx = vh.tx_queue(0, &cache).unwrap();
    let mut vh_rx = vh.rx_queue(0, &cache).unwrap();
    let mut a = Vec::with_capacity(512);
    let mut b = Vec::with_capacity(512);
    // Post the frontend's rx buffers.
    vu_rx.rx_burst(&mut b, 32);
    let frame = [0x5au8; 64];
    let mut best = f64::MAX;
    for _round in 0..7 {
        let n = 1_000_000u64;
        let mut moved = 0u64;
        let t = Instant::now();
        while moved < n {
            while a.len() < 32 {
                a.push(cache.alloc_from(&frame).unwrap());
            }
            vu_tx.tx_burst(&mut a);
            vh_rx.rx_burst(&mut b, 32);
            vh_tx.tx_burst(&mut b);
            b.clear();
            let got = vu_rx.rx_burst(&mut b, 32);
            moved += got as u64;
            b.clear();
        }
        let ns = t.elapsed().as_nanos() as f64 / moved as f64;
        best = best.min(ns);
    }
    println!(
        "vhost pair in one thread, 64 B frames: {best:.1} ns per frame round trip ({:.2} Mpps)",
        1e3 / best
    );
    drop((a, b));
    drop((vu_tx, vu_rx, vh_tx, vh_rx));
    drop(cache);
    vu.stop_driver();
    vh.stop_driver();
    let _ = std::fs::remove_file(&file);
}
