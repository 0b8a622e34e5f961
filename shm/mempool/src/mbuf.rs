//! Packet buffers (mbufs): the objects of an mbuf pool, each a fixed 128-byte header
//! followed by headroom and data room, and the safe API over them.
//!
//! Object layout (offsets from the object start; the object stride is a multiple of 128):
//!
//! ```text
//! 0     128  MbufHeader   (two cache lines, below)
//! 128   headroom          (default 128 B: room to prepend headers)
//! ...   data room         (default 2048 B)
//! ```
//!
//! [`MbufHeader`], line 0 (what the fast path touches): `index` and `pool_id` (the buffer's
//! identity, checked on adopt), `owner` (an [`OwnerTag`]), `refcnt`, `data_off`, `nb_segs`,
//! `port`, `data_len`, `pkt_len`, `packet_type`, `ol_flags`, `vlan_tci`, `vlan_tci_outer`,
//! `rss_hash`, `next` (the next segment's [`MbufHandle`], 0 = last), `buf_len`; line 1:
//! `user_data`, `timestamp`, `tx_offload`, reserved.
//!
//! Where it sits: a process allocates mbufs from its [`MbufCache`] (a per-thread handle
//! with a cache slot in shared memory), fills them, and hands them to another process or a
//! port through a ring as an [`MbufHandle`] ([`Mbuf::into_transit`]); the receiver turns
//! the handle back into an [`Mbuf`] with [`MbufCache::adopt`], which validates everything
//! it reads. Dropping an `Mbuf` frees it (every segment) to the dropper's cache.
//!
//! Ownership is written into each header so a dead process's buffers can be found: `owner`
//! is the holder's tag while a process holds it, [`OwnerTag::TRANSIT`] while it sits in a
//! ring, [`OwnerTag::FREE`] in the pool. Adopting is a compare-and-swap from `TRANSIT`, so
//! a duplicated or stale handle is refused instead of giving two processes one buffer, and
//! freeing checks the tag, so a double free is counted instead of corrupting the free list.
//! [`MbufPool::reclaim_owner`] returns a dead process's buffers. Reference-counted clones
//! ([`Mbuf::clone_ref`]) stay inside one process: only a buffer with one reference may go
//! into transit.
//!
//! Headers live in memory other processes (and guests) can write: fields are re-validated
//! on each access and an impossible value is clamped (an empty data span) and counted,
//! never used to reach outside the buffer.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use shm::Memseg;

use crate::layout::{PoolInfo, POOL_F_MBUF};
use crate::owner::OwnerTag;
use crate::pool::{Mempool, PoolCache, PoolParams, Trouble};
use crate::PoolError;

/// Bytes of [`MbufHeader`].
pub const MBUF_HEADER_SIZE: u32 = 128;
/// Default headroom (as DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const DEFAULT_HEADROOM: u32 = 128;
/// Default data room (as DPDK's `RTE_MBUF_DEFAULT_DATAROOM`).
pub const DEFAULT_DATA_ROOM: u32 = 2048;
/// Most segments in one packet.
pub const MAX_SEGS: u16 = u16::MAX;
/// `port` of an mbuf that did not come from a port.
pub const NO_PORT: u16 = u16::MAX;

/// The fixed header at the start of every mbuf (see the module docs for the layout).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    /// Object index of this buffer in its pool (identity check).
    pub index: u32,
    /// Id of the pool it belongs to (identity check).
    pub pool_id: u32,
    /// Holder ([`OwnerTag`] value).
    pub owner: AtomicU32,
    /// References (1 when not cloned; 0 while free).
    pub refcnt: AtomicU32,
    /// Offset of the data from the start of the buffer (after the header).
    pub data_off: u16,
    /// Segments in the packet (meaningful in the first segment).
    pub nb_segs: u16,
    /// Input port, or [`NO_PORT`].
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

/// An mbuf as it travels between processes: pool id in the high 32 bits, object index in
/// the low 32. Never 0 (pool ids are non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MbufHandle(pub u64);

impl MbufHandle {
    /// Builds a handle.
    pub fn new(pool_id: u32, index: u32) -> MbufHandle {
        MbufHandle((u64::from(pool_id) << 32) | u64::from(index))
    }

    /// Pool id.
    pub fn pool_id(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Object index.
    pub fn index(self) -> u32 {
        self.0 as u32
    }
}

/// Mbuf pool parameters (as `rte_pktmbuf_pool_create`).
#[derive(Debug, Clone, Copy)]
pub struct MbufPoolParams {
    /// Number of mbufs.
    pub count: u32,
    /// Per-lcore cache size (0..=512).
    pub cache_size: u32,
    /// Data room bytes per mbuf.
    pub data_room: u32,
    /// Headroom bytes per mbuf.
    pub headroom: u32,
    /// Pool id (non-zero, unique within the run).
    pub pool_id: u32,
}

impl MbufPoolParams {
    /// `count` mbufs with the default headroom and data room.
    pub fn new(count: u32, cache_size: u32, pool_id: u32) -> MbufPoolParams {
        MbufPoolParams {
            count,
            cache_size,
            data_room: DEFAULT_DATA_ROOM,
            headroom: DEFAULT_HEADROOM,
            pool_id,
        }
    }

    fn pool_params(&self) -> PoolParams {
        PoolParams {
            count: self.count,
            obj_size: MBUF_HEADER_SIZE + self.headroom + self.data_room,
            cache_size: self.cache_size,
            pool_id: self.pool_id,
            flags: POOL_F_MBUF,
            headroom: self.headroom,
            data_room: self.data_room,
        }
    }

