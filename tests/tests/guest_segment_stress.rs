//! Seeded stress of a live guest-facing segment, for a fixed time (what the cargo-fuzz
//! target `guest_segment` does with fuzzer input, runnable without cargo-fuzz): in one
//! process, a guest-facing port whose rings and pool are in their own memseg (the
//! "export segment"), a host thread forwarding through it (rx -> tx on the same port), a
//! guest thread sending and receiving frames as a guest does, and a thread writing random
//! bytes into the segment: anywhere, header fields, chain links and ring words.
//!
//! Asserted: nothing panics or hangs on the host side (every burst returns within a
//! bound), the host's accounting explains every packet (received = sent + left over,
//! matching the port's counters), the host's pool is full at the end and a canary
//! memzone next to it is intact. `SHMDP_GUEST_STRESS_SECS` sets the time (default 10)
//! and `SHMDP_GUEST_STRESS_SEED` the seed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmds::{DevArgs, Port, PortSetup};
use shm::{Memseg, MemzoneKind, Region};
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag, DEFAULT_DATA_ROOM, DEFAULT_HEADROOM};
use shm_ring::{Ring, SyncMode};

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

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CANARY_LEN: u64 = 64 << 10;

fn canary_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9) >> 7) as u8
}

/// Where the guest's objects are in its segment (to "reboot" them).
struct GuestLayout {
    region: Region,
    pool: (u64, u64),
    h2g: (u64, u64),
    g2h: (u64, u64),
}

impl GuestLayout {
    /// What a guest rebooting its driver does: lays out its rings and pool afresh (while
    /// the host keeps polling them).
    fn reboot(&self) -> (MbufPool, Ring<u64>, Ring<u64>) {
        let params = MbufPoolParams {
            count: 2047,
            cache_size: 0,
            pool_id: 2,
            headroom: DEFAULT_HEADROOM,
            data_room: DEFAULT_DATA_ROOM,
        };
        let r = &self.region;
        let pool = MbufPool::init(r, self.pool.0, self.pool.1, "vm1_pool", &params).unwrap();
        let ring = |(off, len): (u64, u64), name| {
            Ring::<u64>::init(r, off, len, name, 1024, SyncMode::MP_MC).unwrap()
        };
        (pool, ring(self.h2g, "vm1_rx"), ring(self.g2h, "vm1_tx"))
    }
}

/// The guest: frames (some chained) into the host, and the host's frames taken back;
/// every 300 ms it reboots (lays out its rings and pool again), as the attack breaks them
/// for good. It trusts nothing either: packets are built with plain header writes from
/// free-ring indices, freed after a bounded walk, and every ring is used through the
/// bounded untrusted handles (the attack scribbles its rings too). A panic in its own code
/// only reboots it early.
fn guest(layout: GuestLayout, stop: Arc<AtomicBool>, seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed | 1);
    let (mut sent, mut reboots) = (0u64, 0u64);
    let r = &layout.region;
    while !stop.load(Ordering::Relaxed) {
        let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (pool, rx, tx) = layout.reboot();
            let info = *pool.mempool().info();
            let objs = layout.pool.0 + info.objs_off;
            let (size, count, id) = (
                u64::from(info.obj_size),
                info.obj_count,
                u64::from(info.pool_id),
            );
            let free_ring =
                Ring::<u32>::open(r, layout.pool.0 + info.ring_off, info.ring_len).unwrap();
            let (mut get, mut put) = (
                free_ring.untrusted_consumer(),
                free_ring.untrusted_producer(),
            );
            let (mut p, mut c) = (tx.untrusted_producer(), rx.untrusted_consumer());
            let hdr = |i: u32| objs + u64::from(i) * size;
            let mut back = [0u64; 32];
            let mut n = 0u64;
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                for _ in 0..16 {
                    let len = [60u32, 64, 1514, 2100, 4000][rng.below(5) as usize];
                    let nsegs = len.div_ceil(DEFAULT_DATA_ROOM) as usize;
                    let mut idx = [0u32; 2];
                    let idx = &mut idx[..nsegs];
                    if get.dequeue_bulk(idx) != Ok(nsegs) || idx.iter().any(|&i| i >= count) {
                        break;
                    }
                    let mut left = len;
                    for (k, &i) in idx.iter().enumerate() {
                        let seg = left.min(DEFAULT_DATA_ROOM) as u16;
                        left -= u32::from(seg);
                        let next = idx.get(k + 1).map_or(0, |&x| (id << 32) | u64::from(x));
                        let (nb, pkt) = if k == 0 { (nsegs as u16, len) } else { (1, 0) };
                        let h = hdr(i);
                        let _ = r.write(h, &(u64::from(i) | (id << 32)));
                        let _ = r.write(h + 12, &1u32);
                        let _ = r.write(h + 16, &[DEFAULT_HEADROOM as u16, nb, 0xffff, seg]);
                        let _ = r.write(h + 24, &pkt);
                        let _ = r.write(h + 48, &next);
                    }
                    for &i in idx.iter() {
                        // Release: the host's Acquire CAS of TRANSIT sees the header.
                        let _ = r
                            .atomic_u32(hdr(i) + 8)
                            .map(|a| a.store(u32::MAX, Ordering::Release));
                    }
                    if p.enqueue((id << 32) | u64::from(idx[0])).is_ok() {
                        n += 1;
                    } else {
                        let _ = put.enqueue_burst(idx);
                    }
                }
                let k = c.dequeue_burst(&mut back).unwrap_or(0);
                for &h in &back[..k] {
                    let mut segs = Vec::with_capacity(4);
                    let mut cur = h;
                    while segs.len() < 4 && cur >> 32 == id && (cur as u32) < count {
                        let i = cur as u32;
                        if segs.contains(&i) {
                            break;
                        }
                        segs.push(i);
                        cur = r.read_copy::<u64>(hdr(i) + 48).unwrap_or(0);
                    }
                    for &i in &segs {
                        let _ = r
                            .atomic_u32(hdr(i) + 8)
                            .map(|a| a.store(0, Ordering::Release));
                    }
                    let _ = put.enqueue_burst(&segs);
                }
            }
            n
        }));
        sent += round.unwrap_or(0);
        reboots += 1;
    }
    (sent, reboots)
}

