//! A hostile guest rewrites the mbuf headers and chains of its own pool while the host
//! forwards through the guest-facing port. Without a VM: this test process maps the
//! export segment file as a guest maps BAR2 and is the guest (it sends and receives
//! through the exported rings with its own allocator) and the attacker (threads writing
//! header fields of random guest-pool mbufs).
//!
//! Setup: port 0 is a host loopback ring, port 1 the guest-facing port (its rings and
//! pool in the exported memseg `vm1`); `fwd io` between them, so every frame the guest
//! sends crosses the boundary twice (guest -> host copy, host -> guest copy).
//!
//! Asserted: the primary and the forwarder survive and stop cleanly; the forwarder's
//! accounting balances (rx = forwarded + dropped, its exit code); every handle the guest
//! sent is either received by the host or counted (port errors or no-mbuf drops); canary
//! rings in the main memseg and in the guest's own memseg are intact (nothing wrote
//! outside the guest pool); the host's pools are full at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use shm::Region;
use shm_mempool::{MbufPool, Mempool, PoolCache};
use shm_ring::Ring;
use tests::*;

const POOL_ID_OTHER: u64 = 77;

fn segment(prefix: &str) -> PathBuf {
    std::fs::read_link(runtime_dir(prefix).join("vm1.seg")).expect("segment link")
}

/// The export segment as the guest sees it: mapped from its file, objects found through
/// the metadata block.
struct GuestView {
    region: Region,
    pool: MbufPool,
    /// Host to guest.
    rx: Ring<u64>,
    /// Guest to host.
    tx: Ring<u64>,
    /// Offset of object 0's header, stride, count.
    objs_off: u64,
    obj_size: u64,
    count: u32,
    pool_id: u32,
}

fn map_guest(path: &PathBuf) -> GuestView {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let region = Region::from_mmap(memmap2::MmapOptions::new().map_raw(&file).unwrap());
    let mut block = vec![0u8; ivshmem_meta::BLOCK_SIZE];
    region
        .read_bytes(ivshmem_meta::META_OFFSET, &mut block)
        .unwrap();
    let meta = ivshmem_meta::decode(&block).unwrap();
    let entry = |name: &str| meta.entries.iter().find(|e| e.name == name).unwrap();
    let p = entry("vm1_pool");
    let pool = Mempool::open(&region, p.offset, p.length).unwrap();
    let (objs_off, obj_size, count, pool_id) = (
        p.offset + pool.info().objs_off,
        u64::from(pool.obj_size()),
        pool.count(),
        pool.id(),
    );
    let ring = |n: &str| {
        let e = entry(n);
        Ring::<u64>::open(&region, e.offset, e.length).unwrap()
    };
    GuestView {
        rx: ring("vm1_rx"),
        tx: ring("vm1_tx"),
        pool: MbufPool::from_mempool(pool).unwrap(),
        region,
        objs_off,
        obj_size,
        count,
        pool_id,
    }
}

/// xorshift64: the attack is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the attacker rewrites.
#[derive(Clone, Copy, PartialEq)]
enum Attack {
    /// Any header field: owner (state), refcnt, data_off, data_len, pkt_len, next,
    /// nb_segs, index, pool id.
    Fields,
    /// Only `next` (and sometimes `nb_segs`) of chained packets, and the `next` of the
    /// second segment of packets just sent flipped between its value and a buffer far
    /// outside the pool while the host walks and discards them.
    Chains,
}

