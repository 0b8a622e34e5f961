//! Unit tests: pool creation and validation, exhaustion, bulk all-or-nothing, cache refill
//! and flush thresholds, cache slots, audits, mbuf editing, chains, reference counts,
//! transit/adopt, double frees, corruption and reclaim. Sizes shrink under Miri.

use std::sync::atomic::Ordering;

use shm::{Memseg, Region};

use super::*;
use crate::layout::*;

const ME: OwnerTag = OwnerTag(7);

fn seg(mib: usize) -> Memseg {
    let seg = Memseg::create_in_region(Region::heap(mib << 20), "pooltest", 1).unwrap();
    seg.mark_ready();
    seg
}

fn raw(seg: &Memseg, name: &str, count: u32, cache: u32) -> Mempool {
    Mempool::create(
        seg,
        name,
        &PoolParams {
            count,
            obj_size: 64,
            cache_size: cache,
            pool_id: 9,
            flags: 0,
            headroom: 0,
            data_room: 0,
        },
    )
    .unwrap()
}

fn mbufs(seg: &Memseg, count: u32, cache: u32) -> MbufPool {
    let mut p = MbufPoolParams::new(count, cache, 3);
    p.data_room = 256;
    p.headroom = 64;
    MbufPool::create(seg, "mbufs", &p).unwrap()
}

fn pid_of_exited_child() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn create_lookup_and_layout() {
    let seg = seg(4);
    let pool = raw(&seg, "objs", 100, 8);
    assert_eq!(pool.obj_size(), 128, "rounded up to OBJ_ALIGN");
    let again = Mempool::lookup(&seg, "objs").unwrap();
    assert_eq!(again.count(), 100);
    assert_eq!(again.id(), 9);
    assert_eq!(again.stats().available, 100);
    assert!(
        MbufPool::from_mempool(again).is_err(),
        "plain pool is not an mbuf pool"
    );
    assert_eq!(std::mem::size_of::<PoolInfo>(), 256);
    assert_eq!(std::mem::size_of::<MbufHeader>(), 128);
    let bad = |p: PoolParams| Mempool::create(&seg, "bad", &p).unwrap_err().to_string();
    let ok = PoolParams {
        count: 10,
        obj_size: 64,
        cache_size: 0,
        pool_id: 1,
        flags: 0,
        headroom: 0,
        data_room: 0,
    };
    assert!(bad(PoolParams { count: 0, ..ok }).contains("object count"));
    assert!(bad(PoolParams {
        cache_size: 513,
        ..ok
    })
    .contains("cache size"));
    assert!(bad(PoolParams { pool_id: 0, ..ok }).contains("pool id"));
}

#[test]
fn open_refuses_scribbled_headers() {
    let seg = seg(4);
    let pool = raw(&seg, "objs", 64, 0);
    let zone = seg.lookup("objs").unwrap();
    let r = zone.region();
    let info: PoolInfo = r.read_copy(zone.offset).unwrap();
    type Scribble = Box<dyn Fn(&mut PoolInfo)>;
    let cases: Vec<(&str, Scribble)> = vec![
        ("magic", Box::new(|i| i.magic = *b"NOTAPOOL")),
        ("layout version", Box::new(|i| i.layout_major = 9)),
        ("geometry", Box::new(|i| i.obj_count = 0)),
        ("geometry", Box::new(|i| i.obj_size = 100)),
        ("offsets", Box::new(|i| i.objs_off += 128)),
        ("offsets", Box::new(|i| i.obj_count = 1 << 20)),
    ];
    for (want, scribble) in cases {
        let mut bad = info;
        scribble(&mut bad);
        r.write(zone.offset, &bad).unwrap();
        let err = Mempool::lookup(&seg, "objs").unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    r.write(zone.offset, &info).unwrap();
    assert!(Mempool::lookup(&seg, "objs").is_ok());
    drop(pool);
}

#[test]
fn exhaustion_and_bulk_all_or_nothing() {
    let seg = seg(4);
    for cache in [0, 16] {
        let pool = raw(&seg, &format!("p{cache}"), 100, cache);
        let mut h = pool.cache(ME).unwrap();
        let mut got = vec![0u32; 60];
        h.get_bulk(&mut got).unwrap();
        let mut more = vec![0u32; 60];
        assert!(matches!(
            h.get_bulk(&mut more),
            Err(PoolError::Exhausted { wanted: 60, .. })
        ));
        assert_eq!(pool.stats().get_fail, 1);
        assert_eq!(pool.stats().in_use, 60, "a failed bulk get takes nothing");
        let mut rest = vec![0u32; 40];
        h.get_bulk(&mut rest).unwrap();
        assert!(h.get().is_none());
        assert_eq!(pool.stats().available, 0);
        let mut all: Vec<u32> = got.iter().chain(&rest).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100, "every object handed out once");
        assert_eq!(h.put_bulk(&got), 60);
        assert_eq!(h.put_bulk(&rest), 40);
        drop(h);
        let a = pool.audit();
        assert_eq!((a.free, a.duplicates, a.missing), (100, 0, 0));
    }
}

