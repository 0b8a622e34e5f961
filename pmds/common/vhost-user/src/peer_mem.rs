//! The one way to peer memory: memory a peer (a vhost-user frontend's guest RAM, or a
//! virtio-user port's memory that its backend writes) can change at any moment. Both
//! vhost-user drivers reach it only through a [`PeerSpan`]: a host address range that the
//! owner of the mapping vouched for once, with accessors that check every offset against
//! the span (and alignment where the access needs it) and then touch the memory only by
//! volatile or atomic loads and stores, or by copying bytes in or out. No Rust reference
//! is ever made to peer bytes (`&[u8]` over memory the peer may change during the read
//! would promise the compiler it does not change); what is read is copied once and every
//! check and use is on the copy. The `unsafe` of both drivers' data paths is here, one
//! `SAFETY` line per accessor.
//!
//! Where it sits: `pmds-common-vhost-user`, under the vhost backend (`pmds-net-vhost`:
//! guest memory, vrings, virtio-net) and the virtio-user frontend (`pmds-net-virtio-user`:
//! its driver rings and buffer slots). Every mapping a span points into is registered with
//! the SIGBUS guard ([`crate::guard`]), so a peer that takes its memory away turns the
//! span's bytes into zeros, never kills the process.
//!
//! Lifetime: a span does not borrow its mapping; it is valid while the mapping that made
//! it lives, and every holder of spans keeps that mapping alive beside them (the vhost
//! data path holds the memory table's `Arc`, a virtio-user ring its device's memory). The
//! constructor ([`PeerSpan::new`]) is the one place that promise is made.

use std::sync::atomic::{AtomicU16, Ordering};

use pmds_common_virtio::split::Desc;
use shm_mempool::{Mbuf, MbufCache};

use crate::guard::Guarded;

/// A range of peer memory, checked once by the owner of its mapping; the accessors check
/// each access against it and never panic (an access outside it reads `None` or writes
/// nothing: callers check their offsets first, these checks are what makes it sound).
#[derive(Clone, Copy)]
pub struct PeerSpan {
    ptr: *mut u8,
    len: usize,
}

impl std::fmt::Debug for PeerSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerSpan({:p}+{})", self.ptr, self.len)
    }
}

// SAFETY: a span is an address range in a shared mapping, touched only by volatile or
// atomic accesses and copies (the peer writes it anyway); moving it between threads adds
// nothing a peer cannot do.
unsafe impl Send for PeerSpan {}
// SAFETY: as for Send: `&PeerSpan` allows the same accesses.
unsafe impl Sync for PeerSpan {}

/// Values read from or written to peer memory whole: any bit pattern is a valid value.
pub trait Plain: Copy + sealed::Sealed {}

mod sealed {
    /// Only the types below are [`super::Plain`].
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty),*) => { $(impl sealed::Sealed for $t {} impl Plain for $t {})* };
}
// Integers and arrays of them, and the split ring's descriptor (four integers).
plain!(u16, u32, u64, [u32; 2], Desc);
// Byte arrays: a buffer slot as an array entry (never read whole: see `PeerArray::span`).
impl<const N: usize> sealed::Sealed for [u8; N] {}
impl<const N: usize> Plain for [u8; N] {}