    /// Bytes the pool needs in a memseg.
    pub fn bytes(&self) -> Option<u64> {
        crate::pool::pool_bytes(&self.pool_params())
    }
}

/// Checks an mbuf pool's geometry (called when a pool is opened).
pub(crate) fn check_geometry(info: &PoolInfo) -> Result<(), String> {
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

/// Writes every free header of a fresh pool.
pub(crate) fn init_headers(pool: &Mempool) {
    let sh = &pool.shared;
    for index in 0..sh.info.obj_count {
        let hdr = header_ptr(sh.objs, sh.info.obj_size, index);
        let fresh = MbufHeader {
            index,
            pool_id: sh.info.pool_id,
            owner: AtomicU32::new(OwnerTag::FREE.0),
            refcnt: AtomicU32::new(0),
            data_off: sh.info.headroom as u16,
            nb_segs: 1,
            port: NO_PORT,
            data_len: 0,
            pkt_len: 0,
            packet_type: 0,
            ol_flags: 0,
            vlan_tci: 0,
            vlan_tci_outer: 0,
            rss_hash: 0,
            next: 0,
            buf_len: sh.info.headroom + sh.info.data_room,
            reserved0: 0,
            user_data: 0,
            timestamp: 0,
            tx_offload: 0,
            reserved1: [0; 5],
        };
        // SAFETY: `index < obj_count`, so the header lies in the objects span checked at
        // open, aligned to 128; the pool is being created and not yet shared.
        unsafe { hdr.write(fresh) };
    }
}

/// Address of object `index`'s header (`index < obj_count` keeps it in bounds).
#[inline(always)]
pub(crate) fn header_ptr(objs: NonNull<u8>, obj_size: u32, index: u32) -> *mut MbufHeader {
    objs.as_ptr()
        .wrapping_add(index as usize * obj_size as usize)
        .cast::<MbufHeader>()
}

/// An mbuf pool: a [`Mempool`] whose objects are mbufs.
#[derive(Debug, Clone)]
pub struct MbufPool {
    pool: Mempool,
}

/// What [`MbufPool::reclaim_owner`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Buffers returned to the pool.
    pub returned: u64,
}

impl MbufPool {
    /// Creates an mbuf pool in `seg` (primary only), like `rte_pktmbuf_pool_create`.
    ///
    /// # Errors
    /// [`PoolError::Create`] for bad parameters or no room.
    pub fn create(
        seg: &Memseg,
        name: &str,
        params: &MbufPoolParams,
    ) -> Result<MbufPool, PoolError> {
        if u64::from(params.headroom) + u64::from(params.data_room) > u64::from(u16::MAX)
            || params.data_room == 0
        {
            return Err(PoolError::Create(format!(
                "mbuf pool {name:?}: headroom {} + data room {} must be 1..=65535 bytes",
                params.headroom, params.data_room
            )));
        }
        MbufPool::from_mempool(Mempool::create(seg, name, &params.pool_params())?)
    }

    /// Finds the mbuf pool named `name` in `seg`.
    ///
    /// # Errors
    /// [`PoolError::BadPool`] if absent, invalid or not an mbuf pool.
    pub fn lookup(seg: &Memseg, name: &str) -> Result<MbufPool, PoolError> {
        MbufPool::from_mempool(Mempool::lookup(seg, name)?)
    }

    /// Views an opened pool as an mbuf pool.
    ///
    /// # Errors
    /// [`PoolError::BadPool`] if it is not one.
    pub fn from_mempool(pool: Mempool) -> Result<MbufPool, PoolError> {
        if !pool.is_mbuf_pool() {
            return Err(PoolError::BadPool(format!(
                "pool {} holds plain objects, not mbufs",
                pool.name()
            )));
        }
        Ok(MbufPool { pool })
    }

    /// The underlying object pool (statistics, audit).
    pub fn mempool(&self) -> &Mempool {
        &self.pool
    }

    /// Data room per mbuf.
    pub fn data_room(&self) -> u32 {
        self.pool.info().data_room
    }

    /// Headroom per mbuf.
    pub fn headroom(&self) -> u32 {
        self.pool.info().headroom
    }

    /// A per-thread allocator for a process whose owner tag is `owner`. The guest's tag
    /// ([`OwnerTag::GUEST`]) gets an allocator without a cache slot, as
    /// [`MbufPool::uncached`]: a guest's pid means nothing to the host processes that judge
    /// slot holders by pid.
    ///
    /// # Errors
    /// As [`Mempool::cache`].
    pub fn cache(&self, owner: OwnerTag) -> Result<MbufCache, PoolError> {
        if owner == OwnerTag::GUEST {
            return self.uncached(owner);
        }
        if !owner.is_process() {
            return Err(PoolError::Create(format!(
                "owner tag {} is not a process tag",
                owner.0
            )));
        }
        let sh = &self.pool.shared;
        Ok(MbufCache {
            cache: UnsafeCell::new(self.pool.cache(owner)?),
            pool: self.clone(),
            owner: owner.0,
            pool_id: sh.info.pool_id,
            n: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            objs: sh.objs,
            headroom: sh.info.headroom as u16,
            buf_len: sh.info.headroom + sh.info.data_room,
        })
    }

    /// A per-thread allocator without a cache slot: every get and put goes to the free
    /// ring. For processes whose pid means nothing to the host (a guest), which must not
    /// hold a cache slot that host processes judge by pid.
    ///
    /// # Errors
    /// [`PoolError::Create`] for a tag that is not a process tag.
    pub fn uncached(&self, owner: OwnerTag) -> Result<MbufCache, PoolError> {
        if !owner.is_process() {
            return Err(PoolError::Create(format!(
                "owner tag {} is not a process tag",
                owner.0
            )));
        }
        let sh = &self.pool.shared;
        Ok(MbufCache {
            cache: UnsafeCell::new(self.pool.uncached()),
            pool: self.clone(),
            owner: owner.0,
            pool_id: sh.info.pool_id,
            n: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            objs: sh.objs,
            headroom: sh.info.headroom as u16,
            buf_len: sh.info.headroom + sh.info.data_room,
        })
    }

    /// Buffers whose header says `owner` holds them.
    pub fn owned_by(&self, owner: OwnerTag) -> u64 {
        let sh = &self.pool.shared;
        (0..sh.info.obj_count)
            .filter(|&i| {
                let hdr = header_ptr(sh.objs, sh.info.obj_size, i);
                // SAFETY: `i < obj_count`: in the objects span; an atomic load.
                let tag = unsafe { &(*hdr).owner }.load(Ordering::Relaxed);
                tag == owner.0
            })
            .count() as u64
    }

