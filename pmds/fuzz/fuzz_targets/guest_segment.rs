//! A live guest-facing segment with fuzzer-chosen writes: the guest's rings and mbuf pool
//! are laid out fresh and hold real packets, then a "guest" thread applies the input's
//! writes (offset, value) into the segment (headers, chains, ring words, anything) while
//! the host forwards through the guest-facing port. The host must not panic, must keep
//! its accounting, and must get every host mbuf back; a canary memzone next to the host
//! pool must be intact. (`tests/tests/guest_segment_stress.rs` is the seeded twin that
//! runs without cargo-fuzz.)
#![no_main]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pmds::{DevArgs, Port, PortSetup};
use shm::{Memseg, MemzoneKind, Region};
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};
use shm_ring::{Ring, SyncMode};

const SEG: u64 = 4 << 20;
const CANARY: u64 = 4096;

struct Fixture {
    host: Memseg,
    vm: Memseg,
    pool: MbufPool,
    port: Port,
    zones: [(u64, u64); 3],
    canary: u64,
    /// Inputs run one at a time (the port's queues are claimed per input).
    lock: Mutex<()>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let host = Memseg::create_in_region(Region::heap(16 << 20), "host", 1).unwrap();
        host.mark_ready();
        let pool = MbufPool::create(&host, "mbufs", &MbufPoolParams::new(511, 0, 1)).unwrap();
        let canary = host.reserve("canary", CANARY, 64, MemzoneKind::Raw).unwrap().offset;
        host.region().fill(canary, CANARY, 0xc5).unwrap();
        let vm = Memseg::create_in_region(Region::heap(SEG as usize), "vm1", 1).unwrap();
        vm.mark_ready();
        Ring::<u64>::create(&vm, "vm1_tx", 64, SyncMode::MP_MC).unwrap();
        Ring::<u64>::create(&vm, "vm1_rx", 64, SyncMode::MP_MC).unwrap();
        let mut gp = MbufPoolParams::new(127, 0, 2);
        gp.data_room = 512;
        MbufPool::create(&vm, "vm1_pool", &gp).unwrap();
        let zone = |n| {
            let z = vm.lookup(n).unwrap();
            (z.offset, z.len_bytes)
        };
        let zones = [zone("vm1_pool"), zone("vm1_tx"), zone("vm1_rx")];
        let d = DevArgs::parse("net_ring1,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool")
            .unwrap();
        let setup = PortSetup {
            port_id: 0,
            nb_desc: 64,
            rx_pool: pool.clone(),
            mac: None,
        };
        let find = |n: &str| host.lookup(n).ok().or_else(|| vm.lookup(n).ok());
        let port = Port::create(&host, &d, &setup, &find, &pmds::ethdev::Devices::new()).unwrap();
        port.start();
        Fixture {
            host,
            vm,
            pool,
            port,
            zones,
            canary,
            lock: Mutex::new(()),
        }
    })
}

/// Lays the guest's pool and rings out afresh and fills the guest-to-host ring with
/// packets of `sizes` (chained when over 512 bytes).
fn guest_reset(fx: &Fixture, sizes: &[u8]) {
    let r = fx.vm.region();
    let params = MbufPoolParams {
        count: 127,
        cache_size: 0,
        pool_id: 2,
        headroom: 128,
        data_room: 512,
    };
    let (p, t, x) = (fx.zones[0], fx.zones[1], fx.zones[2]);
    let pool = MbufPool::init(r, p.0, p.1, "vm1_pool", &params).unwrap();
    let g2h = Ring::<u64>::init(r, t.0, t.1, "vm1_tx", 64, SyncMode::MP_MC).unwrap();
    Ring::<u64>::init(r, x.0, x.1, "vm1_rx", 64, SyncMode::MP_MC).unwrap();
    let cache = pool.cache(OwnerTag::GUEST).unwrap();
    let mut prod = g2h.mp_producer().unwrap();
    let frame = [0x3cu8; 2048];
    for &s in sizes.iter().take(32) {
        let len = usize::from(s) * 8;
        if let Ok(m) = cache.alloc_from(&frame[..len]) {
            if let Ok(h) = m.into_transit() {
                let _ = prod.enqueue(h.0);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let fx = fixture();
    let _one = fx.lock.lock().unwrap_or_else(|e| e.into_inner());
    let nsizes = usize::from(data[0] % 33).min(data.len() - 1);
    let (sizes, writes) = data[1..].split_at(nsizes);
    guest_reset(fx, sizes);
    // The guest's writes, from another thread while the host forwards: 12-byte records
    // (offset within the segment, value).
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let region = fx.vm.region().clone();
        let writes = writes.to_vec();
        let done = done.clone();
        std::thread::spawn(move || {
            for rec in writes.chunks_exact(12) {
                let off = u64::from(u32::from_le_bytes(rec[..4].try_into().unwrap()));
                let v = u64::from_le_bytes(rec[4..].try_into().unwrap());
                // Mostly into the pool and rings (the first part of the segment).
                let off = (off % (SEG / 4)) & !7;
                let _ = region.write(off, &v);
            }
            done.store(true, Ordering::Release);
        })
    };
    let cache = fx.pool.cache(OwnerTag::PRIMARY).unwrap();
    {
        let mut rx = fx.port.rx_queue(0, &cache).unwrap();
        let mut tx = fx.port.tx_queue(0, &cache).unwrap();
        let mut pkts = Vec::with_capacity(64);
        let mut rounds = 0;
        while rounds < 8 || !done.load(Ordering::Acquire) {
            let got = rx.rx_burst(&mut pkts, 32);
            let sent = tx.tx_burst(&mut pkts);
            assert!(sent <= got);
            pkts.clear();
            rounds += 1;
            if rounds > 10_000 {
                break;
            }
        }
    }
    writer.join().unwrap();
    drop(cache);
    assert_eq!(fx.pool.mempool().stats().available, 511, "every host mbuf back");
    let mut c = vec![0u8; CANARY as usize];
    fx.host.region().read_bytes(fx.canary, &mut c).unwrap();
    assert!(c.iter().all(|&b| b == 0xc5), "canary next to the host pool intact");
});
