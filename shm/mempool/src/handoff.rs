//! Local hand-off: moving an mbuf through shared memory without writing its header.
//!
//! Where it sits: the ring ports (`pmds`) move packets between a producer and a consumer
//! through an SP/SC ring. Ownership is recorded by location (see the crate docs): a
//! buffer a process holds carries that process's tag, and while it waits in a ring whose
//! producer put it there with [`Mbuf::into_local`] it keeps that tag. So:
//!
//! ```text
//!   producer P                     ring (local entries)              consumer
//!   into_local(): no write  ──►  [ h | h | h ]  tag stays P  ──►  P itself: take_local()
//!                                                                  (no header access)
//!                                                                 Q != P: adopt_from(P)
//!                                                                  (CAS P -> Q: the only
//!                                                                   write, where the packet
//!                                                                   changes process)
//! ```
//!
//! A process killed anywhere in this leaves its buffers tagged with its own tag, held or
//! in the ring: the primary's reclaim returns them all by tag, and an entry still in a
//! ring after that is stale, which `adopt_from`'s CAS refuses (the tag is no longer `P`;
//! tags are unique per attachment, so `P` never comes back). Within one process
//! (`take_local`) nothing is recorded at all: the handle's pool and index are checked, as
//! for any handle from shared memory, and a duplicate is caught when it is freed (the
//! second free finds the buffer already free).

use crate::mbuf::{Claim, Mbuf, MbufCache, MbufError, MbufHandle};
use crate::owner::OwnerTag;
use crate::pool::Trouble;

impl<'c> Mbuf<'c> {
    /// Gives the packet up for a local hand-off (see the [module docs](self)): returns its
    /// handle without touching the header, which keeps this process's tag. Take it back
    /// with [`MbufCache::take_local`] (this process) or [`MbufCache::adopt_from`] (another).
    ///
    /// # Errors
    /// Gives the mbuf back while it is shared (references do not leave the process).
    #[inline(always)]
    pub fn into_local(self) -> Result<MbufHandle, Mbuf<'c>> {
        if self.is_shared() {
            return Err(self);
        }
        let handle = self.handle();
        std::mem::forget(self);
        Ok(handle)
    }
}

impl MbufCache {
    /// Takes back a handle this process gave up with [`Mbuf::into_local`]: checks the pool
    /// and the index (as for any handle read from shared memory) and nothing else; the
    /// header is not read.
    ///
    /// # Errors
    /// [`MbufError::BadHandle`] (counted) for another pool's handle or an index out of
    /// range.
    #[inline(always)]
    pub fn take_local(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        let index = handle.index();
        if handle.pool_id() == self.pool_id && index < self.n {
            return Ok(Mbuf::from_index(self, index));
        }
        self.bad_local_handle(handle)
    }

    /// [`take_local`](Self::take_local) for a burst: appends to `out` an mbuf for each
    /// leading handle of `handles` whose high 32 bits are `marker | pool id` (`marker`: bits
    /// the caller requires above the pool id, such as a local-entry flag) and whose index
    /// is in range, stopping at the first other handle or when `out` is at capacity (it
    /// never allocates). Returns how many were taken; the caller deals with the rest.
    #[inline]
    pub fn take_local_burst<'c>(
        &'c self,
        handles: &[u64],
        marker: u64,
        out: &mut Vec<Mbuf<'c>>,
    ) -> usize {
        let hi = (marker >> 32) | u64::from(self.pool_id);
        let spare = out.spare_capacity_mut();
        let mut taken = 0;
        for (slot, &h) in spare.iter_mut().zip(handles) {
            if h >> 32 != hi || h as u32 >= self.n {
                break;
            }
            slot.write(Mbuf::from_index(self, h as u32));
            taken += 1;
        }
        // SAFETY: the first `taken` spare slots were initialised just above.
        unsafe { out.set_len(out.len() + taken) };
        taken
    }

    #[cold]
    fn bad_local_handle(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        self.pool().mempool().shared.trouble(
            Trouble::BadHandle,
            1,
            "received an mbuf handle of another pool or out of range",
        );
        Err(MbufError::BadHandle(handle))
    }

    /// Adopts a buffer that process `from` gave up with [`Mbuf::into_local`]: as
    /// [`adopt`](Self::adopt) (every header checked), with a CAS of each segment's tag from
    /// `from` to this process instead of from `TRANSIT`.
    ///
    /// # Errors
    /// As [`adopt`](Self::adopt); [`MbufError::NotInTransit`] when a segment's tag is not
    /// `from` (stale: `from` died and its buffers were reclaimed, or duplicated).
    #[inline]
    pub fn adopt_from(&self, handle: MbufHandle, from: OwnerTag) -> Result<Mbuf<'_>, MbufError> {
        if !from.is_process() {
            return self.adopt(handle);
        }
        self.adopt_with(handle, Claim::Shared(from.0))
    }
}

