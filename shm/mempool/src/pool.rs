//! The object pool: creation and lookup ([`Mempool`]), per-thread handles with a cache in
//! shared memory ([`PoolCache`]), statistics, audits and recovery of dead owners' caches.
//! The refill/flush protocol and its recovery are model-checked, a death after every step,
//! by shm-ring's `tests/loom_cache.rs` (keep that model in step with this file).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use shm::{Memseg, Memzone, MemzoneKind, Region};
use shm_ring::{McConsumer, MpProducer, Ring, SyncMode};

use crate::layout::*;
use crate::owner::{pid_alive, process_start_time, OwnerTag};
use crate::PoolError;
pub use shm::stats::{CacheStats, PoolStats};

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

/// The process-local view of a pool; shared by its handles.
pub(crate) struct PoolShared {
    /// Keeps the mapping alive for the pointers below.
    _region: Region,
    pub(crate) info: PoolInfo,
    pub(crate) name: String,
    pub(crate) ring: Ring<u32>,
    counters: NonNull<PoolCounters>,
    caches: NonNull<u8>,
    pub(crate) objs: NonNull<u8>,
    /// One log line per kind of trouble per process.
    logged: [AtomicBool; 4],
}

// SAFETY: the pointers target shared memory kept mapped by `region`; the counters are
// atomics, cache slots are reached through their atomic headers and owner-exclusive
// arrays, objects through the handles' protocol; nothing is tied to a thread.
unsafe impl Send for PoolShared {}
// SAFETY: as for Send: `&PoolShared` only gives atomic access or owner-exclusive access.
unsafe impl Sync for PoolShared {}

/// Kinds of trouble logged once per process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trouble {
    BadHandle = 0,
    DoubleFree = 1,
    CorruptHeader = 2,
    PutFail = 3,
}

impl PoolShared {
    pub(crate) fn counters(&self) -> &PoolCounters {
        // SAFETY: bounds- and alignment-checked at open; kept mapped by `region`; atomics.
        unsafe { self.counters.as_ref() }
    }

    pub(crate) fn slot_header(&self, slot: u32) -> &CacheSlotHeader {
        debug_assert!(slot < CACHE_SLOTS);
        // SAFETY: `slot < CACHE_SLOTS` (callers iterate that range), so the header lies in
        // the span checked at open; 64-byte aligned; all fields are atomics.
        unsafe {
            &*self
                .caches
                .as_ptr()
                .wrapping_add(slot as usize * CACHE_SLOT_STRIDE as usize)
                .cast::<CacheSlotHeader>()
        }
    }

    pub(crate) fn slot_objs(&self, slot: u32) -> *mut u32 {
        // In bounds for `slot < CACHE_SLOTS`: the array follows the slot's 64-byte header.
        self.caches
            .as_ptr()
            .wrapping_add(slot as usize * CACHE_SLOT_STRIDE as usize + 64)
            .cast::<u32>()
    }

