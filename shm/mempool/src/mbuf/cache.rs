//! The per-thread mbuf allocator: its alloc paths (one, bulk, filled, from bytes) and
//! free paths (a segment's last reference back to the cache), each crash-exact through
//! the order of tagging and taking.
//!
//! Where it sits: in [`crate::mbuf`]; made by [`MbufPool::cache`] (`pool.rs`), borrowed
//! by every [`Mbuf`] it hands out (`packet.rs`); the transit paths (`transit.rs`) and the
//! local hand-offs (`crate::handoff`) add methods to it.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::header::{header_ptr, MbufHeader, MBUF_HEADER_SIZE, NO_PORT};
use super::packet::Mbuf;
use super::pool::MbufPool;
use crate::owner::OwnerTag;
use crate::pool::{PoolCache, Trouble};
use crate::PoolError;

/// A per-thread mbuf allocator: a [`PoolCache`] plus the pool's geometry and this
/// process's owner tag. Not `Sync`: mbufs borrow it and free into it.
pub struct MbufCache {
    pub(super) cache: UnsafeCell<PoolCache>,
    pub(super) pool: MbufPool,
    pub(crate) owner: u32,
    pub(crate) pool_id: u32,
    pub(crate) n: u32,
    pub(super) obj_size: u32,
    pub(super) objs: NonNull<u8>,
    pub(super) headroom: u16,
    pub(super) buf_len: u32,
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
    pub(crate) fn hdr(&self, index: u32) -> *mut MbufHeader {
        debug_assert!(index < self.n);
        header_ptr(self.objs, self.obj_size, index)
    }

    /// The header of buffer `index`, which the caller has validated (`index < n`).
    #[inline(always)]
    pub(super) fn header(&self, index: u32) -> &MbufHeader {
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
    pub(super) fn header_mut(&self, index: u32) -> &mut MbufHeader {
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
    pub(super) fn take_fresh(&self) -> Option<u32> {
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
            // The headers were last written by whoever freed them, often another core:
            // start every line's transfer before the first store waits on one.
            for &i in &idx[..got] {
                shm::prefetch::write(self.hdr(i).cast());
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

    /// Puts a buffer into the cache and then marks it free. A buffer never reaches the
    /// free ring before it is marked (a full cache is flushed before this one goes in), so
    /// a kill at any point leaves it ours (tagged: reclaimed by tag) or in the cache (whose
    /// recovery marks what it frees).
    #[inline(always)]
    pub(super) fn put_free(&self, index: u32) {
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

    /// Frees every mbuf of `pkts` and empties it, as `rte_pktmbuf_free_bulk`: the
    /// one-segment mbufs this process holds alone go back to the cache with one bulk put,
    /// then are marked free (the order of [`put_free`](Self::put_free): a buffer never
    /// reaches the free ring unmarked, and one in the cache with our tag after a kill is
    /// marked by the cache's recovery); anything else (a chain, a shared one, another
    /// cache's, a double free) is dropped one by one, checked and counted as always.
    pub fn free_bulk(&self, pkts: &mut Vec<Mbuf<'_>>) {
        const CHUNK: usize = 64;
        let mut idx = [0u32; CHUNK];
        let simple = |m: &Mbuf<'_>| {
            if !std::ptr::eq(m.cache, self) || m.maybe_shared.get() != 0 {
                return false;
            }
            let h = self.header(m.index);
            // Relaxed: our own tag and count (we hold the buffer), as `release_segment`.
            h.nb_segs == 1
                && h.next == 0
                && h.owner.load(Ordering::Relaxed) == self.owner
                && h.refcnt.load(Ordering::Relaxed) == 1
        };
        let mut k = 0;
        // Nearly always every one is simple: then the vector is emptied without a drop.
        if pkts.len() <= CHUNK && pkts.iter().all(&simple) {
            for (d, m) in idx.iter_mut().zip(pkts.iter()) {
                *d = m.index;
            }
            k = pkts.len();
            // SAFETY: a shorter length only leaks the elements (an `Mbuf` owns no heap
            // memory); their buffers go back to the cache below, so their drops must not
            // run.
            unsafe { pkts.set_len(0) };
        } else {
            for m in pkts.drain(..) {
                if k < CHUNK && simple(&m) {
                    idx[k] = m.index;
                    k += 1;
                    std::mem::forget(m);
                } else {
                    drop(m);
                }
            }
        }
        if k == 0 {
            return;
        }
        let idx = &idx[..k];
        let cache = self.cache();
        if !cache.make_room(k as u32) {
            for &i in idx {
                self.put_free(i);
            }
            return;
        }
        // The fast path of `put_bulk` (room checked): nothing reaches the free ring here.
        cache.put_bulk(idx);
        crate::crash_point!("mbuf.free_after_put");
        for &i in idx {
            let h = self.header(i);
            // Relaxed: as in `put_free` (the cache is ours; a flush's Release publishes).
            h.refcnt.store(0, Ordering::Relaxed);
            h.owner.store(OwnerTag::FREE.0, Ordering::Relaxed);
        }
    }

    /// Drops one reference to segment `index`, freeing it at zero (`rte_pktmbuf_free_seg`).
    #[inline(always)]
    pub(super) fn release_segment(&self, index: u32) {
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
