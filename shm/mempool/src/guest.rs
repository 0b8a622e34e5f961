//! Mbuf pools a guest can write: the host's only way into them.
//!
//! A guest-facing port (`guest_pool=`) exchanges packets with a QEMU guest through an
//! IVSHMEM export segment. The guest maps that segment read-write, so every header, every
//! byte of packet data and the pool's free ring may change at any moment, including
//! between a check and a use. Trusted host pools go through [`crate::MbufCache`]; a
//! guest-writable pool is opened as a [`GuestPool`] instead, and this module is the choke
//! point for it:
//!
//! - **No reference into guest memory** except `&AtomicU32` for the `owner` and `refcnt`
//!   words (atomics are sound whatever the other side stores). The other header fields are
//!   read as whole 64-bit words with one volatile load each, into a private copy
//!   ([`HeaderCopy`]); the copy is validated and the copy is what is used. No field is
//!   read twice.
//! - **Packet data** is copied with [`copy_from_guest`] / [`copy_to_guest`] (volatile word
//!   loads or stores), never viewed as a slice: the guest changing the bytes during the
//!   copy gives the host odd bytes, nothing worse.
//! - **State transitions are compare-and-swaps** from the state the host expects (`TRANSIT`
//!   to the host's tag on receive, `FREE` to the host's tag on allocation, the host's tag
//!   to `TRANSIT` or `FREE` on the way out). A failed one is counted ([`GuestStats`]),
//!   never a panic.
//! - **Chains** are walked at most [`GUEST_MAX_SEGS`] segments; each `next` is read once,
//!   must name a buffer of this pool that is not already in the chain, and is claimed
//!   before its header is read. The walk records the indices it claimed in host memory,
//!   and freeing a chain frees exactly those: a `next` flipped during or after the walk is
//!   never followed again, so freeing cannot write outside the pool.
//! - **Limits**: a frame is at most [`GUEST_MAX_FRAME`] bytes and [`GUEST_MAX_SEGS`]
//!   segments whatever the guest's header says, and the host allocates host mbufs only for
//!   the bytes it validated (never heap memory by a guest's numbers).
//! - A bad packet is dropped (its segments go back to the guest's free ring) and counted.
//!
//! The free ring is the guest's too: host operations on it use the ring crate's handles,
//! and every index taken from it is range-checked.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use shm_ring::{RingError, UntrustedConsumer, UntrustedProducer};

use crate::mbuf::{header_ptr, MbufHeader, MBUF_HEADER_SIZE, NO_PORT};
use crate::{Mbuf, MbufCache, MbufPool, OwnerTag, PoolError};

#[path = "guest_copy.rs"]
mod copy;
pub use copy::{copy_from_guest, copy_to_guest};
#[path = "guest_hdr.rs"]
mod hdr;
pub use hdr::HeaderCopy;
use hdr::{hi32, lo32, pair32, quad16, u16_at, Chain};
#[path = "guest_reclaim.rs"]
mod reclaim;
pub use reclaim::{GuestReclaimed, RECLAIM_BUSY_TRIES};

/// Most segments the host accepts in (or builds for) one guest packet.
pub const GUEST_MAX_SEGS: usize = 32;
/// Most bytes the host accepts in (or sends as) one guest packet.
pub const GUEST_MAX_FRAME: u32 = 65_535;
/// Indices the host takes from the guest's free ring in one go when it sends.
const TX_BATCH: usize = 64;

/// Why a guest packet was dropped (each is also counted in [`GuestStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestDrop {
    /// The handle names another pool or an index out of range.
    #[error("guest mbuf handle of another pool or out of range")]
    BadHandle,
    /// The buffer was not in transit (duplicated, stale, or its state changed under us).
    #[error("guest mbuf not in transit")]
    NotInTransit,
    /// A header field was impossible (identity, data span, lengths).
    #[error("guest mbuf header with impossible fields")]
    BadHeader,
    /// The chain was too long, looped, or named a buffer outside the pool.
    #[error("guest mbuf chain too long, looping or leaving its pool")]
    BadChain,
    /// The packet is longer than [`GUEST_MAX_FRAME`] (or needs more than
    /// [`GUEST_MAX_SEGS`] segments).
    #[error("guest packet too long")]
    TooLong,
    /// No host mbuf (receive) or no guest buffer (send) was free.
    #[error("no buffer free")]
    NoBuffer,
}