    /// Counts and logs (once per process per kind) a problem found in shared memory.
    #[cold]
    pub(crate) fn trouble(&self, kind: Trouble, n: u64, what: &str) {
        let c = self.counters();
        let counter = match kind {
            Trouble::BadHandle => &c.bad_handle,
            Trouble::DoubleFree => &c.double_free,
            Trouble::CorruptHeader => &c.corrupt_header,
            Trouble::PutFail => &c.put_fail,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if !self.logged[kind as usize].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "mempool {}: {what} (counted; further ones are only counted)",
                self.name
            );
        }
    }

    /// How many leading cache positions of dead process `pid`'s cache in `slot` hold its
    /// objects: the published length, corrected by the free-ring operation it recorded
    /// (`CacheSlotHeader::op`) if it died inside one. The ring's record of that
    /// operation says whether it took effect: a refill that did has copied its objects
    /// (holes skipped, the rest holes) whether or not the length says so; a flush that
    /// did has sent its objects away whether or not the length was lowered. One that did
    /// not (or never started) moved nothing: the ring's repair voids or returns its range.
    fn recovered_len(&self, hdr: &CacheSlotHeader, pid: u32) -> u32 {
        let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
        // Acquire: pairs with `begin_op`'s Release (a recoverer racing nothing, in fact:
        // the owner is dead).
        let op = hdr.op.load(Ordering::Acquire);
        if op == 0 {
            return len;
        }
        let (kind, rec) = (op & 3, ((op >> 8) & 0xff) as usize);
        let (seq, from) = (
            hdr.op_seq.load(Ordering::Relaxed),
            hdr.op_from.load(Ordering::Relaxed).min(CACHE_OBJS),
        );
        let start = hdr.start_time.load(Ordering::Relaxed);
        let took = self.ring.record_of(pid, start).into_iter().find(|v| {
            v.index == rec
                && v.producer == (kind == CACHE_OP_FLUSH)
                && v.seq == seq
                && v.state == shm_ring::OpState::Done
        });
        hdr.op.store(0, Ordering::Relaxed);
        match (kind, took) {
            (CACHE_OP_REFILL, Some(v)) => len
                .max(from.saturating_add(v.len).saturating_add(v.adopted))
                .min(CACHE_OBJS),
            (CACHE_OP_FLUSH, Some(_)) => from.min(len),
            _ => len,
        }
    }

    /// Flushes the cache in `slot` of dead process `pid` to the free ring; `slot`'s owner
    /// word must already be ours (`SLOT_RECOVERING` or our pid). Returns objects flushed.
    ///
    /// The producer it pushes with is made after the cache's length is settled: making it
    /// claims a ring record, which may recycle the dead process's records that the
    /// settling reads.
    fn flush_slot(&self, slot: u32, pid: u32) -> u32 {
        let hdr = self.slot_header(slot);
        let len = self.recovered_len(hdr, pid);
        let mut tmp = vec![0u32; len as usize];
        // SAFETY: `len <= CACHE_OBJS` indices inside the slot's array; the owner is dead
        // (or is us) so nobody writes them now; plain u32 reads.
        unsafe {
            std::ptr::copy_nonoverlapping(self.slot_objs(slot), tmp.as_mut_ptr(), len as usize)
        };
        // Holes a refill's dequeue left (the ring's skipped positions) are no objects.
        tmp.retain(|&i| i != u32::MAX);
        let n = self.info.obj_count;
        let before = tmp.len();
        tmp.retain(|&i| i < n);
        let bad = before - tmp.len();
        // An index at two positions is one object: a refill killed inside the ring's
        // compaction of skipped holes (shm-ring `skip_holes`: a move is two stores) leaves
        // it twice (shm-ring's `tests/loom_cache.rs` shows it).
        let before = tmp.len();
        tmp.sort_unstable();
        tmp.dedup();
        let dups = before - tmp.len();
        if self.info.flags & POOL_F_MBUF != 0 {
            // A buffer being allocated or freed when its owner died is in the cache with
            // the owner's tag: marked free here, so the reclaim by tag that follows does
            // not free it a second time.
            for &i in &tmp {
                let hdr = crate::mbuf::header_ptr(self.objs, self.info.obj_size, i);
                // SAFETY: `i < obj_count`: the header lies in the objects span checked at
                // open; only its atomic fields are touched (host pools only: export pools
                // are never flushed).
                let h = unsafe { &*hdr };
                let (owner, refcnt) = (&h.owner, &h.refcnt);
                // Relaxed: the owner is dead; the ring's Release publishes them onwards.
                owner.store(crate::owner::OwnerTag::FREE.0, Ordering::Relaxed);
                refcnt.store(0, Ordering::Relaxed);
            }
        }
        if bad != 0 {
            self.trouble(
                Trouble::BadHandle,
                bad as u64,
                "a dead owner's cache held out-of-range indices",
            );
        }
        if dups != 0 {
            // Not counted as a double free: a kill at the wrong instant does it.
            tracing::info!(
                "mempool {}: {dups} index(es) twice in a dead cache",
                self.name
            );
        }
        let mut producer = self.ring.mp_producer().expect("MP/MC");
        let pushed = producer.enqueue_burst(&tmp).unwrap_or(0);
        if pushed < tmp.len() {
            self.trouble(
                Trouble::PutFail,
                (tmp.len() - pushed) as u64,
                "free ring full while flushing a cache (duplicate indices?)",
            );
        }
        hdr.len.store(0, Ordering::Relaxed);
        pushed as u32
    }
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
        check_params(name, params)?;
        let bytes = pool_bytes(params)
            .ok_or_else(|| PoolError::Create(format!("pool {name:?} is too large")))?;
        let zone = seg
            .reserve(name, bytes, OBJ_ALIGN, MemzoneKind::Mempool)
            .map_err(|e| PoolError::Create(e.to_string()))?;
        Self::init(zone.region(), zone.offset, zone.len_bytes, name, params)
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
        let mut producer = ring.mp_producer().map_err(|e| bad(e.to_string()))?;
        let all: Vec<u32> = (0..params.count).collect();
        for chunk in all.chunks(4096) {
            producer
                .enqueue_bulk(chunk)
                .map_err(|e| bad(e.to_string()))?;
        }
        region.write(off, &info).map_err(oob)?;
        let pool = Self::open(region, off, len_bytes)?;
        if params.flags & POOL_F_MBUF != 0 {
            crate::mbuf::init_headers(&pool);
        }
        Ok(pool)
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
            crate::mbuf::check_geometry(&info).map_err(|why| bad(format!("pool {name}: {why}")))?;
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
            flush_from: 0,
        }
    }

    fn claim_slot(&self, owner: OwnerTag) -> Result<u32, PoolError> {
        let me = std::process::id();
        let my_start = process_start_time(me).unwrap_or(0);
        let sh = &self.shared;
        // Free slots first, then dead owners' slots.
        for pass in 0..2 {
            for slot in 0..CACHE_SLOTS {
                let hdr = sh.slot_header(slot);
                let cur = hdr.owner_pid.load(Ordering::Acquire);
                let take = if pass == 0 {
                    cur == 0
                } else {
                    cur != 0 && cur != SLOT_RECOVERING && owner_dead(cur, hdr)
                };
                if !take {
                    continue;
                }
                // Acquire: pairs with the Release that freed the slot (or the dead owner's
                // last stores, visible since it is gone), so its `len` and array are current.
                if hdr
                    .owner_pid
                    .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if pass == 1 {
                    sh.flush_slot(slot, cur);
                    sh.counters()
                        .caches_recovered
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "mempool {}: cache slot {slot} of dead pid {cur} recovered",
                        sh.name
                    );
                }
                hdr.len.store(0, Ordering::Relaxed);
                hdr.owner_tag.store(owner.0, Ordering::Relaxed);
                hdr.start_time.store(my_start, Ordering::Release);
                return Ok(slot);
            }
        }
        Err(PoolError::NoCacheSlot {
            pool: sh.name.clone(),
            slots: CACHE_SLOTS,
        })
    }

    /// Flushes the caches held by `pid` back to the free ring and frees their slots;
    /// returns how many objects went back. The caller knows the process is gone; with
    /// `start_time` (its /proc start time) a slot claimed by a later process that reused
    /// the pid is left alone.
    pub fn flush_caches_of(&self, pid: u32, start_time: Option<u64>) -> u64 {
        self.recover_slots(|cur, hdr| {
            let recorded = hdr.start_time.load(Ordering::Acquire);
            cur == pid && (recorded == 0 || start_time.is_none_or(|t| t == recorded))
        })
    }

    /// Repairs what dead process `pid` (started at `start_time`, 0 = any) left inside an
    /// operation on the free ring (shm-ring's `repair_dead`: a reservation it never wrote
    /// becomes holes, one it wrote is published, the objects of one it was taking out are
    /// returned) and puts the returned objects back. Call after
    /// [`flush_caches_of`](Self::flush_caches_of), whose recovery reads the ring's records
    /// of that process first. Returns how many objects went back.
    pub fn repair_free_ring(&self, pid: u32, start_time: u64) -> u64 {
        let sh = &self.shared;
        let report = sh.ring.repair_dead(pid, start_time);
        let n = sh.info.obj_count;
        let mut back: Vec<u32> = report.returned.into_iter().filter(|&i| i < n).collect();
        if report.left_pending + report.published > 0 {
            // A range handed to the ring is released by the next consumer at the tail: be
            // that consumer now (one object out, and back in below), so the ring is whole
            // again before anyone counts it.
            if let Ok(mut c) = sh.ring.mc_consumer() {
                let mut one = [0u32; 1];
                if let Ok(1) = c.dequeue_burst(&mut one) {
                    back.extend(one.iter().filter(|&&i| i < n));
                }
            }
        }
        if back.is_empty() {
            return 0;
        }
        let mut producer = sh.ring.mp_producer().expect("MP/MC");
        let pushed = producer.enqueue_burst(&back).unwrap_or(0);
        if pushed < back.len() {
            sh.trouble(
                Trouble::PutFail,
                (back.len() - pushed) as u64,
                "free ring full while repairing a dead process's reservation",
            );
        }
        pushed as u64
    }

    /// Cache slots held by `pid`.
    pub fn caches_of(&self, pid: u32) -> u32 {
        (0..CACHE_SLOTS)
            .filter(|&slot| {
                self.shared
                    .slot_header(slot)
                    .owner_pid
                    .load(Ordering::Relaxed)
                    == pid
            })
            .count() as u32
    }

    /// Flushes every cache whose owner process is dead (pid gone or reused); returns how
    /// many objects went back.
    pub fn flush_dead_caches(&self) -> u64 {
        self.recover_slots(owner_dead)
    }

    fn recover_slots(&self, dead: impl Fn(u32, &CacheSlotHeader) -> bool) -> u64 {
        let sh = &self.shared;

        let mut total = 0u64;
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            let cur = hdr.owner_pid.load(Ordering::Acquire);
            if cur == 0 || cur == SLOT_RECOVERING || !dead(cur, hdr) {
                continue;
            }
            if hdr
                .owner_pid
                .compare_exchange(cur, SLOT_RECOVERING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            total += u64::from(sh.flush_slot(slot, cur));
            sh.counters()
                .caches_recovered
                .fetch_add(1, Ordering::Relaxed);
            hdr.start_time.store(0, Ordering::Relaxed);
            hdr.owner_tag.store(0, Ordering::Relaxed);
            // Release: the flush and cleared fields are visible to the next claimer.
            hdr.owner_pid.store(0, Ordering::Release);
        }
        total
    }

    /// A snapshot of the pool's occupancy and counters.
    pub fn stats(&self) -> PoolStats {
        let sh = &self.shared;
        let in_ring = sh.ring.count() as u64;
        let mut caches = Vec::new();
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            let pid = hdr.owner_pid.load(Ordering::Relaxed);
            if pid == 0 {
                continue;
            }
            caches.push(CacheStats {
                slot,
                pid,
                owner: hdr.owner_tag.load(Ordering::Relaxed),
                len: hdr.len.load(Ordering::Relaxed).min(CACHE_OBJS),
            });
        }
        let in_caches: u64 = caches.iter().map(|c| u64::from(c.len)).sum();
        let available = (in_ring + in_caches).min(u64::from(sh.info.obj_count));
        let c = sh.counters();
        PoolStats {
            name: sh.name.clone(),
            pool_id: sh.info.pool_id,
            count: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            cache_size: sh.info.cache_size,
            available,
            in_use: u64::from(sh.info.obj_count) - available,
            in_ring,
            in_caches,
            caches,
            get_fail: c.get_fail.load(Ordering::Relaxed),
            put_fail: c.put_fail.load(Ordering::Relaxed),
            bad_handle: c.bad_handle.load(Ordering::Relaxed),
            double_free: c.double_free.load(Ordering::Relaxed),
            corrupt_header: c.corrupt_header.load(Ordering::Relaxed),
            reclaimed: c.reclaimed.load(Ordering::Relaxed),
            caches_recovered: c.caches_recovered.load(Ordering::Relaxed),
        }
    }

    /// Checks the free list of a **quiescent** pool: every index in the ring and in every
    /// cache, counted once. A healthy idle pool has `free == count`, no duplicates and
    /// nothing out of range.
    pub fn audit(&self) -> Audit {
        let sh = &self.shared;
        let n = sh.info.obj_count;
        let mut seen = vec![false; n as usize];
        let mut audit = Audit::default();
        let mut note = |i: u32, audit: &mut Audit| {
            if i >= n {
                audit.out_of_range += 1;
            } else if std::mem::replace(&mut seen[i as usize], true) {
                audit.duplicates += 1;
            } else {
                audit.free += 1;
            }
        };
        let mut ring = Vec::new();
        sh.ring.snapshot_into(&mut ring);
        audit.in_ring = ring.len() as u64;
        for &i in &ring {
            note(i, &mut audit);
        }
        for slot in 0..CACHE_SLOTS {
            let hdr = sh.slot_header(slot);
            if hdr.owner_pid.load(Ordering::Acquire) == 0 {
                continue;
            }
            let len = hdr.len.load(Ordering::Acquire).min(CACHE_OBJS);
            audit.in_caches += u64::from(len);
            for k in 0..len as usize {
                // SAFETY: `k < len <= CACHE_OBJS`, inside the slot's array; a racy read
                // of a live cache only gives a stale value (documented: quiescent pools).
                let i = unsafe { sh.slot_objs(slot).wrapping_add(k).read_volatile() };
                note(i, &mut audit);
            }
        }
        audit.missing = u64::from(n) - audit.free;
        audit
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

/// Copies object indices and reports whether any is out of range (`>= limit`), in one
/// pass: eight at a time as fixed-size arrays (plain vector moves and compares, no
/// `memcpy` call), then the rest one by one.
#[inline(always)]
fn copy_checked(dst: &mut [u32], src: &[u32], limit: u32) -> bool {
    let mut bad = false;
    let (d8, d1) = dst.as_chunks_mut::<8>();
    let (s8, s1) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
        bad |= s.iter().fold(false, |b, &i| b | (i >= limit));
    }
    for (d, s) in d1.iter_mut().zip(s1) {
        *d = *s;
        bad |= *s >= limit;
    }
    bad
}

