//! The device side of a virtio split virtqueue (virtio 1.x §2.7) in guest memory that the
//! guest can change at any moment. Layout, from the addresses `SET_VRING_ADDR` gave:
//!
//! ```text
//! desc   16 B x size  { addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16 }
//! avail  flags u16, idx u16, ring[size] u16, used_event u16
//! used   flags u16, idx u16, ring[size] { id u32, len u32 }, avail_event u16
//! ```
//!
//! Orderings: the driver fills descriptors and `avail.ring`, then publishes `avail.idx`;
//! the device loads `avail.idx` with **Acquire (V1)**, so what it reads after is at least
//! as new. The device fills `used.ring`, then stores `used.idx` with **Release (V2)**,
//! publishing the elements (and the packet bytes written into the buffers) to the driver.
//! Before deciding whether to interrupt, a **SeqCst fence (V3)** orders that store before
//! the load of `avail.flags` (the driver's mirror fence pairs with it), so a driver that
//! just asked for interrupts is not missed.
//!
//! Untrusted: every descriptor is copied out with one volatile read and then checked
//! (index in range, no loops: at most `size` links, no indirect tables, the buffer wholly
//! inside guest memory, the direction the queue needs). A chain that fails is refused as a
//! whole with a [`ChainError`]; the indices we keep are our own and never re-read.

use crate::VhostError;
use std::cell::Cell;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use pmds_common_virtio::prefetch::{prefetch, prefetch_write};
pub use pmds_common_virtio::split::{
    Desc, MAX_QUEUE_SIZE, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
};

use super::mem::GuestMemory;
use pmds_common_vhost_user::peer_mem::{PeerArray, PeerSpan};
pub use pmds_common_vhost_user::proto::VringAddrs;

/// Most buffers one chain may have here (longer chains are refused).
pub const MAX_CHAIN: usize = 64;

/// Why a descriptor chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A head or `next` index is not below the queue size.
    IndexOutOfRange,
    /// More links than the queue has entries (a loop) or than [`MAX_CHAIN`].
    TooLong,
    /// An indirect descriptor (not negotiated).
    Indirect,
    /// A buffer is not wholly inside guest memory.
    BadBuffer,
    /// A buffer the device must write is read-only, or the other way round.
    WrongDirection,
    /// `avail.idx` is more than `size` ahead of what we processed.
    AvailIndex,
}

/// Most chains one [`SplitRing::prefetch_pending`] warms (a burst or two).
const PREFETCH_MAX: u16 = 64;

/// A started split virtqueue, owned by the one thread that polls it.
pub struct SplitRing {
    /// Keeps the memory of the spans below (and of `segs`) mapped.
    mem: Arc<GuestMemory>,
    /// The descriptor table; the driver area (flags, idx, ...) and its ring; the device
    /// area (flags, idx, ...) and its elements (all checked in `start`).
    desc: PeerArray<Desc>,
    avail: PeerSpan,
    avail_ring: PeerArray<u16>,
    used: PeerSpan,
    used_ring: PeerArray<[u32; 2]>,
    size: u16,
    /// Next `avail.ring` position to take (ours: never re-read from the guest).
    pub last_avail: u16,
    /// Next `used.ring` position to fill (ours).
    used_idx: u16,
    /// Elements filled since the last publication.
    unpublished: u16,
    /// In-order batch not yet written (`VIRTIO_F_IN_ORDER`): the used position of its
    /// first chain and the head of its last.
    batch: Option<(u16, u16)>,
    /// Scratch: the current chain's buffers.
    segs: Box<[PeerSpan; MAX_CHAIN]>,
    /// The memory region that held the last buffer translated (tried first).
    region_hint: Cell<usize>,
}

impl std::fmt::Debug for SplitRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitRing")
            .field("size", &self.size)
            .field("last_avail", &self.last_avail)
            .field("used_idx", &self.used_idx)
            .finish()
    }
}

