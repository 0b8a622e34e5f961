//! Fixed layout of a mempool inside its memzone. Offsets from the start of the memzone:
//!
//! ```text
//! 0        256   PoolInfo      magic "SHMDPMPL", layout version, sizes, counts, offsets,
//!                              mbuf geometry, name   (written once, read as a copy)
//! 256      64    PoolCounters  get/put failures, bad handles, double frees, corrupt
//!                              headers, reclaimed objects (atomics)
//! 320      64    (guard)
//! 384      CACHE_SLOT_STRIDE x cache_slots
//!                CacheSlot     owner pid, owner tag, owner start time, length, then
//!                              CACHE_OBJS object indices (the per-lcore cache, a stack)
//! ring_off ring_len  the free list: a shm-ring MP/MC ring of u32 object indices,
//!                    capacity exactly obj_count
//! objs_off obj_size x obj_count  the objects (obj_size is a multiple of 64; objects of an
//!                    mbuf pool start with a 128-byte MbufHeader)
//! ```
//!
//! Objects are addressed by **index** (`0..obj_count`); their address is
//! `objs_off + index * obj_size` from the memzone start in whatever process maps it. Every
//! offset is recomputed from the counts when a pool is opened and must match exactly, so a
//! scribbled header is refused, not trusted.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use shm::layout::NAME_LEN;
use shm::liveness::Holder;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First bytes of every mempool.
pub const POOL_MAGIC: [u8; 8] = *b"SHMDPMPL";
/// Layout major version; readers refuse any other.
pub const POOL_LAYOUT_MAJOR: u16 = 4;
/// Layout minor version.
pub const POOL_LAYOUT_MINOR: u16 = 0;
/// Size of [`PoolInfo`].
pub const POOL_INFO_SIZE: u64 = 256;
/// Offset of [`PoolCounters`].
pub const COUNTERS_OFF: u64 = 256;
/// Offset of cache slot 0.
pub const CACHES_OFF: u64 = 384;
/// Cache slots (lcore slots) per pool: how many threads, across all processes, may hold
/// a cache of one pool at once.
pub const CACHE_SLOTS: u32 = 64;
/// Largest per-lcore cache size (as DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`).
pub const CACHE_MAX_SIZE: u32 = 512;
/// Index capacity of one cache: twice the largest size, as DPDK.
pub const CACHE_OBJS: u32 = 2 * CACHE_MAX_SIZE;
/// Bytes per cache slot: a 64-byte header and the index array.
pub const CACHE_SLOT_STRIDE: u64 = 64 + CACHE_OBJS as u64 * 4;
/// Objects start on a 128-byte boundary (two cache lines: the adjacent-line prefetcher
/// never pairs two objects' headers).
pub const OBJ_ALIGN: u64 = 128;
/// Most objects in one pool (indices stay below `u32::MAX`, and the free ring holds them).
pub const MAX_OBJS: u32 = 1 << 24;

/// Pool flag: objects are mbufs (start with an [`crate::mbuf::MbufHeader`]).
pub const POOL_F_MBUF: u32 = 1 << 0;
/// Flags this build knows.
pub const POOL_F_KNOWN: u32 = POOL_F_MBUF;

/// The pool's description, written once at creation and read by every opener as a
/// validated copy (never re-read for decisions).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PoolInfo {
    /// [`POOL_MAGIC`].
    pub magic: [u8; 8],
    /// [`POOL_LAYOUT_MAJOR`].
    pub layout_major: u16,
    /// [`POOL_LAYOUT_MINOR`].
    pub layout_minor: u16,
    /// [`POOL_INFO_SIZE`].
    pub info_size: u32,
    /// `POOL_F_*` flags.
    pub flags: u32,
    /// Pool id, unique within one primary's run (mbuf handles carry it).
    pub pool_id: u32,
    /// Number of objects.
    pub obj_count: u32,
    /// Bytes per object (stride), a multiple of [`OBJ_ALIGN`].
    pub obj_size: u32,
    /// Target per-lcore cache size (0 = no caches).
    pub cache_size: u32,
    /// A cache holding more than this after a put flushes to the ring.
    pub flush_threshold: u32,
    /// Number of cache slots ([`CACHE_SLOTS`]).
    pub cache_slots: u32,
    /// Mbuf pools: headroom bytes before the data.
    pub headroom: u32,
    /// Mbuf pools: data room bytes after the headroom.
    pub data_room: u32,
    /// Zero.
    pub reserved0: u32,
    /// Offset of the free ring.
    pub ring_off: u64,
    /// Bytes of the free ring.
    pub ring_len: u64,
    /// Offset of object 0.
    pub objs_off: u64,
    /// Bytes used by the whole pool.
    pub total_len: u64,
    /// Name, NUL padded.
    pub name: [u8; NAME_LEN],
    /// Zero.
    pub reserved: [u8; 136],
}