impl PeerSpan {
    /// No memory: every access misses.
    pub const EMPTY: PeerSpan = PeerSpan {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// The `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is mapped readable and writable (memory a peer may write at any
    /// moment, under the SIGBUS guard, or our own) for as long as this span or any span
    /// made from it is used; the caller keeps the mapping alive beside them.
    #[inline(always)]
    pub const unsafe fn new(ptr: *mut u8, len: usize) -> PeerSpan {
        PeerSpan { ptr, len }
    }

    /// Bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the span holds no byte.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Our address of the first byte (what the peer is told, or a prefetch hint).
    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Our address of byte `off` (no check), for prefetch hints only: never dereferenced.
    #[inline(always)]
    pub fn hint(&self, off: usize) -> *const u8 {
        self.ptr.wrapping_add(off)
    }

    /// The `len` bytes at `off`, if they lie wholly inside this span.
    #[inline(always)]
    pub fn sub(&self, off: usize, len: usize) -> Option<PeerSpan> {
        let end = off.checked_add(len)?;
        (end <= self.len).then(|| PeerSpan {
            ptr: self.ptr.wrapping_add(off),
            len,
        })
    }

    /// The bytes from `off` to the end (empty past the end).
    #[inline(always)]
    pub fn tail(&self, off: usize) -> PeerSpan {
        self.sub(off, self.len.saturating_sub(off))
            .unwrap_or(PeerSpan::EMPTY)
    }

    /// The address of a `T` at `off`, if it lies inside the span and is aligned for `T`.
    #[inline(always)]
    fn at<T>(&self, off: usize) -> Option<*mut T> {
        let end = off.checked_add(std::mem::size_of::<T>())?;
        let p = self.ptr.wrapping_add(off);
        (end <= self.len && (p as usize).is_multiple_of(std::mem::align_of::<T>()))
            .then_some(p.cast())
    }

    /// Atomic load of the `u16` at `off` (ordering: the caller's labelled pair).
    #[inline(always)]
    pub fn load_u16(&self, off: usize, order: Ordering) -> Option<u16> {
        let p = self.at::<u16>(off)?;
        // SAFETY: inside the span (mapped, `new`'s contract) and 2-aligned (`at`); only
        // ever accessed atomically or volatilely, never through a reference of ours.
        Some(unsafe { AtomicU16::from_ptr(p) }.load(order))
    }

    /// Atomic store of `v` to the `u16` at `off` (skipped outside the span).
    #[inline(always)]
    pub fn store_u16(&self, off: usize, v: u16, order: Ordering) {
        if let Some(p) = self.at::<u16>(off) {
            // SAFETY: as in `load_u16`.
            unsafe { AtomicU16::from_ptr(p) }.store(v, order);
        }
    }

    /// One volatile copy of the `T` at `off` (the peer may be writing it).
    #[inline(always)]
    pub fn read<T: Plain>(&self, off: usize) -> Option<T> {
        let p = self.at::<T>(off)?;
        // SAFETY: inside the span and aligned (`at`); `T` is `Plain`, so whatever the
        // peer left there is a valid value.
        Some(unsafe { std::ptr::read_volatile(p) })
    }

    /// One volatile store of `v` to the `T` at `off` (skipped outside the span).
    #[inline(always)]
    pub fn write<T: Plain>(&self, off: usize, v: T) {
        if let Some(p) = self.at::<T>(off) {
            // SAFETY: inside the span and aligned (`at`).
            unsafe { std::ptr::write_volatile(p, v) };
        }
    }

    /// Copies `src` (our memory) to `off`; false, writing nothing, when it does not fit.
    #[inline(always)]
    pub fn copy_in(&self, off: usize, src: &[u8]) -> bool {
        let Some(d) = self.sub(off, src.len()) else {
            return false;
        };
        if !src.is_empty() {
            // SAFETY: `d` is inside the span (mapped, writable); `src` is our own memory,
            // never in a peer mapping, so the two do not overlap. Written through the raw
            // pointer: we never read it back.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), d.ptr, src.len()) };
        }
        true
    }

    /// Writes `len` zero bytes at `off`; false, writing nothing, when they do not fit.
    #[inline(always)]
    pub fn zero(&self, off: usize, len: usize) -> bool {
        let Some(d) = self.sub(off, len) else {
            return false;
        };
        if len > 0 {
            // SAFETY: `d` is inside the span (mapped, writable).
            unsafe { std::ptr::write_bytes(d.ptr, 0, len) };
        }
        true
    }

    /// Copies `dst.len()` bytes at `off` into `dst` (volatile word loads, see
    /// `copy_from_peer`); false, copying nothing, when they are not all inside the span.
    #[inline(always)]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(s) = self.sub(off, dst.len()) else {
            return false;
        };
        // SAFETY: `[s.ptr, s.ptr + dst.len())` is inside the span, mapped and readable.
        unsafe { copy_from_peer(dst, s.ptr) };
        true
    }

    /// Appends the `len` bytes at `off` to `m`, chaining segments from `cache` as it
    /// fills; false (the packet is to be dropped) when they are not inside the span, the
    /// pool runs dry or the chain would grow too long.
    #[inline]
    pub fn append_to<'c>(
        &self,
        off: usize,
        len: usize,
        cache: &'c MbufCache,
        m: &mut Mbuf<'c>,
    ) -> bool {
        let Some(src) = self.sub(off, len) else {
            return false;
        };
        // The common case: the last segment has room for all of it.
        if let Some(dst) = m.append(len) {
            return src.copy_out(0, dst);
        }
        let mut done = 0;
        while done < len {
            if m.tailroom() == 0 {
                match cache.alloc() {
                    Some(seg) => {
                        if m.chain(seg).is_err() {
                            return false;
                        }
                    }
                    None => return false,
                }
            }
            let n = m.tailroom().min(len - done);
            let Some(dst) = m.append(n) else {
                return false;
            };
            if !src.copy_out(done, dst) {
                return false;
            }
            done += n;
        }
        true
    }
}

