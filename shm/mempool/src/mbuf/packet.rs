//! The owned packet: [`Mbuf`], a buffer (or chain of segments) this thread holds, with
//! DPDK's data operations (prepend, append, adj, trim, chain, read), its metadata
//! accessors, reference-counted clones, and the free of every segment on drop.
//!
//! Where it sits: in [`crate::mbuf`]; an `Mbuf` borrows the [`MbufCache`] (`cache.rs`)
//! that allocated or adopted it and frees into it; leaving the process is `transit.rs`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use super::cache::MbufCache;
use super::header::{MbufHandle, MbufHeader, MAX_SEGS, MBUF_HEADER_SIZE};
use crate::pool::Trouble;

/// An owned packet buffer (possibly a chain of segments). Dropping it frees every segment
/// into the cache it came from. Not `Send`: it borrows its thread's [`MbufCache`]; to move
/// a packet to another thread or process, put [`Mbuf::into_transit`]'s handle in a ring.
///
/// `repr(C)`: `index` and `maybe_shared` form one aligned 8-byte word at offset 8, which
/// the burst hand-offs (`handoff.rs`) read and write whole.
#[repr(C)]
pub struct Mbuf<'c> {
    pub(crate) cache: &'c MbufCache,
    pub(crate) index: u32,
    /// Set by [`Mbuf::clone_ref`] on both references: only then can the header's
    /// reference count be above 1, so [`Mbuf::is_shared`] reads it only then (every other
    /// way of making an `Mbuf` yields a buffer with one reference).
    /// (A `u32` beside `index` rather than a `bool`, so that writing a fresh `Mbuf` is
    /// two 8-byte stores.)
    pub(crate) maybe_shared: Cell<u32>,
    _not_send: PhantomData<*mut u8>,
}

