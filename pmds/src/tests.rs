//! Ports in one process: ring loopback and cross-connected rings, queue claims, tx on a
//! full ring, pcap round trips (chained packets included), truncated captures, stats,
//! devargs against the registered drivers, and the registry itself.

use std::path::PathBuf;

use super::*;
use crate::pcap_file::PcapWriter;
use shm::{Memseg, Region};
use shm_mempool::{Mbuf, MbufPool, MbufPoolParams, OwnerTag};
use shm_ring::{Ring, SyncMode};

use crate::ethdev::{Devices, MAX_BURST};

struct Env {
    seg: Memseg,
    pool: MbufPool,
    devices: Devices,
}

fn env(count: u32) -> Env {
    let seg = Memseg::create_in_region(Region::heap(32 << 20), "ports", 1).unwrap();
    seg.mark_ready();
    let mut p = MbufPoolParams::new(count, 32, 1);
    p.data_room = 512;
    let pool = MbufPool::create(&seg, "mbufs", &p).unwrap();
    Env {
        seg,
        pool,
        devices: Devices::new(),
    }
}

impl Env {
    fn port(&self, id: u16, devargs: &str, nb_desc: u32) -> Result<Port, PortError> {
        let d = DevArgs::parse(devargs).map_err(|e| PortError::devargs(devargs, e))?;
        let setup = PortSetup {
            port_id: id,
            nb_desc,
            rx_pool: self.pool.clone(),
            mac: None,
        };
        let seg = &self.seg;
        let port = Port::create(seg, &d, &setup, &|n| seg.lookup(n).ok(), &self.devices)?;
        port.start();
        Ok(port)
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shmdp-pmds-{}-{name}", std::process::id()))
}

#[test]
fn ring_loopback_moves_packets_and_counts_them() {
    let e = env(256);
    let port = e.port(0, "net_ring0", 64).unwrap();
    assert_eq!((port.nb_rx_queues(), port.nb_tx_queues()), (1, 1));
    assert_eq!(port.mac(), [0x02, 0x53, 0x48, 0x4d, 0, 0]);
    assert!(port.link_up());
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let mut rx = port.rx_queue(0, &cache).unwrap();
    let mut tx = port.tx_queue(0, &cache).unwrap();
    let mut pkts = Vec::with_capacity(64);
    for i in 0..10u8 {
        pkts.push(cache.alloc_from(&[i; 60]).unwrap());
    }
    assert_eq!(tx.tx_burst(&mut pkts), 10);
    assert!(pkts.is_empty());
    let mut got = Vec::with_capacity(64);
    assert_eq!(rx.rx_burst(&mut got, 32), 10);
    assert_eq!(got[3].data(), &[3u8; 60]);
    // As DPDK's ring PMD: the mbufs are not touched (no input port written) and packets
    // are counted, not bytes.
    assert_eq!(got[3].port(), shm_mempool::mbuf::NO_PORT);
    let s = port.stats();
    assert_eq!(
        (s.rx_packets, s.tx_packets, s.rx_bytes, s.tx_bytes),
        (10, 10, 0, 0)
    );
    port.reset_stats();
    assert_eq!(port.stats().rx_packets, 0);
    // Stopped: nothing moves.
    port.stop();
    let mut again: Vec<Mbuf> = std::mem::take(&mut got);
    assert_eq!(tx.tx_burst(&mut again), 0);
    assert_eq!(again.len(), 10, "unsent packets stay the caller's");
    drop((again, got, pkts, rx, tx));
    drop(cache);
    assert_eq!(e.pool.mempool().stats().available, 256);
}

#[test]
fn io_forwarding_between_two_ring_ports_moves_handles_and_drops_what_does_not_fit() {
    let e = env(256);
    let (p0, p1) = (
        e.port(0, "net_ring0", 64).unwrap(),
        e.port(1, "net_ring1", 16).unwrap(),
    );
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let (mut rx0, mut tx0) = (
        p0.rx_queue(0, &cache).unwrap(),
        p0.tx_queue(0, &cache).unwrap(),
    );
    let (mut rx1, mut tx1) = (
        p1.rx_queue(0, &cache).unwrap(),
        p1.tx_queue(0, &cache).unwrap(),
    );
    let mut pkts = Vec::with_capacity(64);
    for i in 0..40u8 {
        pkts.push(cache.alloc_from(&[i; 60]).unwrap());
    }
    assert_eq!(tx0.tx_burst(&mut pkts), 40);
    let mut unsent = Vec::with_capacity(64);
    // Port 1's ring holds 16: 40 received, 16 forwarded, 24 handed back to drop.
    assert_eq!(rx0.forward_to(&mut tx1, 64, &mut unsent), Some((40, 16)));
    assert_eq!(unsent.len(), 24);
    assert_eq!(unsent[0].data(), &[16u8; 60], "the first that did not fit");
    unsent.clear();
    assert_eq!(e.pool.mempool().stats().available, 256 - 16);
    let mut got = Vec::with_capacity(64);
    assert_eq!(rx1.rx_burst(&mut got, 64), 16);
    assert_eq!(got[5].data(), &[5u8; 60]);
    assert_eq!((p0.stats().rx_packets, p1.stats().tx_packets), (40, 16));
    // And back: sent the general way, forwarded directly, received the general way.
    drop(got.pop());
    assert_eq!(tx1.tx_burst(&mut got), 15);
    assert_eq!(rx1.forward_to(&mut tx0, 64, &mut unsent), Some((15, 15)));
    assert_eq!(rx0.rx_burst(&mut got, 64), 15);
    assert_eq!(got[14].data(), &[14u8; 60]);
    drop((got, unsent, pkts, rx0, tx0, rx1, tx1));
    drop(cache);
    assert_eq!(e.pool.mempool().stats().available, 256);
}

#[test]
fn a_full_ring_keeps_the_rest_with_the_caller() {
    let e = env(64);
    let port = e.port(0, "net_ring0", 4).unwrap();
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let mut tx = port.tx_queue(0, &cache).unwrap();
    let mut pkts = Vec::with_capacity(16);
    cache.alloc_bulk(&mut pkts, 10).unwrap();
    let first = pkts[0].index();
    let fifth = pkts[4].index();
    assert_eq!(tx.tx_burst(&mut pkts), 4);
    assert_eq!(pkts.len(), 6);
    assert_eq!(pkts[0].index(), fifth, "the unsent ones, in order");
    let mut rx = port.rx_queue(0, &cache).unwrap();
    let mut got = Vec::with_capacity(16);
    assert_eq!(rx.rx_burst(&mut got, 16), 4);
    assert_eq!(got[0].index(), first);
    // A shared mbuf stops the burst.
    let clone = pkts[0].clone_ref();
    assert_eq!(tx.tx_burst(&mut pkts), 0);
    drop(clone);
    assert_eq!(tx.tx_burst(&mut pkts), 4);
    drop((got, pkts, rx, tx));
    drop(cache);
    assert_eq!(
        e.pool.mempool().stats().available,
        64 - 4,
        "four still in the ring"
    );
}

#[test]
fn cross_connected_named_rings_and_queue_claims() {
    let e = env(64);
    Ring::<u64>::create(&e.seg, "a2b", 64, SyncMode::SP_SC).unwrap();
    Ring::<u64>::create(&e.seg, "b2a", 64, SyncMode::SP_SC).unwrap();
    let a = e.port(0, "net_ring0,rx_ring=b2a,tx_ring=a2b", 64).unwrap();
    let b = e.port(1, "net_ring1,rx_ring=a2b,tx_ring=b2a", 64).unwrap();
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let mut atx = a.tx_queue(0, &cache).unwrap();
    let mut brx = b.rx_queue(0, &cache).unwrap();
    let mut p = vec![cache.alloc_from(b"ping").unwrap()];
    assert_eq!(atx.tx_burst(&mut p), 1);
    let mut got = Vec::with_capacity(4);
    assert_eq!(brx.rx_burst(&mut got, 4), 1);
    assert_eq!(got[0].data(), b"ping");
    // One poller per queue.
    let err = b.rx_queue(0, &cache).unwrap_err().to_string();
    assert!(err.contains("is polled by pid"), "{err}");
    assert!(matches!(
        b.rx_queue(1, &cache),
        Err(PortError::NoQueue { .. })
    ));
    assert_eq!(b.pollers().0, vec![std::process::id()]);
    drop(brx);
    assert_eq!(b.pollers().0, vec![0], "released on drop");
    assert!(b.rx_queue(0, &cache).is_ok());
    drop((got, atx));
    assert!(e.port(2, "net_ring2,rx_ring=nope", 64).is_err());
}

#[test]
fn pcap_round_trip_is_byte_identical_with_chains() {
    let e = env(512);
    let input = tmp("in.pcap");
    let output = tmp("out.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| (0..(60 + (i * 37) % 1400)).map(|b| (b ^ i) as u8).collect())
        .collect();
    for (i, f) in frames.iter().enumerate() {
        w.write(i as u64 * 1000, f.len(), [&f[..]]).unwrap();
    }
    drop(w);
    let devargs = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let port = e.port(0, &devargs, 64).unwrap();
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let mut rx = port.rx_queue(0, &cache).unwrap();
    let mut tx = port.tx_queue(0, &cache).unwrap();
    let mut burst = Vec::with_capacity(32);
    let mut total = 0;
    loop {
        let n = rx.rx_burst(&mut burst, 32);
        if n == 0 && rx.exhausted() {
            break;
        }
        total += tx.tx_burst(&mut burst);
        assert!(burst.is_empty());
    }
    assert_eq!(total, 200);
    tx.flush();
    let data = std::fs::read(&output).unwrap();
    let (mut fmt, mut pos) = pcap_file::open(&data).unwrap();
    let mut back = Vec::new();
    while let Some((r, next)) = pcap_file::next_record(&data, pos, &mut fmt).unwrap() {
        back.push(r.data.to_vec());
        pos = next;
    }
    assert_eq!(back, frames);
    let s = port.stats();
    assert_eq!((s.rx_packets, s.tx_packets), (200, 200));
    assert_eq!(
        s.rx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    drop((burst, rx, tx));
    drop(cache);
    assert_eq!(e.pool.mempool().stats().available, 512);
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
}

#[test]
fn truncated_pcap_delivers_the_good_packets_and_counts_an_error() {
    let e = env(64);
    let input = tmp("trunc.pcap");
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for i in 0..5u8 {
        w.write(0, 64, [&[i; 64][..]]).unwrap();
    }
    let mut bytes = w.into_inner();
    bytes.truncate(bytes.len() - 20);
    std::fs::write(&input, &bytes).unwrap();
    let port = e
        .port(0, &format!("net_pcap0,rx_pcap={}", input.display()), 64)
        .unwrap();
    assert_eq!(port.nb_tx_queues(), 0);
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    let mut rx = port.rx_queue(0, &cache).unwrap();
    let mut got = Vec::with_capacity(16);
    assert_eq!(rx.rx_burst(&mut got, 16), 4);
    assert!(rx.exhausted());
    assert_eq!(port.stats().errors, 1);
    // A new poller continues where the old one stopped (nothing left here).
    drop(rx);
    let mut rx = port.rx_queue(0, &cache).unwrap();
    let mut more = Vec::with_capacity(16);
    assert_eq!(rx.rx_burst(&mut more, 16), 0);
    // Not a capture at all: refused at probe.
    std::fs::write(&input, b"hello, not a pcap").unwrap();
    let err = e
        .port(1, &format!("net_pcap1,rx_pcap={}", input.display()), 64)
        .unwrap_err();
    // What the programs print: the error and its cause.
    let err = shm::error_chain(&err);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    let _ = std::fs::remove_file(&input);
}

#[test]
fn from_rings_makes_one_queue_per_ring() {
    let e = env(64);
    for r in ["r0", "r1"] {
        Ring::<u64>::create(&e.seg, r, 64, SyncMode::MP_MC).unwrap();
    }
    let setup = PortSetup {
        port_id: 0,
        nb_desc: 64,
        rx_pool: e.pool.clone(),
        mac: None,
    };
    let seg = &e.seg;
    let port = Port::from_rings(
        seg,
        "net_ring0",
        &["r0", "r1"],
        &["r1", "r0"],
        &setup,
        &|n| seg.lookup(n).ok(),
        &e.devices,
    )
    .unwrap();
    port.start();
    assert_eq!((port.nb_rx_queues(), port.nb_tx_queues()), (2, 2));
    let cache = e.pool.cache(OwnerTag(2)).unwrap();
    // tx queue 0 feeds ring r1, which rx queue 1 reads.
    let mut tx0 = port.tx_queue(0, &cache).unwrap();
    let mut rx1 = port.rx_queue(1, &cache).unwrap();
    let mut p = vec![cache.alloc_from(b"hop").unwrap()];
    assert_eq!(tx0.tx_burst(&mut p), 1);
    let mut got = Vec::with_capacity(4);
    assert_eq!(rx1.rx_burst(&mut got, 4), 1);
    assert_eq!(got[0].data(), b"hop");
    let err = Port::from_rings(
        seg,
        "net_pcap9",
        &["r0"],
        &[],
        &setup,
        &|n| seg.lookup(n).ok(),
        &e.devices,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("net_ringN") || err.contains("does not take"),
        "{err}"
    );
    drop((got, p, tx0, rx1));
    drop(cache);
}

/// A vhost backend port and a virtio-user port in one process, two queue pairs each: what
/// virtio-user queue q sends arrives on vhost queue q only, and the other way round; every
/// mbuf is back in the pool once both are stopped.
#[test]
fn virtio_user_and_vhost_move_frames_per_queue_pair() {
    let dir = std::env::temp_dir();
    let tag =
        format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "");
    let file = dir.join(format!("shmdp-mq-{tag}.seg"));
    let sock = dir.join(format!("shmdp-mq-{tag}.sock"));
    let seg = Memseg::create(&shm::MemsegSpec {
        name: "mq".into(),
        id: 0,
        size_bytes: 32 << 20,
        path: file.clone(),
        page_size: 4096,
        hugetlb: false,
        creator_pid: std::process::id(),
        generation: 1,
    })
    .unwrap();
    seg.mark_ready();
    let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(2047, 0, 1)).unwrap();
    let setup = |id: u16| PortSetup {
        port_id: id,
        nb_desc: 256,
        rx_pool: pool.clone(),
        mac: None,
    };
    let find = |n: &str| seg.lookup(n).ok();
    let devices = Devices::new();
    let d = |t: String| DevArgs::parse(&t).unwrap();
    let vh = Port::create(
        &seg,
        &d(format!("net_vhost0,iface={},queues=2", sock.display())),
        &setup(0),
        &find,
        &devices,
    )
    .unwrap();
    let vu = Port::create(
        &seg,
        &d(format!("net_virtio_user1,path={},queues=2", sock.display())),
        &setup(1),
        &find,
        &devices,
    )
    .unwrap();
    vh.start();
    vu.start();
    let t0 = std::time::Instant::now();
    while !vh.link_up() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "the backend never saw every vring"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
    for q in 0..2u16 {
        let mut tx = vu.tx_queue(q, &cache).unwrap();
        let mut rx = vh.rx_queue(q, &cache).unwrap();
        let mut other = vh.rx_queue(1 - q, &cache).unwrap();
        let mut out = Vec::with_capacity(MAX_BURST);
        let mut got = 0;
        for i in 0..100u8 {
            let mut pkts = vec![cache
                .alloc_from(&[q as u8 + 1, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0x88])
                .unwrap()];
            while tx.tx_burst(&mut pkts) == 0 {
                got += rx.rx_burst(&mut out, 32);
                for m in out.drain(..) {
                    assert_eq!(m.data()[0], q as u8 + 1, "the queue pair it was sent on");
                }
            }
        }
        let t0 = std::time::Instant::now();
        while got < 100 && t0.elapsed().as_secs() < 10 {
            got += rx.rx_burst(&mut out, 32);
            for m in out.drain(..) {
                assert_eq!(m.data()[0], q as u8 + 1);
            }
        }
        assert_eq!(got, 100, "queue {q}");
        assert_eq!(
            other.rx_burst(&mut out, 32),
            0,
            "nothing on the other queue"
        );
    }
    // Backend to frontend on queue 1: the frontend's rx posts its buffers first.
    let mut vrx = vu.rx_queue(1, &cache).unwrap();
    let mut vtx = vh.tx_queue(1, &cache).unwrap();
    let mut out = Vec::with_capacity(MAX_BURST);
    assert_eq!(vrx.rx_burst(&mut out, 32), 0);
    let mut pkts: Vec<_> = (0..50u8)
        .map(|i| cache.alloc_from(&[i; 100]).unwrap())
        .collect();
    while !pkts.is_empty() {
        vtx.tx_burst(&mut pkts);
    }
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    while got.len() < 50 && t0.elapsed().as_secs() < 10 {
        vrx.rx_burst(&mut out, 32);
        got.extend(out.drain(..).map(|m| m.to_vec()));
    }
    assert_eq!(got.len(), 50);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, f)| f == &vec![i as u8; 100]));
    drop((vrx, vtx, out, pkts));
    // Another process (its own device table) opens both ports but cannot poll them: the
    // devices are this one's.
    for (name, dir) in [("net_vhost0", "rx"), ("net_virtio_user1", "tx")] {
        let zone = seg.lookup(name).unwrap();
        let there = Port::open(&zone, &find, &Devices::new()).unwrap();
        let err = if dir == "rx" {
            there.rx_queue(0, &cache).map(drop)
        } else {
            there.tx_queue(0, &cache).map(drop)
        }
        .unwrap_err();
        assert!(matches!(err, PortError::NotHere { .. }), "{err}");
        assert!(err.to_string().contains("polled in the primary"), "{err}");
    }
    // The queues are free again for this process.
    drop(vh.rx_queue(0, &cache).unwrap());
    // A second port on the same socket is refused before anything is made.
    let again = Port::create(
        &seg,
        &d(format!("net_vhost2,iface={}", sock.display())),
        &setup(2),
        &find,
        &devices,
    )
    .unwrap_err();
    assert!(
        again.to_string().contains("is used by another port"),
        "{again}"
    );
    assert!(seg.lookup("net_vhost2").is_err());
    vu.stop_driver();
    vh.stop_driver();
    drop(cache);
    assert_eq!(pool.mempool().stats().available, 2047, "every mbuf back");
    assert!(!sock.exists(), "the socket is removed");
    let _ = std::fs::remove_file(file);
}