/// A power-of-two array of `T` inside a span (a vring's descriptor table, ring entries,
/// used elements), checked once when made ([`PeerSpan::array`]: inside the span, aligned):
/// an index is masked into range, so an access costs no check and cannot miss.
pub struct PeerArray<T: Plain> {
    ptr: *mut T,
    mask: usize,
}

impl<T: Plain> Clone for PeerArray<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Plain> Copy for PeerArray<T> {}

impl<T: Plain> std::fmt::Debug for PeerArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerArray({:p}x{})", self.ptr, self.mask + 1)
    }
}

// SAFETY: as for `PeerSpan`: an address range in a shared mapping, touched only by
// volatile or atomic accesses.
unsafe impl<T: Plain> Send for PeerArray<T> {}
// SAFETY: as for Send.
unsafe impl<T: Plain> Sync for PeerArray<T> {}

impl<T: Plain> PeerArray<T> {
    /// Entries (a power of two).
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.mask + 1
    }

    /// Never empty (for clippy's `len` without `is_empty`).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        false
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> *mut T {
        self.ptr.wrapping_add(i & self.mask)
    }

    /// One volatile copy of entry `i` (masked into range).
    #[inline(always)]
    pub fn read(&self, i: usize) -> T {
        // SAFETY: `i & mask < len`: inside the array, which `PeerSpan::array` checked lies
        // in its span and is aligned for `T`; `T` is `Plain`.
        unsafe { std::ptr::read_volatile(self.slot(i)) }
    }

    /// One volatile store of `v` to entry `i` (masked into range).
    #[inline(always)]
    pub fn write(&self, i: usize, v: T) {
        // SAFETY: as in `read`.
        unsafe { std::ptr::write_volatile(self.slot(i), v) };
    }

    /// Entry `i` (masked) as a span of its bytes: inside the checked array, so its
    /// accesses are checked against a length the compiler knows.
    #[inline(always)]
    pub fn span(&self, i: usize) -> PeerSpan {
        PeerSpan {
            ptr: self.slot(i).cast(),
            len: std::mem::size_of::<T>(),
        }
    }

    /// Our address of entry `i` (masked), for prefetch hints only.
    #[inline(always)]
    pub fn hint(&self, i: usize) -> *const u8 {
        self.slot(i).cast_const().cast()
    }
}

impl PeerArray<u16> {
    /// Atomic load of entry `i` (masked; ordering: the caller's labelled pair).
    #[inline(always)]
    pub fn load(&self, i: usize, order: Ordering) -> u16 {
        // SAFETY: as in `read`: inside the span, 2-aligned.
        unsafe { AtomicU16::from_ptr(self.slot(i)) }.load(order)
    }
}

impl PeerSpan {
    /// The `n` entries of `T` at `off`, if `n` is a power of two and they lie inside this
    /// span, aligned for `T`.
    #[inline]
    pub fn array<T: Plain>(&self, off: usize, n: usize) -> Option<PeerArray<T>> {
        let bytes = n.checked_mul(std::mem::size_of::<T>())?;
        let first = self.at::<T>(off)?;
        (n.is_power_of_two() && self.sub(off, bytes).is_some()).then_some(PeerArray {
            ptr: first,
            mask: n - 1,
        })
    }
}

