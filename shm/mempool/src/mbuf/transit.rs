//! Transit: an mbuf given up to a ring or a device and taken back. The sender tags every
//! segment `TRANSIT` ([`Mbuf::into_transit`]); the receiver claims it
//! ([`MbufCache::adopt`], or [`MbufCache::reclaim`] for a handle this process kept
//! privately) and validates the handle and every header it reads; the device paths
//! allocate straight into transit and free straight out of it.
//!
//! Where it sits: in [`crate::mbuf`], between the allocator (`cache.rs`) and the packet
//! (`packet.rs`); `crate::handoff`'s local hand-offs reuse [`Claim`] and `adopt_with`.

use std::sync::atomic::Ordering;

use super::cache::MbufCache;
use super::header::{header_ptr, MbufHandle, MBUF_HEADER_SIZE};
use super::packet::Mbuf;
use crate::owner::OwnerTag;
use crate::pool::Trouble;

impl MbufCache {
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

    /// The fast path of a burst claim: buffer `index` (`< n`) holds a sane one-segment
    /// packet and its tag went from `from` to this process (one CAS). False when either is
    /// not so; nothing was changed then unless the tag was taken and the header is not
    /// sane, in which case the tag is put back so that the caller's one-by-one path
    /// (`adopt_with`) sees the buffer as it was and decides, counting what it finds.
    #[inline(always)]
    pub(crate) fn claim_single(&self, index: u32, from: u32) -> bool {
        let owner = &self.header(index).owner;
        // Acquire: as in `claim_transit`.
        if owner
            .compare_exchange(from, self.owner, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if self.sane_single(index) {
            return true;
        }
        // Relaxed: we hold the buffer (the CAS above won); handing the tag back is a
        // store of our own.
        owner.store(from, Ordering::Relaxed);
        false
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

impl<'c> Mbuf<'c> {
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
}
