//! Guest-writable pools: round trips both ways, and every way a guest can corrupt a
//! header or chain (each dropped, counted, with the guest's pool whole afterwards).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use shm::{Memseg, Region};

use super::*;
use crate::{MbufHandle, MbufPoolParams};

const HOST: OwnerTag = OwnerTag(3);

struct Env {
    _seg: Memseg,
    host: MbufPool,
    guest: MbufPool,
}

fn env() -> Env {
    let seg = Memseg::create_in_region(Region::heap(8 << 20), "guesttest", 1).unwrap();
    seg.mark_ready();
    let mut p = MbufPoolParams::new(256, 16, 1);
    p.data_room = 512;
    let host = MbufPool::create(&seg, "host", &p).unwrap();
    let mut g = MbufPoolParams::new(128, 0, 2);
    g.data_room = 256;
    g.headroom = 64;
    let guest = MbufPool::create(&seg, "guest", &g).unwrap();
    Env {
        _seg: seg,
        host,
        guest,
    }
}

/// The header of guest buffer `i`, for the "guest" to scribble on.
fn hdr(pool: &MbufPool, i: u32) -> *mut MbufHeader {
    let sh = &pool.mempool().shared;
    header_ptr(sh.objs, sh.info.obj_size, i)
}

/// Lets the "guest" edit buffer `i`'s header as plain memory.
fn poke(pool: &MbufPool, i: u32, f: impl FnOnce(&mut MbufHeader)) {
    assert!(i < pool.mempool().count());
    // SAFETY: `i < count`: a header inside the pool's objects span; the test holds the
    // only reference while `f` runs (no other thread touches the pool).
    f(unsafe { &mut *hdr(pool, i) })
}

fn peek_next(pool: &MbufPool, i: u32) -> u64 {
    let mut next = 0;
    poke(pool, i, |h| next = h.next);
    next
}

