//! The primary's mbuf pools: created at start, reported over the control socket, and
//! cleaned up for a secondary that goes away (its caches flushed, every buffer still tagged
//! with its process slot returned to the pool) before its slot can be reused.

use std::sync::Mutex;

use shm::stats::PoolStats;
use shm::Memseg;
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag, PoolError};

use crate::control_server::ControlHooks;
use crate::MempoolRequest;

/// Every pool of this primary, in creation order (pool id = position + 1).
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: Mutex<Vec<MbufPool>>,
}

impl PoolRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MbufPool>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates an mbuf pool in `seg` and registers it.
    ///
    /// # Errors
    /// [`PoolError::Create`] (bad parameters, no room, duplicate name).
    pub fn create(&self, seg: &Memseg, req: &MempoolRequest) -> Result<MbufPool, PoolError> {
        let mut pools = self.lock();
        if pools.iter().any(|p| p.mempool().name() == req.name) {
            return Err(PoolError::Create(format!(
                "mempool {:?} is given twice",
                req.name
            )));
        }
        let mut params = MbufPoolParams::new(req.count, req.cache_size, pools.len() as u32 + 1);
        params.data_room = req.data_room;
        let pool = MbufPool::create(seg, &req.name, &params)?;
        pools.push(pool.clone());
        Ok(pool)
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Option<MbufPool> {
        self.lock()
            .iter()
            .find(|p| p.mempool().name() == name)
            .cloned()
    }

    /// Statistics of every pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.lock().iter().map(|p| p.mempool().stats()).collect()
    }

    /// Returns what a gone process held: flushes the caches its pid claimed and every
    /// buffer tagged with its slot. Returns (cached objects flushed, buffers reclaimed).
    pub fn reclaim_process(&self, slot: u32, pid: u32) -> (u64, u64) {
        let tag = OwnerTag::process(slot);
        let mut totals = (0, 0);
        for pool in self.lock().iter() {
            let flushed = pool.mempool().flush_caches_of(pid);
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
        totals
    }
}

impl ControlHooks for PoolRegistry {
    fn secondary_gone(&self, slot: u32, pid: u32) {
        self.reclaim_process(slot, pid);
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.stats()
    }
}