#[test]
fn cache_refills_to_size_and_flushes_above_threshold() {
    let seg = seg(4);
    let pool = raw(&seg, "c", 1000, 32);
    let mut h = pool.cache(ME).unwrap();
    assert!(h.slot().is_some());
    // First get of 1 refills the cache to its size (32), then takes one.
    let a = h.get().unwrap();
    assert_eq!(h.cached(), 31);
    assert_eq!(pool.stats().in_ring, 1000 - 32);
    // Gets of >= cache size bypass the cache.
    let mut big = vec![0u32; 32];
    h.get_bulk(&mut big).unwrap();
    assert_eq!(h.cached(), 31);
    // Puts fill the cache up to 1.5 x size (48), then flush it entirely.
    h.put_bulk(&big[..17]);
    assert_eq!(h.cached(), 48);
    assert_eq!(pool.stats().in_caches, 48);
    h.put_bulk(&big[17..18]);
    assert_eq!(h.cached(), 1, "flushed 48 then cached the new one");
    h.put_bulk(&big[18..]);
    h.put(a);
    assert_eq!(pool.stats().available, 1000);
    h.flush();
    assert_eq!(h.cached(), 0);
    assert_eq!(pool.stats().in_ring, 1000);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process and probes pids")]
fn cache_slots_claim_release_and_recover_dead_owners() {
    let seg = seg(4);
    let pool = raw(&seg, "slots", 4096, 64);
    let mut handles: Vec<PoolCache> = (0..CACHE_SLOTS).map(|_| pool.cache(ME).unwrap()).collect();
    assert!(matches!(pool.cache(ME), Err(PoolError::NoCacheSlot { .. })));
    // Fill one cache, then make its slot look like a dead process's.
    let h = &mut handles[5];
    let got: Vec<u32> = (0..10).map(|_| h.get().unwrap()).collect();
    h.put_bulk(&got);
    let slot = h.slot().unwrap();
    let cached = h.cached();
    assert!(cached > 0);
    let dead = pid_of_exited_child();
    let hdr_off =
        seg.lookup("slots").unwrap().offset + CACHES_OFF + u64::from(slot) * CACHE_SLOT_STRIDE;
    let owner = seg.region().atomic_u32(hdr_off).unwrap();
    owner.store(dead, Ordering::Relaxed);
    // The handle must not release a slot it no longer owns.
    handles.remove(5).abandon();
    assert_eq!(pool.stats().available, 4096);
    let ring_before = pool.stats().in_ring;
    let taken = pool.cache(ME).unwrap();
    assert_eq!(
        taken.slot(),
        Some(slot),
        "the dead owner's slot is recovered"
    );
    assert_eq!(pool.stats().in_ring, ring_before + u64::from(cached));
    assert_eq!(pool.stats().caches_recovered, 1);
    drop(taken);
    drop(handles);
    assert_eq!(
        pool.stats().caches.len(),
        0,
        "dropping handles frees their slots"
    );
    let a = pool.audit();
    assert_eq!((a.free, a.duplicates), (4096, 0));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process and probes pids")]
fn flush_caches_of_a_dead_pid() {
    let seg = seg(4);
    let pool = raw(&seg, "f", 256, 16);
    let mut h = pool.cache(ME).unwrap();
    let x = h.get().unwrap();
    h.put(x);
    let cached = u64::from(h.cached());
    let slot = h.slot().unwrap();
    let dead = pid_of_exited_child();
    let hdr_off =
        seg.lookup("f").unwrap().offset + CACHES_OFF + u64::from(slot) * CACHE_SLOT_STRIDE;
    seg.region()
        .atomic_u32(hdr_off)
        .unwrap()
        .store(dead, Ordering::Relaxed);
    h.abandon();
    assert_eq!(pool.flush_caches_of(dead, None), cached);
    assert_eq!(pool.stats().in_ring, 256);
    assert!(pool.stats().caches.is_empty());
}

#[test]
fn corrupt_free_list_entries_are_rejected_and_counted() {
    let seg = seg(4);
    let pool = raw(&seg, "x", 16, 0);
    let mut h = pool.uncached();
    let mut all = vec![0u32; 16];
    h.get_bulk(&mut all).unwrap();
    // A peer puts garbage straight into the free ring.
    let ring = shm_ring::Ring::<u32>::open(
        seg.region(),
        seg.lookup("x").unwrap().offset + pool.info().ring_off,
        pool.info().ring_len,
    )
    .unwrap();
    ring.mp_producer()
        .unwrap()
        .enqueue_bulk(&[3, 99_999])
        .unwrap();
    let mut two = [0u32; 2];
    assert!(
        h.get_bulk(&mut two).is_err(),
        "an out-of-range entry fails the get"
    );
    assert_eq!(pool.stats().bad_handle, 1);
    // The valid entry went back; our own puts of bad indices are dropped too.
    assert_eq!(pool.stats().in_ring, 1);
    assert_eq!(h.put_bulk(&[u32::MAX, 1]), 1);
    assert_eq!(pool.stats().bad_handle, 2);
}

#[test]
fn mbuf_edit_edges() {
    let seg = seg(4);
    let pool = mbufs(&seg, 64, 8);
    let c = pool.cache(ME).unwrap();
    let mut m = c.alloc().unwrap();
    assert_eq!((m.data_len(), m.pkt_len(), m.nb_segs()), (0, 0, 1));
    assert_eq!((m.headroom(), m.tailroom()), (64, 256));
    assert!(m.append(257).is_none(), "more than the tailroom");
    m.append(256).unwrap().fill(0xab);
    assert_eq!(m.tailroom(), 0);
    assert!(m.append(1).is_none());
    assert!(m.prepend(65).is_none(), "more than the headroom");
    m.prepend(64).unwrap().fill(0x11);
    assert_eq!((m.headroom(), m.data_len(), m.pkt_len()), (0, 320, 320));
    assert!(!m.adj(321));
    assert!(m.adj(64));
    assert_eq!(m.data()[0], 0xab);
    assert!(!m.trim(257));
    assert!(m.trim(250));
    assert_eq!((m.data_len(), m.pkt_len()), (6, 6));
    assert!(m.trim(6));
    assert_eq!(m.data(), &[] as &[u8]);
    m.set_port(2);
    m.set_vlan_tci(100);
    m.set_rss_hash(0xdead);
    m.set_user_data(42);
    m.set_ol_flags(1);
    assert_eq!(
        (
            m.port(),
            m.vlan_tci(),
            m.rss_hash(),
            m.user_data(),
            m.ol_flags()
        ),
        (2, 100, 0xdead, 42, 1)
    );
    drop(m);
    // A reused buffer comes back reset.
    let m = c.alloc().unwrap();
    assert_eq!(
        (m.port(), m.vlan_tci(), m.data_len()),
        (mbuf::NO_PORT, 0, 0)
    );
    drop(m);
    drop(c);
    assert_eq!(pool.mempool().stats().available, 64);
}

#[test]
fn chains_copy_in_and_out() {
    let seg = seg(4);
    let pool = mbufs(&seg, 64, 0);
    let c = pool.cache(ME).unwrap();
    let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let m = c.alloc_from(&bytes).unwrap();
    assert_eq!(m.nb_segs(), 4, "1000 bytes in 256-byte segments");
    assert_eq!(m.pkt_len(), 1000);
    assert_eq!(m.to_vec(), bytes);
    let lens: Vec<usize> = m.segments().map(<[u8]>::len).collect();
    assert_eq!(lens, [256, 256, 256, 232]);
    let mut out = [0u8; 300];
    assert_eq!(m.copy_out(200, &mut out), 300);
    assert_eq!(&out[..], &bytes[200..500]);
    assert_eq!(m.copy_out(900, &mut out), 100);
    assert_eq!(pool.mempool().stats().in_use, 4);
    let mut m = m;
    assert_eq!(m.tailroom(), 24, "tailroom of the last segment");
    m.append(24).unwrap().fill(7);
    assert!(m.trim(30));
    assert_eq!(m.pkt_len(), 994);
    let tail = c.alloc_from(b"tail").unwrap();
    m.chain(tail).unwrap();
    assert_eq!((m.nb_segs(), m.pkt_len()), (5, 998));
    assert!(m.to_vec().ends_with(b"tail"));
    drop(m);
    assert_eq!(pool.mempool().stats().available, 64, "every segment freed");
    // Exhaustion while building a chain frees the partial chain.
    let big = vec![0u8; 256 * 65];
    assert!(c.alloc_from(&big).is_err());
    assert_eq!(pool.mempool().stats().available, 64);
}

#[test]
fn refcount_clones_share_read_only_and_free_once() {
    let seg = seg(4);
    let pool = mbufs(&seg, 16, 0);
    let c = pool.cache(ME).unwrap();
    let mut m = c.alloc_from(&[1u8; 300]).unwrap();
    let r = m.clone_ref();
    assert!(m.is_shared() && r.is_shared());
    assert!(m.data_mut().is_none() && m.append(1).is_none() && !m.adj(1));
    let m = match m.into_transit() {
        Err(m) => m,
        Ok(_) => panic!("a shared mbuf must not go into transit"),
    };
    drop(r);
    assert_eq!(pool.mempool().stats().in_use, 2, "one reference left");
    let mut m = m;
    assert!(!m.is_shared());
    m.data_mut().unwrap()[0] = 9;
    drop(m);
    assert_eq!(pool.mempool().stats().in_use, 0);
    assert_eq!(pool.mempool().stats().double_free, 0);
}

#[test]
fn reclaim_takes_back_a_private_transit_handle_with_the_same_checks() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let h = a.alloc_from(&[7u8; 700]).unwrap().into_transit().unwrap();
    let back = a.reclaim(h).unwrap();
    assert_eq!(back.to_vec(), vec![7u8; 700], "the whole chain comes back");
    assert_eq!(pool.owned_by(OwnerTag(2)), 3);
    assert!(
        matches!(a.reclaim(h), Err(MbufError::NotInTransit(_))),
        "a handle already taken back is refused"
    );
    assert!(matches!(
        a.reclaim(MbufHandle::new(3, 99)),
        Err(MbufError::BadHandle(_))
    ));
    drop(back);
    drop(a);
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn a_buffer_allocated_into_transit_comes_back_cut_to_what_was_written() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let (h, data, room) = a.alloc_in_transit().unwrap();
    assert_eq!(pool.owned_by(OwnerTag::TRANSIT), 1);
    // A device writes a 12-byte header and a 60-byte frame.
    for i in 0..72u8 {
        // SAFETY: inside the buffer's data room of `room` bytes.
        unsafe { data.wrapping_add(usize::from(i)).write(i) };
    }
    let mut m = a.reclaim(h).unwrap();
    assert_eq!(
        (m.data_len(), m.pkt_len() as usize),
        (room as usize, room as usize)
    );
    assert_eq!(m.data().as_ptr(), data.cast_const());
    let headroom = m.headroom();
    assert!(!m.keep_range(12, room as usize), "past the data: refused");
    assert!(m.keep_range(12, 60));
    assert_eq!(m.data(), &(12..72u8).collect::<Vec<_>>()[..]);
    assert_eq!((m.pkt_len(), m.headroom()), (60, headroom + 12));
    let clone = m.clone_ref();
    assert!(!m.keep_range(0, 10), "shared: refused");
    drop(clone);
    drop(m);
    drop(a);
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn into_transit_prepending_writes_the_new_bytes_and_refuses_what_it_cannot() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let m = a.alloc_from(&[9u8; 100]).unwrap();
    let headroom = m.headroom();
    let (h, data, len) = m.into_transit_prepending(12, |b| b.fill(0xee)).unwrap();
    assert_eq!(len, 112);
    assert_eq!(pool.owned_by(OwnerTag::TRANSIT), 1);
    let back = a.reclaim(h).unwrap();
    assert_eq!(back.data().as_ptr(), data);
    assert_eq!(&back.data()[..12], &[0xee; 12]);
    assert_eq!(&back.data()[12..], &[9u8; 100][..]);
    assert_eq!((back.pkt_len(), back.headroom()), (112, headroom - 12));
    // Too little headroom, a chain, a shared packet: all come back untouched.
    let back = back.into_transit_prepending(headroom, |_| {}).unwrap_err();
    assert_eq!(back.pkt_len(), 112);
    let chain = a.alloc_from(&[1u8; 700]).unwrap();
    assert!(chain.into_transit_prepending(12, |_| {}).is_err());
    let clone = back.clone_ref();
    let back = back.into_transit_prepending(12, |_| {}).unwrap_err();
    drop((back, clone));
    assert_eq!(pool.owned_by(OwnerTag::TRANSIT), 0);
    drop(a);
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn fill_writes_an_empty_bulk_mbuf_and_refuses_the_rest() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let mut v = Vec::with_capacity(3);
    a.alloc_bulk(&mut v, 3).unwrap();
    assert!(v[0].fill(&[3u8; 100]));
    assert_eq!((v[0].data(), v[0].pkt_len()), (&[3u8; 100][..], 100));
    assert!(!v[0].fill(&[4u8; 10]), "not empty any more");
    assert!(!v[1].fill(&[5u8; 257]), "more than the data room");
    assert!(v[1].fill(&[5u8; 256]));
    let clone = v[2].clone_ref();
    assert!(!v[2].fill(&[6u8; 10]), "shared");
    drop((v, clone));
    drop(a);
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn free_reclaimed_frees_a_private_transit_handle_once() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let one = a.alloc_from(&[1u8; 64]).unwrap().into_transit().unwrap();
    let chain = a.alloc_from(&[2u8; 700]).unwrap().into_transit().unwrap();
    a.free_reclaimed(one).unwrap();
    a.free_reclaimed(chain).unwrap();
    assert_eq!(pool.owned_by(OwnerTag::TRANSIT), 0);
    assert!(matches!(
        a.free_reclaimed(one),
        Err(MbufError::NotInTransit(_))
    ));
    assert!(matches!(
        a.free_reclaimed(MbufHandle::new(3, 99)),
        Err(MbufError::BadHandle(_))
    ));
    drop(a);
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn transit_adopt_and_duplicates() {
    let seg = seg(4);
    let pool = mbufs(&seg, 32, 4);
    let a = pool.cache(OwnerTag(2)).unwrap();
    let b = pool.cache(OwnerTag(3)).unwrap();
    let m = a.alloc_from(&[5u8; 700]).unwrap();
    let h = m.into_transit().unwrap();
    assert_eq!(pool.owned_by(OwnerTag::TRANSIT), 3);
    let got = b.adopt(h).unwrap();
    assert_eq!(got.to_vec(), vec![5u8; 700]);
    assert_eq!(pool.owned_by(OwnerTag(3)), 3);
    assert!(
        matches!(b.adopt(h), Err(MbufError::NotInTransit(_))),
        "a duplicate handle is refused"
    );
    assert!(matches!(
        b.adopt(MbufHandle::new(3, 32)),
        Err(MbufError::BadHandle(_))
    ));
    assert!(matches!(
        b.adopt(MbufHandle::new(4, 0)),
        Err(MbufError::BadHandle(_))
    ));
    assert_eq!(pool.mempool().stats().bad_handle, 3);
    drop(got);
    drop((a, b));
    assert_eq!(pool.mempool().stats().available, 32);
}

#[test]
fn double_free_is_caught_not_corrupting() {
    let seg = seg(4);
    let pool = mbufs(&seg, 8, 0);
    let zone = seg.lookup("mbufs").unwrap();
    let info = *pool.mempool().info();
    let hdr_off = |i: u32| zone.offset + info.objs_off + u64::from(i) * u64::from(info.obj_size);
    let r = seg.region();
    let a = pool.cache(OwnerTag(2)).unwrap();
    // A peer marks a held buffer free (as if someone else had freed it): our drop is a
    // double free, counted, and the buffer is not put into the free list twice.
    let m = a.alloc().unwrap();
    r.atomic_u32(hdr_off(m.index()) + 8)
        .unwrap()
        .store(0, Ordering::Relaxed);
    drop(m);
    assert_eq!(pool.mempool().stats().double_free, 1);
    // A reference count already at zero: counted the same way.
    let m = a.alloc().unwrap();
    r.atomic_u32(hdr_off(m.index()) + 12)
        .unwrap()
        .store(0, Ordering::Relaxed);
    drop(m);
    assert_eq!(pool.mempool().stats().double_free, 2);
    let audit = pool.mempool().audit();
    assert_eq!(
        (audit.duplicates, audit.free, audit.missing),
        (0, 6, 2),
        "the two buffers are lost to the pool, never duplicated"
    );
}

#[test]
fn corrupt_headers_rejected_on_adopt_and_clamped_on_access() {
    let seg = seg(4);
    let pool = mbufs(&seg, 16, 0);
    let zone = seg.lookup("mbufs").unwrap();
    let hdr_off = |i: u32| {
        zone.offset
            + pool.mempool().info().objs_off
            + u64::from(i) * u64::from(pool.mempool().obj_size())
    };
    let r = seg.region();
    let a = pool.cache(OwnerTag(2)).unwrap();
    let b = pool.cache(OwnerTag(3)).unwrap();
    // data_len past the data room.
    let mut m = a.alloc().unwrap();
    m.append(10).unwrap();
    let i = m.index();
    let h = m.into_transit().unwrap();
    r.write(hdr_off(i) + 22, &1000u16).unwrap();
    assert!(matches!(b.adopt(h), Err(MbufError::CorruptHeader(_))));
    assert_eq!(pool.mempool().stats().corrupt_header, 1);
    assert_eq!(
        pool.mempool().stats().available,
        16,
        "the bad buffer went back to the pool"
    );
    // A chain whose next points outside the pool.
    let m = a.alloc_from(&[1u8; 300]).unwrap();
    let i = m.index();
    let h = m.into_transit().unwrap();
    r.write(hdr_off(i) + 48, &MbufHandle::new(3, 999).0)
        .unwrap();
    assert!(b.adopt(h).is_err());
    assert_eq!(pool.mempool().stats().corrupt_header, 2);
    // Scribbled while held: access clamps to an empty span instead of reading outside.
    let m = a.alloc().unwrap();
    r.write(hdr_off(m.index()) + 16, &60_000u16).unwrap();
    assert_eq!(m.data(), &[] as &[u8]);
    assert_eq!(pool.mempool().stats().corrupt_header, 3);
    drop(m);
}

#[test]
fn reclaim_returns_a_dead_owners_buffers_but_not_transit() {
    let seg = seg(4);
    let pool = mbufs(&seg, 128, 16);
    let dead = OwnerTag(5);
    let c = pool.cache(dead).unwrap();
    let mut held = Vec::with_capacity(64);
    c.alloc_bulk(&mut held, 50).unwrap();
    let sent = c.alloc_from(&[0u8; 600]).unwrap().into_transit().unwrap();
    let cached = u64::from(c.cached());
    // The "process" dies: nothing is freed.
    held.drain(..).for_each(std::mem::forget);
    drop(held);
    let slot_pid = std::process::id();
    c.abandon();
    assert_eq!(pool.mempool().stats().in_use, 53);
    assert_eq!(pool.mempool().stats().in_caches, cached);
    // The primary flushes the dead caches and reclaims the dead tag.
    let flushed = pool
        .mempool()
        .flush_caches_of(slot_pid, process_start_time(slot_pid));
    assert_eq!(flushed, cached);
    assert_eq!(pool.mempool().caches_of(slot_pid), 0);
    let r = pool.reclaim_owner(dead);
    assert_eq!(r.returned, 50);
    assert_eq!(pool.mempool().stats().reclaimed, 50);
    assert_eq!(
        pool.mempool().stats().in_use,
        3,
        "the chain in transit is left"
    );
    let b = pool.cache(OwnerTag(6)).unwrap();
    drop(b.adopt(sent).unwrap());
    drop(b);
    assert_eq!(pool.mempool().stats().available, 128);
    let a = pool.mempool().audit();
    assert_eq!((a.free, a.duplicates, a.missing), (128, 0, 0));
}

#[test]
fn threads_share_a_pool_without_losing_objects() {
    let seg = seg(8);
    let pool = raw(&seg, "mt", 2048, 64);
    let ops = if cfg!(miri) { 200 } else { 200_000 };
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let pool = pool.clone();
            s.spawn(move || {
                let mut h = pool.cache(OwnerTag(t + 2)).unwrap();
                let mut buf = [0u32; 48];
                for i in 0..ops {
                    let n = 1 + (i % 48);
                    if h.get_bulk(&mut buf[..n]).is_ok() {
                        h.put_bulk(&buf[..n]);
                    }
                }
            });
        }
    });
    let a = pool.audit();
    assert_eq!((a.free, a.duplicates, a.out_of_range), (2048, 0, 0));
}

