//! The mbuf pool: a [`Mempool`] whose objects are mbufs, its parameters, the per-thread
//! allocators it hands out, and the primary's reclaim of a dead process's buffers by
//! their owner tag.
//!
//! Where it sits: in [`crate::mbuf`], over [`crate::pool`]; [`MbufPool::cache`] makes the
//! [`MbufCache`] (in `cache.rs`) that allocates and frees.

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering;

use shm::{Memseg, Region};

use super::cache::MbufCache;
use super::header::{header_ptr, DEFAULT_DATA_ROOM, DEFAULT_HEADROOM, MBUF_HEADER_SIZE};
use crate::layout::POOL_F_MBUF;
use crate::owner::OwnerTag;
use crate::pool::{Mempool, PoolCache, PoolParams};
use crate::PoolError;

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

    fn check(&self, name: &str) -> Result<(), PoolError> {
        if u64::from(self.headroom) + u64::from(self.data_room) > u64::from(u16::MAX)
            || self.data_room == 0
        {
            return Err(PoolError::Create(format!(
                "mbuf pool {name:?}: headroom {} + data room {} must be 1..=65535 bytes",
                self.headroom, self.data_room
            )));
        }
        Ok(())
    }

    /// The pool's object-init hook: each object's free header.
    fn obj_init(&self) -> impl FnMut(u32, std::ptr::NonNull<[u8]>) {
        super::header::init_header(self.pool_id, self.headroom, self.data_room)
    }

    /// Bytes the pool needs in a memseg.
    pub fn bytes(&self) -> Option<u64> {
        crate::pool::pool_bytes(&self.pool_params())
    }
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
        params.check(name)?;
        MbufPool::from_mempool(Mempool::create_with(
            seg,
            name,
            &params.pool_params(),
            &mut params.obj_init(),
        )?)
    }

    /// Lays out an mbuf pool at `off` in `region` (zeroed or unused memory of
    /// `len_bytes`), as [`Mempool::init`]: a guest's pool in its own memory.
    ///
    /// # Errors
    /// [`PoolError::Create`] for bad parameters or if it does not fit.
    pub fn init(
        region: &Region,
        off: u64,
        len_bytes: u64,
        name: &str,
        params: &MbufPoolParams,
    ) -> Result<MbufPool, PoolError> {
        params.check(name)?;
        MbufPool::from_mempool(Mempool::init_with(
            region,
            off,
            len_bytes,
            name,
            &params.pool_params(),
            &mut params.obj_init(),
        )?)
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
        Ok(self.with_handle(self.pool.cache(owner)?, owner))
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
        Ok(self.with_handle(self.pool.uncached(), owner))
    }

    /// An allocator for `owner` over the pool handle `cache` (cached or not), with the
    /// pool's geometry copied in for the fast paths.
    fn with_handle(&self, cache: PoolCache, owner: OwnerTag) -> MbufCache {
        let sh = &self.pool.shared;
        MbufCache {
            cache: UnsafeCell::new(cache),
            pool: self.clone(),
            owner: owner.0,
            pool_id: sh.info.pool_id,
            n: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            objs: sh.objs,
            headroom: sh.info.headroom as u16,
            buf_len: sh.info.headroom + sh.info.data_room,
        }
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