/// Pool-wide event counters (only bumped on cold paths: failures and repairs).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PoolCounters {
    /// Gets that found too few objects.
    pub get_fail: AtomicU64,
    /// Puts refused (free ring full: more objects returned than exist).
    pub put_fail: AtomicU64,
    /// Object indices or mbuf handles out of range or for another pool, dropped.
    pub bad_handle: AtomicU64,
    /// Frees of an object that was not owned by the caller (already free or elsewhere).
    pub double_free: AtomicU64,
    /// Mbuf headers with impossible fields (rejected on adopt, clamped on access).
    pub corrupt_header: AtomicU64,
    /// Objects returned to the pool on behalf of a dead process.
    pub reclaimed: AtomicU64,
    /// Caches of dead threads or processes flushed back to the ring.
    pub caches_recovered: AtomicU64,
    /// Zero.
    pub reserved: AtomicU64,
}

/// Header of one cache slot. Only the thread that claimed the slot touches `len` and the
/// index array after it; the primary reads them when the owner is dead.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct CacheSlotHeader {
    /// The claim ([`shm::liveness::Holder`]): the claiming process's pid and start time
    /// (so a reused pid is not mistaken for the owner), and as its tag the owner tag of
    /// the claimant (see [`crate::OwnerTag`]), for statistics. A process flushing a dead
    /// owner's cache holds the slot under its own identity meanwhile (layout 4; 3
    /// wrote `u32::MAX` as the pid, which bricked the slot if that process died).
    pub holder: Holder,
    /// Indices held in the cache (the owner's copy is authoritative; this one is written
    /// after every operation so a reclaimer knows what to flush).
    pub len: AtomicU32,
    /// The free-ring operation in progress between this cache and the free ring, so that
    /// a recovery after a kill knows where its objects are: `CACHE_OP_*` kind in bits
    /// 0..2, the handle's ring record index in bits 8..16 (0 = none in progress).
    pub op: AtomicU32,
    /// The ring operation's sequence number (`next_op_seq` before it started).
    pub op_seq: AtomicU32,
    /// The cache length the operation starts from: a refill copies to the positions from
    /// there up, a flush sends the objects from there down (topmost first), so whatever
    /// part the ring takes, what it leaves is the bottom of the stack, still in place.
    pub op_from: AtomicU32,
    /// Zero.
    pub reserved: [u32; 8],
}

/// [`CacheSlotHeader::op`] kind: a refill from the free ring (a consumer operation).
pub const CACHE_OP_REFILL: u32 = 1;
/// [`CacheSlotHeader::op`] kind: a flush to the free ring (a producer operation).
pub const CACHE_OP_FLUSH: u32 = 2;

const _: () = {
    assert!(std::mem::size_of::<PoolInfo>() as u64 == POOL_INFO_SIZE);
    assert!(std::mem::size_of::<PoolCounters>() == 64);
    assert!(std::mem::size_of::<CacheSlotHeader>() == 64);
    assert!(std::mem::offset_of!(CacheSlotHeader, len) == 16);
    assert!(COUNTERS_OFF + 64 <= CACHES_OFF);
    assert!(CACHE_SLOT_STRIDE.is_multiple_of(64));
};

/// Room the free ring keeps beyond the objects for holes: the positions a repaired dead
/// producer's reservation leaves (see shm-ring's records) take capacity until a consumer
/// skips them, and the objects of that reservation, still in the dead process's cache,
/// must then fit too. Two full caches' worth covers the flushes in flight.
pub const HOLE_ROOM: u32 = 2 * CACHE_OBJS;

/// Capacity of the free ring of a pool of `obj_count` objects.
pub fn free_ring_capacity(obj_count: u32) -> Option<u32> {
    obj_count.checked_add(HOLE_ROOM)
}

