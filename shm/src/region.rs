//! `Region`: one mapped span of shared memory and the crate's unsafe choke point.
//!
//! Everything above this module addresses shared memory by **offset** from the region base;
//! only here do offsets become pointers, and only after a bounds and alignment check. A
//! region is backed either by a mapped file (a memseg: hugetlbfs or /dev/shm) or by a heap
//! allocation (tests, loom and Miri), so the same code runs on both.
//!
//! Shared memory is written by other processes (secondaries, guests) that we do not trust,
//! so plain data is read as a *copy* (`read_copy`) and validated after the copy; fields that
//! change while the memory is live are atomics (`atomic_u32`, `atomic_u64`).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Why an offset could not be turned into an address inside a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("span {off:#x}+{len:#x} (align {align}) is outside the region of {region_len:#x} bytes or misaligned")]
pub struct OutOfBounds {
    /// Offset asked for.
    pub off: u64,
    /// Length in bytes asked for.
    pub len: u64,
    /// Required alignment.
    pub align: u64,
    /// Size of the region.
    pub region_len: u64,
}

enum Backing {
    File(#[allow(dead_code)] memmap2::MmapRaw),
    Heap(Layout),
}

struct Inner {
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: `base` was returned by `alloc_zeroed(layout)` in `Region::heap` and is
            // freed exactly once, here, when the last clone of the region goes away.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
        // A file mapping is unmapped by MmapRaw's own Drop.
    }
}

// SAFETY: `Inner` owns a mapping (or heap block) that is never moved or freed while any
// clone exists; all access to its bytes goes through volatile copies or atomics, which is
// how cross-process shared memory is meant to be used from any thread.
unsafe impl Send for Inner {}
// SAFETY: as for Send: the region hands out only atomics and volatile copies.
unsafe impl Sync for Inner {}

/// A mapped span of shared memory. Cloning is cheap (reference counted); the mapping lives
/// until the last clone is dropped, so pointers derived from a region stay valid for as long
/// as the holder keeps a clone.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.inner.base)
            .field("len", &self.inner.len)
            .finish()
    }
}

impl Region {
    /// Wraps a file mapping. The mapping's length is the region's length.
    pub fn from_mmap(map: memmap2::MmapRaw) -> Region {
        let len = map.len();
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Region {
            inner: Arc::new(Inner {
                base,
                len,
                backing: Backing::File(map),
            }),
        }
    }