/// True when the process that claimed a cache slot is gone (pid dead, or alive with another
/// start time: a reused pid).
fn owner_dead(pid: u32, hdr: &CacheSlotHeader) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    let recorded = hdr.start_time.load(Ordering::Acquire);
    recorded != 0 && process_start_time(pid).is_some_and(|t| t != recorded)
}

/// Result of [`Mempool::audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Audit {
    /// Distinct valid free indices found.
    pub free: u64,
    /// Entries in the ring.
    pub in_ring: u64,
    /// Entries in caches.
    pub in_caches: u64,
    /// Indices seen more than once.
    pub duplicates: u64,
    /// Indices not below the object count.
    pub out_of_range: u64,
    /// Objects not found free (handed out, or lost).
    pub missing: u64,
}

/// A per-thread handle on a pool: get and put objects by index, through this thread's cache
/// (when the pool has caches) or straight from the free ring. Dropping it flushes the cache
/// and frees its slot.
pub struct PoolCache {
    pool: Mempool,
    producer: MpProducer<u32>,
    consumer: McConsumer<u32>,
    slot: Option<u32>,
    /// The slot's index array (null without a slot).
    objs: *mut u32,
    /// Authoritative length (the shared copy is written after each change).
    len: u32,
    /// The slot's shared `len` word, or `_spare_len` without a slot.
    shared_len: *const AtomicU32,
    /// Where a handle without a slot writes its (always zero) length, so the store in the
    /// fast path needs no branch.
    _spare_len: Box<AtomicU32>,
    size: u32,
    flush_threshold: u32,
    n: u32,
    /// First cache position of the flush being recorded (see `begin_op`).
    flush_from: u32,
}