    /// Returns to the pool every buffer tagged with `owner`, a process that is gone (the
    /// caller guarantees it: the primary calls this when a secondary's connection closes,
    /// before its slot is reused). Buffers in transit (in a ring) or held by others are
    /// untouched. Flush the dead process's caches first ([`Mempool::flush_caches_of`]).
    pub fn reclaim_owner(&self, owner: OwnerTag) -> Reclaimed {
        let sh = &self.pool.shared;
        let mut put = self.pool.uncached();
        let mut batch = Vec::with_capacity(256);
        let mut out = Reclaimed::default();
        for i in 0..sh.info.obj_count {
            let hdr = header_ptr(sh.objs, sh.info.obj_size, i);
            // SAFETY: `i < obj_count`: in the objects span, aligned; a reference to the
            // atomic field only (never to the header: a guest may write the pool).
            let tag = unsafe { &(*hdr).owner };
            // SAFETY: as above.
            let refcnt = unsafe { &(*hdr).refcnt };
            // Acquire: pairs with nothing live (the owner is dead); the CAS keeps a
            // confused caller from taking a buffer a live process tagged meanwhile.
            if tag
                .compare_exchange(
                    owner.0,
                    OwnerTag::FREE.0,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            refcnt.store(0, Ordering::Relaxed);
            batch.push(i);
            if batch.len() == batch.capacity() {
                out.returned += put.put_bulk(&batch) as u64;
                batch.clear();
            }
        }
        out.returned += put.put_bulk(&batch) as u64;
        sh.counters()
            .reclaimed
            .fetch_add(out.returned, Ordering::Relaxed);
        out
    }
}

/// A per-thread mbuf allocator: a [`PoolCache`] plus the pool's geometry and this
/// process's owner tag. Not `Sync`: mbufs borrow it and free into it.
pub struct MbufCache {
    cache: UnsafeCell<PoolCache>,
    pool: MbufPool,
    pub(crate) owner: u32,
    pub(crate) pool_id: u32,
    pub(crate) n: u32,
    obj_size: u32,
    objs: NonNull<u8>,
    headroom: u16,
    buf_len: u32,
}

// SAFETY: `objs` points into the pool's region kept mapped by `pool`; the cache slot
// belongs to this handle, not to a thread. (Not Sync: the UnsafeCell.)
unsafe impl Send for MbufCache {}

impl std::fmt::Debug for MbufCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufCache")
            .field("pool", &self.pool.mempool().name())
            .field("owner", &self.owner)
            .finish()
    }
}

impl MbufCache {
    /// The pool.
    pub fn pool(&self) -> &MbufPool {
        &self.pool
    }

    /// Drops the handle as a killed process would (see `PoolCache::abandon`).
    #[cfg(test)]
    pub(crate) fn abandon(self) {
        self.cache.into_inner().abandon();
    }

    /// Free buffers in this handle's cache.
    pub fn cached(&self) -> u32 {
        self.cache().cached()
    }

    /// This process's owner tag.
    pub fn owner(&self) -> OwnerTag {
        OwnerTag(self.owner)
    }

    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn cache(&self) -> &mut PoolCache {
        // SAFETY: `MbufCache` is not Sync and no method holds this borrow across a call
        // that could re-enter (each use is one get/put call), so the borrow is unique.
        unsafe { &mut *self.cache.get() }
    }

    #[inline(always)]
    fn hdr(&self, index: u32) -> *mut MbufHeader {
        debug_assert!(index < self.n);
        header_ptr(self.objs, self.obj_size, index)
    }

    /// The header of buffer `index`, which the caller has validated (`index < n`).
    #[inline(always)]
    fn header(&self, index: u32) -> &MbufHeader {
        // SAFETY: `index < n` puts the header inside the objects span checked when the pool
        // was opened, 128-byte aligned, kept mapped by `pool`. Through `&` only atomics are
        // modified; plain fields are read as values and validated where it matters (a peer
        // writing them while we hold the buffer breaks the protocol, and at worst gives us
        // wrong values, which every use bounds-checks).
        unsafe { &*self.hdr(index) }
    }

