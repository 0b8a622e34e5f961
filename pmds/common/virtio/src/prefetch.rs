//! Cache hints for virtqueue areas and buffers: both sides prefetch what the next burst
//! touches (descriptors, ring slots, packet bytes) so the lines another core holds move
//! while earlier work is still in flight.

/// Asks the CPU to bring the line at `p` into its cache (no fault, no effect elsewhere).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to bring the line at `p` into its cache *for writing* (PREFETCHW where the
/// CPU has it, else a read prefetch). For lines another core holds (vring areas, buffers
/// the peer just used): the ownership transfers of a burst then overlap, instead of each
/// store waiting in turn at the head of the store buffer.
#[inline(always)]
pub fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_prefetchw() {
            // SAFETY: PREFETCHW is a hint: it never faults and changes no register, flag
            // or memory contents; the CPU supports it (checked above).
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
            };
            return;
        }
    }
    prefetch(p);
}

/// Whether the CPU has PREFETCHW (CPUID 8000_0001h, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        ext >= 0x8000_0001 && (std::arch::x86_64::__cpuid(0x8000_0001).ecx >> 8) & 1 == 1
    })
}