// SAFETY: `objs` points into the pool's region, kept mapped by `pool`; the slot belongs to
// this handle (claimed in shared memory), not to a thread, so the handle may move.
unsafe impl Send for PoolCache {}

impl std::fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCache")
            .field("pool", &self.pool.name())
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish()
    }
}

impl PoolCache {
    /// The pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The claimed cache slot, if any.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// Objects in this handle's cache.
    pub fn cached(&self) -> u32 {
        self.len
    }

    /// Writes the cache length where a reclaimer finds it.
    #[inline(always)]
    fn publish_len(&self) {
        // SAFETY: `shared_len` points at the claimed slot's `len` atomic, inside the pool's
        // region which `self.pool` keeps mapped, or at `_spare_len`, owned by `self`.
        let len = unsafe { &*self.shared_len };
        // Relaxed: only a reclaimer reads it, after this process is dead.
        len.store(self.len, Ordering::Relaxed);
    }

    /// Gets `out.len()` objects, all or none (DPDK's `rte_mempool_get_bulk`).
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] (counted) when fewer are free; `out` is then unspecified.
    #[inline]
    pub fn get_bulk(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        let n = out.len() as u32;
        // Fast path: the cache has them. (Handles without a cache have size 0.)
        if n <= self.len && n < self.size {
            self.len -= n;
            // SAFETY: `len - n .. len` with `len <= CACHE_OBJS`: inside this slot's index
            // array, which this handle owns.
            let cached = unsafe {
                std::slice::from_raw_parts(self.objs.wrapping_add(self.len as usize), n as usize)
            };
            let bad = copy_checked(out, cached, self.n);
            self.publish_len();
            if bad {
                return self.reject_bad_get(out);
            }
            return Ok(());
        }
        if self.size == 0 {
            return self.get_uncached(out);
        }
        self.get_slow(out)
    }

    /// [`PoolCache::get_bulk`] without a cache: straight from the ring (kept out of line
    /// so the cached fast path stays small enough to inline well).
    #[inline(never)]
    fn get_uncached(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        self.get_from_ring(out)
    }

    /// Refill (or bypass) path of [`PoolCache::get_bulk`].
    #[inline(never)]
    fn get_slow(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        let n = out.len() as u32;
        if n >= self.size {
            return self.get_from_ring(out);
        }
        // Refill (recorded): what is asked plus enough to bring the cache back to its size.
        if !self.refill(n) {
            return self.get_from_ring(out);
        }
        self.get_bulk(out)
    }

    #[inline(always)]
    fn get_from_ring(&mut self, out: &mut [u32]) -> Result<(), PoolError> {
        match self.consumer.dequeue_bulk(out) {
            Ok(k) if k == out.len() => {
                let limit = self.n;
                if out.iter().fold(false, |bad, &i| bad | (i >= limit)) {
                    return self.reject_bad_get(out);
                }
                Ok(())
            }
            Ok(k) if k > 0 => {
                // Fewer than asked (the ring skipped holes): all or none, so they go back.
                let back: Vec<u32> = out[..k].to_vec();
                self.put_to_ring(&back);
                self.get_failed(out.len())
            }
            Ok(_) | Err(_) => self.get_failed(out.len()),
        }
    }

    #[cold]
    fn get_failed(&self, wanted: usize) -> Result<(), PoolError> {
        self.pool
            .shared
            .counters()
            .get_fail
            .fetch_add(1, Ordering::Relaxed);
        Err(PoolError::Exhausted {
            pool: self.pool.name().to_string(),
            wanted,
        })
    }

    /// Free-list entries come from shared memory: an out-of-range one is dropped (counted)
    /// and the whole get fails rather than hand out a bad index.
    #[cold]
    fn reject_bad_get(&mut self, got: &mut [u32]) -> Result<(), PoolError> {
        let n = self.n;
        let bad = got.iter().filter(|&&i| i >= n).count();
        self.pool.shared.trouble(
            Trouble::BadHandle,
            bad as u64,
            "free list held out-of-range object indices",
        );
        let good: Vec<u32> = got.iter().copied().filter(|&i| i < n).collect();
        self.put_bulk(&good);
        Err(PoolError::Exhausted {
            pool: self.pool.name().to_string(),
            wanted: got.len(),
        })
    }

    /// Gets one object.
    #[inline]
    pub fn get(&mut self) -> Option<u32> {
        // Fast path, as `get_bulk`'s for one object: the cache has it.
        if self.len > 0 && self.size > 1 {
            // SAFETY: `len - 1 < len <= CACHE_OBJS`: inside this slot's index array, which
            // this handle owns.
            let obj = unsafe { self.objs.wrapping_add(self.len as usize - 1).read() };
            if obj < self.n {
                self.len -= 1;
                self.publish_len();
                return Some(obj);
            }
        }
        let mut one = [0u32];
        self.get_bulk(&mut one).ok().map(|()| one[0])
    }

    /// Returns objects to the pool (DPDK's `rte_mempool_put_bulk`). Indices out of range
    /// are dropped and counted; returns how many went back.
    #[inline]
    pub fn put_bulk(&mut self, objs: &[u32]) -> usize {
        let n = objs.len() as u32;
        // Fast path: room in the cache below the flush threshold (0 without a cache).
        if self.len + n <= self.flush_threshold {
            // SAFETY: `len + n <= flush_threshold <= 768 < CACHE_OBJS`: inside the owned
            // index array.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    self.objs.wrapping_add(self.len as usize),
                    n as usize,
                )
            };
            // Copied first, committed (len) only if every index is valid.
            if !copy_checked(dst, objs, self.n) {
                self.len += n;
                self.publish_len();
                return objs.len();
            }
        }
        if self.flush_threshold == 0 {
            return self.put_uncached(objs);
        }
        self.put_slow(objs)
    }

    /// [`PoolCache::put_bulk`] without a cache: straight to the ring (out of line, as
    /// `get_uncached`).
    #[inline(never)]
    fn put_uncached(&mut self, objs: &[u32]) -> usize {
        let nobj = self.n;
        if objs.iter().fold(false, |bad, &i| bad | (i >= nobj)) {
            return self.put_filtered(objs);
        }
        self.put_to_ring(objs)
    }

    /// Flush (or bypass) path of [`PoolCache::put_bulk`], and where bad indices are weeded.
    #[inline(never)]
    fn put_slow(&mut self, objs: &[u32]) -> usize {
        let nobj = self.n;
        if objs.iter().fold(false, |bad, &i| bad | (i >= nobj)) {
            return self.put_filtered(objs);
        }
        let n = objs.len() as u32;
        if self.slot.is_none() || n > CACHE_MAX_SIZE {
            return self.put_to_ring(objs);
        }
        // Over the threshold: flush the whole cache, then start it again with these.
        // SAFETY: `len <= flush_threshold < CACHE_OBJS` indices in the owned array.
        let all = unsafe { std::slice::from_raw_parts(self.objs, self.len as usize) };
        let (rec, seq) = (self.producer.record(), self.producer.next_op_seq());
        self.flush_from = 0;
        self.begin_op(CACHE_OP_FLUSH, rec, seq);
        let pushed = self.producer.enqueue_burst(all).unwrap_or(0);
        if pushed < all.len() {
            self.pool.shared.trouble(
                Trouble::PutFail,
                (all.len() - pushed) as u64,
                "free ring full on a cache flush (an object was freed twice?)",
            );
        }
        // SAFETY: `n <= CACHE_MAX_SIZE < CACHE_OBJS`: inside the owned array.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.objs, n as usize) };
        dst.copy_from_slice(objs);
        self.len = n;
        self.publish_len();
        self.end_op();
        objs.len()
    }

    #[inline(always)]
    fn put_to_ring(&mut self, objs: &[u32]) -> usize {
        let pushed = self.producer.enqueue_burst(objs).unwrap_or(0);
        if pushed < objs.len() {
            self.put_failed(objs.len() - pushed);
        }
        pushed
    }

    #[cold]
    fn put_failed(&self, lost: usize) {
        self.pool.shared.trouble(
            Trouble::PutFail,
            lost as u64,
            "free ring full on put (an object was freed twice?)",
        );
    }

    #[cold]
    fn put_filtered(&mut self, objs: &[u32]) -> usize {
        let n = self.n;
        let good: Vec<u32> = objs.iter().copied().filter(|&i| i < n).collect();
        self.pool.shared.trouble(
            Trouble::BadHandle,
            (objs.len() - good.len()) as u64,
            "put of out-of-range object indices",
        );
        self.put_bulk(&good)
    }

    /// Crash-exact allocation, step 1: makes sure the cache holds at least one object
    /// (refilling it from the free ring) and returns the top one, still in the cache: the
    /// caller records its new owner (the mbuf header's tag) and then takes it with
    /// [`take_top`](Self::take_top). A process killed in between leaves the object in its
    /// cache, whose recovery frees it whatever its tag says. `None`: the pool is empty (or
    /// this handle has no cache; use [`get`](Self::get) then).
    #[inline]
    pub(crate) fn peek_top(&mut self) -> Option<u32> {
        if self.len == 0 && (self.size <= 1 || !self.refill(1)) {
            return None;
        }
        // SAFETY: `0 < len <= CACHE_OBJS`: inside this slot's index array, owned here.
        let obj = unsafe { self.objs.wrapping_add(self.len as usize - 1).read() };
        if obj < self.n {
            return Some(obj);
        }
        // A bad index in our own cache: dropped (counted), try the next.
        self.len -= 1;
        self.publish_len();
        self.pool
            .shared
            .trouble(Trouble::BadHandle, 1, "a cache held an out-of-range index");
        self.peek_top()
    }

    /// Crash-exact bulk allocation, step 1 (as [`peek_top`](Self::peek_top) for up to
    /// `out.len()` objects, at most the cache's size): refills the cache if it holds fewer
    /// and copies its top objects, still in the cache, into `out`, topmost last; returns
    /// how many (0: the pool is empty). The caller tags them and then takes them with
    /// [`take_top_n`](Self::take_top_n). `None`: this handle has no cache.
    #[inline]
    pub(crate) fn peek_top_bulk(&mut self, out: &mut [u32]) -> Option<usize> {
        if self.size <= 1 {
            return None;
        }
        let want = (out.len() as u32).min(self.size);
        if self.len < want && !self.refill(want) {
            // Fewer free than asked: whatever the cache holds (the caller fails all or
            // none, and its drops put them back).
            if self.len == 0 {
                return Some(0);
            }
        }
        let k = want.min(self.len);
        // SAFETY: `k <= len <= CACHE_OBJS`: the top `k` positions of this slot's index
        // array, which this handle owns.
        let top = unsafe {
            std::slice::from_raw_parts(self.objs.wrapping_add((self.len - k) as usize), k as usize)
        };
        if copy_checked(&mut out[..k as usize], top, self.n) {
            // A bad index in our own cache: the one-at-a-time path weeds it (counted).
            return Some(usize::from(self.peek_top().is_some_and(|i| {
                out[0] = i;
                true
            })));
        }
        Some(k as usize)
    }

    /// Crash-exact bulk allocation, step 2: takes the `k` objects
    /// [`peek_top_bulk`](Self::peek_top_bulk) returned out of the cache.
    #[inline(always)]
    pub(crate) fn take_top_n(&mut self, k: u32) {
        self.len -= k;
        self.publish_len();
    }

    /// Crash-exact allocation, step 2: takes the object [`peek_top`](Self::peek_top)
    /// returned out of the cache.
    #[inline(always)]
    pub(crate) fn take_top(&mut self) {
        self.len -= 1;
        self.publish_len();
    }

    /// Refills the cache so that it holds at least `k` (`k <= size`) objects; false when
    /// the free ring has too few.
    #[inline(never)]
    fn refill(&mut self, k: u32) -> bool {
        if self.len >= k {
            return true;
        }
        // What is asked plus enough to bring the cache back to its size; if the ring has
        // fewer, just what is asked.
        for req in [k + (self.size - self.len), k - self.len] {
            // SAFETY: `len < k <= size <= 512`, and `len + req <= k + size <= 1024 =
            // CACHE_OBJS`, so the span is inside this slot's array, which this handle owns.
            let room = unsafe {
                std::slice::from_raw_parts_mut(
                    self.objs.wrapping_add(self.len as usize),
                    req as usize,
                )
            };
            let (rec, seq) = (self.consumer.record(), self.consumer.next_op_seq());
            self.begin_op(CACHE_OP_REFILL, rec, seq);
            let got = self.consumer.dequeue_bulk(room).unwrap_or(0) as u32;
            // (Fewer than asked when the ring skipped holes: what came is ours all the same.)
            crate::crash_point!("cache.refill_after_dequeue");
            self.len += got;
            self.publish_len();
            self.end_op();
            if self.len >= k {
                return true;
            }
        }
        false
    }

    /// Records the free-ring operation about to start (see [`CacheSlotHeader::op`]):
    /// its kind, the ring record of the handle doing it and its sequence number, and the
    /// cache position it starts from (the current length for a refill, the size for a
    /// flush of the excess, 0 for a flush of everything: see the callers). Nothing is
    /// recorded without a slot or when the ring had no record for the handle.
    #[inline(always)]
    fn begin_op(&self, kind: u32, rec: Option<usize>, seq: u32) {
        let (Some(slot), Some(rec)) = (self.slot, rec) else {
            return;
        };
        let from = if kind == CACHE_OP_REFILL {
            self.len
        } else {
            self.flush_from
        };
        let h = self.pool.shared.slot_header(slot);
        // Relaxed, then Release on `op`: a recoverer reads them after this process died
        // (its stores are all visible then); the order keeps a live reader consistent.
        h.op_seq.store(seq, Ordering::Relaxed);
        h.op_from.store(from, Ordering::Relaxed);
        h.op.store(kind | ((rec as u32 & 0xff) << 8), Ordering::Release);
    }

    /// The operation [`begin_op`](Self::begin_op) recorded is over (its effect published
    /// in the cache length).
    #[inline(always)]
    fn end_op(&self) {
        if let Some(slot) = self.slot {
            // Release: after the length that holds the operation's effect.
            self.pool
                .shared
                .slot_header(slot)
                .op
                .store(0, Ordering::Release);
        }
    }

    /// Moves the objects above the cache's size to the free ring (DPDK's flush of a cache
    /// over its threshold), without allocating.
    #[inline(never)]
    pub(crate) fn flush_excess(&mut self) {
        if self.len <= self.size {
            return;
        }
        // SAFETY: `size < len <= CACHE_OBJS` indices in the owned array.
        let excess = unsafe {
            std::slice::from_raw_parts(
                self.objs.wrapping_add(self.size as usize),
                (self.len - self.size) as usize,
            )
        };
        let (rec, seq) = (self.producer.record(), self.producer.next_op_seq());
        self.flush_from = self.size;
        self.begin_op(CACHE_OP_FLUSH, rec, seq);
        let pushed = self.producer.enqueue_burst(excess).unwrap_or(0);
        crate::crash_point!("cache.flush_after_enqueue");
        if pushed < excess.len() {
            self.pool.shared.trouble(
                Trouble::PutFail,
                (excess.len() - pushed) as u64,
                "free ring full on a cache flush (an object was freed twice?)",
            );
        }
        self.len = self.size;
        self.publish_len();
        self.end_op();
    }

    /// True when [`put`](Self::put) of one object goes into the cache without a flush.
    #[inline(always)]
    pub(crate) fn has_room(&self) -> bool {
        self.len < self.flush_threshold
    }

    /// Returns one object.
    #[inline]
    pub fn put(&mut self, obj: u32) -> bool {
        // Fast path, as `put_bulk`'s for one object: room below the flush threshold.
        if self.len < self.flush_threshold && obj < self.n {
            // SAFETY: `len < flush_threshold <= 768 < CACHE_OBJS`: inside the owned index
            // array.
            unsafe { self.objs.wrapping_add(self.len as usize).write(obj) };
            self.len += 1;
            self.publish_len();
            return true;
        }
        self.put_bulk(&[obj]) == 1
    }

    /// Drops the handle as a killed process would: the slot stays claimed and the cache
    /// keeps its objects (tests of recovery and reclaim).
    #[cfg(test)]
    pub(crate) fn abandon(mut self) {
        self.slot = None;
        self.len = 0;
        self.size = 0;
        self.flush_threshold = 0;
        self.shared_len = &*self._spare_len;
    }

    /// Moves every cached object back to the free ring.
    pub fn flush(&mut self) {
        if self.slot.is_none() || self.len == 0 {
            return;
        }
        // SAFETY: `len <= CACHE_OBJS` indices in the owned array, which stays ours (and
        // unchanged) while the ring copies them.
        let all = unsafe { std::slice::from_raw_parts(self.objs, self.len as usize) };
        let (rec, seq) = (self.producer.record(), self.producer.next_op_seq());
        self.flush_from = 0;
        self.begin_op(CACHE_OP_FLUSH, rec, seq);
        let pushed = self.producer.enqueue_burst(all).unwrap_or(0);
        if pushed < all.len() {
            self.put_failed(all.len() - pushed);
        }
        self.len = 0;
        self.publish_len();
        self.end_op();
    }
}

impl Drop for PoolCache {
    fn drop(&mut self) {
        self.flush();
        if let Some(slot) = self.slot {
            let hdr = self.pool.shared.slot_header(slot);
            hdr.start_time.store(0, Ordering::Relaxed);
            hdr.owner_tag.store(0, Ordering::Relaxed);
            // Release: pairs with the next claimer's Acquire CAS.
            let _ = hdr.owner_pid.compare_exchange(
                std::process::id(),
                0,
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }
}