    /// The header of buffer `index` for writing: the caller holds the buffer alone (an
    /// unshared mbuf, or one just taken from the free list) and does not keep the
    /// reference across another header access.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn header_mut(&self, index: u32) -> &mut MbufHeader {
        // SAFETY: as `header`; exclusive by the caller's contract above.
        unsafe { &mut *self.hdr(index) }
    }

    /// Resets a just-allocated buffer's header (it came from the free list: ours alone).
    #[inline(always)]
    fn reset(&self, index: u32) {
        // `index < n` (checked by the pool's get); the buffer was free, so it is ours alone.
        let h = self.header_mut(index);
        h.index = index;
        h.pool_id = self.pool_id;
        h.owner.store(self.owner, Ordering::Relaxed);
        h.refcnt.store(1, Ordering::Relaxed);
        h.data_off = self.headroom;
        h.nb_segs = 1;
        h.port = NO_PORT;
        h.data_len = 0;
        h.pkt_len = 0;
        h.packet_type = 0;
        h.ol_flags = 0;
        h.vlan_tci = 0;
        h.vlan_tci_outer = 0;
        h.rss_hash = 0;
        h.next = 0;
    }

    /// Takes one free buffer for this process: its header is reset (tagged as ours)
    /// while it is still in the cache, and only then is it taken out, so a kill at any
    /// point leaves it in the cache (whose recovery frees it, whatever its tag) or ours
    /// (tagged: the primary's reclaim finds it). Handles without a cache take it from the
    /// ring first (no record: they serve guests and export pools, not crash-exact).
    #[inline(always)]
    fn take_fresh(&self) -> Option<u32> {
        let cache = self.cache();
        if let Some(index) = cache.peek_top() {
            self.reset(index);
            crate::crash_point!("mbuf.alloc_after_tag");
            self.cache().take_top();
            return Some(index);
        }
        let index = self.cache().get()?;
        self.reset(index);
        Some(index)
    }

    /// Allocates one empty mbuf (`rte_pktmbuf_alloc`); `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        let index = self.take_fresh()?;
        Some(Mbuf::from_index(self, index))
    }

    /// Allocates a one-segment mbuf holding `len` bytes, which `fill` writes (it gets the
    /// data span, in this trusted pool): `alloc_from` for a source that is not a slice,
    /// such as guest memory read with a volatile copy. `None` when the pool is empty or
    /// `len` exceeds the data room.
    #[inline]
    pub fn alloc_filled(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Option<Mbuf<'_>> {
        let room = (self.buf_len - u32::from(self.headroom)) as usize;
        if len > room {
            return None;
        }
        let index = self.take_fresh()?;
        let h = self.header_mut(index);
        // `len <= room <= u16::MAX`.
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        let data = header_ptr(self.objs, self.obj_size, index)
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE as usize + usize::from(self.headroom));
        // SAFETY: `index < n` (from the pool); `[headroom, headroom + len)` with `len <=
        // room` lies in this buffer, which is ours alone (just allocated).
        fill(unsafe { std::slice::from_raw_parts_mut(data, len) });
        Some(Mbuf::from_index(self, index))
    }

    /// Allocates `n` empty mbufs into `out` (which should have the capacity, so nothing is
    /// allocated on the heap), all or none (`rte_pktmbuf_alloc_bulk`).
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] when fewer than `n` are free.
    #[inline]
    pub fn alloc_bulk<'c>(&'c self, out: &mut Vec<Mbuf<'c>>, n: usize) -> Result<(), PoolError> {
        let start = out.len();
        let mut idx = [0u32; 64];
        let mut left = n;
        while left > 0 {
            let k = left.min(idx.len());
            // Crash-exact (as `alloc`): the top `k` of the cache are tagged while still in
            // it, then taken; handles without a cache take them from the ring first.
            let Some(got) = self.cache().peek_top_bulk(&mut idx[..k]) else {
                if let Err(e) = self.cache().get_bulk(&mut idx[..k]) {
                    out.truncate(start);
                    return Err(e);
                }
                for &i in &idx[..k] {
                    self.reset(i);
                    out.push(Mbuf::from_index(self, i));
                }
                left -= k;
                continue;
            };
            if got == 0 {
                out.truncate(start);
                return Err(PoolError::Exhausted {
                    pool: self.pool.mempool().name().to_string(),
                    wanted: n,
                });
            }
            for &i in &idx[..got] {
                self.reset(i);
            }
            crate::crash_point!("mbuf.alloc_after_tag");
            self.cache().take_top_n(got as u32);
            for &i in &idx[..got] {
                out.push(Mbuf::from_index(self, i));
            }
            left -= got;
        }
        Ok(())
    }

    /// Allocates one buffer straight into transit, its whole data room counted as data:
    /// a receive buffer to post to a device that writes into it (a virtio driver's rx
    /// queue). Returns the handle, the address of the data room and its length; take the
    /// buffer back with [`reclaim`](Self::reclaim) and cut it to what the device wrote
    /// with [`Mbuf::keep_range`]. The same as `alloc`, `append(tailroom)` and
    /// `into_transit`, in one pass over the header. `None` when the pool is empty.
    #[inline]
    pub fn alloc_in_transit(&self) -> Option<(MbufHandle, *mut u8, u32)> {
        let index = self.take_fresh()?;
        let room = self.buf_len - u32::from(self.headroom);
        let h = self.header_mut(index);
        // `room <= buf_len <= u16::MAX` (checked when the pool was made).
        h.data_len = room as u16;
        h.pkt_len = room;
        // Release, as `into_transit`: whoever claims it sees the header written above.
        h.owner.store(OwnerTag::TRANSIT.0, Ordering::Release);
        let data = header_ptr(self.objs, self.obj_size, index)
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE as usize + usize::from(self.headroom));
        Some((MbufHandle::new(self.pool_id, index), data, room))
    }

    /// Frees a buffer this process put in transit and kept in its own private memory (a
    /// transmit buffer a device has finished with): [`reclaim`](Self::reclaim) and drop in
    /// one step, with the same checks. A one-segment buffer goes straight back to the
    /// cache; anything else takes the general path.
    ///
    /// # Errors
    /// As [`reclaim`](Self::reclaim); nothing is freed then.
    #[inline]
    pub fn free_reclaimed(&self, handle: MbufHandle) -> Result<(), MbufError> {
        let index = handle.index();
        if handle.pool_id() == self.pool_id && index < self.n {
            // Relaxed: as `reclaim` (the tag was stored by this process, or by the thread
            // that handed the queue over under a mutex).
            if self.header(index).owner.load(Ordering::Relaxed) == OwnerTag::TRANSIT.0
                && self.sane_single(index)
            {
                self.put_free(index);
                return Ok(());
            }
        }
        self.reclaim(handle).map(drop)
    }

    /// Allocates a packet holding `bytes`, chaining as many segments as it takes.
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] (nothing is kept).
    pub fn alloc_from(&self, bytes: &[u8]) -> Result<Mbuf<'_>, PoolError> {
        let exhausted = || PoolError::Exhausted {
            pool: self.pool.mempool().name().to_string(),
            wanted: 1,
        };
        let room = (self.buf_len - u32::from(self.headroom)) as usize;
        if bytes.len() <= room {
            // One segment: write the data and lengths directly.
            let index = self.take_fresh().ok_or_else(exhausted)?;
            let h = self.header_mut(index);
            h.data_len = bytes.len() as u16;
            h.pkt_len = bytes.len() as u32;
            let data = header_ptr(self.objs, self.obj_size, index)
                .cast::<u8>()
                .wrapping_add(MBUF_HEADER_SIZE as usize + usize::from(self.headroom));
            // SAFETY: `index < n` (from the pool); `[headroom, headroom + len)` with `len <=
            // room` lies in this buffer, which is ours alone (just allocated).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
            return Ok(Mbuf::from_index(self, index));
        }
        let mut chunks = bytes.chunks(room);
        let first = chunks.next().unwrap_or(&[]);
        let mut head = self.alloc().ok_or_else(exhausted)?;
        head.append(first.len())
            .expect("a fresh mbuf has data_room bytes of tailroom")
            .copy_from_slice(first);
        for chunk in chunks {
            let mut seg = self.alloc().ok_or_else(exhausted)?;
            seg.append(chunk.len())
                .expect("a fresh mbuf has data_room bytes of tailroom")
                .copy_from_slice(chunk);
            head.chain(seg).map_err(|_| exhausted())?;
        }
        Ok(head)
    }

    /// Turns a handle received from shared memory (a ring) into an owned mbuf. Everything
    /// is validated: the handle (pool, index), the transit tag (claimed with a CAS, so a
    /// duplicated handle is refused), and every segment's header.
    ///
    /// # Errors
    /// [`MbufError`] (counted in the pool's statistics); a buffer whose header is bad is
    /// returned to the pool, a handle that is not ours or not in transit is left alone.
    pub fn adopt(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        self.adopt_with(handle, Claim::Shared(OwnerTag::TRANSIT.0))
    }

    /// [`adopt`](Self::adopt) for a handle this process put in transit and kept in its
    /// own private memory (never in a ring or other shared structure), such as a buffer
    /// posted to a virtio device: nobody else can race for it, so the transit tag is
    /// checked with a load and taken with a plain store instead of a CAS. The header
    /// checks are the same. On the hot path this matters: a locked instruction waits for
    /// every earlier load, so a CAS per packet serialises the cache misses of a burst
    /// whose bytes another core just wrote.
    ///
    /// # Errors
    /// As [`adopt`](Self::adopt).
    #[inline]
    pub fn reclaim(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        // One segment (nearly every packet): `adopt_with`'s checks, inline.
        let index = handle.index();
        if handle.pool_id() == self.pool_id && index < self.n {
            let owner = &self.header(index).owner;
            // Relaxed: the tag was stored by this process (program order, or a queue's
            // mutex hand-over between its threads); no other party holds the handle.
            if owner.load(Ordering::Relaxed) == OwnerTag::TRANSIT.0 && self.sane_single(index) {
                owner.store(self.owner, Ordering::Relaxed);
                return Ok(Mbuf::from_index(self, index));
            }
        }
        self.adopt_with(handle, Claim::Private)
    }

    pub(crate) fn adopt_with(
        &self,
        handle: MbufHandle,
        claim: Claim,
    ) -> Result<Mbuf<'_>, MbufError> {
        let head = self.claim_transit(handle, claim)?;
        {
            // One segment (nearly every packet): the same checks without the chain walk.
            if self.sane_single(head) {
                return Ok(Mbuf::from_index(self, head));
            }
        }
        let mut segs: u32 = 1;
        let mut total: u64 = 0;
        let mut cur = head;
        // `head < n` (claim_transit checked it); line-0 fields read as values.
        let (want_segs, pkt_len) = (self.header(head).nb_segs, self.header(head).pkt_len);
        loop {
            // `cur < n` (checked by claim_transit for every segment).
            let h = self.header(cur);
            let (index, pool_id, data_off, data_len, refcnt, next) = (
                h.index,
                h.pool_id,
                h.data_off,
                h.data_len,
                h.refcnt.load(Ordering::Relaxed),
                h.next,
            );
            let sane = index == cur
                && pool_id == self.pool_id
                && refcnt == 1
                && u32::from(data_off) + u32::from(data_len) <= self.buf_len;
            if !sane {
                self.discard_chain(head, cur, "adopted an mbuf with an impossible header");
                return Err(MbufError::CorruptHeader(handle));
            }
            total += u64::from(data_len);
            if next == 0 {
                break;
            }
            if segs >= u32::from(want_segs) {
                self.discard_chain(head, cur, "adopted an mbuf chain longer than nb_segs");
                return Err(MbufError::CorruptHeader(handle));
            }
            match self.claim_transit(MbufHandle(next), claim) {
                Ok(n) => {
                    segs += 1;
                    cur = n;
                }
                Err(_) => {
                    self.discard_chain(head, cur, "adopted an mbuf chain with a bad segment");
                    return Err(MbufError::CorruptHeader(handle));
                }
            }
        }
        if segs != u32::from(want_segs) || total != u64::from(pkt_len) {
            self.discard_chain(
                head,
                cur,
                "adopted an mbuf whose nb_segs or pkt_len is wrong",
            );
            return Err(MbufError::CorruptHeader(handle));
        }
        Ok(Mbuf::from_index(self, head))
    }

    /// True when buffer `index` (`< n`) holds a sane one-segment packet we may take: its
    /// identity, one reference, no next segment, a span inside the buffer, `pkt_len` equal
    /// to `data_len` (the chain walk of `adopt_with` checks the same per segment).
    #[inline(always)]
    fn sane_single(&self, index: u32) -> bool {
        let h = self.header(index);
        h.nb_segs == 1
            && h.next == 0
            && h.index == index
            && h.pool_id == self.pool_id
            && h.refcnt.load(Ordering::Relaxed) == 1
            && u32::from(h.data_off) + u32::from(h.data_len) <= self.buf_len
            && h.pkt_len == u32::from(h.data_len)
    }

    /// Validates a handle and claims its buffer from transit.
    #[inline(always)]
    fn claim_transit(&self, handle: MbufHandle, claim: Claim) -> Result<u32, MbufError> {
        let sh = &self.pool.mempool().shared;
        let index = handle.index();
        if handle.pool_id() != self.pool_id || index >= self.n {
            sh.trouble(
                Trouble::BadHandle,
                1,
                "received an mbuf handle of another pool or out of range",
            );
            return Err(MbufError::BadHandle(handle));
        }
        let owner = &self.header(index).owner;
        let claimed = match claim {
            // Acquire: pairs with the sender's Release store of TRANSIT (and the ring's
            // R1/A1), so its header and data writes are visible; for a local hand-off
            // (`from` a process tag) the ring's R1/A1 alone orders them.
            Claim::Shared(from) => owner
                .compare_exchange(from, self.owner, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            Claim::Private => {
                // Relaxed both: the tag was stored by this process (program order, or
                // before the queue's mutex handed the handle to this thread); no other
                // party holds the handle, so load-then-store cannot race a claim.
                let ok = owner.load(Ordering::Relaxed) == OwnerTag::TRANSIT.0;
                if ok {
                    owner.store(self.owner, Ordering::Relaxed);
                }
                ok
            }
        };
        if !claimed {
            sh.trouble(
                Trouble::BadHandle,
                1,
                "received an mbuf handle that is not in transit (duplicated or stale)",
            );
            return Err(MbufError::NotInTransit(handle));
        }
        Ok(index)
    }

    /// Returns the already-claimed segments `head ..= last` of a bad chain to the pool.
    #[cold]
    fn discard_chain(&self, head: u32, last: u32, what: &str) {
        let sh = &self.pool.mempool().shared;
        sh.trouble(Trouble::CorruptHeader, 1, what);
        let mut cur = head;
        for _ in 0..self.n {
            // `cur < n`: the head was validated by claim_transit, and each `next` below
            // before it is followed (it is read again here, and a peer may have changed
            // it since the walk that claimed the segments).
            let next = MbufHandle(self.header(cur).next);
            self.put_free(cur);
            if cur == last || next.pool_id() != self.pool_id || next.index() >= self.n {
                break;
            }
            cur = next.index();
        }
    }

    /// Puts a buffer into the cache and then marks it free. A buffer never reaches the
    /// free ring before it is marked (a full cache is flushed before this one goes in), so
    /// a kill at any point leaves it ours (tagged: reclaimed by tag) or in the cache (whose
    /// recovery marks what it frees).
    #[inline(always)]
    fn put_free(&self, index: u32) {
        let cache = self.cache();
        let h = self.header(index);
        if cache.slot().is_some() {
            if !cache.has_room() {
                cache.flush_excess();
            }
            cache.put(index);
            crate::crash_point!("mbuf.free_after_put");
            h.refcnt.store(0, Ordering::Relaxed);
            h.owner.store(OwnerTag::FREE.0, Ordering::Relaxed);
            return;
        }
        h.refcnt.store(0, Ordering::Relaxed);
        h.owner.store(OwnerTag::FREE.0, Ordering::Relaxed);
        self.cache().put(index);
    }

    /// Drops one reference to segment `index`, freeing it at zero (`rte_pktmbuf_free_seg`).
    #[inline(always)]
    fn release_segment(&self, index: u32) {
        // `index < n` (validated by whoever produced it).
        let h = self.header(index);
        let (owner, refcnt) = (&h.owner, &h.refcnt);
        if owner.load(Ordering::Relaxed) != self.owner {
            self.pool.mempool().shared.trouble(
                Trouble::DoubleFree,
                1,
                "free of an mbuf this process does not hold (double free?)",
            );
            return;
        }
        let rc = refcnt.load(Ordering::Acquire);
        if rc == 0 {
            self.pool.mempool().shared.trouble(
                Trouble::DoubleFree,
                1,
                "free of an mbuf whose reference count is already zero",
            );
            return;
        }
        // Sole holder: no atomic read-modify-write needed (as DPDK's refcnt == 1 path).
        if rc != 1 {
            // AcqRel: the last dropper sees every other holder's writes before reuse.
            let before = refcnt.fetch_sub(1, Ordering::AcqRel);
            if before > 1 {
                return;
            }
            if before == 0 {
                self.pool.mempool().shared.trouble(
                    Trouble::DoubleFree,
                    1,
                    "free of an mbuf whose reference count is already zero",
                );
                return;
            }
        }
        self.put_free(index);
    }
}