const _: () = {
    assert!(std::mem::offset_of!(Mbuf<'static>, cache) == 0);
    assert!(std::mem::offset_of!(Mbuf<'static>, index) == 8);
    assert!(std::mem::offset_of!(Mbuf<'static>, maybe_shared) == 12);
    assert!(std::mem::size_of::<Mbuf<'static>>() == 16);
    assert!(std::mem::align_of::<Mbuf<'static>>() == 8);
};

impl std::fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("index", &self.index)
            .field("pkt_len", &self.pkt_len())
            .field("nb_segs", &self.nb_segs())
            .finish()
    }
}

/// A validated view of one segment's data span.
#[derive(Clone, Copy)]
struct Span {
    off: u32,
    len: u32,
}

impl<'c> Mbuf<'c> {
    #[inline(always)]
    pub(crate) fn from_index(cache: &'c MbufCache, index: u32) -> Mbuf<'c> {
        Mbuf {
            cache,
            index,
            maybe_shared: Cell::new(0),
            _not_send: PhantomData,
        }
    }

    /// This packet's first header.
    #[inline(always)]
    pub(super) fn hdr(&self) -> &MbufHeader {
        self.cache.header(self.index)
    }

    /// This packet's first header, for writing (only from `&mut self` methods, which hold
    /// the packet alone).
    #[inline(always)]
    fn hdr_mut(&mut self) -> &mut MbufHeader {
        self.cache.header_mut(self.index)
    }

    /// This buffer's handle.
    pub fn handle(&self) -> MbufHandle {
        MbufHandle::new(self.cache.pool_id, self.index)
    }

    /// Object index in the pool.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The data span of segment `index`, validated against the pool's buffer length
    /// (a corrupt header gives an empty span, counted).
    #[inline(always)]
    fn span_of(&self, index: u32) -> Span {
        // `index < n` (every segment index was validated); plain reads of values.
        let h = self.cache.header(index);
        let (off, len) = (u32::from(h.data_off), u32::from(h.data_len));
        if off + len <= self.cache.buf_len {
            Span { off, len }
        } else {
            self.corrupt_span(index)
        }
    }

    #[cold]
    fn corrupt_span(&self, index: u32) -> Span {
        self.cache.pool.mempool().shared.trouble(
            Trouble::CorruptHeader,
            1,
            "an mbuf header's data_off + data_len exceeds the buffer",
        );
        let off = u32::from(self.cache.headroom);
        // We hold the buffer: repair it to an empty span.
        let h = self.cache.header_mut(index);
        h.data_off = off as u16;
        h.data_len = 0;
        Span { off, len: 0 }
    }

    pub(super) fn buf_ptr(&self, index: u32) -> *mut u8 {
        self.cache
            .hdr(index)
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE as usize)
    }

    /// Segment indices of this packet, first to last (validated, at most `nb_segs`).
    pub(super) fn seg_indices(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = Some(self.index);
        let mut left = u32::from(self.nb_segs()).max(1);
        std::iter::from_fn(move || {
            let this = cur?;
            left -= 1;
            // `this < n` (the head, or a `next` validated below).
            let next = MbufHandle(self.cache.header(this).next);
            cur = if next.0 == 0 || left == 0 {
                None
            } else if next.pool_id() == self.cache.pool_id && next.index() < self.cache.n {
                Some(next.index())
            } else {
                self.cache.pool.mempool().shared.trouble(
                    Trouble::CorruptHeader,
                    1,
                    "an mbuf chain points outside its pool",
                );
                None
            };
            Some(this)
        })
    }

    fn last_segment(&self) -> u32 {
        self.seg_indices().last().unwrap_or(self.index)
    }

    /// Data bytes in the first segment.
    pub fn data_len(&self) -> usize {
        self.span_of(self.index).len as usize
    }

    /// Data bytes in the whole packet.
    pub fn pkt_len(&self) -> u32 {
        self.hdr().pkt_len
    }

    /// Number of segments.
    pub fn nb_segs(&self) -> u16 {
        self.hdr().nb_segs
    }

    /// Free bytes before the data of the first segment.
    pub fn headroom(&self) -> usize {
        self.span_of(self.index).off as usize
    }

    /// Free bytes after the data of the last segment.
    pub fn tailroom(&self) -> usize {
        let s = self.span_of(self.last_segment());
        (self.cache.buf_len - s.off - s.len) as usize
    }

    /// True when [`Mbuf::clone_ref`] made other references: the data is then read-only.
    #[inline(always)]
    pub fn is_shared(&self) -> bool {
        // Acquire: pairs with the AcqRel decrement of a dropped clone, so a caller that sees
        // "not shared" and then writes the data is ordered after that clone's reads.
        self.maybe_shared.get() != 0 && self.hdr().refcnt.load(Ordering::Acquire) > 1
    }

    /// The first segment's data.
    pub fn data(&self) -> &[u8] {
        self.seg_data(self.index)
    }

    fn seg_data(&self, index: u32) -> &[u8] {
        let s = self.span_of(index);
        // SAFETY: `off + len <= buf_len` (span_of), inside this object's buffer; we hold the
        // buffer and only `&self` exists (mutation needs `&mut self` and refcnt 1).
        unsafe {
            std::slice::from_raw_parts(
                self.buf_ptr(index).wrapping_add(s.off as usize),
                s.len as usize,
            )
        }
    }

    /// The first segment's data, writable; `None` while shared.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if self.is_shared() {
            return None;
        }
        let s = self.span_of(self.index);
        // SAFETY: as `seg_data`; unshared and `&mut self`, so this is the only reference.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(self.index).wrapping_add(s.off as usize),
                s.len as usize,
            )
        })
    }

    /// Every segment's data, in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.seg_indices().map(move |i| self.seg_data(i))
    }

    fn add_pkt_len(&mut self, delta: i64) {
        let h = self.hdr_mut();
        h.pkt_len = (i64::from(h.pkt_len) + delta).clamp(0, u32::MAX.into()) as u32;
    }

    /// Prepends `len` bytes to the first segment (`rte_pktmbuf_prepend`); returns the new
    /// bytes, or `None` if the headroom is too small or the mbuf is shared.
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        let s = self.span_of(self.index);
        if self.is_shared() || len > s.off as usize {
            return None;
        }
        let len32 = len as u32;
        // `len <= off`, and `off + len` is unchanged: the span stays inside the buffer.
        let h = self.hdr_mut();
        h.data_off = (s.off - len32) as u16;
        h.data_len = (s.len + len32) as u16;
        self.add_pkt_len(len as i64);
        // SAFETY: `[off - len, off)` lies in the buffer; exclusive as above.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(self.index)
                    .wrapping_add((s.off - len32) as usize),
                len,
            )
        })
    }

    /// Appends `len` bytes to the last segment (`rte_pktmbuf_append`); returns the new
    /// bytes, or `None` if the tailroom is too small or the mbuf is shared.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        // One segment (nearly every packet): it is the last, no chain walk.
        let last = if self.hdr().next == 0 {
            self.index
        } else {
            self.last_segment()
        };
        let s = self.span_of(last);
        if self.is_shared() || len > (self.cache.buf_len - s.off - s.len) as usize {
            return None;
        }
        // `off + len + new <= buf_len <= 65535`; the last segment is ours alone.
        self.cache.header_mut(last).data_len = (s.len + len as u32) as u16;
        self.add_pkt_len(len as i64);
        // SAFETY: `[off + len, off + len + new)` lies in the buffer; exclusive.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.buf_ptr(last).wrapping_add((s.off + s.len) as usize),
                len,
            )
        })
    }

    /// Removes `len` bytes from the start of the first segment (`rte_pktmbuf_adj`); false if
    /// it holds fewer or the mbuf is shared.
    pub fn adj(&mut self, len: usize) -> bool {
        let s = self.span_of(self.index);
        if self.is_shared() || len > s.len as usize {
            return false;
        }
        // The span shrinks inside itself.
        let h = self.hdr_mut();
        h.data_off = (s.off + len as u32) as u16;
        h.data_len = (s.len - len as u32) as u16;
        self.add_pkt_len(-(len as i64));
        true
    }

    /// Writes `bytes` as the data of an empty, unshared one-segment mbuf (one from
    /// [`MbufCache::alloc_bulk`]), at its headroom: `alloc_from` for buffers already taken
    /// in a bulk. False, and nothing written, when the mbuf is not empty, shared, or
    /// `bytes` exceed its data room.
    #[inline]
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        let h = self.hdr();
        let room = self.cache.buf_len.checked_sub(u32::from(h.data_off));
        let empty = h.data_len == 0 && h.nb_segs == 1 && h.next == 0;
        if !empty || room.is_none_or(|r| bytes.len() > r as usize) {
            return false;
        }
        if self.is_shared() {
            return false;
        }
        let off = usize::from(h.data_off);
        let data = self.buf_ptr(self.index).wrapping_add(off);
        // SAFETY: `[off, off + len)` with `len <= buf_len - off` lies in this buffer, which
        // we hold alone (unshared, `&mut self`).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
        let h = self.hdr_mut();
        // `len <= room <= u16::MAX`.
        h.data_len = bytes.len() as u16;
        h.pkt_len = bytes.len() as u32;
        true
    }

    /// Keeps `len` bytes starting `start` bytes into the data of a one-segment packet and
    /// drops the rest (`adj(start)` then `trim`, in one step): how a driver cuts a
    /// received buffer to the frame a device wrote after its header. False, and nothing
    /// changed, when the range is not inside the data, the packet has several segments or
    /// is shared.
    pub fn keep_range(&mut self, start: usize, len: usize) -> bool {
        let s = self.span_of(self.index);
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= s.len as usize);
        if !fits || self.nb_segs() != 1 || self.hdr().next != 0 || self.is_shared() {
            return false;
        }
        // Inside the old span, so inside the buffer; `len <= s.len <= u16::MAX`.
        let h = self.hdr_mut();
        h.data_off = (s.off + start as u32) as u16;
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        true
    }

    /// Removes `len` bytes from the end of the last segment (`rte_pktmbuf_trim`); false if
    /// it holds fewer or the mbuf is shared.
    pub fn trim(&mut self, len: usize) -> bool {
        let last = self.last_segment();
        let s = self.span_of(last);
        if self.is_shared() || len > s.len as usize {
            return false;
        }
        self.cache.header_mut(last).data_len = (s.len - len as u32) as u16;
        self.add_pkt_len(-(len as i64));
        true
    }

    /// Appends the segments of `tail` after this packet's last segment (`rte_pktmbuf_chain`).
    ///
    /// # Errors
    /// Gives `tail` back if either is shared, they come from different caches, or the chain
    /// would exceed [`MAX_SEGS`].
    pub fn chain(&mut self, tail: Mbuf<'c>) -> Result<(), Mbuf<'c>> {
        let segs = u32::from(self.nb_segs()) + u32::from(tail.nb_segs());
        if self.is_shared()
            || tail.is_shared()
            || !std::ptr::eq(self.cache, tail.cache)
            || segs > u32::from(MAX_SEGS)
        {
            return Err(tail);
        }
        let last = self.last_segment();
        let tail_len = tail.pkt_len();
        // Both chains are ours alone (unshared, `&mut self`, owned `tail`).
        self.cache.header_mut(last).next = tail.handle().0;
        self.hdr_mut().nb_segs = segs as u16;
        self.add_pkt_len(i64::from(tail_len));
        std::mem::forget(tail);
        Ok(())
    }

    /// Copies packet bytes from offset `off` into `out` across segments (`rte_pktmbuf_read`);
    /// returns how many were copied.
    pub fn copy_out(&self, mut off: usize, out: &mut [u8]) -> usize {
        let mut done = 0;
        for seg in self.segments() {
            if done == out.len() {
                break;
            }
            if off >= seg.len() {
                off -= seg.len();
                continue;
            }
            let k = (seg.len() - off).min(out.len() - done);
            out[done..done + k].copy_from_slice(&seg[off..off + k]);
            done += k;
            off = 0;
        }
        done
    }

    /// The whole packet as one vector (tests, slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len() as usize);
        for seg in self.segments() {
            v.extend_from_slice(seg);
        }
        v
    }

    /// Another reference to the same packet (`rte_mbuf_refcnt_update(+1)` on every
    /// segment). While more than one exists the data is read-only; the last drop frees it.
    pub fn clone_ref(&self) -> Mbuf<'c> {
        for i in self.seg_indices() {
            // Relaxed: a new reference is made from an existing one (as `Arc::clone`).
            self.cache.header(i).refcnt.fetch_add(1, Ordering::Relaxed);
        }
        self.maybe_shared.set(1);
        let clone = Mbuf::from_index(self.cache, self.index);
        clone.maybe_shared.set(1);
        clone
    }

    /// Input port.
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Sets the input port.
    pub fn set_port(&mut self, port: u16) {
        self.hdr_mut().port = port;
    }

    /// Offload flags.
    pub fn ol_flags(&self) -> u64 {
        self.hdr().ol_flags
    }

    /// Sets the offload flags.
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.hdr_mut().ol_flags = flags;
    }

    /// VLAN tag.
    pub fn vlan_tci(&self) -> u16 {
        self.hdr().vlan_tci
    }

    /// Sets the VLAN tag.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.hdr_mut().vlan_tci = tci;
    }

    /// RSS hash.
    pub fn rss_hash(&self) -> u32 {
        self.hdr().rss_hash
    }

    /// Sets the RSS hash.
    pub fn set_rss_hash(&mut self, hash: u32) {
        self.hdr_mut().rss_hash = hash;
    }

    /// Application data.
    pub fn user_data(&self) -> u64 {
        self.hdr().user_data
    }

    /// Sets the application data.
    pub fn set_user_data(&mut self, v: u64) {
        self.hdr_mut().user_data = v;
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        let h = self.hdr();
        if h.nb_segs == 1 && h.next == 0 {
            self.cache.release_segment(self.index);
            return;
        }
        // `rte_pktmbuf_free`: `seg_indices` reads each segment's `next` before yielding it,
        // so a segment is released only after the walk has left it. The walk is bounded by
        // nb_segs and validated; a cycle is stopped by the owner check in
        // `release_segment` (a freed segment is no longer ours).
        for i in self.seg_indices() {
            self.cache.release_segment(i);
        }
    }
}