/// Where everything goes for a pool of `obj_count` objects of `obj_size` bytes (already a
/// multiple of [`OBJ_ALIGN`]): `(ring_off, ring_len, objs_off, total_len)`, or `None` on
/// overflow or a count the ring cannot hold.
pub fn pool_offsets(obj_count: u32, obj_size: u32) -> Option<(u64, u64, u64, u64)> {
    let ring_off = CACHES_OFF + u64::from(CACHE_SLOTS) * CACHE_SLOT_STRIDE;
    let ring_len = shm_ring::ring_bytes::<u32>(free_ring_capacity(obj_count)?)?;
    let objs_off = (ring_off + ring_len).next_multiple_of(OBJ_ALIGN);
    let total = objs_off.checked_add(u64::from(obj_count).checked_mul(u64::from(obj_size))?)?;
    Some((ring_off, ring_len, objs_off, total))
}

// Mbuf pools ([`POOL_F_MBUF`]): every object begins with this header. It is pinned here,
// beside the pool's other layouts, because the pool's own recovery touches it (a dead
// cache's buffers are marked free before the reclaim by tag); `crate::mbuf` builds on it
// and hands the pool its header initialisation as an object-init hook.

/// Bytes of [`MbufHeader`].
pub const MBUF_HEADER_SIZE: u32 = 128;
/// The fixed header at the start of every mbuf (see [`crate::mbuf`] for what each field
/// means to the fast path).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    /// Object index of this buffer in its pool (identity check).
    pub index: u32,
    /// Id of the pool it belongs to (identity check).
    pub pool_id: u32,
    /// Holder ([`crate::OwnerTag`] value).
    pub owner: AtomicU32,
    /// References (1 when not cloned; 0 while free).
    pub refcnt: AtomicU32,
    /// Offset of the data from the start of the buffer (after the header).
    pub data_off: u16,
    /// Segments in the packet (meaningful in the first segment).
    pub nb_segs: u16,
    /// Input port, or `NO_PORT` (`u16::MAX`: not from a port).
    pub port: u16,
    /// Data bytes in this segment.
    pub data_len: u16,
    /// Data bytes in the whole packet (meaningful in the first segment).
    pub pkt_len: u32,
    /// Packet type (DPDK `RTE_PTYPE_*` style bits).
    pub packet_type: u32,
    /// Offload flags.
    pub ol_flags: u64,
    /// VLAN tag.
    pub vlan_tci: u16,
    /// Outer VLAN tag.
    pub vlan_tci_outer: u16,
    /// RSS hash.
    pub rss_hash: u32,
    /// Handle of the next segment; 0 for the last.
    pub next: u64,
    /// Headroom + data room (informational; the pool's value is authoritative).
    pub buf_len: u32,
    /// Zero.
    pub reserved0: u32,
    /// Application data.
    pub user_data: u64,
    /// Timestamp (application or port defined).
    pub timestamp: u64,
    /// Transmit offload lengths.
    pub tx_offload: u64,
    /// Zero.
    pub reserved1: [u64; 5],
}

const _: () = {
    assert!(std::mem::size_of::<MbufHeader>() == MBUF_HEADER_SIZE as usize);
    assert!(std::mem::offset_of!(MbufHeader, next) == 48);
    assert!(std::mem::offset_of!(MbufHeader, user_data) == 64);
};

/// Checks an mbuf pool's geometry (called when a pool is opened): its objects hold the
/// header, the headroom and the data room.
pub(crate) fn check_mbuf_geometry(info: &PoolInfo) -> Result<(), String> {
    let buf = u64::from(info.headroom) + u64::from(info.data_room);
    if buf > u64::from(u16::MAX) || info.data_room == 0 {
        return Err(format!(
            "headroom {} + data room {} must be 1..=65535 bytes",
            info.headroom, info.data_room
        ));
    }
    if u64::from(info.obj_size) < u64::from(MBUF_HEADER_SIZE) + buf {
        return Err("objects are smaller than header + headroom + data room".into());
    }
    Ok(())
}

/// Address of object `index`'s mbuf header (`index < obj_count` keeps it in bounds).
#[inline(always)]
pub(crate) fn mbuf_header_ptr(objs: NonNull<u8>, obj_size: u32, index: u32) -> *mut MbufHeader {
    objs.as_ptr()
        .wrapping_add(index as usize * obj_size as usize)
        .cast::<MbufHeader>()
}
