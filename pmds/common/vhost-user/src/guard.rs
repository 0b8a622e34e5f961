//! A SIGBUS guard for memory a peer can take away under us.
//!
//! A mapping of a file faults with SIGBUS when the page touched is past the file's end
//! (the peer truncated it after we mapped it) or cannot be allocated (a hugetlbfs file
//! whose pool ran dry after the peer punched a hole). Sealing (`F_SEAL_SHRINK`, checked
//! by the vhost backend's memory table) rules out the first for memfds; hugetlbfs files cannot be sealed,
//! and neither seal rules out the second. So every mapping of peer memory is registered
//! here, and a SIGBUS whose address lies in a registered mapping is answered by putting
//! anonymous zero pages over that whole mapping (`mmap(MAP_FIXED)`) and raising the
//! mapping's `hit` flag: the faulting access is restarted and now reads zeros or writes
//! into memory nobody shares, exactly as if the peer had written zeros, which the data
//! path is built to survive. The owner sees the flag and drops the peer with a counted
//! error. A SIGBUS anywhere else goes to the handler that was there before (Rust's
//! runtime one, or the default action): a real bug still crashes.
//!
//! The handler is async-signal-safe: it reads a fixed table of atomics, makes one
//! `mmap` syscall and stores two atomics; it never allocates or locks. A mapping stays
//! registered for as long as it is mapped (unregistered before `munmap`), and a fault in
//! it can only come from a thread that holds it, so the faulting mapping's own entry
//! cannot change under the handler; other entries may (another thread registering or
//! dropping a mapping meanwhile), so each is read under a per-slot seqlock and skipped
//! while it changes. Only kernel-raised faults (`si_code > 0`) are answered.
//!
//! The table is shared by every port of the process, and a peer decides how many
//! mappings it asks for. So nothing registers outside a [`Quota`]: each owner (a
//! vhost-user port, for whichever frontend is connected to it; a virtio-user port's
//! memory) reserves its share of the table up front, the reservations never add up to
//! more than [`SLOTS`], and a registration beyond its owner's share is refused. A
//! frontend asking for more than its port's share loses its request (and its
//! connection); it can never make another port's registration fail.

use crate::VhostError;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Most mappings guarded at once: the sum of every [`Quota`] (a vhost-user port reserves
/// `backend::GUARD_SHARE` = 16, a virtio-user port 1: 32 vhost-user ports fit).
pub const SLOTS: usize = 512;

struct Slot {
    /// Seqlock word: odd while `start`/`len` are being changed (register, drop), so the
    /// handler never pairs one mapping's start with another's length.
    seq: AtomicU64,
    used: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    hit: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    seq: AtomicU64::new(0),
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    hit: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static HITS: AtomicU64 = AtomicU64::new(0);
/// Slots promised to live quotas (at most [`SLOTS`]).
static RESERVED: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS: OnceLock<Result<Previous, VhostError>> = OnceLock::new();

impl Slot {
    /// Changes the slot's fields under the seqlock (writers are serialised by `used`:
    /// only the slot's owner writes it).
    fn write(&self, f: impl FnOnce()) {
        let v = self.seq.load(Ordering::Relaxed);
        self.seq.store(v.wrapping_add(1), Ordering::Relaxed);
        // S1: Release fence, so a reader that sees a field written below also sees the odd
        // sequence number -- pairs with S1 in `read`.
        std::sync::atomic::fence(Ordering::Release);
        f();
        // S2: Release, publishing the fields with the even number -- pairs with S2 in `read`.
        self.seq.store(v.wrapping_add(2), Ordering::Release);
    }

    /// The slot's `(start, len)` as one consistent pair, or `None` while it changes.
    fn read(&self) -> Option<(usize, usize)> {
        // S2: Acquire, pairs with S2 in `write`.
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            return None;
        }
        let start = self.start.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        // S1: Acquire fence, so the re-read below is not older than the fields -- pairs
        // with S1 in `write`.
        std::sync::atomic::fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before).then_some((start, len))
    }
}

/// The SIGBUS action that was installed before ours.
struct Previous(libc::sigaction);

// SAFETY: a plain C struct (handler address, mask, flags) that is written once before
// the handler can run and only read afterwards.
unsafe impl Sync for Previous {}
// SAFETY: as for Sync.
unsafe impl Send for Previous {}

