//! Cache prefetch hints for the burst paths: a burst touches one line per packet that
//! another core wrote last (an mbuf header, a ring slot, a vring descriptor), and issuing
//! every transfer of the burst first lets them overlap instead of each load or store
//! waiting for its own in turn.
//!
//! Where it sits: used by the mempool's bulk allocation and burst adoption, and by the
//! drivers' rx/tx bursts. Hints only: they never fault and change nothing visible (under
//! Miri, which runs no inline assembly or CPUID, they are nothing at all).

/// Asks the CPU to bring the line at `p` into its cache for reading (PREFETCHT0).
#[inline(always)]
pub fn read(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    let _ = p;
}

/// Asks the CPU to bring the line at `p` into its cache *for writing* (PREFETCHW where
/// the CPU has it, else a read prefetch): for a line another core holds modified, the
/// ownership transfer starts now, and the stores (or the compare-and-swap) that follow
/// find it local instead of stalling the store buffer, or a locked instruction, on it.
#[inline(always)]
pub fn write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if has_prefetchw() {
        // SAFETY: PREFETCHW is a hint: it never faults and changes no register, flag or
        // memory contents; the CPU has it (checked just above).
        unsafe {
            std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
        };
        return;
    }
    read(p);
}

/// Whether the CPU has PREFETCHW (CPUID 8000_0001h, ECX bit 8), asked once.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0 = not asked yet, 1 = no, 2 = yes. Relaxed both: any thread may ask CPUID again;
    // every answer is the same.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            let ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
            let yes =
                ext >= 0x8000_0001 && (std::arch::x86_64::__cpuid(0x8000_0001).ecx >> 8) & 1 == 1;
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        v => v == 2,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_accept_any_address() {
        let x = [0u8; 64];
        super::read(x.as_ptr());
        super::write(x.as_ptr());
        // Never dereferenced: a hint on an unmapped address does not fault.
        super::read(std::ptr::null());
        super::write(std::ptr::without_provenance(0xdead_0000));
    }
}
