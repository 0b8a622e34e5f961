//! The engine in one process over pcap ports: io forwarding with exact accounting, and the
//! L2 switch learning, flooding (with copies) and forwarding.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fwd::{FwdConfig, Mode};
use pmds::pcap_file::{self, PcapWriter};
use pmds::{DevArgs, Port, PortSetup};
use shm::{Memseg, Region};
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shmdp-fwd-{}-{name}", std::process::id()))
}

fn write_pcap(path: &PathBuf, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for f in frames {
        w.write(0, f.len(), [&f[..]]).unwrap();
    }
}

fn read_pcap(path: &PathBuf) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let (mut fmt, mut pos) = pcap_file::open(&data).unwrap();
    let mut out = Vec::new();
    while let Some((r, next)) = pcap_file::next_record(&data, pos, &mut fmt).unwrap() {
        out.push(r.data.to_vec());
        pos = next;
    }
    out
}

fn frame(dst: [u8; 6], src: [u8; 6], n: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend([0x08, 0x00]);
    f.extend([n; 50]);
    f
}

fn setup(devargs: &[String]) -> (Memseg, MbufPool, Vec<Port>) {
    let seg = Memseg::create_in_region(Region::heap(32 << 20), "fwd", 1).unwrap();
    seg.mark_ready();
    let pool = MbufPool::create(&seg, "mbufs", &MbufPoolParams::new(2047, 64, 1)).unwrap();
    let devices = pmds::ethdev::Devices::new();
    let ports = devargs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let setup = PortSetup {
                port_id: i as u16,
                nb_desc: 256,
                rx_pool: pool.clone(),
                mac: None,
            };
            let find = |n: &str| seg.lookup(n).ok();
            let p =
                Port::create(&seg, &DevArgs::parse(d).unwrap(), &setup, &find, &devices).unwrap();
            p.start();
            p
        })
        .collect();
    (seg, pool, ports)
}

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

#[test]
fn l2switch_learns_floods_with_copies_and_forwards() {
    let (in0, in1) = (tmp("sw-in0.pcap"), tmp("sw-in1.pcap"));
    let (out0, out1, out2) = (
        tmp("sw-out0.pcap"),
        tmp("sw-out1.pcap"),
        tmp("sw-out2.pcap"),
    );
    // Port 0: 100 frames from A to B. Port 1: one frame from B to A.
    let from_a: Vec<Vec<u8>> = (0..100).map(|i| frame(B, A, i)).collect();
    write_pcap(&in0, &from_a);
    write_pcap(&in1, &[frame(A, B, 200)]);
    let (_seg, pool, ports) = setup(&[
        format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            in0.display(),
            out0.display()
        ),
        format!(
            "net_pcap1,rx_pcap={},tx_pcap={}",
            in1.display(),
            out1.display()
        ),
        format!("net_pcap2,tx_pcap={}", out2.display()),
    ]);
    let cfg = FwdConfig {
        mode: Mode::L2Switch,
        burst: 32,
        idle_exit: Some(Duration::from_millis(200)),
        ..FwdConfig::default()
    };
    let r = fwd::run(&ports, &pool, OwnerTag(2), &cfg, &AtomicBool::new(false)).unwrap();
    assert!(r.balanced(), "{r:?}");
    // The first burst from A floods to ports 1 and 2 (B unknown); then B speaks from port 1
    // and the rest go to port 1 only. B's frame goes to A's port 0.
    assert_eq!(read_pcap(&out1), from_a);
    assert_eq!(read_pcap(&out2), from_a[..32].to_vec());
    assert_eq!(read_pcap(&out0), vec![frame(A, B, 200)]);
    assert_eq!(r.ports[0].rx_packets, 100);
    assert_eq!(r.ports[0].forwarded, 100);
    assert_eq!(r.total.tx_packets, 100 + 32 + 1);
    assert_eq!(pool.mempool().stats().available, 2047);
    for f in [in0, in1, out0, out1, out2] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn io_mode_accounts_for_every_packet_and_mac_modes_rewrite() {
    let input = tmp("io-in.pcap");
    let output = tmp("io-out.pcap");
    let frames: Vec<Vec<u8>> = (0..500u32).map(|i| frame(B, A, i as u8)).collect();
    write_pcap(&input, &frames);
    for (mode, expect_dst, expect_src) in [
        (Mode::Io, B, A),
        (Mode::MacSwap, A, B),
        (Mode::Mac, fwd::peer_mac(1), [0x02, 0x53, 0x48, 0x4d, 0, 1]),
    ] {
        let (_seg, pool, ports) = setup(&[
            format!("net_pcap0,rx_pcap={}", input.display()),
            format!("net_pcap1,tx_pcap={}", output.display()),
        ]);
        let cfg = FwdConfig {
            mode,
            idle_exit: Some(Duration::from_millis(200)),
            ..FwdConfig::default()
        };
        let r = fwd::run(&ports, &pool, OwnerTag(2), &cfg, &AtomicBool::new(false)).unwrap();
        assert!(r.balanced());
        assert_eq!((r.ports[0].rx_packets, r.ports[1].tx_packets), (500, 500));
        let out = read_pcap(&output);
        assert_eq!(out.len(), 500);
        assert_eq!(&out[7][0..6], &expect_dst, "{mode:?}");
        assert_eq!(&out[7][6..12], &expect_src, "{mode:?}");
        assert_eq!(
            &out[7][12..],
            &frames[7][12..],
            "{mode:?}: payload untouched"
        );
        assert_eq!(pool.mempool().stats().available, 2047);
    }
    // rxonly consumes, counted as filtered.
    let (_seg, pool, ports) = setup(&[format!("net_pcap0,rx_pcap={}", input.display())]);
    let cfg = FwdConfig {
        mode: Mode::RxOnly,
        idle_exit: Some(Duration::from_millis(200)),
        ..FwdConfig::default()
    };
    let r = fwd::run(&ports, &pool, OwnerTag(2), &cfg, &AtomicBool::new(false)).unwrap();
    assert!(r.balanced());
    assert_eq!((r.total.rx_packets, r.total.drops.filtered), (500, 500));
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}