impl SplitRing {
    /// Starts the ring described by `a` in `mem`; `used_idx` is where the device's used
    /// index continues (the frontend's value at start: `a.base` for a fresh ring).
    ///
    /// # Errors
    /// One line when the size is not a power of two up to 32768 or an area is not inside
    /// guest memory or misaligned.
    pub fn start(mem: Arc<GuestMemory>, a: &VringAddrs) -> Result<SplitRing, VhostError> {
        let size = a.size;
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(crate::peer_err!(
                "vring size {size} is not a power of two up to 32768"
            ));
        }
        let n = u64::from(size);
        let area = |what: &str, uva: u64, len: u64, align: u64| -> Result<PeerSpan, VhostError> {
            if !uva.is_multiple_of(align) {
                return Err(crate::peer_err!(
                    "vring {what} area {uva:#x} is not {align}-byte aligned"
                ));
            }
            let span = mem.uva(uva, len).ok_or_else(|| {
                crate::peer_err!("vring {what} area {uva:#x}+{len} is not in guest memory")
            })?;
            // Aligned where we map it too (a region's file offset could shift it).
            if !span.addr().is_multiple_of(align) {
                return Err(crate::peer_err!(
                    "vring {what} area {uva:#x} is not {align}-byte aligned in its file"
                ));
            }
            Ok(span)
        };
        let desc = area("descriptor", a.desc, 16 * n, 16)?;
        let avail = area("avail", a.avail, 6 + 2 * n, 2)?;
        let used = area("used", a.used, 6 + 8 * n, 4)?;
        // The used index the driver last saw from us: continue from there (bytes 2..4 of
        // the 4-aligned used area: never a miss).
        let used_idx = used.load_u16(2, Ordering::Acquire).unwrap_or(0);
        let n = usize::from(size);
        // Inside the areas just checked, aligned (their starts are), `size` a power of two.
        let (Some(desc), Some(avail_ring), Some(used_ring)) = (
            desc.array::<Desc>(0, n),
            avail.array::<u16>(4, n),
            used.array::<[u32; 2]>(4, n),
        ) else {
            return Err(crate::peer_err!("vring areas do not hold {size} entries"));
        };
        Ok(SplitRing {
            mem,
            desc,
            avail,
            avail_ring,
            used,
            used_ring,
            size,
            last_avail: a.base,
            used_idx,
            unpublished: 0,
            batch: None,
            segs: Box::new([PeerSpan::EMPTY; MAX_CHAIN]),
            region_hint: Cell::new(0),
        })
    }

    /// Entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Loads word `i` (0 flags, 1 idx) of the avail area (inside the area checked in
    /// `start`, 2-aligned, so never a miss; a miss would read 0).
    #[inline(always)]
    fn avail_word(&self, i: usize, order: Ordering) -> u16 {
        self.avail.load_u16(2 * i, order).unwrap_or(0)
    }

    /// Stores word `i` (0 flags, 1 idx) of the used area.
    #[inline(always)]
    fn store_used_word(&self, i: usize, v: u16, order: Ordering) {
        self.used.store_u16(2 * i, v, order);
    }

    /// Chains the driver has made available and we have not taken.
    ///
    /// # Errors
    /// [`ChainError::AvailIndex`] when `avail.idx` is impossibly far ahead.
    #[inline]
    pub fn pending(&self) -> Result<u16, ChainError> {
        // V1: Acquire, so the ring entries and descriptors read next are as new as the index.
        let idx = self.avail_word(1, Ordering::Acquire);
        let n = idx.wrapping_sub(self.last_avail);
        if n > self.size {
            return Err(ChainError::AvailIndex);
        }
        Ok(n)
    }

    /// Takes the next available head (call only when [`SplitRing::pending`] said so).
    #[inline]
    pub fn take_head(&mut self) -> u16 {
        let slot = usize::from(self.last_avail & (self.size - 1));
        self.last_avail = self.last_avail.wrapping_add(1);
        // Relaxed: ordered after the Acquire of `avail.idx` (V1) by program order of the
        // loads on this thread; the value is checked by `walk`.
        self.avail_ring.load(slot, Ordering::Relaxed)
    }

    /// Warms the cache for the next `n` available chains (`n` from [`SplitRing::pending`]):
    /// first their descriptors, then the first buffer of each. Only hints: indices are
    /// masked, addresses translated as in [`SplitRing::walk`], nothing is trusted or kept,
    /// and a prefetch never faults. Without it the burst's cache misses (lines the other
    /// core just wrote) are taken one after the other; with it they overlap.
    /// `write`: the buffers are the device's to fill (the receive queue).
    #[inline]
    pub fn prefetch_pending(&self, n: u16, write: bool) {
        let mask = self.size - 1;
        let n = n.min(PREFETCH_MAX);
        for k in 0..n {
            let slot = usize::from(self.last_avail.wrapping_add(k) & mask);
            // Relaxed: a hint only (the checked path reads it again after V1).
            let head = self.avail_ring.load(slot, Ordering::Relaxed) & mask;
            prefetch(self.desc.hint(usize::from(head)));
        }
        for k in 0..n {
            let slot = usize::from(self.last_avail.wrapping_add(k) & mask);
            let head = self.avail_ring.load(slot, Ordering::Relaxed) & mask;
            // A volatile copy: the guest may be writing it.
            let d = self.desc.read(usize::from(head));
            let len = u64::from(u32::from_le(d.len)).min(128);
            if let Some(p) = self
                .mem
                .gpa_hinted(u64::from_le(d.addr), len, &self.region_hint)
            {
                if write {
                    prefetch_write(p.hint(0));
                    prefetch_write(p.hint(64));
                } else {
                    prefetch(p.hint(0));
                    prefetch(p.hint(64));
                }
            }
        }
        self.prefetch_used(n);
    }

    /// Prefetches for writing the used-ring lines the next `n` elements go to.
    #[inline]
    fn prefetch_used(&self, n: u16) {
        let mask = self.size - 1;
        // 8 elements per line: one prefetch per line, plus the last element's.
        let mut k = 0u16;
        while k < n {
            let slot = usize::from(self.used_idx.wrapping_add(k) & mask);
            prefetch_write(self.used_ring.hint(slot));
            k += 8;
        }
        if n > 0 {
            let slot = usize::from(self.used_idx.wrapping_add(n - 1) & mask);
            prefetch_write(self.used_ring.hint(slot));
        }
    }

    /// Gives back the last `n` heads taken (not used after all: no buffers for a packet).
    pub fn untake(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_sub(n);
    }

    /// Walks the chain at `head`, checking every descriptor; the buffers (all device-
    /// writable when `writable`, else all device-readable) are in [`SplitRing::segs`].
    /// Returns how many and their total length.
    ///
    /// # Errors
    /// [`ChainError`] for the first thing wrong.
    #[inline(always)]
    pub fn walk(&mut self, head: u16, writable: bool) -> Result<(usize, u64), ChainError> {
        let mut i = head;
        let mut n = 0usize;
        let mut total = 0u64;
        loop {
            if i >= self.size {
                return Err(ChainError::IndexOutOfRange);
            }
            if n == MAX_CHAIN || n >= usize::from(self.size) {
                return Err(ChainError::TooLong);
            }
            // `i < size` (checked above); one volatile copy, because the guest may be
            // writing it.
            let d = self.desc.read(usize::from(i));
            let (addr, len, flags, next) = (
                u64::from_le(d.addr),
                u32::from_le(d.len),
                u16::from_le(d.flags),
                u16::from_le(d.next),
            );
            if flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainError::Indirect);
            }
            if (flags & VRING_DESC_F_WRITE != 0) != writable {
                return Err(ChainError::WrongDirection);
            }
            let buf = self
                .mem
                .gpa_hinted(addr, u64::from(len), &self.region_hint)
                .ok_or(ChainError::BadBuffer)?;
            // `n < MAX_CHAIN`, the table's length (checked above).
            let Some(slot) = self.segs.get_mut(n) else {
                return Err(ChainError::TooLong);
            };
            *slot = buf;
            n += 1;
            total += u64::from(len);
            if flags & VRING_DESC_F_NEXT == 0 {
                return Ok((n, total));
            }
            i = next;
        }
    }

    /// The buffers of the last [`SplitRing::walk`] (spans of guest memory, valid while
    /// this ring lives: it holds the memory table).
    #[inline]
    pub fn segs(&self) -> &[PeerSpan; MAX_CHAIN] {
        &self.segs
    }

    /// Returns chain `head` to the driver with `len` bytes written (published by
    /// [`SplitRing::publish`]).
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) {
        self.write_batch();
        self.write_elem(self.used_idx, head, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        self.unpublished += 1;
    }

    /// Returns chain `head` to the driver with nothing written, folded with the chains
    /// returned the same way before it into one used element (`VIRTIO_F_IN_ORDER`, virtio
    /// 1.x §2.7.9): at the position of the batch's first chain, naming the last chain's
    /// head; the used index still moves by one per chain. Only for a driver that
    /// negotiated in-order, and only in the order the chains were made available.
    #[inline]
    pub fn push_used_in_order(&mut self, head: u16) {
        match &mut self.batch {
            Some((_, last)) => *last = head,
            None => self.batch = Some((self.used_idx, head)),
        }
        self.used_idx = self.used_idx.wrapping_add(1);
        self.unpublished += 1;
    }

    /// Writes the pending in-order batch's one used element.
    #[inline]
    fn write_batch(&mut self) {
        if let Some((at, head)) = self.batch.take() {
            self.write_elem(at, head, 0);
        }
    }

    /// Writes used element `pos` (masked to the ring): chain `head`, `len` bytes written.
    #[inline]
    fn write_elem(&self, pos: u16, head: u16, len: u32) {
        self.used_ring
            .write(usize::from(pos), [u32::from(head).to_le(), len.to_le()]);
    }

    /// Publishes the used elements pushed since the last call; returns whether the driver
    /// wants an interrupt for them.
    #[inline]
    pub fn publish(&mut self) -> bool {
        self.write_batch();
        if self.unpublished == 0 {
            return false;
        }
        self.unpublished = 0;
        // V2: Release, publishing the used elements and the bytes written into the buffers.
        self.store_used_word(1, self.used_idx, Ordering::Release);
        // V3: the store above before the load of the driver's flags below.
        fence(Ordering::SeqCst);
        self.avail_word(0, Ordering::Relaxed) & VRING_AVAIL_F_NO_INTERRUPT == 0
    }

    /// Sets `used.flags` (e.g. `VRING_USED_F_NO_NOTIFY`: we poll, kicks are not needed).
    pub fn set_used_flags(&self, flags: u16) {
        self.store_used_word(0, flags, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::mem::RegionSpec;
    use super::*;

    /// A guest of `len` bytes at guest physical 0 and user address `UVA`, plus a driver
    /// that builds a split ring at `RING` in it.
    pub(crate) struct FakeGuest {
        pub mem: Arc<GuestMemory>,
        pub base: *mut u8,
        pub size: u16,
        pub avail_idx: u16,
    }

    pub(crate) const UVA: u64 = 0x7f00_0000_0000;
    pub(crate) const RING: u64 = 0x1000;
    pub(crate) const BUFS: u64 = 0x10_0000;

    impl FakeGuest {
        pub(crate) fn new(size: u16) -> FakeGuest {
            let len = 0x40_0000u64;
            // Sealed as QEMU seals its memfds (the backend refuses memory that can shrink).
            let f = crate::mem::sealed_memfd("shmdp-vring", len).unwrap();
            let spec = RegionSpec {
                guest_phys_addr: 0,
                size: len,
                user_addr: UVA,
                mmap_offset: 0,
            };
            let mem = Arc::new(GuestMemory::map(&[spec], vec![f]).unwrap());
            // The test is the guest: it writes its memory through a raw pointer.
            let base = mem.gpa(0, len).unwrap().hint(0).cast_mut();
            FakeGuest {
                mem,
                base,
                size,
                avail_idx: 0,
            }
        }

        pub(crate) fn addrs(&self) -> VringAddrs {
            let n = u64::from(self.size);
            VringAddrs {
                size: self.size,
                desc: UVA + RING,
                avail: UVA + RING + 16 * n,
                used: UVA + RING + 16 * n + 0x1000,
                base: 0,
            }
        }

        pub(crate) fn write<T: Copy>(&self, gpa: u64, v: T) {
            // SAFETY: test memory, inside the mapping.
            unsafe {
                std::ptr::write_unaligned(self.base.wrapping_add(gpa as usize).cast::<T>(), v)
            }
        }

        pub(crate) fn read<T: Copy>(&self, gpa: u64) -> T {
            // SAFETY: test memory, inside the mapping.
            unsafe { std::ptr::read_unaligned(self.base.wrapping_add(gpa as usize).cast::<T>()) }
        }

        pub(crate) fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let d = RING + 16 * u64::from(i);
            self.write(d, addr);
            self.write(d + 8, len);
            self.write(d + 12, flags);
            self.write(d + 14, next);
        }

        /// Makes chain `head` available.
        pub(crate) fn offer(&mut self, head: u16) {
            let avail = RING + 16 * u64::from(self.size);
            let slot = u64::from(self.avail_idx & (self.size - 1));
            self.write(avail + 4 + 2 * slot, head);
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.write(avail + 2, self.avail_idx);
        }

        pub(crate) fn used_idx(&self) -> u16 {
            self.read(RING + 16 * u64::from(self.size) + 0x1000 + 2)
        }

        pub(crate) fn used_elem(&self, i: u16) -> (u32, u32) {
            let used = RING + 16 * u64::from(self.size) + 0x1000;
            let slot = u64::from(i & (self.size - 1));
            (
                self.read(used + 4 + 8 * slot),
                self.read(used + 8 + 8 * slot),
            )
        }

        pub(crate) fn set_used_elem(&self, i: u16, (id, len): (u32, u32)) {
            let used = RING + 16 * u64::from(self.size) + 0x1000;
            let slot = u64::from(i & (self.size - 1));
            self.write(used + 4 + 8 * slot, id);
            self.write(used + 8 + 8 * slot, len);
        }
    }

    #[test]
    fn walks_good_chains_and_refuses_bad_ones() {
        let mut g = FakeGuest::new(8);
        let mut r = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
        assert_eq!(r.pending(), Ok(0));
        // 0 -> 1: two readable buffers.
        g.desc(0, BUFS, 100, VRING_DESC_F_NEXT, 1);
        g.desc(1, BUFS + 100, 50, 0, 0);
        g.offer(0);
        assert_eq!(r.pending(), Ok(1));
        let h = r.take_head();
        assert_eq!(r.walk(h, false), Ok((2, 150)));
        assert_eq!(r.walk(h, true), Err(ChainError::WrongDirection));
        // A loop: 2 -> 3 -> 2.
        g.desc(2, BUFS, 10, VRING_DESC_F_NEXT, 3);
        g.desc(3, BUFS, 10, VRING_DESC_F_NEXT, 2);
        assert_eq!(r.walk(2, false), Err(ChainError::TooLong));
        // Out of range next and head.
        g.desc(4, BUFS, 10, VRING_DESC_F_NEXT, 8);
        assert_eq!(r.walk(4, false), Err(ChainError::IndexOutOfRange));
        assert_eq!(r.walk(9, false), Err(ChainError::IndexOutOfRange));
        // Buffer outside guest memory, and one crossing its end.
        g.desc(5, 0x40_0000, 1, 0, 0);
        assert_eq!(r.walk(5, false), Err(ChainError::BadBuffer));
        g.desc(5, 0x3f_ffff, 2, 0, 0);
        assert_eq!(r.walk(5, false), Err(ChainError::BadBuffer));
        g.desc(6, BUFS, 16, VRING_DESC_F_INDIRECT, 0);
        assert_eq!(r.walk(6, false), Err(ChainError::Indirect));
        // An impossible avail index.
        g.write(RING + 16 * 8 + 2, 100u16);
        assert_eq!(r.pending(), Err(ChainError::AvailIndex));
    }

    #[test]
    fn used_elements_are_published_in_one_store() {
        let mut g = FakeGuest::new(4);
        let mut r = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
        for i in 0..3u16 {
            g.desc(i, BUFS + 0x1000 * u64::from(i), 64, VRING_DESC_F_WRITE, 0);
            g.offer(i);
        }
        while r.pending().unwrap() > 0 {
            let h = r.take_head();
            r.walk(h, true).unwrap();
            r.push_used(h, 42);
        }
        assert_eq!(g.used_idx(), 0, "nothing visible before publish");
        assert!(r.publish(), "interrupts wanted by default");
        assert_eq!(g.used_idx(), 3);
        assert_eq!(g.used_elem(2), (2, 42));
        assert!(!r.publish(), "nothing new");
    }

    #[test]
    fn refuses_rings_outside_memory_or_misaligned() {
        let g = FakeGuest::new(8);
        let mut a = g.addrs();
        a.size = 6;
        assert!(SplitRing::start(g.mem.clone(), &a).is_err());
        let mut a = g.addrs();
        a.desc += 8;
        assert!(SplitRing::start(g.mem.clone(), &a).is_err());
        let mut a = g.addrs();
        a.used = UVA + 0x40_0000 - 8;
        assert!(SplitRing::start(g.mem.clone(), &a).is_err());
    }
}
