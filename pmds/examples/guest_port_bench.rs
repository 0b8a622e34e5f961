//! Host cost of a guest-facing ring port (`guest_pool=`), in one thread and one process
//! (no scheduler in the figure): the "guest" puts BURST frames of LEN bytes on its ring,
//! the host port receives them (copy out of the guest's pool) and sends them back (copy
//! into the guest's pool), the guest frees what came back. Only the host's `rx_burst` +
//! `tx_burst` are timed. Prints `guest-port LEN B: X Mpps (host ns/packet Y)`.
//! usage: cargo run --release -p pmds --example guest_port_bench [PACKETS] [LEN] [BURST]

use std::time::{Duration, Instant};

use pmds::{DevArgs, Port, PortSetup};
use shm::{Memseg, Region};
use shm_mempool::{MbufHandle, MbufPool, MbufPoolParams, OwnerTag};
use shm_ring::{Ring, SyncMode};

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (packets, len, burst) = (arg(1, 5_000_000), arg(2, 64), arg(3, 32));
    let host = Memseg::create_in_region(Region::heap(64 << 20), "host", 1).unwrap();
    host.mark_ready();
    let host_pool = MbufPool::create(&host, "mbufs", &MbufPoolParams::new(4095, 256, 1)).unwrap();
    let vm = Memseg::create_in_region(Region::heap(32 << 20), "vm1", 1).unwrap();
    vm.mark_ready();
    let g2h = Ring::<u64>::create(&vm, "vm1_tx", 1024, SyncMode::SP_SC).unwrap();
    let h2g = Ring::<u64>::create(&vm, "vm1_rx", 1024, SyncMode::SP_SC).unwrap();
    let gpool = MbufPool::create(&vm, "vm1_pool", &MbufPoolParams::new(4095, 0, 2)).unwrap();
    let d = DevArgs::parse("net_ring1,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool").unwrap();
    let setup = PortSetup {
        port_id: 0,
        nb_desc: 1024,
        rx_pool: host_pool.clone(),
        mac: None,
    };
    let find = |n: &str| host.lookup(n).ok().or_else(|| vm.lookup(n).ok());
    let port = Port::create(&host, &d, &setup, &find, &pmds::ethdev::Devices::new()).unwrap();
    port.start();
    let hcache = host_pool.cache(OwnerTag(2)).unwrap();
    let gcache = gpool.cache(OwnerTag::GUEST).unwrap();
    let mut gtx = g2h.sp_producer().unwrap();
    let mut grx = h2g.sc_consumer().unwrap();
    let mut rx = port.rx_queue(0, &hcache).unwrap();
    let mut tx = port.tx_queue(0, &hcache).unwrap();
    let frame = vec![0x42u8; len];
    let mut pkts = Vec::with_capacity(512);
    let mut handles = vec![0u64; burst];
    let mut back = vec![0u64; 512];
    let mut host_time = Duration::ZERO;
    let mut moved = 0usize;
    while moved < packets {
        for h in handles.iter_mut() {
            *h = gcache.alloc_from(&frame).unwrap().into_transit().unwrap().0;
        }
        gtx.enqueue_bulk(&handles).unwrap();
        let t = Instant::now();
        let got = rx.rx_burst(&mut pkts, burst);
        let sent = tx.tx_burst(&mut pkts);
        host_time += t.elapsed();
        assert!(got == burst && sent == got, "got {got} sent {sent}");
        let n = grx.dequeue_burst(&mut back).unwrap();
        for &h in &back[..n] {
            drop(gcache.adopt(MbufHandle(h)).unwrap());
        }
        moved += got;
    }
    let ns = host_time.as_nanos() as f64 / moved as f64;
    println!(
        "guest-port {len} B: {:.3} Mpps (host ns/packet {ns:.1})",
        1e3 / ns
    );
}