/// Random writes into the segment `[0, len)` of `region`: anywhere, into mbuf headers
/// (`objs_off`, `obj_size`, `count`), and into the rings' index words.
struct Scribbler {
    region: Region,
    len: u64,
    objs_off: u64,
    obj_size: u64,
    count: u64,
    pool_id: u64,
    ring_offs: Vec<u64>,
}

impl Scribbler {
    fn one(&self, rng: &mut Rng) {
        let r = rng.next();
        // Mostly headers and chains (traffic keeps flowing); now and then anywhere or a
        // ring's words, which may break the guest's rings for good (its own loss).
        let _ = match rng.below(256) {
            // Anywhere: a random word.
            0 => self.region.write(rng.below(self.len / 8) * 8, &r),
            // A header field of a random mbuf, random or near-valid values.
            2..=150 => {
                let hdr = self.objs_off + rng.below(self.count) * self.obj_size;
                let field = [0u64, 8, 12, 16, 24, 48][rng.below(6) as usize];
                let v = match rng.below(4) {
                    0 => r,
                    1 => (self.pool_id << 32) | rng.below(self.count + 4),
                    2 => u64::from(u32::MAX),
                    _ => r & 0xffff,
                };
                if field == 48 {
                    self.region.write(hdr + field, &v)
                } else {
                    self.region.write(hdr + field, &(v as u32))
                }
            }
            // A chain link: next to another buffer of the pool, itself, or garbage.
            151..=254 => {
                let i = rng.below(self.count);
                let hdr = self.objs_off + i * self.obj_size;
                let to = [rng.below(self.count), i, self.count + 1][rng.below(3) as usize];
                self.region.write(hdr + 48, &((self.pool_id << 32) | to))
            }
            // A ring's head or tail words (first 1 KiB of each ring memzone).
            _ => {
                let off = self.ring_offs[rng.below(self.ring_offs.len() as u64) as usize];
                self.region
                    .write(off + rng.below(128) * 8, &(r & 0xffff_ffff))
            }
        };
    }
}

