//! The copy routines across the guest boundary: volatile vector loads or stores on the
//! guest side (or one `rep movsb`, opaque to the compiler, for long copies), plain
//! accesses on the host side; each guest byte is read or written once, and no slice or
//! reference into guest memory is ever made.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

/// Copies `dst.len()` bytes of guest memory starting at `src` into `dst` with volatile
/// loads: bytes up to a vector boundary of `src`, then aligned vectors four at a time,
/// then vectors, then bytes. The guest may write the source meanwhile, which only changes
/// the bytes copied; each source byte is read once. Vectors are 32 bytes (AVX2, detected
/// at run time) for copies of 128 bytes or more, 16 bytes (SSE2) otherwise; 8-byte words
/// off x86-64 (and under Miri). From 1024 bytes on x86-64 the copy is one `rep movsb`.
///
/// # Safety
/// `src .. src + dst.len()` lies inside a mapping that stays mapped during the call.
#[inline]
pub unsafe fn copy_from_guest(dst: &mut [u8], src: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if dst.len() >= REP_MOVSB_MIN {
            // SAFETY: the caller's contract.
            return unsafe { rep_movsb(dst.as_mut_ptr(), src, dst.len()) };
        }
        if dst.len() >= 128 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above); the span is the caller's contract.
            return unsafe { copy_from_guest_avx2(dst, src) };
        }
        // SAFETY: the caller's contract.
        unsafe { volatile_in::<std::arch::x86_64::__m128i>(dst, src) }
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    // SAFETY: the caller's contract.
    unsafe {
        volatile_in::<u64>(dst, src)
    }
}

/// From this length on, copies across the guest boundary are one `rep movsb`: the CPU's
/// string copy (fast on CPUs with ERMS/FSRM) moves the bytes once each, and as inline
/// assembly it is opaque to the compiler (no Rust access, so no reference and no
/// assumption about the other side's writes), like a volatile copy.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const REP_MOVSB_MIN: usize = 1024;

/// Copies `len` bytes from `src` to `dst` with `rep movsb`.
///
/// # Safety
/// Both spans lie inside mappings that stay mapped during the call and do not overlap.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn rep_movsb(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract: `rep movsb` reads `src .. src + len` and writes
    // `dst .. dst + len` (direction flag clear, as the ABI guarantees), touches no stack
    // and no other memory.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags)
        );
    }
}

/// [`copy_from_guest`] with 32-byte vectors.
///
/// # Safety
/// As [`copy_from_guest`], and the CPU has AVX2.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx2")]
unsafe fn copy_from_guest_avx2(dst: &mut [u8], src: *const u8) {
    // SAFETY: the caller's contract.
    unsafe { volatile_in::<std::arch::x86_64::__m256i>(dst, src) }
}

/// Copies `src` into guest memory at `dst` with volatile stores (as [`copy_from_guest`],
/// the other way); each destination byte is written once.
///
/// # Safety
/// `dst .. dst + src.len()` lies inside a writable mapping that stays mapped during the
/// call.
#[inline]
pub unsafe fn copy_to_guest(dst: *mut u8, src: &[u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if src.len() >= REP_MOVSB_MIN {
            // SAFETY: the caller's contract.
            return unsafe { rep_movsb(dst, src.as_ptr(), src.len()) };
        }
        if src.len() >= 128 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above); the span is the caller's contract.
            return unsafe { copy_to_guest_avx2(dst, src) };
        }
        // SAFETY: the caller's contract.
        unsafe { volatile_out::<std::arch::x86_64::__m128i>(dst, src) }
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    // SAFETY: the caller's contract.
    unsafe {
        volatile_out::<u64>(dst, src)
    }
}

/// [`copy_to_guest`] with 32-byte vectors.
///
/// # Safety
/// As [`copy_to_guest`], and the CPU has AVX2.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx2")]
unsafe fn copy_to_guest_avx2(dst: *mut u8, src: &[u8]) {
    // SAFETY: the caller's contract.
    unsafe { volatile_out::<std::arch::x86_64::__m256i>(dst, src) }
}

/// The body of the volatile load copy, in units of `C` (a plain-data vector or word).
///
/// # Safety
/// As [`copy_from_guest`].
#[inline(always)]
unsafe fn volatile_in<C: Copy>(dst: &mut [u8], src: *const u8) {
    let unit = std::mem::size_of::<C>();
    let len = dst.len();
    let d = dst.as_mut_ptr();
    let head = src.align_offset(unit).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `i < len`: inside the source span (caller's contract).
        let b = unsafe { src.wrapping_add(i).read_volatile() };
        // SAFETY: `i < len = dst.len()`.
        unsafe { d.wrapping_add(i).write(b) };
        i += 1;
    }
    while i + 4 * unit <= len {
        let s = src.wrapping_add(i).cast::<[C; 4]>();
        // SAFETY: `src + i` is aligned for `C` (past `head`) and `i + 4 unit <= len`:
        // inside the source span; `C` is plain data, any bits are a value.
        let v = unsafe { s.read_volatile() };
        // SAFETY: `i + 4 unit <= dst.len()`; unaligned store into our own slice.
        unsafe { d.wrapping_add(i).cast::<[C; 4]>().write_unaligned(v) };
        i += 4 * unit;
    }
    while i + unit <= len {
        // SAFETY: aligned as above, `i + unit <= len`: inside the source span.
        let v = unsafe { src.wrapping_add(i).cast::<C>().read_volatile() };
        // SAFETY: `i + unit <= dst.len()`.
        unsafe { d.wrapping_add(i).cast::<C>().write_unaligned(v) };
        i += unit;
    }
    while i < len {
        // SAFETY: `i < len`: inside the source span.
        let b = unsafe { src.wrapping_add(i).read_volatile() };
        // SAFETY: `i < dst.len()`.
        unsafe { d.wrapping_add(i).write(b) };
        i += 1;
    }
}

/// The body of the volatile store copy, in units of `C`.
///
/// # Safety
/// As [`copy_to_guest`].
#[inline(always)]
unsafe fn volatile_out<C: Copy>(dst: *mut u8, src: &[u8]) {
    let unit = std::mem::size_of::<C>();
    let len = src.len();
    let s = src.as_ptr();
    let head = dst.align_offset(unit).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `i < src.len()`.
        let b = unsafe { s.wrapping_add(i).read() };
        // SAFETY: `i < len`: inside the destination span (caller's contract).
        unsafe { dst.wrapping_add(i).write_volatile(b) };
        i += 1;
    }
    while i + 4 * unit <= len {
        // SAFETY: `i + 4 unit <= src.len()`; unaligned load from our own slice.
        let v = unsafe { s.wrapping_add(i).cast::<[C; 4]>().read_unaligned() };
        // SAFETY: `dst + i` is aligned for `C` (past `head`), `i + 4 unit <= len`: inside
        // the destination span.
        unsafe { dst.wrapping_add(i).cast::<[C; 4]>().write_volatile(v) };
        i += 4 * unit;
    }
    while i + unit <= len {
        // SAFETY: `i + unit <= src.len()`.
        let v = unsafe { s.wrapping_add(i).cast::<C>().read_unaligned() };
        // SAFETY: aligned as above, `i + unit <= len`: inside the destination span.
        unsafe { dst.wrapping_add(i).cast::<C>().write_volatile(v) };
        i += unit;
    }
    while i < len {
        // SAFETY: `i < src.len()`.
        let b = unsafe { s.wrapping_add(i).read() };
        // SAFETY: `i < len`: inside the destination span.
        unsafe { dst.wrapping_add(i).write_volatile(b) };
        i += 1;
    }
}