/// How [`MbufCache`] takes a buffer out of transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The handle came through shared memory: a CAS from this tag (TRANSIT, or the
    /// process that handed it off locally), so only one claimant wins.
    Shared(u32),
    /// The handle came from this process's private memory: load and store.
    Private,
}

/// Why a received handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MbufError {
    /// Another pool's handle, or an index out of range.
    #[error("mbuf handle {:#x} is not a buffer of this pool", .0 .0)]
    BadHandle(MbufHandle),
    /// The buffer is not in transit: the handle was duplicated or is stale.
    #[error("mbuf handle {:#x} is not in transit (duplicated or stale)", .0 .0)]
    NotInTransit(MbufHandle),
    /// A header in the chain had impossible fields; the claimed segments were freed.
    #[error("mbuf {:#x} has a corrupt header; dropped", .0 .0)]
    CorruptHeader(MbufHandle),
}

/// An owned packet buffer (possibly a chain of segments). Dropping it frees every segment
/// into the cache it came from. Not `Send`: it borrows its thread's [`MbufCache`]; to move
/// a packet to another thread or process, put [`Mbuf::into_transit`]'s handle in a ring.
///
/// `repr(C)`: `index` and `maybe_shared` form one aligned 8-byte word at offset 8, which
/// the burst hand-offs (`handoff.rs`) read and write whole.
#[repr(C)]
pub struct Mbuf<'c> {
    pub(crate) cache: &'c MbufCache,
    pub(crate) index: u32,
    /// Set by [`Mbuf::clone_ref`] on both references: only then can the header's
    /// reference count be above 1, so [`Mbuf::is_shared`] reads it only then (every other
    /// way of making an `Mbuf` yields a buffer with one reference).
    /// (A `u32` beside `index` rather than a `bool`, so that writing a fresh `Mbuf` is
    /// two 8-byte stores.)
    pub(crate) maybe_shared: Cell<u32>,
    _not_send: PhantomData<*mut u8>,
}

