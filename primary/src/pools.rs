//! The primary's mbuf pools: created at start, reported over the control socket, and
//! cleaned up for a secondary that goes away (its caches flushed, every buffer still tagged
//! with its process slot returned to the pool) before its slot can be reused.
//!
//! A pool in an export segment is guest-writable (its headers, free ring and cache slots):
//! it is reclaimed through [`GuestPool::reclaim_dead`] only (atomic CAS of the owner words,
//! the bounded untrusted producer, no cache slot read), so a guest wrecking its own pool
//! cannot hold the control thread that runs the reclaim.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use shm::stats::PoolStats;
use shm::Memseg;
use shm_mempool::{GuestPool, MbufPool, MbufPoolParams, OwnerTag, PoolError};

use crate::control_server::ControlHooks;
use crate::MempoolRequest;

/// How long the primary waits for a process whose connection closed to finish exiting
/// before it reclaims the process's buffers.
pub const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How often the primary checks whether a secondary that detached while holding pool
/// objects has ended.
pub const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// One registered pool.
#[derive(Debug, Clone)]
struct Entry {
    pool: MbufPool,
    /// In an export segment: a guest can write it.
    guest_writable: bool,
}

/// Every pool of this primary, in creation order (pool id = position + 1).
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: Mutex<Vec<Entry>>,
}