#[test]
fn io_forwarding_runs_one_stream_per_queue_pair_on_its_own_lcore() {
    // A two-queue loopback ring port: tx queue q feeds rx queue q. Two lcores, tx-first:
    // one burst circles on each queue pair, each polled by its own thread.
    let (_seg, pool, ports) = setup(&["net_ring0,queues=2".to_string()]);
    let cfg = FwdConfig {
        mode: Mode::Io,
        burst: 32,
        lcores: vec![0, 1],
        tx_first: true,
        duration: Some(Duration::from_millis(300)),
        ..FwdConfig::default()
    };
    let r = fwd::run(&ports, &pool, OwnerTag(2), &cfg, &AtomicBool::new(false)).unwrap();
    assert!(r.balanced(), "{r:?}");
    let stats = ports[0].stats();
    assert_eq!(stats.rx_queues.len(), 2);
    for (q, s) in stats.rx_queues.iter().enumerate() {
        assert!(s.packets > 32, "queue {q} carried traffic: {stats:?}");
        assert_eq!(s.errors, 0);
    }
    // The two bursts still circling sit in the rings: take them out.
    let cache = pool.cache(OwnerTag(2)).unwrap();
    let mut left = Vec::new();
    for q in 0..2 {
        let mut rx = ports[0].rx_queue(q, &cache).unwrap();
        while rx.rx_burst(&mut left, 32) > 0 {}
    }
    assert_eq!(left.len(), 64, "one burst per queue pair, none lost");
    drop(left);
    drop(cache);
    drop(ports);
    assert_eq!(
        pool.mempool().stats().available,
        2047,
        "every mbuf back in the pool"
    );
}

#[test]
fn a_stop_signal_ends_a_run_whose_packets_circle_for_ever() {
    // io with --tx-first over a loopback ring: every round moves packets, so there is
    // never an idle round in which the drain rule would see the stop flag. The flag must
    // end the run anyway, within the grace period (plus slack for a loaded machine).
    let (_seg, pool, ports) = setup(&["net_ring0".to_string()]);
    let cfg = FwdConfig {
        mode: Mode::Io,
        burst: 32,
        tx_first: true,
        ..FwdConfig::default()
    };
    let stop = AtomicBool::new(false);
    let (report, stopped_after) = std::thread::scope(|s| {
        let run = s.spawn(|| fwd::run(&ports, &pool, OwnerTag(2), &cfg, &stop).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::Instant::now();
        while !run.is_finished() {
            if t.elapsed() > Duration::from_secs(10) {
                // The scope would wait for ever for a loop that ignores the flag.
                eprintln!("the forwarder ignored its stop flag for 10 s");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = t.elapsed();
        (run.join().unwrap(), elapsed)
    });
    assert!(
        stopped_after < Duration::from_secs(2),
        "stopped {stopped_after:?} after the signal"
    );
    assert!(report.balanced(), "{report:?}");
    assert!(
        report.total.rx_packets > 32,
        "the burst circled: {report:?}"
    );
    let cache = pool.cache(OwnerTag(2)).unwrap();
    let mut left = Vec::new();
    {
        let mut rx = ports[0].rx_queue(0, &cache).unwrap();
        while rx.rx_burst(&mut left, 32) > 0 {}
    }
    assert_eq!(
        left.len(),
        32,
        "the circling burst is in the ring, none lost"
    );
    drop(left);
    drop(cache);
    drop(ports);
    assert_eq!(pool.mempool().stats().available, 2047);
}
