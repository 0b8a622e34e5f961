//! Reclaim of a dead host process's buffers from a guest-writable pool.
//!
//! A host secondary that used a guest-facing port (or opened an export pool uncached)
//! holds guest buffers tagged with its process slot for as long as a burst lasts; killed
//! in the middle, they stay tagged. The trusted reclaim ([`MbufPool::reclaim_owner`] after
//! `Mempool::flush_caches_of`) does not fit such a pool: it frees through the trusted
//! multi-producer, which waits up to `shm_ring::STALL_TIMEOUT` for a peer whose
//! reservation the guest never publishes, and the cache flush reads cache slots the guest
//! can write. [`GuestPool::reclaim_dead`] keeps the guest-facing rules instead:
//!
//! - only the `owner` and `refcnt` words are touched, as atomics; no other header field is
//!   read;
//! - each buffer changes hands by one CAS from the dead tag to `FREE`; anything else in
//!   the word (a live owner, or whatever the guest wrote) is left alone;
//! - the free ring is fed through the bounded untrusted producer, with at most
//!   [`RECLAIM_BUSY_TRIES`] busy answers in all: what the ring refuses is counted as lost
//!   to the guest's pool (the guest broke its own ring), never waited for;
//! - no cache slot is read or flushed: nobody on the host holds one in a guest-writable
//!   pool (guests get uncached allocators and so do host secondaries on export pools).
//!
//! The work is one pass over the pool's headers (its size is the primary's, copied at
//! open) plus a bounded number of ring operations per batch, whatever the guest does.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::sync::atomic::Ordering;

use super::{GuestPool, PENDING_MAX};
use crate::{MbufPool, OwnerTag, PoolError};

/// Most [`shm_ring::RingError::Busy`] answers one reclaim accepts from the guest's free
/// ring before it counts the rest as lost.
pub const RECLAIM_BUSY_TRIES: u32 = 64;

/// What [`GuestPool::reclaim_dead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestReclaimed {
    /// Buffers tagged with the dead process, set `FREE` and enqueued on the free ring.
    pub returned: u64,
    /// Buffers set `FREE` that the free ring refused (full, corrupt or kept busy by the
    /// guest): lost to the guest's pool.
    pub lost: u64,
}

impl GuestPool {
    /// Returns to the guest-writable `pool` every buffer whose owner word names `dead`, a
    /// host process that is gone (the caller checked: the primary reclaims a secondary
    /// only once its pid has exited). Bounded whatever the guest writes meanwhile; see
    /// the module docs of `guest_reclaim`.
    ///
    /// # Errors
    /// [`PoolError::Create`] when `dead` is not a host process's tag (free, in transit, or
    /// the guest's own, which only the guest may free).
    pub fn reclaim_dead(pool: &MbufPool, dead: OwnerTag) -> Result<GuestReclaimed, PoolError> {
        if dead == OwnerTag::GUEST {
            return Err(PoolError::Create(
                "the guest's own buffers are not the host's to reclaim".into(),
            ));
        }
        // The handle's own owner tag is never used here: `open` only wants a process tag.
        let mut g = GuestPool::open(pool, dead)?;
        let mut out = GuestReclaimed::default();
        let mut busy = 0u32;
        let mut batch: Vec<u32> = Vec::with_capacity(PENDING_MAX);
        for i in 0..g.n {
            // Acquire: pairs with nothing live (the owner is dead, and what the guest
            // stored is not trusted); a CAS so that a buffer anyone re-tagged meanwhile
            // is left alone.
            let freed = g
                .owner_word(i)
                .compare_exchange(
                    dead.0,
                    OwnerTag::FREE.0,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok();
            if !freed {
                continue;
            }
            // Relaxed: the next allocation is ordered after the free ring's publication
            // (R1/A1), which comes after this store.
            g.refcnt_word(i).store(0, Ordering::Relaxed);
            batch.push(i);
            if batch.len() == batch.capacity() {
                g.push_reclaimed(&mut batch, &mut busy, &mut out);
            }
        }
        g.push_reclaimed(&mut batch, &mut busy, &mut out);
        // A publication the guest still holds up: the entries are in the ring's slots and
        // appear when it lets go; counted as returned (one load, no wait).
        let _ = g.producer.complete();
        // An atomic counter in guest-writable memory: sound, only informative.
        pool.mempool()
            .shared
            .counters()
            .reclaimed
            .fetch_add(out.returned, Ordering::Relaxed);
        Ok(out)
    }

    /// Enqueues `batch` on the free ring with the bounded producer; what it refuses is
    /// lost. Spends at most the rest of the `busy` budget on `Busy` answers.
    fn push_reclaimed(&mut self, batch: &mut Vec<u32>, busy: &mut u32, out: &mut GuestReclaimed) {
        let mut rest: &[u32] = batch;
        while !rest.is_empty() {
            match self.producer.enqueue_burst(rest) {
                Ok(0) => break,
                Ok(k) => {
                    let k = k.min(rest.len());
                    out.returned += k as u64;
                    rest = rest.get(k..).unwrap_or(&[]);
                }
                Err(shm_ring::RingError::Busy) if *busy < RECLAIM_BUSY_TRIES => {
                    *busy += 1;
                    std::hint::spin_loop();
                }
                Err(_) => break,
            }
        }
        out.lost += rest.len() as u64;
        batch.clear();
    }
}