#[cfg(test)]
mod tests {
    use crate::{MbufPool, MbufPoolParams, OwnerTag};
    use shm::{Memseg, Region};

    fn pool() -> MbufPool {
        let seg = Memseg::create_in_region(Region::heap(4 << 20), "handoff", 1).unwrap();
        seg.mark_ready();
        MbufPool::create(&seg, "h", &MbufPoolParams::new(64, 8, 1)).unwrap()
    }

    #[test]
    fn a_local_hand_off_keeps_the_tag_and_another_process_claims_it_once() {
        let pool = pool();
        let (p, q) = (OwnerTag::attached(1, 1), OwnerTag::attached(2, 2));
        let (cp, cq) = (pool.cache(p).unwrap(), pool.cache(q).unwrap());
        let m = cp.alloc_from(b"hello").unwrap();
        let h = m.into_local().unwrap();
        assert_eq!(pool.owned_by(p), 1, "the header still says P");
        // P takes it back without a header access.
        let m = cp.take_local(h).unwrap();
        assert_eq!(m.data(), b"hello");
        let h = m.into_local().unwrap();
        // Q claims it from P, once.
        let m = cq.adopt_from(h, p).unwrap();
        assert_eq!((pool.owned_by(p), pool.owned_by(q)), (0, 1));
        assert!(cq.adopt_from(h, p).is_err(), "a duplicate is refused");
        drop(m);
        assert_eq!(pool.owned_by(q), 0);
    }

    #[test]
    fn a_stale_local_entry_is_refused_after_its_owner_was_reclaimed() {
        let pool = pool();
        let (p, q) = (OwnerTag::attached(1, 3), OwnerTag::attached(1, 4));
        let cp = pool.cache(p).unwrap();
        let h = cp.alloc_from(b"x").unwrap().into_local().unwrap();
        // P "dies": its caches and buffers come back by tag.
        assert_eq!(pool.reclaim_owner(p).returned, 1);
        let cq = pool.cache(q).unwrap();
        assert!(
            cq.adopt_from(h, p).is_err(),
            "stale: P's buffers were reclaimed"
        );
        assert!(
            cp.take_local(crate::MbufHandle::new(9, 0)).is_err(),
            "another pool"
        );
        assert!(
            cp.take_local(crate::MbufHandle::new(1, 64)).is_err(),
            "out of range"
        );
        drop(cp);
        drop(cq);
        assert_eq!(pool.mempool().audit().free, 64);
    }

    #[test]
    fn a_shared_mbuf_is_not_handed_off() {
        let pool = pool();
        let c = pool.cache(OwnerTag::attached(1, 5)).unwrap();
        let mut m = c.alloc_from(b"y").unwrap();
        let r = m.clone_ref();
        m = m.into_local().unwrap_err();
        drop(r);
        assert!(m.into_local().is_ok(), "one reference again");
    }
}