/// One rewrite of a header field of a random guest-pool mbuf.
fn scribble_one(g: &GuestView, rng: &mut Rng, attack: Attack) {
    let i = rng.below(u64::from(g.count));
    let hdr = g.objs_off + i * g.obj_size;
    let handle = |pool: u64, idx: u64| (pool << 32) | idx;
    let field = match attack {
        Attack::Fields => rng.below(9),
        Attack::Chains => [5, 5, 5, 6][rng.below(4) as usize],
    };
    let r = rng.next();
    let pick = rng.below(6);
    let _ = match field {
        0 => {
            // owner: the states the host expects, the guest's, the host's, anything.
            let v = [u32::MAX, 0, 0x4000_0000, 1, 2, r as u32][pick as usize];
            g.region
                .atomic_u32(hdr + 8)
                .map(|a| a.store(v, Ordering::Relaxed))
        }
        1 => g.region.write(
            hdr + 12,
            &([0u32, 1, 2, 0xffff_ffff, 1, r as u32][pick as usize]),
        ),
        2 => g.region.write(
            hdr + 16,
            &([0u16, 128, 2000, 2047, 65535, r as u16][pick as usize]),
        ),
        3 => g.region.write(
            hdr + 22,
            &([0u16, 60, 2048, 4000, 65535, r as u16][pick as usize]),
        ),
        4 => g.region.write(
            hdr + 24,
            &([0u32, 60, 2048, 1 << 20, u32::MAX, r as u32][pick as usize]),
        ),
        5 => {
            let pool = u64::from(g.pool_id);
            let other = rng.below(u64::from(g.count));
            let v = [
                0,
                handle(pool, other),
                handle(pool, i),
                handle(pool, u64::from(g.count) + other),
                handle(POOL_ID_OTHER, other),
                r,
            ][pick as usize];
            g.region.write(hdr + 48, &v)
        }
        6 => g
            .region
            .write(hdr + 18, &([0u16, 1, 2, 3, 40, 65535][pick as usize])),
        7 => g.region.write(hdr, &(r as u32)),
        _ => g.region.write(
            hdr + 4,
            &([1u32, 2, POOL_ID_OTHER as u32, r as u32, 0, 3][pick as usize]),
        ),
    };
}

/// Recently sent chained packets: (second segment's index, its `next` as sent), for the
/// chain flipper to aim at packets the host is walking now.
struct Hot {
    idx: Vec<AtomicU64>,
    next: Vec<AtomicU64>,
}

/// Packets in flight while aiming: the guest sends this many, then waits until the host
/// took them, so the flipper works on exactly the packets the host is walking.
const HOT: usize = 4;

