//! The pool itself: [`Mempool`] creation in a memzone (primary) from [`PoolParams`],
//! lookup and opening with every header field validated (any process), its geometry
//! accessors, and the per-thread handles it gives out.
//!
//! Where it sits: in [`crate::pool`], over [`PoolShared`] (`shared.rs`); the handles are
//! `cache.rs`, slot claiming and recovery `recovery.rs`, statistics `stats.rs`.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use shm::{Memseg, Memzone, MemzoneKind, Region};
use shm_ring::{Ring, SyncMode};

use super::{PoolCache, PoolShared};
use crate::layout::*;
use crate::owner::OwnerTag;
use crate::PoolError;

/// An object-init hook ([`Mempool::create_with`]): called with each object's index and
/// its bytes, once, when the pool is laid out.
pub type ObjInit<'a> = &'a mut dyn FnMut(u32, std::ptr::NonNull<[u8]>);

/// Refuses to lay out, without an object-init hook, a pool whose objects need one.
fn no_hook_needed(name: &str, params: &PoolParams) -> Result<(), PoolError> {
    if params.flags & POOL_F_MBUF != 0 {
        return Err(PoolError::Create(format!(
            "pool {name:?}: mbuf objects need their headers written: make it with MbufPool::create or MbufPool::init"
        )));
    }
    Ok(())
}

/// What to create.
#[derive(Debug, Clone, Copy)]
pub struct PoolParams {
    /// Number of objects.
    pub count: u32,
    /// Bytes each object needs (rounded up to a multiple of [`OBJ_ALIGN`]).
    pub obj_size: u32,
    /// Per-lcore cache size, 0..=[`CACHE_MAX_SIZE`] (0 = no caches).
    pub cache_size: u32,
    /// Pool id, non-zero and unique within the primary's run.
    pub pool_id: u32,
    /// `POOL_F_*` flags.
    pub flags: u32,
    /// Mbuf pools: headroom and data room (0 otherwise).
    pub headroom: u32,
    /// Mbuf pools: data room.
    pub data_room: u32,
}

/// A mempool: fixed-size objects in a memseg, free list in a shm ring, per-lcore caches in
/// shared memory. Cheap to clone; [`Mempool::cache`] gives a per-thread handle.
#[derive(Clone)]
pub struct Mempool {
    pub(crate) shared: Arc<PoolShared>,
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.shared.name)
            .field("id", &self.shared.info.pool_id)
            .field("count", &self.shared.info.obj_count)
            .field("obj_size", &self.shared.info.obj_size)
            .field("cache_size", &self.shared.info.cache_size)
            .finish()
    }
}

/// Bytes a pool of these parameters needs (for sizing memsegs).
pub fn pool_bytes(params: &PoolParams) -> Option<u64> {
    let size = u64::from(params.obj_size).next_multiple_of(OBJ_ALIGN);
    pool_offsets(params.count, u32::try_from(size).ok()?).map(|o| o.3)
}

impl Mempool {
    /// Reserves a memzone named `name` in `seg` (primary only) and creates a pool in it with
    /// every object free.
    ///
    /// # Errors
    /// [`PoolError::Create`] for bad parameters or when the memzone cannot be reserved.
    pub fn create(seg: &Memseg, name: &str, params: &PoolParams) -> Result<Mempool, PoolError> {
        no_hook_needed(name, params)?;
        Self::create_with(seg, name, params, &mut |_, _| {})
    }