const _: () = {
    assert!(std::mem::offset_of!(Mbuf<'static>, cache) == 0);
    assert!(std::mem::offset_of!(Mbuf<'static>, index) == 8);
    assert!(std::mem::offset_of!(Mbuf<'static>, maybe_shared) == 12);
    assert!(std::mem::size_of::<Mbuf<'static>>() == 16);
    assert!(std::mem::align_of::<Mbuf<'static>>() == 8);
};

impl std::fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("index", &self.index)
            .field("pkt_len", &self.pkt_len())
            .field("nb_segs", &self.nb_segs())
            .finish()
    }
}

/// A validated view of one segment's data span.
#[derive(Clone, Copy)]
struct Span {
    off: u32,
    len: u32,
}

impl<'c> Mbuf<'c> {
    #[inline(always)]
    pub(crate) fn from_index(cache: &'c MbufCache, index: u32) -> Mbuf<'c> {
        Mbuf {
            cache,
            index,
            maybe_shared: Cell::new(0),
            _not_send: PhantomData,
        }
    }

    /// This packet's first header.
    #[inline(always)]
    fn hdr(&self) -> &MbufHeader {
        self.cache.header(self.index)
    }

    /// This packet's first header, for writing (only from `&mut self` methods, which hold
    /// the packet alone).
    #[inline(always)]
    fn hdr_mut(&mut self) -> &mut MbufHeader {
        self.cache.header_mut(self.index)
    }

    /// This buffer's handle.
    pub fn handle(&self) -> MbufHandle {
        MbufHandle::new(self.cache.pool_id, self.index)
    }

    /// Object index in the pool.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The data span of segment `index`, validated against the pool's buffer length
    /// (a corrupt header gives an empty span, counted).
    #[inline(always)]
    fn span_of(&self, index: u32) -> Span {
        // `index < n` (every segment index was validated); plain reads of values.
        let h = self.cache.header(index);
        let (off, len) = (u32::from(h.data_off), u32::from(h.data_len));
        if off + len <= self.cache.buf_len {
            Span { off, len }
        } else {
            self.corrupt_span(index)
        }
    }

    #[cold]
    fn corrupt_span(&self, index: u32) -> Span {
        self.cache.pool.mempool().shared.trouble(
            Trouble::CorruptHeader,
            1,
            "an mbuf header's data_off + data_len exceeds the buffer",
        );
        let off = u32::from(self.cache.headroom);
        // We hold the buffer: repair it to an empty span.
        let h = self.cache.header_mut(index);
        h.data_off = off as u16;
        h.data_len = 0;
        Span { off, len: 0 }
    }

    fn buf_ptr(&self, index: u32) -> *mut u8 {
        self.cache
            .hdr(index)
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE as usize)
    }

    /// Segment indices of this packet, first to last (validated, at most `nb_segs`).
    fn seg_indices(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = Some(self.index);
        let mut left = u32::from(self.nb_segs()).max(1);
        std::iter::from_fn(move || {
            let this = cur?;
            left -= 1;
            // `this < n` (the head, or a `next` validated below).
            let next = MbufHandle(self.cache.header(this).next);
            cur = if next.0 == 0 || left == 0 {
                None
            } else if next.pool_id() == self.cache.pool_id && next.index() < self.cache.n {
                Some(next.index())
            } else {
                self.cache.pool.mempool().shared.trouble(
                    Trouble::CorruptHeader,
                    1,
                    "an mbuf chain points outside its pool",
                );
                None
            };
            Some(this)
        })
    }

    fn last_segment(&self) -> u32 {
        self.seg_indices().last().unwrap_or(self.index)
    }

    /// Data bytes in the first segment.
    pub fn data_len(&self) -> usize {
        self.span_of(self.index).len as usize
    }

    /// Data bytes in the whole packet.
    pub fn pkt_len(&self) -> u32 {
        self.hdr().pkt_len
    }

    /// Number of segments.
    pub fn nb_segs(&self) -> u16 {
        self.hdr().nb_segs
    }

    /// Free bytes before the data of the first segment.
    pub fn headroom(&self) -> usize {
        self.span_of(self.index).off as usize
    }

    /// Free bytes after the data of the last segment.
    pub fn tailroom(&self) -> usize {
        let s = self.span_of(self.last_segment());
        (self.cache.buf_len - s.off - s.len) as usize
    }

    /// True when [`Mbuf::clone_ref`] made other references: the data is then read-only.
    #[inline(always)]
    pub fn is_shared(&self) -> bool {
        // Acquire: pairs with the AcqRel decrement of a dropped clone, so a caller that sees
        // "not shared" and then writes the data is ordered after that clone's reads.
        self.maybe_shared.get() != 0 && self.hdr().refcnt.load(Ordering::Acquire) > 1
    }

    /// The first segment's data.
    pub fn data(&self) -> &[u8] {
        self.seg_data(self.index)
    }

    fn seg_data(&self, index: u32) -> &[u8] {
        let s = self.span_of(index);
        // SAFETY: `off + len <= buf_len` (span_of), inside this object's buffer; we hold the
        // buffer and only `&self` exists (mutation needs `&mut self` and refcnt 1).
        unsafe {
            std::slice::from_raw_parts(
                self.buf_ptr(index).wrapping_add(s.off as usize),
                s.len as usize,
            )
        }
    }

    /// The first segment's data, writable; `None` while shared.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if self.is_shared() {
            return None;
        }
        let s = self.span_of(self.index);
        // SAFETY: as `seg_data`; unshared and `&mut self`, so this is the only reference.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(self.index).wrapping_add(s.off as usize),
                s.len as usize,
            )
        })
    }

    /// Every segment's data, in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.seg_indices().map(move |i| self.seg_data(i))
    }

    fn add_pkt_len(&mut self, delta: i64) {
        let h = self.hdr_mut();
        h.pkt_len = (i64::from(h.pkt_len) + delta).clamp(0, u32::MAX.into()) as u32;
    }

    /// Prepends `len` bytes to the first segment (`rte_pktmbuf_prepend`); returns the new
    /// bytes, or `None` if the headroom is too small or the mbuf is shared.
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        let s = self.span_of(self.index);
        if self.is_shared() || len > s.off as usize {
            return None;
        }
        let len32 = len as u32;
        // `len <= off`, and `off + len` is unchanged: the span stays inside the buffer.
        let h = self.hdr_mut();
        h.data_off = (s.off - len32) as u16;
        h.data_len = (s.len + len32) as u16;
        self.add_pkt_len(len as i64);
        // SAFETY: `[off - len, off)` lies in the buffer; exclusive as above.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(self.index)
                    .wrapping_add((s.off - len32) as usize),
                len,
            )
        })
    }

    /// Appends `len` bytes to the last segment (`rte_pktmbuf_append`); returns the new
    /// bytes, or `None` if the tailroom is too small or the mbuf is shared.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let last = self.last_segment();
        let s = self.span_of(last);
        if self.is_shared() || len > (self.cache.buf_len - s.off - s.len) as usize {
            return None;
        }
        // `off + len + new <= buf_len <= 65535`; the last segment is ours alone.
        self.cache.header_mut(last).data_len = (s.len + len as u32) as u16;
        self.add_pkt_len(len as i64);
        // SAFETY: `[off + len, off + len + new)` lies in the buffer; exclusive.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(last).wrapping_add((s.off + s.len) as usize),
                len,
            )
        })
    }

    /// Removes `len` bytes from the start of the first segment (`rte_pktmbuf_adj`); false if
    /// it holds fewer or the mbuf is shared.
    pub fn adj(&mut self, len: usize) -> bool {
        let s = self.span_of(self.index);
        if self.is_shared() || len > s.len as usize {
            return false;
        }
        // The span shrinks inside itself.
        let h = self.hdr_mut();
        h.data_off = (s.off + len as u32) as u16;
        h.data_len = (s.len - len as u32) as u16;
        self.add_pkt_len(-(len as i64));
        true
    }

    /// Writes `bytes` as the data of an empty, unshared one-segment mbuf (one from
    /// [`MbufCache::alloc_bulk`]), at its headroom: `alloc_from` for buffers already taken
    /// in a bulk. False, and nothing written, when the mbuf is not empty, shared, or
    /// `bytes` exceed its data room.
    #[inline]
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        let h = self.hdr();
        let room = self.cache.buf_len.checked_sub(u32::from(h.data_off));
        let empty = h.data_len == 0 && h.nb_segs == 1 && h.next == 0;
        if !empty || room.is_none_or(|r| bytes.len() > r as usize) {
            return false;
        }
        if self.is_shared() {
            return false;
        }
        let off = usize::from(h.data_off);
        let data = self.buf_ptr(self.index).wrapping_add(off);
        // SAFETY: `[off, off + len)` with `len <= buf_len - off` lies in this buffer, which
        // we hold alone (unshared, `&mut self`).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
        let h = self.hdr_mut();
        // `len <= room <= u16::MAX`.
        h.data_len = bytes.len() as u16;
        h.pkt_len = bytes.len() as u32;
        true
    }

    /// Keeps `len` bytes starting `start` bytes into the data of a one-segment packet and
    /// drops the rest (`adj(start)` then `trim`, in one step): how a driver cuts a
    /// received buffer to the frame a device wrote after its header. False, and nothing
    /// changed, when the range is not inside the data, the packet has several segments or
    /// is shared.
    pub fn keep_range(&mut self, start: usize, len: usize) -> bool {
        let s = self.span_of(self.index);
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= s.len as usize);
        if !fits || self.nb_segs() != 1 || self.hdr().next != 0 || self.is_shared() {
            return false;
        }
        // Inside the old span, so inside the buffer; `len <= s.len <= u16::MAX`.
        let h = self.hdr_mut();
        h.data_off = (s.off + start as u32) as u16;
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        true
    }

    /// Removes `len` bytes from the end of the last segment (`rte_pktmbuf_trim`); false if
    /// it holds fewer or the mbuf is shared.
    pub fn trim(&mut self, len: usize) -> bool {
        let last = self.last_segment();
        let s = self.span_of(last);
        if self.is_shared() || len > s.len as usize {
            return false;
        }
        self.cache.header_mut(last).data_len = (s.len - len as u32) as u16;
        self.add_pkt_len(-(len as i64));
        true
    }

    /// Appends the segments of `tail` after this packet's last segment (`rte_pktmbuf_chain`).
    ///
    /// # Errors
    /// Gives `tail` back if either is shared, they come from different caches, or the chain
    /// would exceed [`MAX_SEGS`].
    pub fn chain(&mut self, tail: Mbuf<'c>) -> Result<(), Mbuf<'c>> {
        let segs = u32::from(self.nb_segs()) + u32::from(tail.nb_segs());
        if self.is_shared()
            || tail.is_shared()
            || !std::ptr::eq(self.cache, tail.cache)
            || segs > u32::from(MAX_SEGS)
        {
            return Err(tail);
        }
        let last = self.last_segment();
        let tail_len = tail.pkt_len();
        // Both chains are ours alone (unshared, `&mut self`, owned `tail`).
        self.cache.header_mut(last).next = tail.handle().0;
        self.hdr_mut().nb_segs = segs as u16;
        self.add_pkt_len(i64::from(tail_len));
        std::mem::forget(tail);
        Ok(())
    }

    /// Copies packet bytes from offset `off` into `out` across segments (`rte_pktmbuf_read`);
    /// returns how many were copied.
    pub fn copy_out(&self, mut off: usize, out: &mut [u8]) -> usize {
        let mut done = 0;
        for seg in self.segments() {
            if done == out.len() {
                break;
            }
            if off >= seg.len() {
                off -= seg.len();
                continue;
            }
            let k = (seg.len() - off).min(out.len() - done);
            out[done..done + k].copy_from_slice(&seg[off..off + k]);
            done += k;
            off = 0;
        }
        done
    }

    /// The whole packet as one vector (tests, slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len() as usize);
        for seg in self.segments() {
            v.extend_from_slice(seg);
        }
        v
    }

    /// Another reference to the same packet (`rte_mbuf_refcnt_update(+1)` on every
    /// segment). While more than one exists the data is read-only; the last drop frees it.
    pub fn clone_ref(&self) -> Mbuf<'c> {
        for i in self.seg_indices() {
            // Relaxed: a new reference is made from an existing one (as `Arc::clone`).
            self.cache.header(i).refcnt.fetch_add(1, Ordering::Relaxed);
        }
        self.maybe_shared.set(1);
        let clone = Mbuf::from_index(self.cache, self.index);
        clone.maybe_shared.set(1);
        clone
    }

    /// Gives the packet up for another process: tags every segment as in transit and
    /// returns the handle to put in a ring; the receiver [`MbufCache::adopt`]s it.
    ///
    /// # Errors
    /// Gives the mbuf back while it is shared (references do not cross processes).
    pub fn into_transit(self) -> Result<MbufHandle, Mbuf<'c>> {
        if self.is_shared() {
            return Err(self);
        }
        let h = self.hdr();
        if h.nb_segs == 1 && h.next == 0 {
            // Release: the receiver's Acquire CAS in `adopt` sees our header and data writes.
            h.owner.store(OwnerTag::TRANSIT.0, Ordering::Release);
            let handle = self.handle();
            std::mem::forget(self);
            return Ok(handle);
        }
        for i in self.seg_indices() {
            // Release: the receiver's Acquire CAS in `adopt` sees our header and data writes.
            self.cache
                .header(i)
                .owner
                .store(OwnerTag::TRANSIT.0, Ordering::Release);
        }
        let handle = self.handle();
        std::mem::forget(self);
        Ok(handle)
    }

    /// For a one-segment, unshared packet with at least `n` bytes of headroom: prepends
    /// `n` bytes, lets `fill` write them, and puts the packet in transit, in one pass over
    /// the header (what a virtio driver does before posting a frame with its
    /// `virtio_net_hdr`). Returns the handle and the packet's data (the prepended bytes
    /// first) as address and length. Any other packet comes back unchanged in `Err`.
    #[inline]
    pub fn into_transit_prepending(
        self,
        n: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(MbufHandle, *const u8, usize), Mbuf<'c>> {
        let h = self.hdr();
        let (off, len) = (u32::from(h.data_off), u32::from(h.data_len));
        // Acquire (as in `is_shared`): pairs with the AcqRel decrement of a dropped clone, so
        // that clone's last reads of the data happen before we write the header into it.
        let plain = h.nb_segs == 1 && h.next == 0 && h.refcnt.load(Ordering::Acquire) == 1;
        if !plain || off + len > self.cache.buf_len || n > off as usize {
            return Err(self);
        }
        let (off, len) = (off - n as u32, len + n as u32);
        let index = self.index;
        let h = self.cache.header_mut(index);
        // `off + len` is unchanged, inside the buffer; `len <= buf_len <= u16::MAX`.
        h.data_off = off as u16;
        h.data_len = len as u16;
        h.pkt_len = len;
        let data = self.buf_ptr(index).wrapping_add(off as usize);
        // SAFETY: `[off, off + n)` lies in this buffer (n <= old off), which we hold alone
        // (refcnt 1, not yet in transit).
        fill(unsafe { std::slice::from_raw_parts_mut(data, n) });
        // Release: the receiver's Acquire CAS in `adopt` sees our header and data writes.
        self.cache
            .header(index)
            .owner
            .store(OwnerTag::TRANSIT.0, Ordering::Release);
        let handle = self.handle();
        std::mem::forget(self);
        Ok((handle, data.cast_const(), len as usize))
    }

    /// Input port.
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Sets the input port.
    pub fn set_port(&mut self, port: u16) {
        self.hdr_mut().port = port;
    }

    /// Offload flags.
    pub fn ol_flags(&self) -> u64 {
        self.hdr().ol_flags
    }

    /// Sets the offload flags.
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.hdr_mut().ol_flags = flags;
    }

    /// VLAN tag.
    pub fn vlan_tci(&self) -> u16 {
        self.hdr().vlan_tci
    }

    /// Sets the VLAN tag.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.hdr_mut().vlan_tci = tci;
    }

    /// RSS hash.
    pub fn rss_hash(&self) -> u32 {
        self.hdr().rss_hash
    }

    /// Sets the RSS hash.
    pub fn set_rss_hash(&mut self, hash: u32) {
        self.hdr_mut().rss_hash = hash;
    }

    /// Application data.
    pub fn user_data(&self) -> u64 {
        self.hdr().user_data
    }

    /// Sets the application data.
    pub fn set_user_data(&mut self, v: u64) {
        self.hdr_mut().user_data = v;
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        let h = self.hdr();
        if h.nb_segs == 1 && h.next == 0 {
            self.cache.release_segment(self.index);
            return;
        }
        // `rte_pktmbuf_free`: `seg_indices` reads each segment's `next` before yielding it,
        // so a segment is released only after the walk has left it. The walk is bounded by
        // nb_segs and validated; a cycle is stopped by the owner check in
        // `release_segment` (a freed segment is no longer ours).
        for i in self.seg_indices() {
            self.cache.release_segment(i);
        }
    }
}