fn full(p: &MbufPool) -> bool {
    p.mempool().stats().available == u64::from(p.mempool().count())
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn copies_round_trip_both_ways_and_the_guest_pool_stays_whole() {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let guest = e.guest.cache(OwnerTag::GUEST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    for len in [0usize, 1, 7, 60, 255, 256, 257, 700, 2000] {
        let bytes = frame(len, len as u8);
        // Guest to host.
        let h = guest.alloc_from(&bytes).unwrap().into_transit().unwrap();
        let m = gp.receive(h.0, &host).unwrap();
        assert_eq!(m.to_vec(), bytes, "len {len}");
        drop(m);
        gp.flush();
        assert!(full(&e.guest), "len {len}");
        // Host to guest.
        let m = host.alloc_from(&bytes).unwrap();
        let h = gp.send(&m).unwrap();
        gp.flush();
        let back = guest.adopt(MbufHandle(h)).unwrap();
        assert_eq!(back.to_vec(), bytes, "len {len}");
        assert_eq!(back.pkt_len() as usize, len);
        drop((back, m));
        assert!(full(&e.guest) && full(&e.host), "len {len}");
    }
    let s = gp.stats();
    assert_eq!(
        (s.received, s.sent, s.rx_dropped(), s.lost_segments),
        (9, 9, 0, 0)
    );
}

#[test]
fn handles_of_another_pool_or_out_of_range_are_refused() {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    for h in [
        0,
        MbufHandle::new(1, 3).0,
        MbufHandle::new(2, 128).0,
        u64::MAX,
    ] {
        assert_eq!(gp.receive(h, &host).err(), Some(GuestDrop::BadHandle));
    }
    // A free buffer is not in transit.
    let free = MbufHandle::new(2, 5).0;
    assert_eq!(gp.receive(free, &host).err(), Some(GuestDrop::NotInTransit));
    assert_eq!(gp.stats().bad_handle, 4);
    assert_eq!(gp.stats().not_in_transit, 1);
    assert!(full(&e.guest) && full(&e.host));
}

/// Makes a guest packet of `segs` segments, lets `corrupt` change its headers (segment
/// indices given), and checks the host drops it for `why` and the pool ends whole.
fn corrupt_case(name: &str, segs: usize, why: GuestDrop, corrupt: impl Fn(&MbufPool, &[u32])) {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let guest = e.guest.cache(OwnerTag::GUEST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    let m = guest.alloc_from(&frame(256 * segs - 10, 1)).unwrap();
    let idx: Vec<u32> = {
        let mut v = vec![m.index()];
        let mut cur = m.index();
        for _ in 1..segs {
            cur = MbufHandle(peek_next(&e.guest, cur)).index();
            v.push(cur);
        }
        v
    };
    let h = m.into_transit().unwrap();
    corrupt(&e.guest, &idx);
    assert_eq!(gp.receive(h.0, &host).err(), Some(why), "{name}");
    gp.flush();
    assert_eq!(gp.stats().rx_dropped(), 1, "{name}");
    // What the host claimed went back; what it could not claim the guest still holds in
    // transit (its own doing): take those back as the guest would.
    for &i in &idx {
        let _ = guest.adopt(MbufHandle::new(2, i));
    }
    assert!(full(&e.guest), "{name}: {:?}", e.guest.mempool().stats());
    assert!(full(&e.host), "{name}");
}

#[test]
fn every_corrupt_header_is_dropped_and_counted() {
    type Case = (&'static str, usize, GuestDrop, fn(&MbufPool, &[u32]));
    let cases: [Case; 11] = [
        ("index", 1, GuestDrop::BadHeader, |p, i| {
            poke(p, i[0], |h| h.index = 9)
        }),
        ("pool id", 1, GuestDrop::BadHeader, |p, i| {
            poke(p, i[0], |h| h.pool_id = 1)
        }),
        ("span", 1, GuestDrop::BadHeader, |p, i| {
            poke(p, i[0], |h| h.data_off = 300)
        }),
        ("pkt_len", 1, GuestDrop::BadHeader, |p, i| {
            poke(p, i[0], |h| h.pkt_len += 1)
        }),
        ("nb_segs short", 3, GuestDrop::BadChain, |p, i| {
            poke(p, i[0], |h| h.nb_segs = 2)
        }),
        ("nb_segs long", 2, GuestDrop::BadChain, |p, i| {
            poke(p, i[0], |h| h.nb_segs = 3)
        }),
        ("self loop", 2, GuestDrop::BadChain, |p, i| {
            poke(p, i[1], |h| h.next = MbufHandle::new(2, i[1]).0)
        }),
        ("loop to head", 3, GuestDrop::BadChain, |p, i| {
            poke(p, i[2], |h| h.next = MbufHandle::new(2, i[0]).0);
            poke(p, i[0], |h| h.nb_segs = 30);
        }),
        ("next out of pool", 2, GuestDrop::BadChain, |p, i| {
            poke(p, i[0], |h| h.next = MbufHandle::new(2, 1 << 20).0)
        }),
        ("next another pool", 2, GuestDrop::BadChain, |p, i| {
            poke(p, i[0], |h| h.next = MbufHandle::new(1, 0).0)
        }),
        ("next not in transit", 2, GuestDrop::BadChain, |p, i| {
            poke(p, i[0], |h| h.next = MbufHandle::new(2, 127).0)
        }),
    ];
    for (name, segs, why, f) in cases {
        corrupt_case(name, segs, why, f);
    }
}

#[test]
fn chains_are_bounded_whatever_nb_segs_says() {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let guest = e.guest.cache(OwnerTag::GUEST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    // 40 segments of 256 bytes: over GUEST_MAX_SEGS.
    let m = guest.alloc_from(&frame(40 * 256, 3)).unwrap();
    assert_eq!(m.nb_segs(), 40);
    let h = m.into_transit().unwrap();
    assert_eq!(gp.receive(h.0, &host).err(), Some(GuestDrop::BadChain));
    gp.flush();
    for i in 0..128 {
        let _ = guest.adopt(MbufHandle::new(2, i));
    }
    assert!(full(&e.guest) && full(&e.host));
    // Sending: a host packet over the limit is refused, not built.
    let big = host.alloc_from(&frame(33 * 256, 4)).unwrap();
    assert_eq!(gp.send(&big).err(), Some(GuestDrop::TooLong));
    drop(big);
    assert!(full(&e.guest) && full(&e.host));
}

#[test]
fn an_empty_guest_pool_refuses_sends_and_keeps_nothing() {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let guest = e.guest.cache(OwnerTag::GUEST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    let mut held = Vec::new();
    guest.alloc_bulk(&mut held, 127).unwrap();
    let m = host.alloc_from(&frame(600, 5)).unwrap();
    assert_eq!(
        gp.send(&m).err(),
        Some(GuestDrop::NoBuffer),
        "needs 3, 1 free"
    );
    gp.flush();
    drop((held, m));
    assert!(full(&e.guest) && full(&e.host));
}

#[test]
fn a_buffer_the_guest_still_uses_is_not_taken_for_sending() {
    let e = env();
    let host = e.host.cache(HOST).unwrap();
    let mut gp = GuestPool::open(&e.guest, HOST).unwrap();
    // Every free entry names buffers the guest marked as held.
    for i in 0..128 {
        poke(&e.guest, i, |h| {
            h.owner.store(OwnerTag::GUEST.0, Ordering::Relaxed)
        });
    }
    let m = host.alloc_from(&frame(60, 6)).unwrap();
    assert_eq!(gp.send(&m).err(), Some(GuestDrop::NoBuffer));
    assert!(gp.stats().lost_segments > 0);
}

/// Keeps the choke point a choke point: the module denies indexing, unwrap, expect and
/// panics (clippy enforces it), makes no slice over guest memory, and reaches guest memory
/// through a reference only for the two atomic words.
#[test]
fn the_guest_module_makes_no_reference_into_guest_memory() {
    for (file, src) in [
        ("guest.rs", include_str!("guest.rs")),
        ("guest_copy.rs", include_str!("guest_copy.rs")),
        ("guest_hdr.rs", include_str!("guest_hdr.rs")),
        ("guest_reclaim.rs", include_str!("guest_reclaim.rs")),
    ] {
        check_choke_point(file, src);
    }
}

fn check_choke_point(file: &str, src: &str) {
    for lint in [
        "clippy::indexing_slicing",
        "clippy::unwrap_used",
        "clippy::expect_used",
        "clippy::panic",
    ] {
        assert!(
            src.contains(&format!("    {lint},")),
            "guest.rs must deny {lint}"
        );
    }
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for bad in [
        "from_raw_parts",
        "&mut *",
        ".unwrap()",
        ".expect(",
        "panic!",
        "unreachable!",
        "MbufCache::header",
        "as_ref()",
    ] {
        assert!(!code.contains(bad), "{file} uses {bad}");
    }
    let refs = if file == "guest.rs" { 2 } else { 0 };
    assert_eq!(
        code.matches("&*").count(),
        refs,
        "{file}: only owner_word and refcnt_word may make a reference (to an atomic)"
    );
}

/// The copy routines move exactly the bytes asked, at every alignment of either side and
/// every length across the byte, vector and `rep movsb` paths.
#[test]
fn guest_copies_are_exact_at_every_alignment_and_length() {
    let src: Vec<u8> = (0..3000u32).map(|i| (i * 13 + 7) as u8).collect();
    for len in [
        0usize, 1, 7, 15, 16, 17, 63, 64, 65, 127, 128, 129, 511, 1023, 1024, 1500, 2049,
    ] {
        for a in 0..17 {
            let mut dst = vec![0xeeu8; len + 40];
            // SAFETY: `a + len <= 17 + 2049 < src.len()`.
            unsafe { copy_from_guest(&mut dst[3..3 + len], src.as_ptr().wrapping_add(a)) };
            assert_eq!(
                &dst[3..3 + len],
                &src[a..a + len],
                "in: len {len} align {a}"
            );
            assert!(dst[..3].iter().chain(&dst[3 + len..]).all(|&b| b == 0xee));
            let mut out = vec![0xeeu8; len + 40];
            // SAFETY: `a + len <= out.len()`.
            unsafe { copy_to_guest(out.as_mut_ptr().wrapping_add(a), &src[5..5 + len]) };
            assert_eq!(
                &out[a..a + len],
                &src[5..5 + len],
                "out: len {len} align {a}"
            );
            assert!(out[..a].iter().chain(&out[a + len..]).all(|&b| b == 0xee));
        }
    }
}

// ---- reclaim of a dead host process's buffers (guest_reclaim.rs) --------------------

use crate::layout::PoolInfo;
use shm_ring::layout::PROD_OFF;
use std::time::{Duration, Instant};

const DEAD: OwnerTag = OwnerTag(7);
const LIVE: OwnerTag = OwnerTag(8);

fn guest_pool() -> (Memseg, MbufPool) {
    let seg = Memseg::create_in_region(Region::heap(4 << 20), "reclaimtest", 1).unwrap();
    seg.mark_ready();
    let pool = MbufPool::create(&seg, "gp", &MbufPoolParams::new(1023, 0, 9)).unwrap();
    (seg, pool)
}

/// Offset of the pool's free ring producer head in the memseg, for the "guest".
fn prod_head_off(seg: &Memseg) -> u64 {
    let z = seg.lookup("gp").unwrap();
    let info: PoolInfo = seg.region().read_copy(z.offset).unwrap();
    z.offset + info.ring_off + PROD_OFF
}

/// `k` buffers allocated by `tag` and forgotten (as a killed process leaves them).
fn leave(pool: &MbufPool, tag: OwnerTag, k: usize) {
    let c = pool.uncached(tag).unwrap();
    let mut held = Vec::new();
    c.alloc_bulk(&mut held, k).unwrap();
    held.into_iter().for_each(std::mem::forget);
    // Without a cache slot, dropping the handle leaves the pool as a death does (and
    // frees this process's view of it, which Miri's leak check wants).
    drop(c);
}

#[test]
fn reclaim_dead_returns_exactly_the_dead_owners_buffers() {
    let (_seg, pool) = guest_pool();
    leave(&pool, DEAD, 300);
    leave(&pool, LIVE, 20);
    let r = GuestPool::reclaim_dead(&pool, DEAD).unwrap();
    assert_eq!(
        r,
        GuestReclaimed {
            returned: 300,
            lost: 0
        }
    );
    assert_eq!(pool.owned_by(DEAD), 0);
    assert_eq!(
        pool.owned_by(LIVE),
        20,
        "a live owner's buffers are left alone"
    );
    assert_eq!(pool.mempool().stats().available, 1023 - 20);
    assert!(GuestPool::reclaim_dead(&pool, OwnerTag::GUEST).is_err());
}

#[test]
fn reclaim_dead_is_bounded_on_a_free_ring_the_guest_holds_up() {
    let (seg, pool) = guest_pool();
    leave(&pool, DEAD, 1000);
    // The "guest": a reservation on the free ring it never publishes (head past tail).
    let off = prod_head_off(&seg);
    let head: u32 = seg.region().read_copy(off).unwrap();
    seg.region().write(off, &head.wrapping_add(3)).unwrap();
    let t0 = Instant::now();
    let r = GuestPool::reclaim_dead(&pool, DEAD).unwrap();
    let took = t0.elapsed();
    // The trusted reclaim waits STALL_TIMEOUT (10 s) here; this one does not wait.
    // (Miri runs far slower: the bound is for real runs.)
    assert!(
        cfg!(miri) || took < Duration::from_millis(100),
        "took {took:?}"
    );
    assert_eq!(r.returned + r.lost, 1000, "{r:?}");
    assert!(r.lost > 0, "a held-up ring cannot take everything: {r:?}");
    assert_eq!(pool.owned_by(DEAD), 0);
}

#[test]
#[cfg_attr(miri, ignore)] // a racing plain writer, as a guest is
fn reclaim_dead_is_bounded_on_a_free_ring_a_guest_keeps_rewriting() {
    let (seg, pool) = guest_pool();
    leave(&pool, DEAD, 1000);
    let off = prod_head_off(&seg);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x9e37_79b9u32;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let _ = seg.region().write(off, &x);
            }
        });
        let t0 = Instant::now();
        let r = GuestPool::reclaim_dead(&pool, DEAD).unwrap();
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert_eq!(r.returned + r.lost, 1000, "{r:?}");
    });
    assert_eq!(pool.owned_by(DEAD), 0);
}