/// SIGBUS faults answered by the guard since the process started.
pub fn hits() -> u64 {
    // Relaxed: a statistic.
    HITS.load(Ordering::Relaxed)
}

/// Installs the handler (once per process).
///
/// # Errors
/// One line when `sigaction` fails.
pub fn install() -> Result<(), VhostError> {
    PREVIOUS
        .get_or_init(|| {
            // SAFETY: sigaction is plain data; all-zero is a valid empty value for it.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: as above.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction values on our stack.
            let rc = unsafe { libc::sigaction(libc::SIGBUS, &new, &mut old) };
            if rc != 0 {
                return Err(crate::guard_err!(
                    "cannot install the SIGBUS guard: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Previous(old))
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// A share of the guard's table: at most `limit` mappings registered through it at once.
/// The shares of all live quotas add up to at most [`SLOTS`], so a registration within
/// its quota always finds a slot, whatever other owners do. The reservation lasts until
/// the quota and every mapping registered through it are gone. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Quota(Arc<QuotaShare>);

#[derive(Debug)]
struct QuotaShare {
    limit: usize,
    used: AtomicUsize,
}

impl Drop for QuotaShare {
    fn drop(&mut self) {
        // Relaxed: a counter of promises; the slots themselves are handed over through
        // each slot's `used` flag.
        RESERVED.fetch_sub(self.limit, Ordering::Relaxed);
    }
}

impl Quota {
    /// Reserves `limit` slots of the table.
    ///
    /// # Errors
    /// One line when the table has fewer than `limit` slots left unreserved.
    pub fn reserve(limit: usize) -> Result<Quota, VhostError> {
        RESERVED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                r.checked_add(limit).filter(|&t| t <= SLOTS)
            })
            .map_err(|r| {
                crate::guard_err!(
                    "the SIGBUS guard has {r} of its {SLOTS} peer memory mappings promised to other ports; {limit} more do not fit (use fewer vhost-user ports)"
                )
            })?;
        Ok(Quota(Arc::new(QuotaShare {
            limit,
            used: AtomicUsize::new(0),
        })))
    }

    /// Most mappings registered through this quota at once.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Mappings registered through this quota now.
    pub fn in_use(&self) -> usize {
        // Relaxed: a count; `register` decides with its own read-modify-write.
        self.0.used.load(Ordering::Relaxed)
    }

    /// Registers `[start, start + len)`, a whole mapping of peer memory that this process
    /// may replace with anonymous memory when it faults. `len` must cover the mapping to
    /// its real end (rounded up to its page size: a hugetlbfs mapping is replaced whole).
    ///
    /// # Errors
    /// When the handler cannot be installed or the quota is used up.
    pub fn register(&self, start: usize, len: usize) -> Result<Guarded, VhostError> {
        install()?;
        let share = &self.0;
        // Relaxed: the count only bounds how many slots this owner may hold; each slot
        // changes hands through its own `used` flag (Acquire/Release below).
        share
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < share.limit).then_some(u + 1)
            })
            .map_err(|u| {
                crate::guard_err!(
                    "{u} peer memory mappings already guarded for this port, its share of the SIGBUS guard"
                )
            })?;
        // Every holder of a slot counted one in its quota first, and the quotas add up to
        // at most SLOTS, so a slot is free; a pass can miss one freed behind it, hence a
        // few passes.
        for _pass in 0..4 {
            for (i, s) in TABLE.iter().enumerate() {
                // Acquire: pairs with the Release in `drop` (the slot's old values are
                // gone).
                if s.used
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    s.write(|| {
                        s.hit.store(false, Ordering::Relaxed);
                        s.len.store(len, Ordering::Relaxed);
                        s.start.store(start, Ordering::Relaxed);
                    });
                    return Ok(Guarded {
                        slot: i,
                        quota: self.0.clone(),
                    });
                }
            }
        }
        share.used.fetch_sub(1, Ordering::Relaxed);
        Err(crate::guard_err!(
            "more than {SLOTS} peer memory regions are mapped in this process"
        ))
    }
}

/// A registered mapping; unregistered on drop (before its memory is unmapped).
#[derive(Debug)]
pub struct Guarded {
    slot: usize,
    /// The quota it counts in (kept reserved while this lives).
    quota: Arc<QuotaShare>,
}