    /// A zero-filled, page-aligned region on the heap, for tests, loom and Miri.
    ///
    /// # Panics
    /// If `len` is zero or the allocation fails.
    pub fn heap(len: usize) -> Region {
        assert!(len > 0, "a region cannot be empty");
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: `layout` has a non-zero size (asserted above).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region {
            inner: Arc::new(Inner {
                base,
                len,
                backing: Backing::Heap(layout),
            }),
        }
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> u64 {
        self.inner.len as u64
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Address of the region's first byte in this process (for diagnostics only: never
    /// store it in shared memory).
    pub fn base_va(&self) -> usize {
        self.inner.base.as_ptr() as usize
    }

    /// Checks that `[off, off + len)` lies inside the region and that `off` is a multiple of
    /// `align` (relative to the base, which is page aligned), and returns its address.
    ///
    /// This is the only way to obtain a pointer into a region. The pointer is valid for
    /// reads and writes of `len` bytes for as long as this region (or a clone) is alive.
    pub fn span(&self, off: u64, len: u64, align: u64) -> Result<NonNull<u8>, OutOfBounds> {
        let err = OutOfBounds {
            off,
            len,
            align,
            region_len: self.len(),
        };
        let end = off.checked_add(len).ok_or(err)?;
        if end > self.len() || !align.is_power_of_two() || !off.is_multiple_of(align) {
            return Err(err);
        }
        // SAFETY: `off <= end <= len`, so `base + off` stays within (or one past) the
        // allocation that `base` points into.
        let ptr = unsafe { self.inner.base.as_ptr().add(off as usize) };
        Ok(NonNull::new(ptr).expect("inside a non-null allocation"))
    }

    /// Typed form of [`Region::span`]: room for `count` values of `T` at `off`.
    pub fn span_of<T>(&self, off: u64, count: u64) -> Result<NonNull<T>, OutOfBounds> {
        let size = std::mem::size_of::<T>() as u64;
        let len = size.checked_mul(count).ok_or(OutOfBounds {
            off,
            len: u64::MAX,
            align: std::mem::align_of::<T>() as u64,
            region_len: self.len(),
        })?;
        Ok(self
            .span(off, len, std::mem::align_of::<T>() as u64)?
            .cast::<T>())
    }

    /// Copies a `T` out of shared memory. Any bit pattern is a valid `T` (`FromBytes`), so
    /// whatever a peer wrote there, the copy is a value to validate, never undefined
    /// behaviour.
    pub fn read_copy<T: FromBytes>(&self, off: u64) -> Result<T, OutOfBounds> {
        let ptr = self.span_of::<T>(off, 1)?;
        // SAFETY: `span_of` checked bounds and alignment for one `T`; `T: FromBytes` makes
        // every bit pattern valid; the read is volatile because another process may write
        // the same bytes at any time.
        Ok(unsafe { std::ptr::read_volatile(ptr.as_ptr()) })
    }

    /// Writes a `T` into shared memory.
    pub fn write<T: IntoBytes + Immutable + Copy>(
        &self,
        off: u64,
        value: &T,
    ) -> Result<(), OutOfBounds> {
        let ptr = self.span_of::<T>(off, 1)?;
        // SAFETY: bounds and alignment checked by `span_of`; `T: IntoBytes` has no padding
        // to leak, and the memory is ours to write (shared, so volatile).
        unsafe { std::ptr::write_volatile(ptr.as_ptr(), *value) };
        Ok(())
    }

    /// Copies `out.len()` bytes starting at `off` into `out`.
    pub fn read_bytes(&self, off: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let ptr = self.span(off, out.len() as u64, 1)?;
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `span` checked `[off, off + out.len())` is inside the region, so
            // `ptr + i` is in bounds.
            let p = unsafe { ptr.as_ptr().add(i) };
            // SAFETY: `p` is in bounds (above); u8 has no alignment or validity needs.
            *b = unsafe { std::ptr::read_volatile(p) };
        }
        Ok(())
    }

    /// Fills `len` bytes at `off` with `byte`.
    pub fn fill(&self, off: u64, len: u64, byte: u8) -> Result<(), OutOfBounds> {
        let ptr = self.span(off, len, 1)?;
        // SAFETY: `span` checked `[off, off + len)` is inside the region.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), byte, len as usize) };
        Ok(())
    }

    /// The 32-bit atomic at `off` (4-byte aligned). Any bit pattern is a valid atomic.
    pub fn atomic_u32(&self, off: u64) -> Result<&AtomicU32, OutOfBounds> {
        let ptr = self.span_of::<AtomicU32>(off, 1)?;
        // SAFETY: in bounds and aligned (checked by `span_of`); the memory outlives `&self`;
        // AtomicU32 has the size and alignment of u32 and accepts any bit pattern.
        Ok(unsafe { ptr.as_ref() })
    }

    /// The 64-bit atomic at `off` (8-byte aligned).
    pub fn atomic_u64(&self, off: u64) -> Result<&AtomicU64, OutOfBounds> {
        let ptr = self.span_of::<AtomicU64>(off, 1)?;
        // SAFETY: as for `atomic_u32`, with 8-byte size and alignment.
        Ok(unsafe { ptr.as_ref() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn span_rejects_out_of_bounds_and_misaligned() {
        let r = Region::heap(4096);
        assert!(r.span(0, 4096, 64).is_ok());
        assert!(r.span(4095, 1, 1).is_ok());
        assert!(r.span(4096, 1, 1).is_err());
        assert!(r.span(1, 4096, 1).is_err());
        assert!(r.span(u64::MAX, 2, 1).is_err());
        assert!(r.span(4, 8, 8).is_err());
        assert!(r.span(0, 8, 0).is_err());
        assert!(r.span_of::<u64>(4000, u64::MAX).is_err());
    }

    #[test]
    fn read_write_and_atomics_round_trip() {
        let r = Region::heap(8192);
        r.write(64, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(r.read_copy::<u64>(64).unwrap(), 0x1122_3344_5566_7788);
        r.atomic_u32(128).unwrap().store(7, Ordering::Relaxed);
        assert_eq!(r.read_copy::<u32>(128).unwrap(), 7);
        r.fill(256, 16, 0xab).unwrap();
        let mut buf = [0u8; 16];
        r.read_bytes(256, &mut buf).unwrap();
        assert_eq!(buf, [0xab; 16]);
        assert!(r.atomic_u64(8188).is_err());
    }
}