#[test]
fn parses_dpdk_style_devargs() {
    let d = DevArgs::parse("net_pcap0,rx_pcap=in.pcap,tx_pcap=/tmp/out.pcap").unwrap();
    assert_eq!(d.name, "net_pcap0");
    assert!(d.driver == Driver::Pcap);
    assert_eq!(d.get("rx_pcap"), Some("in.pcap"));
    assert_eq!(d.get("tx_pcap"), Some("/tmp/out.pcap"));
    let r = DevArgs::parse("net_ring12").unwrap();
    assert_eq!((r.name.as_str(), r.args.len()), ("net_ring12", 0));
    assert!(r.driver == Driver::Ring);
    assert_eq!(
        DevArgs::parse("net_ring0,queues=4")
            .unwrap()
            .number("queues", 1, 1..=16)
            .unwrap(),
        4
    );
    for (bad, says) in [
        ("net_ring", "instance number"),
        ("net_bogus0", "unknown driver"),
        ("net_pcap0,rx_pcap", "not key=value"),
        ("net_pcap0,rx_ring=x", "does not take"),
        ("net_pcap0,rx_pcap=", "needs a value"),
    ] {
        let e = DevArgs::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let q = DevArgs::parse("net_ring0,queues=99").unwrap();
    assert!(q
        .number("queues", 1, 1..=16)
        .unwrap_err()
        .to_string()
        .contains("1..=16"));
}

#[test]
fn registered_drivers_have_distinct_numbers_and_names_and_match_driver() {
    pmds_ethdev::driver::check_registry(Drivers::drivers()).unwrap();
    for d in [
        Driver::Ring,
        Driver::Pcap,
        Driver::Vhost,
        Driver::VirtioUser,
    ] {
        let r = pmds_ethdev::driver::by_id::<Drivers>(d.id()).expect("registered");
        assert_eq!(r.name(), d.name());
    }
}