#[test]
fn random_writes_into_a_live_guest_segment_never_hurt_the_host() {
    let secs = env_u64("SHMDP_GUEST_STRESS_SECS", 10);
    let seed = env_u64("SHMDP_GUEST_STRESS_SEED", 0x6a09_e667_f3bc_c908);
    eprintln!("guest segment stress: {secs} s, seed {seed:#x}");
    // Host memseg: the host pool, the port, a canary.
    let host = Memseg::create_in_region(Region::heap(32 << 20), "host", 1).unwrap();
    host.mark_ready();
    let host_pool = MbufPool::create(&host, "mbufs", &MbufPoolParams::new(2047, 32, 1)).unwrap();
    let canary = host
        .reserve("canary", CANARY_LEN, 64, MemzoneKind::Raw)
        .unwrap();
    let pattern: Vec<u8> = (0..CANARY_LEN).map(canary_byte).collect();
    for (k, w) in pattern.chunks(8).enumerate() {
        let word = u64::from_ne_bytes(w.try_into().unwrap());
        host.region()
            .write(canary.offset + 8 * k as u64, &word)
            .unwrap();
    }
    // The guest's segment: its rings and pool.
    let seg_len = 16u64 << 20;
    let vm = Memseg::create_in_region(Region::heap(seg_len as usize), "vm1", 1).unwrap();
    vm.mark_ready();
    Ring::<u64>::create(&vm, "vm1_tx", 1024, SyncMode::MP_MC).unwrap();
    Ring::<u64>::create(&vm, "vm1_rx", 1024, SyncMode::MP_MC).unwrap();
    let gpool = MbufPool::create(&vm, "vm1_pool", &MbufPoolParams::new(2047, 0, 2)).unwrap();
    let info = *gpool.mempool().info();
    let pool_zone = vm.lookup("vm1_pool").unwrap();
    let ring_offs = ["vm1_tx", "vm1_rx"]
        .iter()
        .map(|n| vm.lookup(n).unwrap().offset)
        .collect();
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

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let guest_thread = {
        let zone = |n| {
            let z = vm.lookup(n).unwrap();
            (z.offset, z.len_bytes)
        };
        let layout = GuestLayout {
            region: vm.region().clone(),
            pool: zone("vm1_pool"),
            h2g: zone("vm1_rx"),
            g2h: zone("vm1_tx"),
        };
        let stop = stop.clone();
        std::thread::spawn(move || guest(layout, stop, seed ^ 0x1111))
    };
    let scribbler = {
        let s = Scribbler {
            region: vm.region().clone(),
            len: seg_len,
            objs_off: pool_zone.offset + info.objs_off,
            obj_size: u64::from(info.obj_size),
            count: u64::from(info.obj_count),
            pool_id: u64::from(info.pool_id),
            ring_offs,
        };
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            while !stop.load(Ordering::Relaxed) {
                // Bursts of writes with pauses, so traffic also flows between them.
                for _ in 0..rng.below(2000) {
                    s.one(&mut rng);
                }
                writes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(rng.below(2000)));
            }
        })
    };

    // The host: forward everything received back to the guest, for `secs`.
    let cache = host_pool.cache(OwnerTag(2)).unwrap();
    let (mut received, mut sent, mut left_over) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    {
        let mut rx = port.rx_queue(0, &cache).unwrap();
        let mut tx = port.tx_queue(0, &cache).unwrap();
        let mut pkts = Vec::with_capacity(64);
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let t = Instant::now();
            let got = rx.rx_burst(&mut pkts, 32) as u64;
            received += got;
            if got == 0 {
                tx.idle();
            }
            sent += tx.tx_burst(&mut pkts) as u64;
            left_over += pkts.len() as u64;
            pkts.clear();
            slowest = slowest.max(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (guest_sent, reboots) = guest_thread.join().unwrap();
    scribbler.join().unwrap();
    let st = port.stats();
    eprintln!(
        "guest sent {guest_sent} ({reboots} reboots); host received {received}, sent {sent}, left over {left_over}; \
         port errors {} rx_dropped {} tx_dropped {}; {} write bursts; slowest burst {slowest:?}",
        st.errors,
        st.rx_dropped,
        st.tx_dropped,
        writes.load(Ordering::Relaxed)
    );
    assert!(received > 0, "no traffic got through");
    assert_eq!(
        received,
        sent + left_over,
        "every received packet is sent or counted"
    );
    assert_eq!((st.rx_packets, st.tx_packets), (received, sent));
    assert!(
        slowest < Duration::from_secs(1),
        "a burst took {slowest:?}: host operations on guest memory must be bounded"
    );
    drop(cache);
    assert_eq!(
        host_pool.mempool().stats().available,
        u64::from(host_pool.mempool().count()),
        "every host mbuf is back"
    );
    let mut now = vec![0u8; CANARY_LEN as usize];
    host.region().read_bytes(canary.offset, &mut now).unwrap();
    assert!(
        now == pattern,
        "the canary next to the host pool was written"
    );
}
