//! The object pool: creation and lookup ([`Mempool`]), per-thread handles with a cache in
//! shared memory ([`PoolCache`]), statistics, audits and recovery of dead owners' caches.
//!
//! Files: the process-local view of a pool's shared memory and its trouble counters
//! (`shared.rs`); creating, opening and naming a pool (`mempool.rs`); claiming cache
//! slots and recovering dead owners' caches and free-ring operations (`recovery.rs`);
//! statistics and the free-list audit (`stats.rs`); the per-thread handle and its
//! get/put fast and slow paths (`cache.rs`).
//!
//! The refill/flush protocol and its recovery are model-checked, a death after every step,
//! by shm-ring's `tests/loom_cache.rs` (keep that model in step with these files).

mod cache;
mod mempool;
mod recovery;
mod shared;
mod stats;

pub use cache::PoolCache;
pub use mempool::{pool_bytes, Mempool, ObjInit, PoolParams};
pub(crate) use shared::{PoolShared, Trouble};
pub use shm::stats::{CacheStats, PoolStats};
pub use stats::Audit;