/// A mapping of peer memory under the SIGBUS guard: the guard is unregistered before the
/// memory is unmapped. Hands out spans of itself.
pub struct PeerMapping {
    /// Declared before `map`: dropped (unregistered) first.
    guard: Guarded,
    map: memmap2::MmapRaw,
}

impl std::fmt::Debug for PeerMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerMapping({:p}+{})", self.map.as_ptr(), self.map.len())
    }
}

impl PeerMapping {
    /// `map`, guarded by `guard` (its registration in the SIGBUS guard's table).
    pub fn new(map: memmap2::MmapRaw, guard: Guarded) -> PeerMapping {
        PeerMapping { guard, map }
    }

    /// The mapping faulted and the guard replaced it with zeros. One atomic load.
    #[inline]
    pub fn hit(&self) -> bool {
        self.guard.hit()
    }

    /// The `len` bytes at `off`, if inside the mapping; valid while this mapping lives
    /// (holders keep it alive beside their spans, see the module docs).
    #[inline]
    pub fn span(&self, off: u64, len: u64) -> Option<PeerSpan> {
        let end = off.checked_add(len)?;
        if end > self.map.len() as u64 {
            return None;
        }
        // SAFETY: `[off, off + len)` is inside the mapping, which is shared and
        // read-write; the span's users keep this mapping alive (module docs).
        Some(unsafe {
            PeerSpan::new(
                self.map.as_mut_ptr().wrapping_add(off as usize),
                len as usize,
            )
        })
    }
}