/// What the host saw of one guest pool through one [`GuestPool`] handle. Kept in host
/// memory (the pool's own counters are guest-writable, so they cannot be trusted to
/// explain drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestStats {
    /// Packets copied out of the guest's pool.
    pub received: u64,
    /// Packets copied into the guest's pool.
    pub sent: u64,
    /// Handles of another pool or out of range.
    pub bad_handle: u64,
    /// Buffers not in transit when claimed.
    pub not_in_transit: u64,
    /// Headers with impossible fields.
    pub bad_header: u64,
    /// Chains too long, looping or leaving the pool.
    pub bad_chain: u64,
    /// Packets over the length or segment limit.
    pub too_long: u64,
    /// Packets dropped for want of a host mbuf.
    pub no_host_buffer: u64,
    /// Segments the host could not give back (their state changed under it, or the free
    /// ring refused them): lost to the guest's pool, never reused by the host.
    pub lost_segments: u64,
    /// Free-ring entries out of range, dropped.
    pub bad_free_entries: u64,
}

impl GuestStats {
    /// Every packet dropped on receive, whatever the reason.
    pub fn rx_dropped(&self) -> u64 {
        self.bad_handle
            + self.not_in_transit
            + self.bad_header
            + self.bad_chain
            + self.too_long
            + self.no_host_buffer
    }

    fn count(&mut self, why: GuestDrop) {
        let c = match why {
            GuestDrop::BadHandle => &mut self.bad_handle,
            GuestDrop::NotInTransit => &mut self.not_in_transit,
            GuestDrop::BadHeader => &mut self.bad_header,
            GuestDrop::BadChain => &mut self.bad_chain,
            GuestDrop::TooLong => &mut self.too_long,
            GuestDrop::NoBuffer => &mut self.no_host_buffer,
        };
        *c += 1;
    }
}

/// A host handle on a guest-writable mbuf pool (one per queue: `&mut self` everywhere).
/// Receives copy guest packets into host mbufs; sends copy host packets into guest
/// buffers. See the module docs for the rules it keeps.
pub struct GuestPool {
    pool: MbufPool,
    /// The guest's free ring, through the ring crate's bounded handles for guest-writable
    /// rings (no unbounded CAS retry, no stall wait).
    producer: UntrustedProducer<u32>,
    consumer: UntrustedConsumer<u32>,
    owner: u32,
    pool_id: u32,
    n: u32,
    obj_size: u32,
    objs: NonNull<u8>,
    headroom: u16,
    buf_len: u32,
    /// Guest buffers to give back at the end of the burst (host memory).
    pending: Vec<u32>,
    /// Free guest buffers taken for sending, not yet used (host memory).
    stash: Vec<u32>,
    stats: GuestStats,
}

// SAFETY: `objs` points into the pool's region, kept mapped by `pool`; nothing is tied to
// a thread (no cache slot is claimed).
unsafe impl Send for GuestPool {}

impl std::fmt::Debug for GuestPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestPool")
            .field("pool", &self.pool.mempool().name())
            .field("stats", &self.stats)
            .finish()
    }
}