impl PoolRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates an mbuf pool in `seg` and registers it; `guest_writable` when `seg` is an
    /// export segment (then it is reclaimed through the guest-facing path only).
    ///
    /// # Errors
    /// [`PoolError::Create`] (bad parameters, no room, duplicate name).
    pub fn create(
        &self,
        seg: &Memseg,
        req: &MempoolRequest,
        guest_writable: bool,
    ) -> Result<MbufPool, PoolError> {
        let mut pools = self.lock();
        if pools.iter().any(|e| e.pool.mempool().name() == req.name) {
            return Err(PoolError::Create(format!(
                "mempool {:?} is given twice",
                req.name
            )));
        }
        let mut params = MbufPoolParams::new(req.count, req.cache_size, pools.len() as u32 + 1);
        params.data_room = req.data_room;
        let pool = MbufPool::create(seg, &req.name, &params)?;
        pools.push(Entry {
            pool: pool.clone(),
            guest_writable,
        });
        Ok(pool)
    }

    /// The first pool created (the one ports allocate from).
    pub fn first(&self) -> Option<MbufPool> {
        self.lock().first().map(|e| e.pool.clone())
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Option<MbufPool> {
        self.lock()
            .iter()
            .find(|e| e.pool.mempool().name() == name)
            .map(|e| e.pool.clone())
    }

    /// Statistics of every pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.lock()
            .iter()
            .map(|e| e.pool.mempool().stats())
            .collect()
    }

    /// Returns what a process that left slot `slot` with owner tag `tag` held: the caches
    /// its pid claimed and every buffer tagged `tag`. The connection closing says the
    /// process is going; this waits (up to `EXIT_WAIT`) until it is really gone before
    /// touching anything. Returns false, having touched nothing (with a warning), if it
    /// detached but keeps running while holding objects: call again once it has ended.
    /// Guest-writable pools hold no host cache slot (nobody on the host claims one there)
    /// and are reclaimed with bounded work whatever the guest writes meanwhile.
    pub fn reclaim_process(
        &self,
        slot: u32,
        tag: OwnerTag,
        pid: u32,
        start_time: Option<u64>,
    ) -> bool {
        self.reclaim_counted(slot, tag, pid, start_time).is_some()
    }

    /// [`reclaim_process`](Self::reclaim_process), returning (cached objects flushed,
    /// buffers reclaimed), or `None` for a process still running.
    pub fn reclaim_counted(
        &self,
        slot: u32,
        tag: OwnerTag,
        pid: u32,
        start_time: Option<u64>,
    ) -> Option<(u64, u64)> {
        let pools = self.lock().clone();
        // `owned_by` is one atomic load per header: bounded on any pool.
        let holds = pools.iter().any(|e| {
            (!e.guest_writable && e.pool.mempool().caches_of(pid) > 0) || e.pool.owned_by(tag) > 0
        });
        if !holds {
            return Some((0, 0));
        }
        let t0 = Instant::now();
        // Gone by shm::liveness's rule: a pid reused by a later process counts as gone.
        while !shm::liveness::holder_gone(pid, start_time.unwrap_or(0)) {
            if t0.elapsed() > EXIT_WAIT {
                tracing::warn!(
                    "secondary slot {slot} (pid {pid}) detached but is still running and holds pool objects; they stay with it until it ends"
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut totals = (0, 0);
        for Entry {
            pool,
            guest_writable,
        } in &pools
        {
            if *guest_writable {
                totals.1 += Self::reclaim_guest_writable(pool, slot, pid, tag);
                continue;
            }
            // In this order: the caches' recovery reads the free ring's records of the
            // process (did its last refill or flush take effect?), the ring's repair then
            // settles what it left reserved, and only then are its buffers taken by tag
            // (a buffer in its cache with its tag was marked free by the recovery).
            let flushed = pool.mempool().flush_caches_of(pid, start_time)
                + pool
                    .mempool()
                    .repair_free_ring(pid, start_time.unwrap_or(0));
            let reclaimed = pool.reclaim_owner(tag).returned;
            if flushed + reclaimed > 0 {
                tracing::info!(
                    "pool {}: slot {slot} (pid {pid}) is gone: flushed {flushed} cached objects, reclaimed {reclaimed} mbufs",
                    pool.mempool().name()
                );
            }
            totals.0 += flushed;
            totals.1 += reclaimed;
        }
        Some(totals)
    }

    /// Reclaims slot `slot`'s buffers from the guest-writable `pool`; returns how many
    /// went back to its free ring.
    fn reclaim_guest_writable(pool: &MbufPool, slot: u32, pid: u32, tag: OwnerTag) -> u64 {
        let name = pool.mempool().name();
        match GuestPool::reclaim_dead(pool, tag) {
            Ok(r) => {
                if r.returned > 0 {
                    tracing::info!(
                        "guest-writable pool {name}: slot {slot} (pid {pid}) is gone: reclaimed {} mbufs",
                        r.returned
                    );
                }
                if r.lost > 0 {
                    tracing::warn!(
                        "guest-writable pool {name}: {} mbufs of gone slot {slot} could not be returned (its free ring refused them: the guest broke it); they are lost to that pool",
                        r.lost
                    );
                }
                r.returned
            }
            Err(e) => {
                tracing::warn!("guest-writable pool {name}: slot {slot}: {e}");
                0
            }
        }
    }
}

/// What the control server calls back into: the pools (reclaim, statistics) and the
/// ports (statistics).
#[derive(Debug)]
pub struct Hooks {
    /// The pools.
    pub pools: std::sync::Arc<PoolRegistry>,
    /// The ports.
    pub ports: std::sync::Arc<Mutex<Vec<pmds::Port>>>,
}

impl ControlHooks for Hooks {
    fn secondary_gone(&self, slot: u32, tag: OwnerTag, pid: u32, start_time: Option<u64>) {
        let pools = self.pools.clone();
        if !pools.reclaim_process(slot, tag, pid, start_time) {
            // Detached but still running with pool objects: they stay with it until it
            // ends, then come back (its tag is its own, so nothing else is touched).
            let spawned = std::thread::Builder::new()
                .name("reclaim-watch".into())
                .spawn(move || {
                    while !shm::liveness::holder_gone(pid, start_time.unwrap_or(0)) {
                        std::thread::sleep(WATCH_PERIOD);
                    }
                    pools.reclaim_process(slot, tag, pid, start_time);
                });
            if spawned.is_err() {
                tracing::warn!("secondary slot {slot} (pid {pid}): cannot watch for its end; its objects stay with it");
            }
        }
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.pools.stats()
    }

    fn port_stats(&self) -> Vec<shm::stats::PortStats> {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(pmds::Port::stats)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm::Region;

    #[test]
    fn reclaim_waits_for_the_process_and_spares_a_live_one() {
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "pools", 1).unwrap();
        seg.mark_ready();
        let reg = PoolRegistry::default();
        let req = MempoolRequest {
            name: "m".into(),
            count: 256,
            cache_size: 16,
            data_room: 256,
            memseg: "main".into(),
        };
        let pool = reg.create(&seg, &req, false).unwrap();
        assert!(reg.create(&seg, &req, false).is_err(), "duplicate name");
        let tag = OwnerTag::process(5);
        let cache = pool.cache(tag).unwrap();
        let mut held = Vec::with_capacity(10);
        cache.alloc_bulk(&mut held, 10).unwrap();
        // Slot 5 "detached" but this process (its pid) keeps running: nothing is taken.
        let me = std::process::id();
        assert_eq!(reg.reclaim_counted(5, tag, me, None), None);
        assert_eq!(pool.owned_by(tag), 10);
        // A process that is gone: its buffers come back (its pid owns no cache here).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        held.drain(..).for_each(std::mem::forget);
        assert_eq!(reg.reclaim_counted(5, tag, dead, None), Some((0, 10)));
        assert_eq!(pool.owned_by(tag), 0);
        drop(held);
        drop(cache);
        assert_eq!(reg.stats()[0].available, 256);
        assert_eq!(reg.stats()[0].reclaimed, 10);
    }
}