/// Copies `dst.len()` bytes the peer may be writing at `src` into our memory, by volatile
/// loads of the aligned 8-byte words that hold them: every word is loaded exactly once,
/// no reference is ever made to the peer's bytes, and a 64-byte frame costs nine loads
/// (a volatile `[u8; N]` read is N byte loads). An unaligned span is shifted together
/// from two neighbouring words per 8 bytes stored. The first and last word may hold a
/// few bytes outside the span; they lie in the same 8-byte word, so in the same page,
/// and are not used. What lands in `dst` is what we check and use.
///
/// # Safety
/// `[src, src + dst.len())` must be mapped and readable for the whole copy.
#[inline]
unsafe fn copy_from_peer(dst: &mut [u8], src: *const u8) {
    let len = dst.len();
    if len == 0 {
        return;
    }
    let head = src as usize & 7;
    // The aligned word holding the first byte (same provenance as `src`).
    let base = src.wrapping_sub(head).cast::<u64>();
    let load = |k: usize| {
        // SAFETY: word `k` is 8-byte aligned and is loaded only when it holds at least
        // one byte of `[src, src + len)` (see each call), which the caller vouches for;
        // the rest of such a word is in the same page, so mapped too.
        u64::from_le(unsafe { std::ptr::read_volatile(base.wrapping_add(k)) })
    };
    let mut done = 0;
    if head == 0 {
        while len - done >= 8 {
            dst[done..done + 8].copy_from_slice(&load(done / 8).to_le_bytes());
            done += 8;
        }
        if done < len {
            let w = load(done / 8).to_le_bytes();
            dst[done..].copy_from_slice(&w[..len - done]);
        }
        return;
    }
    let shift = 8 * head as u32;
    // `prev` is word `done / 8`: it holds span bytes `[done, done + 8 - head)`.
    let mut prev = load(0);
    while len - done >= 8 {
        // Span bytes `[done + 8 - head, done + 16 - head)` are in the next word, which
        // starts inside the span (`head >= 1`).
        let next = load(done / 8 + 1);
        let v = (prev >> shift) | (next << (64 - shift));
        dst[done..done + 8].copy_from_slice(&v.to_le_bytes());
        prev = next;
        done += 8;
    }
    let rest = len - done;
    if rest > 0 {
        let mut v = prev >> shift;
        if rest > 8 - head {
            // The last bytes start the next word (inside the span).
            v |= load(done / 8 + 1) << (64 - shift);
        }
        dst[done..].copy_from_slice(&v.to_le_bytes()[..rest]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_peer_copies_every_length_at_every_alignment() {
        // Aligned backing, so the words around the span are inside it.
        let words: Vec<u64> = (0..32u64).map(|i| i * 0x0101_0101_0101_0101).collect();
        let base = words.as_ptr().cast::<u8>();
        let all: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        for off in 8..24 {
            for n in (0..=40).chain([63, 64, 65, 100, 200]) {
                let mut dst = vec![0u8; n];
                // SAFETY: `[off, off + n)` is inside the 256 bytes.
                unsafe { copy_from_peer(&mut dst, base.wrapping_add(off)) };
                assert_eq!(dst, all[off..off + n], "offset {off}, {n} bytes");
            }
        }
    }

    #[test]
    fn accessors_check_bounds_and_alignment() {
        let mut words = [0u64; 4];
        // SAFETY: our own 32 bytes, used only through the span in this test.
        let s = unsafe { PeerSpan::new(words.as_mut_ptr().cast(), 32) };
        s.store_u16(2, 7, Ordering::Relaxed);
        assert_eq!(s.load_u16(2, Ordering::Relaxed), Some(7));
        assert_eq!(s.load_u16(3, Ordering::Relaxed), None, "misaligned");
        assert_eq!(s.load_u16(31, Ordering::Relaxed), None, "past the end");
        assert_eq!(s.read::<u64>(24), Some(0));
        assert_eq!(s.read::<u64>(25), None);
        assert_eq!(s.read::<u64>(usize::MAX), None);
        s.write::<[u32; 2]>(8, [1, 2]);
        assert_eq!(s.read::<u32>(12), Some(2));
        assert!(s.copy_in(30, &[9, 9]));
        assert!(!s.copy_in(31, &[9, 9]));
        let mut b = [0u8; 2];
        assert!(s.copy_out(30, &mut b));
        assert_eq!(b, [9, 9]);
        assert!(!s.copy_out(usize::MAX, &mut b));
        assert!(s.zero(30, 2) && !s.zero(30, 3));
        assert_eq!(s.sub(8, 8).and_then(|t| t.read::<u32>(4)), Some(2));
        assert!(s.sub(8, 25).is_none());
        assert!(s.tail(40).is_empty());
        assert_eq!(PeerSpan::EMPTY.read::<u16>(0), None);
        assert!(PeerSpan::EMPTY.copy_out(0, &mut []));
        let a = s.array::<u32>(16, 4).unwrap();
        a.write(5, 3);
        assert_eq!((a.read(1), a.len()), (3, 4), "indices are masked");
        assert_eq!(s.read::<u32>(20), Some(3));
        assert!(s.array::<u32>(16, 5).is_none(), "not a power of two");
        assert!(s.array::<u32>(20, 4).is_none(), "past the end");
        assert!(s.array::<u32>(2, 2).is_none(), "misaligned");
        assert!(s.array::<u64>(0, usize::MAX / 4 + 1).is_none(), "overflow");
        assert_eq!(s.array::<u16>(0, 2).unwrap().load(1, Ordering::Relaxed), 7);
        let slots = s.array::<[u8; 8]>(8, 2).unwrap();
        assert_eq!(slots.span(3).read::<u32>(4), Some(3), "entry 1, masked");
        assert_eq!(slots.span(1).len(), 8);
    }

    #[test]
    fn append_from_peer_chains_what_one_segment_cannot_hold() {
        use shm::{Memseg, Region};
        use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "pc", 1).unwrap();
        seg.mark_ready();
        let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(63, 0, 1)).unwrap();
        let cache = pool.uncached(OwnerTag::PRIMARY).unwrap();
        let src: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut m = cache.alloc().unwrap();
        // SAFETY: `src` holds 5000 bytes we do not read while the span is used (the span
        // only writes through the accessors, and this test only reads through it).
        let span = unsafe { PeerSpan::new(src.as_ptr().cast_mut(), src.len()) };
        assert!(span.append_to(0, src.len(), &cache, &mut m));
        assert!(
            !span.append_to(1, src.len(), &cache, &mut m),
            "past the end"
        );
        assert!(m.nb_segs() > 1);
        assert_eq!(m.to_vec(), src);
    }
}