impl GuestPool {
    /// Opens `pool` (in guest-writable memory) for a host thread whose owner tag is
    /// `owner`. No cache slot is claimed: the slots are guest-writable too.
    ///
    /// # Errors
    /// [`PoolError::Create`] for a tag that is not a process tag or a free ring that
    /// cannot be used.
    pub fn open(pool: &MbufPool, owner: OwnerTag) -> Result<GuestPool, PoolError> {
        if !owner.is_process() {
            return Err(PoolError::Create(format!(
                "owner tag {} is not a process tag",
                owner.0
            )));
        }
        let sh = &pool.mempool().shared;
        Ok(GuestPool {
            producer: sh.ring.untrusted_producer(),
            consumer: sh.ring.untrusted_consumer(),
            owner: owner.0,
            pool_id: sh.info.pool_id,
            n: sh.info.obj_count,
            obj_size: sh.info.obj_size,
            objs: sh.objs,
            // `headroom + data_room <= u16::MAX` (checked when the pool was opened).
            headroom: u16::try_from(sh.info.headroom).unwrap_or(u16::MAX),
            buf_len: sh.info.headroom + sh.info.data_room,
            pending: Vec::with_capacity(PENDING_MAX),
            stash: Vec::with_capacity(TX_BATCH * 2),
            stats: GuestStats::default(),
            pool: pool.clone(),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &MbufPool {
        &self.pool
    }

    /// What this handle has seen so far.
    pub fn stats(&self) -> GuestStats {
        self.stats
    }

    /// Header of buffer `index` (`< n`), raw.
    #[inline(always)]
    fn hdr(&self, index: u32) -> *mut MbufHeader {
        header_ptr(self.objs, self.obj_size, index)
    }

    /// The `owner` word of buffer `index` (`< n`).
    #[inline(always)]
    fn owner_word(&self, index: u32) -> &AtomicU32 {
        let p = self
            .hdr(index)
            .cast::<u8>()
            .wrapping_add(8)
            .cast::<AtomicU32>();
        // SAFETY: `index < n` (every caller checked it), so the header lies in the objects
        // span checked when the pool was opened, kept mapped by `pool`; the word is 4-byte
        // aligned (headers are 128-byte aligned) and an atomic is sound whatever the guest
        // writes into it.
        unsafe { &*p }
    }

    /// The `refcnt` word of buffer `index` (`< n`).
    #[inline(always)]
    fn refcnt_word(&self, index: u32) -> &AtomicU32 {
        let p = self
            .hdr(index)
            .cast::<u8>()
            .wrapping_add(12)
            .cast::<AtomicU32>();
        // SAFETY: as `owner_word`.
        unsafe { &*p }
    }

    /// Reads header word `w` (0..8) of buffer `index` (`< n`) once.
    #[inline(always)]
    fn word(&self, index: u32, w: usize) -> u64 {
        let p = self.hdr(index).cast::<u64>().wrapping_add(w & 7);
        // SAFETY: `index < n` and `w < 8`: inside the 64-byte first line of the header, in
        // the objects span, 8-byte aligned; a volatile load of plain bytes.
        unsafe { p.read_volatile() }
    }

    /// Writes header word `w` (0..8) of buffer `index` (`< n`).
    #[inline(always)]
    fn set_word(&self, index: u32, w: usize, v: u64) {
        let p = self.hdr(index).cast::<u64>().wrapping_add(w & 7);
        // SAFETY: as `word`; a volatile store into the guest's shared memory.
        unsafe { p.write_volatile(v) };
    }

    /// The one read of buffer `index`'s header (`< n`): words 0, 2, 3 and 6, each once.
    #[inline(always)]
    pub(crate) fn read_header(&self, index: u32) -> HeaderCopy {
        let (w0, w2, w3, w6) = (
            self.word(index, 0),
            self.word(index, 2),
            self.word(index, 3),
            self.word(index, 6),
        );
        HeaderCopy {
            index: lo32(w0),
            pool_id: hi32(w0),
            data_off: u16_at(w2, 0),
            nb_segs: u16_at(w2, 1),
            data_len: u16_at(w2, 3),
            pkt_len: lo32(w3),
            next: w6,
        }
    }

    /// Address of byte `off` of buffer `index`'s data room (`index < n`, `off` within
    /// `buf_len`).
    #[inline(always)]
    fn data_ptr(&self, index: u32, off: u32) -> *mut u8 {
        self.hdr(index)
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE as usize + off as usize)
    }

    /// Validates a handle from a guest-writable ring: this pool, index in range.
    #[inline(always)]
    fn check_handle(&self, handle: u64) -> Option<u32> {
        let (pool_id, index) = ((handle >> 32) as u32, handle as u32);
        (pool_id == self.pool_id && index < self.n).then_some(index)
    }

    /// Claims buffer `index` (`< n`) from transit: a CAS `TRANSIT -> ours`.
    #[inline(always)]
    fn claim(&self, index: u32) -> bool {
        // Acquire: pairs with the guest's Release store of TRANSIT (and the ring's
        // R1/A1), so its header and data writes are visible to the reads that follow.
        self.owner_word(index)
            .compare_exchange(
                OwnerTag::TRANSIT.0,
                self.owner,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Claims and validates the packet `handle` names: every segment is claimed (a CAS)
    /// before its header is read, read once, validated, and recorded in `chain`. On
    /// failure the claimed segments are freed and the reason returned (not yet counted).
    fn claim_chain(&mut self, handle: u64, chain: &mut Chain) -> Result<(), GuestDrop> {
        let Some(head) = self.check_handle(handle) else {
            return Err(GuestDrop::BadHandle);
        };
        if !self.claim(head) {
            return Err(GuestDrop::NotInTransit);
        }
        let h = self.read_header(head);
        self.walk_chain(head, h, chain)
    }

    /// The rest of [`claim_chain`](Self::claim_chain): `head` is claimed and `h` is its
    /// header copy.
    fn walk_chain(&mut self, head: u32, h: HeaderCopy, chain: &mut Chain) -> Result<(), GuestDrop> {
        // Recorded as soon as it is claimed, so a failure below frees it.
        chain.push(head);
        let mut hc = h;
        let (segs, pkt_len) = (usize::from(hc.nb_segs), hc.pkt_len);
        let mut cur = head;
        let res = loop {
            let span_ok = u32::from(hc.data_off) + u32::from(hc.data_len) <= self.buf_len;
            if hc.index != cur || hc.pool_id != self.pool_id || !span_ok {
                break Err(GuestDrop::BadHeader);
            }
            chain.set_span(hc.data_off, hc.data_len);
            if hc.next == 0 {
                break Ok(());
            }
            if chain.n >= segs || chain.n >= GUEST_MAX_SEGS {
                break Err(GuestDrop::BadChain);
            }
            let Some(next) = self.check_handle(hc.next) else {
                break Err(GuestDrop::BadChain);
            };
            if chain.contains(next) || !self.claim(next) {
                break Err(GuestDrop::BadChain);
            }
            // `n < GUEST_MAX_SEGS` (checked above): there is room.
            chain.push(next);
            cur = next;
            hc = self.read_header(next);
        };
        let res = match res {
            Ok(()) if chain.n != segs => Err(GuestDrop::BadChain),
            Ok(()) if chain.total > GUEST_MAX_FRAME => Err(GuestDrop::TooLong),
            Ok(()) if pkt_len != chain.total => Err(GuestDrop::BadHeader),
            other => other,
        };
        if res.is_err() {
            self.release(chain);
        }
        res
    }

    /// Gives the claimed segments of `chain` back to the guest's pool (at the next
    /// [`flush`](Self::flush)): `refcnt` 0, then a CAS `ours -> FREE`; a segment whose
    /// state changed under us is not returned (counted as lost).
    fn release(&mut self, chain: &Chain) {
        for &i in chain.claimed() {
            self.release_one(i);
        }
    }

    /// Gives back one claimed buffer `i` (`< n`), as [`release`](Self::release).
    #[inline(always)]
    fn release_one(&mut self, i: u32) {
        // Relaxed: the guest's next allocation of it is ordered by the free ring (R1/A1)
        // after the Release CAS below.
        self.refcnt_word(i).store(0, Ordering::Relaxed);
        // Release: our reads of the buffer happen before the guest may reuse it.
        let freed = self
            .owner_word(i)
            .compare_exchange(
                self.owner,
                OwnerTag::FREE.0,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok();
        if freed && self.pending.len() < self.pending.capacity() {
            self.pending.push(i);
        } else {
            self.stats.lost_segments += 1;
        }
        if self.pending.len() == self.pending.capacity() {
            self.flush();
        }
    }

    /// Receives the guest packet `handle` (from a guest-writable ring): claims and
    /// validates its chain, copies the data into a new host mbuf from `host`, and frees
    /// the guest's segments (returned to its free ring at the next
    /// [`flush`](Self::flush)).
    ///
    /// # Errors
    /// [`GuestDrop`] (counted in [`GuestStats`]); whatever was claimed is freed.
    #[inline]
    pub fn receive<'c>(&mut self, handle: u64, host: &'c MbufCache) -> Result<Mbuf<'c>, GuestDrop> {
        let Some(head) = self.check_handle(handle) else {
            return Err(self.drop_counted(GuestDrop::BadHandle));
        };
        if !self.claim(head) {
            return Err(self.drop_counted(GuestDrop::NotInTransit));
        }
        let h = self.read_header(head);
        if h.nb_segs == 1 && h.next == 0 {
            return self.receive_single(head, h, host);
        }
        let mut chain = Chain::new();
        if let Err(why) = self.walk_chain(head, h, &mut chain) {
            return Err(self.drop_counted(why));
        }
        let copy = if chain.n == 1 {
            self.copy_single(&chain, host)
        } else {
            self.copy_chain(&chain, host)
        };
        self.release(&chain);
        match copy {
            Some(m) => {
                self.stats.received += 1;
                Ok(m)
            }
            None => {
                self.stats.count(GuestDrop::NoBuffer);
                Err(GuestDrop::NoBuffer)
            }
        }
    }

    /// Counts a drop and returns its reason.
    #[cold]
    fn drop_counted(&mut self, why: GuestDrop) -> GuestDrop {
        self.stats.count(why);
        why
    }

    /// [`receive`](Self::receive) of a one-segment packet (nearly every one): `head` is
    /// claimed and `h` its header copy; the same checks as the chain walk, no chain table.
    #[inline(always)]
    fn receive_single<'c>(
        &mut self,
        head: u32,
        h: HeaderCopy,
        host: &'c MbufCache,
    ) -> Result<Mbuf<'c>, GuestDrop> {
        let (off, len) = (u32::from(h.data_off), u32::from(h.data_len));
        let sane = h.index == head
            && h.pool_id == self.pool_id
            && off + len <= self.buf_len
            && h.pkt_len == len;
        if !sane {
            self.release_one(head);
            return Err(self.drop_counted(GuestDrop::BadHeader));
        }
        let src = self.data_ptr(head, off);
        let copy = host
            .alloc_filled(len as usize, |dst| {
                // SAFETY: `off + len <= buf_len` (validated copy) and `head < n`: inside
                // this buffer's data room, in the objects span kept mapped by `pool`.
                unsafe { copy_from_guest(dst, src) }
            })
            .or_else(|| {
                let mut chain = Chain::new();
                chain.push(head);
                chain.set_span(h.data_off, h.data_len);
                self.copy_chain(&chain, host)
            });
        self.release_one(head);
        match copy {
            Some(m) => {
                self.stats.received += 1;
                Ok(m)
            }
            None => Err(self.drop_counted(GuestDrop::NoBuffer)),
        }
    }

    /// One guest segment into one host mbuf (if it fits).
    #[inline(always)]
    fn copy_single<'c>(&self, chain: &Chain, host: &'c MbufCache) -> Option<Mbuf<'c>> {
        let (i, off, len) = (chain.idx[0], chain.off[0], chain.len[0]);
        let src = self.data_ptr(i, u32::from(off));
        host.alloc_filled(usize::from(len), |dst| {
            // SAFETY: `off + len <= buf_len` (validated copy) and `i < n`: inside this
            // buffer's data room, in the objects span kept mapped by `pool`.
            unsafe { copy_from_guest(dst, src) }
        })
        .or_else(|| self.copy_chain(chain, host))
    }

    /// Any guest chain into a host packet of as many host segments as it takes.
    fn copy_chain<'c>(&self, chain: &Chain, host: &'c MbufCache) -> Option<Mbuf<'c>> {
        let mut head = host.alloc()?;
        for k in 0..chain.n {
            let (Some(&i), Some(&off), Some(&len)) =
                (chain.idx.get(k), chain.off.get(k), chain.len.get(k))
            else {
                return None;
            };
            let mut done = 0usize;
            let len = usize::from(len);
            while done < len {
                let room = head.tailroom();
                if room == 0 {
                    let seg = host.alloc()?;
                    head.chain(seg).ok()?;
                    continue;
                }
                let k = room.min(len - done);
                let dst = head.append(k)?;
                let src = self.data_ptr(i, u32::from(off) + done as u32);
                // SAFETY: `off + done + k <= off + len <= buf_len` (validated copy) and
                // `i < n`: inside this buffer's data room, kept mapped by `pool`.
                unsafe { copy_from_guest(dst, src) };
                done += k;
            }
        }
        Some(head)
    }

    /// Frees the guest packet `handle` without copying it (a handle found in a killed
    /// poller's in-flight record, or a packet the host built but could not enqueue):
    /// claims and validates the chain as [`receive`](Self::receive) does, then frees it.
    ///
    /// # Errors
    /// [`GuestDrop`] (counted) when the handle or chain is bad; what was claimed is freed.
    pub fn discard(&mut self, handle: u64) -> Result<(), GuestDrop> {
        let mut chain = Chain::new();
        match self.claim_chain(handle, &mut chain) {
            Ok(()) => {
                self.release(&chain);
                Ok(())
            }
            Err(why) => {
                self.stats.count(why);
                Err(why)
            }
        }
    }

    /// Returns the buffers freed or taken but unused so far to the guest's free ring
    /// (call at the end of each burst: then the host holds nothing of the guest's).
    /// Entries the ring refuses (it is full: the guest freed buffers twice) are counted
    /// as lost.
    pub fn flush(&mut self) {
        Self::give_back(&mut self.producer, &mut self.pending, &mut self.stats);
        Self::give_back(&mut self.producer, &mut self.stash, &mut self.stats);
        // One load when nothing is pending: lets a publication an earlier guest producer
        // held up land without waiting for traffic.
        let _ = self.producer.complete();
        let _ = self.consumer.complete();
    }

    /// Enqueues `list` on the free ring. What the ring refuses as full or corrupt is
    /// counted as lost; on `Busy` (an earlier reservation still waits for the guest) the
    /// list is kept for the next flush.
    fn give_back(
        producer: &mut UntrustedProducer<u32>,
        list: &mut Vec<u32>,
        stats: &mut GuestStats,
    ) {
        if list.is_empty() {
            return;
        }
        match producer.enqueue_burst(list) {
            Ok(pushed) => {
                stats.lost_segments += (list.len() - pushed.min(list.len())) as u64;
                list.clear();
            }
            Err(RingError::Busy) => {}
            Err(_) => {
                stats.lost_segments += list.len() as u64;
                list.clear();
            }
        }
    }

    /// Takes `k` free guest buffers for sending into the stash (host memory); false when
    /// the free ring has fewer. Out-of-range entries are dropped and counted.
    fn refill(&mut self, k: usize) -> bool {
        let mut got = [0u32; TX_BATCH];
        let want = k.clamp(1, TX_BATCH);
        let Some(room) = got.get_mut(..want) else {
            return false;
        };
        let n = match self.consumer.dequeue_burst(room) {
            Ok(n) => n.min(want),
            Err(_) => 0,
        };
        for &i in got.get(..n).unwrap_or(&[]) {
            if i < self.n {
                self.stash.push(i);
            } else {
                self.stats.bad_free_entries += 1;
            }
        }
        self.stash.len() >= k
    }

    /// Takes one free guest buffer for sending and claims it (CAS `FREE -> ours`).
    fn take_free(&mut self) -> Option<u32> {
        for _ in 0..GUEST_MAX_SEGS {
            if self.stash.is_empty() {
                self.refill(TX_BATCH);
            }
            let i = self.stash.pop()?;
            // Acquire: pairs with the guest's Release of the free ring entry (R1/A1), so
            // its last writes of the buffer happen before ours.
            let ok = self
                .owner_word(i)
                .compare_exchange(
                    OwnerTag::FREE.0,
                    self.owner,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok();
            if ok {
                return Some(i);
            }
            // Not free after all (the guest still uses it): not ours to give back.
            self.stats.lost_segments += 1;
        }
        None
    }

    /// Copies the host packet `m` into new guest buffers and puts them in transit;
    /// returns the handle to enqueue on the guest's ring.
    ///
    /// # Errors
    /// [`GuestDrop::TooLong`] (counted) over [`GUEST_MAX_FRAME`] or [`GUEST_MAX_SEGS`];
    /// [`GuestDrop::NoBuffer`] (not counted: the packet stays the caller's) when the
    /// guest's pool is empty.
    pub fn send(&mut self, m: &Mbuf<'_>) -> Result<u64, GuestDrop> {
        let room = self.buf_len.saturating_sub(u32::from(self.headroom)).max(1);
        let total: u64 = if m.nb_segs() == 1 {
            m.data_len() as u64
        } else {
            m.segments().map(|s| s.len() as u64).sum()
        };
        let segs = total.div_ceil(u64::from(room)).max(1);
        if total > u64::from(GUEST_MAX_FRAME) || segs > GUEST_MAX_SEGS as u64 {
            self.stats.count(GuestDrop::TooLong);
            return Err(GuestDrop::TooLong);
        }
        let segs = segs as usize;
        if segs == 1 && m.nb_segs() == 1 {
            return self.send_single(m.data());
        }
        if self.stash.len() < segs {
            self.refill(TX_BATCH.max(segs));
        }
        let mut chain = Chain::new();
        for _ in 0..segs {
            let Some(i) = self.take_free() else {
                self.release(&chain);
                self.flush();
                return Err(GuestDrop::NoBuffer);
            };
            chain.push(i);
            chain.set_span(self.headroom, 0);
        }
        // Fill the segments in order from the host packet's bytes.
        let mut k = 0usize;
        let mut used = 0u32;
        for src in m.segments() {
            let mut src = src;
            while !src.is_empty() {
                let Some(&i) = chain.idx.get(k) else {
                    break;
                };
                let take = (room - used).min(src.len() as u32);
                let (now, rest) = src.split_at(take as usize);
                let dst = self.data_ptr(i, u32::from(self.headroom) + used);
                // SAFETY: `headroom + used + take <= headroom + room = buf_len`, `i < n`:
                // inside this guest buffer's data room, kept mapped by `pool`.
                unsafe { copy_to_guest(dst, now) };
                used += take;
                src = rest;
                if used == room {
                    if let Some(l) = chain.len.get_mut(k) {
                        *l = used as u16;
                    }
                    k += 1;
                    used = 0;
                }
            }
        }
        if let Some(l) = chain.len.get_mut(k) {
            if used > 0 {
                *l = used as u16;
            }
        }
        // Headers, last segment first so each `next` names a written header.
        let nb = chain.n as u16;
        let mut next = 0u64;
        for s in (0..chain.n).rev() {
            let (Some(&i), Some(&len)) = (chain.idx.get(s), chain.len.get(s)) else {
                continue;
            };
            let (segs_field, pkt_len) = if s == 0 { (nb, total as u32) } else { (1, 0) };
            self.write_header(i, len, segs_field, pkt_len, next);
            next = pair32(i, self.pool_id);
        }
        // Release: the guest's Acquire CAS of TRANSIT (its adopt) sees the header and data
        // writes above. A CAS, so a state the guest changed meanwhile is noticed.
        let mut in_transit = true;
        for &i in chain.claimed() {
            in_transit &= self
                .owner_word(i)
                .compare_exchange(
                    self.owner,
                    OwnerTag::TRANSIT.0,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok();
        }
        if !in_transit {
            // The guest took a buffer we held: drop this copy (what is still ours goes back).
            self.release(&chain);
            self.stats.count(GuestDrop::NotInTransit);
            return Err(GuestDrop::NotInTransit);
        }
        self.stats.sent += 1;
        Ok(next)
    }

    /// [`send`](Self::send) of a host packet that fits one guest buffer (nearly every one).
    #[inline(always)]
    fn send_single(&mut self, data: &[u8]) -> Result<u64, GuestDrop> {
        let Some(i) = self.take_free() else {
            self.flush();
            return Err(GuestDrop::NoBuffer);
        };
        let dst = self.data_ptr(i, u32::from(self.headroom));
        // SAFETY: `data.len() <= room = buf_len - headroom` (checked by `send`) and `i < n`:
        // inside this guest buffer's data room, kept mapped by `pool`.
        unsafe { copy_to_guest(dst, data) };
        // `len <= room <= u16::MAX`.
        let len = data.len() as u16;
        self.write_header(i, len, 1, u32::from(len), 0);
        // Release: pairs with the guest's Acquire CAS of TRANSIT (its adopt), so it sees
        // the header and data written above.
        let ok = self
            .owner_word(i)
            .compare_exchange(
                self.owner,
                OwnerTag::TRANSIT.0,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok();
        if !ok {
            self.release_one(i);
            return Err(self.drop_counted(GuestDrop::NotInTransit));
        }
        self.stats.sent += 1;
        Ok(pair32(i, self.pool_id))
    }

    /// Writes line 0 of a header we hold (refcnt 1, the given span and links).
    fn write_header(&self, i: u32, data_len: u16, nb_segs: u16, pkt_len: u32, next: u64) {
        self.refcnt_word(i).store(1, Ordering::Relaxed);
        self.set_word(i, 0, pair32(i, self.pool_id));
        self.set_word(i, 2, quad16(self.headroom, nb_segs, NO_PORT, data_len));
        self.set_word(i, 3, pair32(pkt_len, 0));
        self.set_word(i, 4, 0);
        self.set_word(i, 5, 0);
        self.set_word(i, 6, next);
        self.set_word(i, 7, pair32(self.buf_len, 0));
    }
}

/// Most freed guest buffers held before a flush.
pub(crate) const PENDING_MAX: usize = 512;

impl Drop for GuestPool {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