impl Guarded {
    /// The mapping faulted and was replaced: the peer took its memory away.
    #[inline]
    pub fn hit(&self) -> bool {
        // B2: Acquire, pairs with B2 in `on_sigbus`.
        TABLE[self.slot].hit.load(Ordering::Acquire)
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Guarded {
    /// What the handler does after replacing the mapping, for tests of the owners' side
    /// (a sealed memfd cannot be made to fault from outside; `test-hooks` gives it to
    /// virtio-user's tests).
    pub fn raise_for_test(&self) {
        // B2: Release, as in `on_sigbus`.
        TABLE[self.slot].hit.store(true, Ordering::Release);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        s.write(|| s.start.store(0, Ordering::Relaxed));
        // Release: the slot is free only after it stopped naming the mapping.
        s.used.store(false, Ordering::Release);
        // Relaxed: after the slot is free, so the table never holds more than the quotas.
        self.quota.used.fetch_sub(1, Ordering::Relaxed);
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let info_ref = unsafe { &*info };
    // SAFETY: for SIGBUS the union member is the fault's, whose `si_addr` is the address.
    let addr = unsafe { info_ref.si_addr() } as usize;
    // Only a fault the kernel raised (si_code > 0: BUS_ADRERR, BUS_OBJERR, ...); a SIGBUS
    // another process sent (kill, sigqueue: si_code <= 0) with an address of its choosing
    // must not make us replace a mapping.
    if info_ref.si_code <= 0 {
        return chain(sig, info, ctx);
    }
    for s in &TABLE {
        let Some((start, len)) = s.read() else {
            continue;
        };
        if start == 0 || addr < start || addr - start >= len {
            continue;
        }
        // SAFETY: `[start, start + len)` is a whole mapping this process made of peer
        // memory and still holds (see the module doc); replacing it with private
        // anonymous memory of the same size keeps every pointer into it valid.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            break;
        }
        // B2: Release, after the mapping is replaced -- pairs with B2 in `hit`.
        s.hit.store(true, Ordering::Release);
        // Relaxed: a statistic.
        HITS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    chain(sig, info, ctx);
}

/// Not ours: what the previous action would have done.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = match PREVIOUS.get() {
        Some(Ok(p)) => p.0,
        _ => return default_action(sig),
    };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return default_action(sig);
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so this is its
        // three-argument entry point; we pass the kernel's own arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous handler takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// Restores the default action: returning re-runs the faulting access, which then kills
/// the process as a SIGBUS without a guard would have.
fn default_action(sig: libc::c_int) {
    // SAFETY: sigaction is plain data; zeroed is SIG_DFL with no flags.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigaction value; sigaction is async-signal-safe.
    unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_flagged() {
        let f = tempfile();
        f.set_len(3 * 4096).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(3 * 4096)
            .map_raw(&f)
            .unwrap();
        let p = map.as_mut_ptr();
        // SAFETY: inside the 3-page mapping, the file is that long.
        unsafe { p.wrapping_add(8192).write_volatile(7) };
        let g = Quota::reserve(1)
            .unwrap()
            .register(p as usize, 3 * 4096)
            .unwrap();
        assert!(!g.hit());
        let before = hits();
        f.set_len(0).unwrap();
        // SAFETY: inside the mapping; the page is past the file's end now, so this faults
        // and the guard replaces the mapping.
        let v = unsafe { p.wrapping_add(8192).read_volatile() };
        assert_eq!(v, 0);
        assert!(g.hit());
        assert!(hits() > before);
        // SAFETY: as above: the replacement is writable.
        unsafe { p.write_volatile(1) };
        drop(g);
        drop(map);
        let _ = f.as_raw_fd();
    }

    #[test]
    fn a_quota_refuses_beyond_its_share_and_reservations_never_exceed_the_table() {
        let q = Quota::reserve(2).unwrap();
        let (a, b) = (
            q.register(0x1000, 4096).unwrap(),
            q.register(0x3000, 4096).unwrap(),
        );
        assert_eq!(q.in_use(), 2);
        assert!(q.register(0x5000, 4096).is_err(), "beyond its share");
        drop(a);
        let c = q.register(0x5000, 4096).unwrap();
        assert!(
            Quota::reserve(SLOTS).is_err(),
            "the table is promised to others"
        );
        // The mappings keep the reservation (and count) after the quota handle goes.
        let again = q.clone();
        drop(q);
        assert_eq!(again.in_use(), 2);
        drop((b, c));
        assert_eq!(again.in_use(), 0);
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "shmdp-guard-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(path).unwrap();
        f
    }
}