impl Hot {
    fn new() -> Hot {
        Hot {
            idx: (0..HOT).map(|_| AtomicU64::new(u64::MAX)).collect(),
            next: (0..HOT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A guest driver that does not trust its own pool either: builds a packet of `len`
/// bytes (chained by the data room) from free-ring indices with plain header writes, and
/// puts it in transit; `bad_len` makes `pkt_len` one too long. Returns the head handle and
/// the segment indices. (The attack rewrites the headers meanwhile; that is the point.)
fn raw_packet(
    g: &GuestView,
    free: &mut PoolCache,
    len: usize,
    bad_len: bool,
) -> Option<(u64, Vec<u32>)> {
    let room = g.pool.data_room() as usize;
    let headroom = g.pool.headroom() as u16;
    let nsegs = len.div_ceil(room).max(1);
    let mut segs = Vec::with_capacity(nsegs);
    for _ in 0..nsegs {
        match free.get() {
            Some(i) => segs.push(i),
            None => {
                free.put_bulk(&segs);
                return None;
            }
        }
    }
    let handle = |i: u32| (u64::from(g.pool_id) << 32) | u64::from(i);
    let mut left = len;
    for (k, &i) in segs.iter().enumerate() {
        let hdr = g.objs_off + u64::from(i) * g.obj_size;
        let seg_len = left.min(room) as u16;
        left -= usize::from(seg_len);
        let next = segs.get(k + 1).map_or(0, |&n| handle(n));
        let (nb, pkt) = if k == 0 {
            (nsegs as u16, len as u32 + u32::from(bad_len))
        } else {
            (1, 0)
        };
        let _ = g.region.write(hdr, &i);
        let _ = g.region.write(hdr + 4, &g.pool_id);
        let _ = g.region.write(hdr + 12, &1u32);
        let _ = g.region.write(hdr + 16, &[headroom, nb, 0xffff, seg_len]);
        let _ = g.region.write(hdr + 24, &pkt);
        let _ = g.region.write(hdr + 48, &next);
        let _ = g.region.write(hdr + 128 + u64::from(headroom), &(k as u64));
    }
    for &i in &segs {
        let hdr = g.objs_off + u64::from(i) * g.obj_size;
        // Release: the host's Acquire CAS of TRANSIT sees the header written above.
        let _ = g
            .region
            .atomic_u32(hdr + 8)
            .map(|a| a.store(u32::MAX, Ordering::Release));
    }
    Some((handle(segs[0]), segs))
}

/// What the host sent back, freed the way a careful guest would on its own scribbled
/// pool: a bounded, validated walk, then straight to the free ring (refusals, duplicates
/// and leaks are its own loss).
fn raw_free(g: &GuestView, free: &mut PoolCache, h: u64) {
    let mut segs = Vec::with_capacity(8);
    let mut cur = h;
    while segs.len() < 8 && cur >> 32 == u64::from(g.pool_id) {
        let i = cur as u32;
        if i >= g.count || segs.contains(&i) {
            break;
        }
        segs.push(i);
        cur = g
            .region
            .read_copy::<u64>(g.objs_off + u64::from(i) * g.obj_size + 48)
            .unwrap_or(0);
    }
    for &i in &segs {
        let hdr = g.objs_off + u64::from(i) * g.obj_size;
        let _ = g.region.write(hdr + 12, &0u32);
        let _ = g
            .region
            .atomic_u32(hdr + 8)
            .map(|a| a.store(0, Ordering::Release));
    }
    free.put_bulk(&segs);
}

/// The guest's traffic: frames of `sizes` bytes into the host (counted), and whatever
/// the host sends back received and freed. With `hot`, every other chained packet gets a
/// `pkt_len` one too long (so the host walks the chain and then discards it) and its
/// second segment is listed in `hot` for the flipper. Runs until `stop`; returns handles
/// sent.
fn guest_traffic(
    g: &GuestView,
    sizes: &[usize],
    stop: &AtomicBool,
    seed: u64,
    hot: Option<&Hot>,
    progress: &AtomicU64,
) -> u64 {
    let mut tx = g.tx.mp_producer().unwrap();
    let mut rx = g.rx.mc_consumer().unwrap();
    let mut rng = Rng(seed);
    let mut sent = 0u64;
    let mut back = vec![0u64; 64];
    let mut free = g.pool.mempool().uncached();
    let mut drain = |rx: &mut shm_ring::McConsumer<u64>, free: &mut PoolCache| {
        let n = rx.dequeue_burst(&mut back).unwrap_or(0);
        for &h in &back[..n] {
            raw_free(g, free, h);
        }
        n
    };
    let per_round = if hot.is_some() { HOT } else { 16 };
    while !stop.load(Ordering::Relaxed) {
        if let Some(hot) = hot {
            let t0 = Instant::now();
            while g.tx.count() > 0 && t0.elapsed() < Duration::from_millis(20) {
                std::thread::yield_now();
            }
            // The host took them: stop aiming at buffers it may already have freed.
            for i in &hot.idx {
                i.store(u64::MAX, Ordering::Relaxed);
            }
        }
        for _ in 0..per_round {
            let len = sizes[rng.below(sizes.len() as u64) as usize];
            // An odd pkt_len on every other aimed packet: the host walks, then discards.
            let bad_len = hot.is_some() && sent.is_multiple_of(2);
            let Some((h, segs)) = raw_packet(g, &mut free, len, bad_len) else {
                break;
            };
            if let (Some(hot), true) = (hot, segs.len() >= 3) {
                let k = (sent as usize) % HOT;
                hot.next[k].store(
                    (u64::from(g.pool_id) << 32) | u64::from(segs[2]),
                    Ordering::Relaxed,
                );
                hot.idx[k].store(u64::from(segs[1]), Ordering::Relaxed);
            }
            if tx.enqueue(h).is_ok() {
                sent += 1;
                progress.store(sent, Ordering::Relaxed);
            } else {
                raw_free(g, &mut free, h);
                break;
            }
        }
        drain(&mut rx, &mut free);
    }
    // Take back what the host still sends for a while.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if drain(&mut rx, &mut free) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    sent
}

fn fill_canary(prefix: &str, ring: &str) {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "ring-fill", ring, "--count", "200"],
    );
    assert_eq!(code, 0, "{out} {err}");
}

fn check_canary(prefix: &str, ring: &str) {
    let (code, out, err) = run(
        "shmdp-secondary",
        &[
            "--file-prefix",
            prefix,
            "ring-drain",
            ring,
            "--count",
            "200",
            "--timeout",
            "5",
        ],
    );
    assert_eq!(code, 0, "canary ring {ring} damaged: {out} {err}");
}

fn hostile_run(tag: &str, attack: Attack, sizes: &'static [usize], seed: u64) {
    let prefix = unique_prefix(tag);
    let json = std::env::temp_dir().join(format!("{prefix}-fwd.json"));
    let mut args = vec![
        "-m",
        "64",
        "--memseg",
        "vm1=16",
        "--ring",
        "vm1_rx=1024@vm1",
        "--ring",
        "vm1_tx=1024@vm1",
        "--ring",
        "vm1_canary=256@vm1",
        "--ring",
        "canary=256",
        "--mempool",
        "vm1_pool=4095:0@vm1",
        "--ivshmem",
        "vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool",
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_ring1,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut primary = Proc::primary(&prefix, &args);
    fill_canary(&prefix, "canary");
    fill_canary(&prefix, "vm1_canary@vm1");
    let g = Arc::new(map_guest(&segment(&prefix)));
    let json_arg = json.display().to_string();
    let mut fwd = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--portlist",
            "1,0",
            "--stats-json",
            &json_arg,
        ],
    );
    assert!(
        fwd.wait_stdout("forwarding", Duration::from_secs(20))
            || fwd.wait_stderr("forwarding", Duration::from_secs(1)),
        "forwarder did not start: {:?} {:?}",
        fwd.stdout(),
        fwd.stderr()
    );
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let stop_attack = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let hot = Arc::new(Hot::new());
    let progress = Arc::new(AtomicU64::new(0));
    let guest = {
        let (g, stop, hot, progress) = (
            g.clone(),
            stop_traffic.clone(),
            hot.clone(),
            progress.clone(),
        );
        let aim = attack == Attack::Chains;
        std::thread::spawn(move || {
            guest_traffic(&g, sizes, &stop, seed, aim.then_some(&*hot), &progress)
        })
    };
    // The sharp attacker: the state of every buffer rewritten in a sweep (refcnt 2, so
    // "fresh" buffers look shared between the host's check and its use), or the chains
    // of packets in flight flipped.
    let sharp = {
        let (g, stop, hot, writes) = (g.clone(), stop_attack.clone(), hot.clone(), writes.clone());
        std::thread::spawn(move || {
            let far = (u64::from(g.pool_id) << 32) | 0x00ff_fff0;
            while !stop.load(Ordering::Relaxed) {
                match attack {
                    Attack::Fields => {
                        for i in 0..u64::from(g.count) {
                            let _ = g.region.write(g.objs_off + i * g.obj_size + 12, &2u32);
                        }
                        writes.fetch_add(u64::from(g.count), Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                    Attack::Chains => {
                        if hot
                            .idx
                            .iter()
                            .all(|i| i.load(Ordering::Relaxed) == u64::MAX)
                        {
                            std::thread::yield_now();
                        }
                        for k in 0..HOT {
                            let i = hot.idx[k].load(Ordering::Relaxed);
                            if i >= u64::from(g.count) {
                                continue;
                            }
                            let at = g.objs_off + i * g.obj_size + 48;
                            let good = hot.next[k].load(Ordering::Relaxed);
                            for _ in 0..8 {
                                let _ = g.region.write(at, &far);
                                let _ = g.region.write(at, &good);
                            }
                        }
                        writes.fetch_add(16 * HOT as u64, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                }
            }
        })
    };
    let attackers: Vec<_> = (0..2u64)
        .map(|t| {
            let (g, stop, writes) = (g.clone(), stop_attack.clone(), writes.clone());
            std::thread::spawn(move || {
                let mut rng = Rng((seed + t).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        scribble_one(&g, &mut rng, attack);
                    }
                    writes.fetch_add(256, Ordering::Relaxed);
                    // Leave the forwarder some of the machine's two cores.
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        })
        .collect();
    // At least 4 s, and until the guest got 2000 packets through (a loaded machine starves
    // the forwarder), at most 20 s.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4)
        || (progress.load(Ordering::Relaxed) < 2000 && t0.elapsed() < Duration::from_secs(20))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_attack.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    sharp.join().unwrap();
    assert!(
        primary.try_status().is_none(),
        "the primary died under the attack"
    );
    assert!(
        fwd.try_status().is_none(),
        "the forwarder died: {:?}",
        fwd.stderr()
    );
    stop_traffic.store(true, Ordering::Relaxed);
    let sent = guest.join().unwrap();
    // Everything the guest sent has been taken off its ring by the host.
    assert!(
        wait_until(Duration::from_secs(10), || g.tx.count() == 0),
        "the host stopped draining the guest's ring"
    );
    fwd.signal(Signal::SIGINT);
    let status = fwd.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "forwarder exit (0 = accounting balanced): {:?} {:?}",
        fwd.stdout(),
        fwd.stderr()
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let port1 = &report["ports"][0];
    assert_eq!(port1["id"], 1, "{report}");
    let n = |v: &Value| v.as_u64().unwrap();
    let received = n(&port1["rx_packets"]);
    let refused = n(&port1["errors"]);
    let nombuf = n(&port1["drops"]["no_mbuf"]);
    eprintln!(
        "{tag}: {} header writes; guest sent {sent}: host received {received}, refused {refused}, no mbuf {nombuf}; \
         guest rings {} / {} queued, its pool {} free",
        writes.load(Ordering::Relaxed),
        g.tx.count(),
        g.rx.count(),
        g.pool.mempool().stats().available,
    );
    assert!(sent > 200 && received > 0, "too little traffic: {report}");
    assert!(refused > 0, "the attack should have been noticed: {report}");
    assert_eq!(
        received + refused + nombuf,
        sent,
        "every handle the guest sent is received or counted: {report}"
    );
    check_canary(&prefix, "canary");
    check_canary(&prefix, "vm1_canary@vm1");
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    for p in v["pools"].as_array().unwrap() {
        if p["name"] != "vm1_pool" {
            assert_eq!(p["available"], p["count"], "host pool not full: {p}");
        }
    }
    assert!(primary.try_status().is_none(), "the primary died");
    let _ = std::fs::remove_file(json);
}

#[test]
fn header_rewrites_while_the_host_forwards_are_dropped_and_counted() {
    hostile_run(
        "hghdr",
        Attack::Fields,
        &[60, 64, 128, 1000, 1514, 3000],
        0x5eed_0001,
    );
}

#[test]
fn chain_flips_while_the_host_walks_and_frees_are_dropped_and_counted() {
    hostile_run(
        "hgchain",
        Attack::Chains,
        &[2100, 3000, 4500, 6000],
        0x5eed_0002,
    );
}