/// A flush into a free ring short of room (its consumer tail held by a stopped refill, here
/// stood in for by indices put twice) keeps what the ring refuses in the cache, the
/// bottom of its stack, instead of dropping it; once the ring has room again the next
/// flush sends the rest.
#[test]
fn a_flush_the_ring_refuses_in_part_keeps_the_rest_cached() {
    let seg = seg(4);
    let pool = raw(&seg, "tight", 100, 32);
    let mut h = pool.cache(ME).unwrap();
    let a = h.get().unwrap();
    assert_eq!(h.cached(), 31);
    // Fill the ring to the brim (the last put is refused and counted).
    let mut u = pool.uncached();
    while u.put_bulk(&[a]) == 1 {}
    let filled = pool.stats().put_fail;
    assert_eq!(filled, 1);
    // The cache up to its threshold, then room for ten in the ring.
    assert_eq!(h.put_bulk(&[a; 17]), 17);
    assert_eq!(h.cached(), 48);
    let mut ten = [0u32; 10];
    u.get_bulk(&mut ten).unwrap();
    // Over the threshold: the ring takes the top ten, the other 38 stay, the new one on top.
    assert_eq!(h.put_bulk(&[a]), 1);
    assert_eq!(h.cached(), 39, "what the ring refused stays in the cache");
    assert_eq!(pool.stats().put_fail, filled, "nothing dropped");
    // Room again: everything goes.
    let mut room = vec![0u32; 64];
    u.get_bulk(&mut room).unwrap();
    h.flush();
    assert_eq!(h.cached(), 0);
    assert_eq!(pool.stats().put_fail, filled);
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process and reads /proc")]
fn a_slot_under_a_reused_pid_is_taken_over_and_a_live_holders_kept() {
    use shm::liveness::Process;
    let seg = seg(4);
    let pool = raw(&seg, "reused", 64, 8);
    let sh = &pool.shared;
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let live = Process::of(child.id()).unwrap();
    let reused = Process {
        start_time: live.start_time - 1,
        ..live
    };
    // Slot 0 is the live child's; every other slot names its pid with another start time.
    for slot in 0..CACHE_SLOTS {
        let h = if slot == 0 { live } else { reused };
        sh.slot_header(slot).holder.forge(h, 9);
    }
    let c = pool.cache(ME).unwrap();
    assert_eq!(pool.caches_of(std::process::id()), 1);
    assert_eq!(sh.slot_header(0).holder.holder(), Some(live));
    assert_eq!(sh.slot_header(1).holder.tag(), ME.0);
    drop(c);
    assert_eq!(pool.caches_of(std::process::id()), 0);
    // The primary's sweep frees the reused-pid slots and keeps the live one.
    pool.flush_dead_caches();
    assert_eq!(pool.caches_of(live.pid), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    pool.flush_dead_caches();
    assert_eq!(pool.caches_of(live.pid), 0);
    assert_eq!(pool.audit().free, 64);
}

#[test]
fn the_object_init_hook_runs_once_per_object_before_the_pool_opens() {
    let seg = seg(4);
    let params = PoolParams {
        count: 100,
        obj_size: 200,
        cache_size: 0,
        pool_id: 9,
        flags: 0,
        headroom: 0,
        data_room: 0,
    };
    let mut seen = Vec::new();
    let mut hook = |index: u32, obj: std::ptr::NonNull<[u8]>| {
        assert_eq!(obj.len(), 256, "obj_size rounded up to OBJ_ALIGN");
        assert!((obj.cast::<u8>().as_ptr() as usize).is_multiple_of(OBJ_ALIGN as usize));
        // SAFETY: the pool's span of this object, not yet shared; a raw write.
        unsafe { obj.cast::<u32>().as_ptr().write(index ^ 0xa5a5) };
        seen.push(index);
    };
    let pool = Mempool::create_with(&seg, "hooked", &params, &mut hook).unwrap();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    let sh = &pool.shared;
    for i in 0..100u32 {
        let at = sh
            .objs
            .as_ptr()
            .wrapping_add(i as usize * 256)
            .cast::<u32>();
        // SAFETY: object `i`'s first word, inside the objects span; nobody writes it.
        assert_eq!(unsafe { at.read() }, i ^ 0xa5a5);
    }
}

#[test]
fn an_mbuf_pool_is_not_laid_out_without_its_header_hook() {
    let seg = seg(4);
    let params = PoolParams {
        count: 16,
        obj_size: 128 + 64 + 256,
        cache_size: 0,
        pool_id: 9,
        flags: POOL_F_MBUF,
        headroom: 64,
        data_room: 256,
    };
    let e = Mempool::create(&seg, "nohook", &params).unwrap_err();
    assert!(e.to_string().contains("MbufPool::create"), "{e}");
    // Through the mbuf pool, every header says which buffer it is.
    let mut p = MbufPoolParams::new(16, 0, 9);
    (p.headroom, p.data_room) = (64, 256);
    let pool = MbufPool::create(&seg, "hooked", &p).unwrap();
    let c = pool.cache(ME).unwrap();
    let m = c.alloc().unwrap();
    assert_eq!(m.handle().pool_id(), 9);
    assert_eq!(
        (m.headroom(), m.tailroom(), m.port()),
        (64, 256, crate::mbuf::NO_PORT)
    );
}

#[test]
fn free_bulk_frees_simple_ones_in_bulk_and_the_rest_one_by_one() {
    let seg = seg(4);
    let pool = mbufs(&seg, 127, 32);
    let c = pool.cache(ME).unwrap();
    let mut v: Vec<_> = (0..40).map(|_| c.alloc().unwrap()).collect();
    // A chain, and a clone pair (one reference kept outside).
    let mut chain = c.alloc_from(&[1u8; 10]).unwrap();
    chain.chain(c.alloc_from(&[2u8; 10]).unwrap()).unwrap();
    v.push(chain);
    let kept = v[3].clone_ref();
    assert_eq!(pool.mempool().stats().in_use, 42);
    c.free_bulk(&mut v);
    assert!(v.is_empty());
    assert_eq!(
        pool.mempool().stats().in_use,
        1,
        "the clone keeps its buffer"
    );
    drop(kept);
    let st = pool.mempool().stats();
    assert_eq!((st.in_use, st.double_free, st.available), (0, 0, 127));
    // More than the cache can take without a flush, and more than one chunk: the rest go
    // one by one, still exact.
    let mut v: Vec<_> = (0..100).map(|_| c.alloc().unwrap()).collect();
    c.free_bulk(&mut v);
    let st = pool.mempool().stats();
    assert_eq!((st.in_use, st.double_free, st.available), (0, 0, 127));
}