    /// [`create`](Self::create), running `obj_init` once per object as the pool is laid
    /// out, before it can be opened (DPDK's `obj_init`): given the object's index and its
    /// bytes (a span of `obj_size` bytes aligned to [`OBJ_ALIGN`], in memory that other
    /// processes map: write through it, make no reference of it). An mbuf pool passes its
    /// header initialisation.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with(
        seg: &Memseg,
        name: &str,
        params: &PoolParams,
        obj_init: ObjInit<'_>,
    ) -> Result<Mempool, PoolError> {
        check_params(name, params)?;
        let bytes = pool_bytes(params)
            .ok_or_else(|| PoolError::Create(format!("pool {name:?} is too large")))?;
        let zone = seg
            .reserve(name, bytes, OBJ_ALIGN, MemzoneKind::Mempool)
            .map_err(|e| PoolError::Create(e.to_string()))?;
        Self::init_with(
            zone.region(),
            zone.offset,
            zone.len_bytes,
            name,
            params,
            obj_init,
        )
    }

    /// Lays out a pool at `off` in `region` (zeroed or unused memory of `len_bytes`).
    ///
    /// # Errors
    /// [`PoolError::Create`] if the parameters are bad or it does not fit.
    pub fn init(
        region: &Region,
        off: u64,
        len_bytes: u64,
        name: &str,
        params: &PoolParams,
    ) -> Result<Mempool, PoolError> {
        no_hook_needed(name, params)?;
        Self::init_with(region, off, len_bytes, name, params, &mut |_, _| {})
    }

    /// [`init`](Self::init) with an object-init hook, as [`create_with`](Self::create_with).
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn init_with(
        region: &Region,
        off: u64,
        len_bytes: u64,
        name: &str,
        params: &PoolParams,
        obj_init: ObjInit<'_>,
    ) -> Result<Mempool, PoolError> {
        let bad = |why: String| PoolError::Create(format!("pool {name:?}: {why}"));
        check_params(name, params)?;
        let obj_size = u64::from(params.obj_size).next_multiple_of(OBJ_ALIGN);
        let obj_size = u32::try_from(obj_size).map_err(|_| bad("objects too large".into()))?;
        let (ring_off, ring_len, objs_off, total_len) =
            pool_offsets(params.count, obj_size).ok_or_else(|| bad("too large".into()))?;
        if total_len > len_bytes {
            return Err(bad(format!(
                "needs {total_len} bytes, the memzone has {len_bytes}"
            )));
        }
        let name_bytes =
            shm::layout::encode_name(name).ok_or_else(|| bad("bad name".to_string()))?;
        let info = PoolInfo {
            magic: POOL_MAGIC,
            layout_major: POOL_LAYOUT_MAJOR,
            layout_minor: POOL_LAYOUT_MINOR,
            info_size: POOL_INFO_SIZE as u32,
            flags: params.flags,
            pool_id: params.pool_id,
            obj_count: params.count,
            obj_size,
            cache_size: params.cache_size,
            flush_threshold: params.cache_size * 3 / 2,
            cache_slots: CACHE_SLOTS,
            headroom: params.headroom,
            data_room: params.data_room,
            reserved0: 0,
            ring_off,
            ring_len,
            objs_off,
            total_len,
            name: name_bytes,
            reserved: [0; 136],
        };
        let oob = |e: shm::OutOfBounds| bad(e.to_string());
        // Counters and cache slot headers start zeroed (fresh memzone) but a reused region
        // may not be: clear the metadata part.
        region.fill(off, ring_off, 0).map_err(oob)?;
        let ring = Ring::<u32>::init(
            region,
            off + ring_off,
            ring_len,
            name,
            free_ring_capacity(params.count).ok_or_else(|| bad("too large".into()))?,
            SyncMode::MP_MC,
        )
        .map_err(|e| bad(e.to_string()))?;
        // The caches' recovery reads a dead process's free-ring records
        // (`recovery.rs`); the primary's `repair_free_ring` frees them after it.
        ring.keep_dead_records();
        let mut producer = ring.mp_producer().map_err(|e| bad(e.to_string()))?;
        let all: Vec<u32> = (0..params.count).collect();
        for chunk in all.chunks(4096) {
            producer
                .enqueue_bulk(chunk)
                .map_err(|e| bad(e.to_string()))?;
        }
        let objs = region
            .span(off + objs_off, total_len - objs_off, OBJ_ALIGN)
            .map_err(oob)?;
        for index in 0..params.count {
            let at = objs
                .as_ptr()
                .wrapping_add(index as usize * obj_size as usize);
            // In bounds: `index < count` objects of `obj_size` fill the span checked above.
            if let Some(obj) = std::ptr::NonNull::new(at) {
                obj_init(
                    index,
                    std::ptr::NonNull::slice_from_raw_parts(obj, obj_size as usize),
                );
            }
        }
        // The header last: nobody opens the pool before its objects are initialised.
        region.write(off, &info).map_err(oob)?;
        Self::open(region, off, len_bytes)
    }

    /// Opens the pool in `zone` (any process), validating its header.
    ///
    /// # Errors
    /// [`PoolError::BadPool`] if the zone is not a valid pool.
    pub fn from_memzone(zone: &Memzone) -> Result<Mempool, PoolError> {
        if zone.kind != MemzoneKind::Mempool {
            return Err(PoolError::BadPool(format!(
                "memzone {} holds a {:?}, not a mempool",
                zone.name, zone.kind
            )));
        }
        Self::open(zone.region(), zone.offset, zone.len_bytes)
    }

    /// Finds the pool named `name` in `seg` and opens it.
    ///
    /// # Errors
    /// [`PoolError::BadPool`] if absent or invalid.
    pub fn lookup(seg: &Memseg, name: &str) -> Result<Mempool, PoolError> {
        let zone = seg
            .lookup(name)
            .map_err(|e| PoolError::BadPool(e.to_string()))?;
        Self::from_memzone(&zone)
    }

    /// Validates the pool header at `off` (`len_bytes` available) and opens the pool.
    ///
    /// # Errors
    /// [`PoolError::BadPool`] naming what is wrong.
    pub fn open(region: &Region, off: u64, len_bytes: u64) -> Result<Mempool, PoolError> {
        let bad = |why: String| PoolError::BadPool(why);
        let info: PoolInfo = region.read_copy(off).map_err(|e| bad(e.to_string()))?;
        if info.magic != POOL_MAGIC {
            return Err(bad("bad magic (not a mempool)".into()));
        }
        if info.layout_major != POOL_LAYOUT_MAJOR {
            return Err(bad(format!(
                "layout version {} (this build reads {POOL_LAYOUT_MAJOR}); run primary and secondary from the same shmdp release",
                info.layout_major
            )));
        }
        let name = shm::layout::decode_name(&info.name)
            .ok_or_else(|| bad("bad name".into()))?
            .to_string();
        let geometry_ok = u64::from(info.info_size) == POOL_INFO_SIZE
            && info.flags & !POOL_F_KNOWN == 0
            && info.pool_id != 0
            && (1..=MAX_OBJS).contains(&info.obj_count)
            && info.obj_size != 0
            && u64::from(info.obj_size).is_multiple_of(OBJ_ALIGN)
            && info.cache_size <= CACHE_MAX_SIZE
            && info.flush_threshold == info.cache_size * 3 / 2
            && info.cache_slots == CACHE_SLOTS;
        if !geometry_ok {
            return Err(bad(format!(
                "pool {name}: impossible geometry in its header"
            )));
        }
        let expect = pool_offsets(info.obj_count, info.obj_size);
        if expect != Some((info.ring_off, info.ring_len, info.objs_off, info.total_len))
            || info.total_len > len_bytes
        {
            return Err(bad(format!(
                "pool {name}: offsets do not match its counts or exceed the memzone"
            )));
        }
        if info.flags & POOL_F_MBUF != 0 {
            check_mbuf_geometry(&info).map_err(|why| bad(format!("pool {name}: {why}")))?;
        }
        let oob = |e: shm::OutOfBounds| bad(e.to_string());
        let counters = region
            .span_of::<PoolCounters>(off + COUNTERS_OFF, 1)
            .map_err(oob)?;
        let caches = region
            .span(
                off + CACHES_OFF,
                u64::from(CACHE_SLOTS) * CACHE_SLOT_STRIDE,
                64,
            )
            .map_err(oob)?;
        let objs = region
            .span(
                off + info.objs_off,
                u64::from(info.obj_count) * u64::from(info.obj_size),
                OBJ_ALIGN,
            )
            .map_err(oob)?;
        let ring = Ring::<u32>::open(region, off + info.ring_off, info.ring_len)
            .map_err(|e| bad(format!("pool {name}: free ring: {e}")))?;
        if Some(ring.capacity() as u32) != free_ring_capacity(info.obj_count)
            || ring.mode() != SyncMode::MP_MC
        {
            return Err(bad(format!("pool {name}: free ring has the wrong shape")));
        }
        Ok(Mempool {
            shared: Arc::new(PoolShared {
                _region: region.clone(),
                info,
                name,
                ring,
                counters,
                caches,
                objs,
                logged: Default::default(),
            }),
        })
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Pool id.
    pub fn id(&self) -> u32 {
        self.shared.info.pool_id
    }

    /// Number of objects.
    pub fn count(&self) -> u32 {
        self.shared.info.obj_count
    }

    /// Bytes per object (stride).
    pub fn obj_size(&self) -> u32 {
        self.shared.info.obj_size
    }

    /// Target per-lcore cache size.
    pub fn cache_size(&self) -> u32 {
        self.shared.info.cache_size
    }

    /// The validated header copy.
    pub fn info(&self) -> &PoolInfo {
        &self.shared.info
    }

    /// True for mbuf pools.
    pub fn is_mbuf_pool(&self) -> bool {
        self.shared.info.flags & POOL_F_MBUF != 0
    }

    /// A handle for this thread. With a non-zero cache size it claims a cache slot in
    /// shared memory (recovering one whose owner died if none is free); `owner` is the
    /// process's owner tag, recorded for statistics.
    ///
    /// # Errors
    /// [`PoolError::NoCacheSlot`] when all [`CACHE_SLOTS`] are held by live threads.
    pub fn cache(&self, owner: OwnerTag) -> Result<PoolCache, PoolError> {
        if self.shared.info.cache_size == 0 {
            return Ok(self.uncached());
        }
        let slot = self.claim_slot(owner)?;
        let mut cache = self.uncached();
        cache.slot = Some(slot);
        cache.size = self.shared.info.cache_size;
        cache.flush_threshold = self.shared.info.flush_threshold;
        cache.objs = self.shared.slot_objs(slot);
        cache.shared_len = &self.shared.slot_header(slot).len;
        Ok(cache)
    }

    /// A handle without a cache: every get and put goes to the free ring.
    pub fn uncached(&self) -> PoolCache {
        let ring = &self.shared.ring;
        let spare_len = Box::new(AtomicU32::new(0));
        PoolCache {
            pool: self.clone(),
            producer: ring
                .mp_producer()
                .expect("free ring is MP/MC (checked at open)"),
            consumer: ring
                .mc_consumer()
                .expect("free ring is MP/MC (checked at open)"),
            slot: None,
            // Never dereferenced without a slot (size and threshold 0 keep the fast paths
            // to empty spans), but a valid base for an empty slice.
            objs: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
            shared_len: &*spare_len,
            _spare_len: spare_len,
            size: 0,
            flush_threshold: 0,
            n: self.shared.info.obj_count,
            refused_since: None,
        }
    }
}

fn check_params(name: &str, params: &PoolParams) -> Result<(), PoolError> {
    let bad = |why: String| Err(PoolError::Create(format!("pool {name:?}: {why}")));
    if params.count == 0 || params.count > MAX_OBJS {
        return bad(format!(
            "object count {} is not in 1..={MAX_OBJS}",
            params.count
        ));
    }
    if params.cache_size > CACHE_MAX_SIZE {
        return bad(format!(
            "cache size {} is above {CACHE_MAX_SIZE}",
            params.cache_size
        ));
    }
    if params.pool_id == 0 || params.flags & !POOL_F_KNOWN != 0 || params.obj_size == 0 {
        return bad("pool id 0, unknown flags or empty objects".into());
    }
    if params.pool_id >= 1 << 31 {
        // The top bit of a handle marks local ring entries (pmds' ring driver).
        return bad(format!("pool id {} is not below 2^31", params.pool_id));
    }
    Ok(())
}
