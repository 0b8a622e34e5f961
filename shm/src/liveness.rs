//! "A slot held by a live process": the one rule every claim in shared memory uses to
//! decide whether its holder is gone, and [`Holder`], the pinned claim word that the
//! users store in their layouts.
//!
//! Where it sits: at the bottom, beside [`crate::Region`]. Its users are shm-ring (the
//! single-role claims in each side's head line, and the owners of the reservation
//! records, whose 64-bit owner word keeps its own encoding and asks only
//! [`holder_gone`]), shm-mempool (cache slots) and pmds-ethdev (queue claims).
//!
//! **Identity.** A process is its pid and its start time ([`Process`]): `/proc/PID/stat`
//! field 22, clock ticks since boot, which differs between two processes that had the
//! same pid one after the other. This process's own identity is read once and cached
//! ([`Process::current`]); nothing here runs on a burst: liveness is asked only on claim,
//! release and recovery paths.
//!
//! **The rule** ([`holder_gone`]): a holder `(pid, start_time)` is gone when
//! - `pid` is 0 or no process can have it (above `i32::MAX`): nobody holds the slot;
//! - no process has that pid, or it is a zombie (exited, not yet reaped: its memory is
//!   gone and it writes nothing more);
//! - a process has that pid but started at another time (the pid was reused), including
//!   this process when the recorded start is not its own.
//!
//! A holder recorded **without a start time** (0: an older layout, a claim caught between
//! its two stores, or a platform where `/proc` cannot be read) is judged by its pid alone:
//! alive while that pid runs. That errs towards "still held", so a slot is never taken
//! from a live process; the cost is a slot kept until its pid disappears.
//!
//! **The claim protocol** ([`Holder`]): `pid` is the claim (a CAS takes it), `start_time`
//! says which process of that pid holds it, `tag` is the user's word about the holder.
//! The start time is written after the pid CAS, so it is 0 while a claim is being made,
//! and cleared before a release; a take-over clears the gone holder's start time
//! (a CAS, so only from the value the taker judged) before its pid CAS. Hence whoever
//! sees a pid with a start time sees that pid's own start time or 0, never the previous
//! holder's, and a claim in the middle of being made reads as held (pid-only rule), never
//! as gone. Left open: a take-over that loads `(pid P, start S)`, judges P gone, and is
//! delayed until P has been released and claimed again by a new process that happens to
//! get the same pid P: its CASes then succeed against the new holder. That takes a pid
//! reused within the taker's few instructions.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// One process: its pid and its start time (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22), 0 when unknown.
    pub start_time: u64,
}

impl Process {
    /// This process, with its start time read once per process and cached (a forked
    /// child, whose pid differs from the cached one, reads its own).
    pub fn current() -> Process {
        static MINE: OnceLock<Process> = OnceLock::new();
        let pid = std::process::id();
        let me = *MINE.get_or_init(|| Process::read(pid));
        if me.pid == pid {
            me
        } else {
            Process::read(pid)
        }
    }

    /// The process that has `pid` now, or None when there is none (or `/proc` cannot say:
    /// then its start time is 0 if the pid exists).
    pub fn of(pid: u32) -> Option<Process> {
        if !pid_alive(pid) {
            return None;
        }
        Some(Process::read(pid))
    }

    fn read(pid: u32) -> Process {
        Process {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// True when this process is gone ([`holder_gone`]).
    pub fn is_gone(&self) -> bool {
        holder_gone(self.pid, self.start_time)
    }
}

/// The rule (see the module docs): true when the holder `pid` started at `start_time`
/// (0 = unknown: judged by the pid alone) is gone. Reads `/proc`: cold paths only.
pub fn holder_gone(pid: u32, start_time: u64) -> bool {
    if pid == 0 || i32::try_from(pid).is_err() {
        return true;
    }
    let me = Process::current();
    if pid == me.pid {
        return start_time != 0 && me.start_time != 0 && start_time != me.start_time;
    }
    if process_gone(pid) {
        return true;
    }
    start_time != 0 && process_start_time(pid).is_some_and(|t| t != start_time)
}

/// True while some process has `pid` (a zombie counts: use [`process_gone`] to ask
/// whether it finished). One `kill(pid, 0)`.
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(loom)]
    {
        // Under loom every thread is this process; a "dead" holder is given another pid.
        pid == std::process::id()
    }
    #[cfg(not(loom))]
    {
        use nix::errno::Errno;
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        if raw <= 0 {
            return false;
        }
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
            Err(Errno::ESRCH)
        )
    }
}

/// True once the process `pid` has finished: no such pid, or a zombie (exited, not yet
/// reaped by its parent: its memory is gone, it writes nothing more). A process still
/// running its exit path counts as alive. Reads `/proc` (cold paths only).
pub fn process_gone(pid: u32) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    if cfg!(any(loom, miri)) {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x"))
}

/// Start time of process `pid` (`/proc/PID/stat` field 22, clock ticks since boot), or
/// None when unknown. Together with the pid it names one process, even after pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    if cfg!(any(loom, miri)) || pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A claim in shared memory: who holds a slot. 16 bytes, 8-aligned, all zero when free;
/// see the module docs for the protocol.
///
/// ```text
/// 0   pid         AtomicU32   holder's pid; 0 = free
/// 4   tag         AtomicU32   the user's word about the holder (0 if unused)
/// 8   start_time  AtomicU64   holder's start time; 0 while being claimed or unknown
/// ```
#[repr(C, align(8))]
#[derive(Debug, Default)]
pub struct Holder {
    pid: AtomicU32,
    tag: AtomicU32,
    start_time: AtomicU64,
}

const _: () = {
    assert!(std::mem::size_of::<Holder>() == 16);
    assert!(std::mem::align_of::<Holder>() == 8);
    assert!(std::mem::offset_of!(Holder, tag) == 4);
    assert!(std::mem::offset_of!(Holder, start_time) == 8);
};

/// What a successful [`Holder::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The slot was free.
    Free,
    /// The slot was held by this gone process (recover what it left).
    FromGone(Process),
}

impl Holder {
    /// A free claim.
    pub const fn new() -> Holder {
        Holder {
            pid: AtomicU32::new(0),
            tag: AtomicU32::new(0),
            start_time: AtomicU64::new(0),
        }
    }

    /// The holder's pid (0 = free). Acquire: pairs with the Release of a claim (L1) or a
    /// release (L2), so what the holder published before is seen.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    /// The user's word about the holder. Relaxed: a number written beside the claim.
    pub fn tag(&self) -> u32 {
        self.tag.load(Ordering::Relaxed)
    }

    /// The holder (pid and recorded start time), or None when free. The pid is loaded
    /// again after the start time, until both loads agree, so the start time belongs to
    /// that pid's claim (or is 0), never to a claim made between the two loads.
    pub fn holder(&self) -> Option<Process> {
        let mut pid = self.pid();
        loop {
            // Acquire: pairs with L1, so a start time seen belongs to the pid loaded
            // around it or is 0 (see the module docs).
            let start_time = self.start_time.load(Ordering::Acquire);
            let again = self.pid();
            if again == pid {
                return (pid != 0).then_some(Process { pid, start_time });
            }
            pid = again;
        }
    }

    /// True when held by a process that is not gone ([`holder_gone`]).
    pub fn is_held(&self) -> bool {
        self.holder().is_some_and(|h| !h.is_gone())
    }

    /// Claims the slot for `me` with the user's word `tag`: if free, or, with `take_over`,
    /// if its holder is gone (then the gone holder is returned, for the caller to recover
    /// what it left in the slot, which it now holds).
    ///
    /// # Errors
    /// The holder, alive (or any holder, without `take_over`).
    pub fn claim(&self, me: Process, tag: u32, take_over: bool) -> Result<Claimed, Process> {
        loop {
            match self.holder() {
                None => {
                    if self.cas_pid(0, me.pid) {
                        self.finish(me, tag);
                        return Ok(Claimed::Free);
                    }
                }
                Some(h) if take_over && h.is_gone() => {
                    if self.take_over_from(h, me, tag) {
                        return Ok(Claimed::FromGone(h));
                    }
                }
                Some(h) => return Err(h),
            }
        }
    }

    /// Takes the slot from `gone` (as [`Holder::holder`] returned it; the caller has
    /// judged it gone, by [`holder_gone`] or because it saw the process end) for `me`.
    /// False if the slot no longer names `gone` (someone else took or released it).
    pub fn take_over_from(&self, gone: Process, me: Process, tag: u32) -> bool {
        // Relaxed: only decides who may go on; the pid CAS below orders the rest.
        if gone.start_time != 0
            && self
                .start_time
                .compare_exchange(gone.start_time, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        if !self.cas_pid(gone.pid, me.pid) {
            return false;
        }
        self.finish(me, tag);
        true
    }

    /// Releases `me`'s claim; false (nothing changed) if `me` does not hold it.
    pub fn release(&self, me: Process) -> bool {
        if self.pid.load(Ordering::Relaxed) != me.pid {
            return false;
        }
        // Cleared before the pid: while the pid is ours the start time is ours or 0.
        self.start_time.store(0, Ordering::Relaxed);
        self.tag.store(0, Ordering::Relaxed);
        // L2 (Release): what the holder wrote in its slot is seen by the next claimer
        // (its Acquire CAS, or `pid()`).
        self.pid
            .compare_exchange(me.pid, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Overwrites the claim with no protocol: tests and tools that forge a holder (a dead
    /// pid, a reused one).
    #[doc(hidden)]
    pub fn forge(&self, holder: Process, tag: u32) {
        self.tag.store(tag, Ordering::Relaxed);
        self.start_time.store(holder.start_time, Ordering::Relaxed);
        self.pid.store(holder.pid, Ordering::Release);
    }

    /// AcqRel: Acquire pairs with L1/L2 of the previous holder (its slot's last state is
    /// seen); Release is not needed here (L1 publishes the new claim).
    fn cas_pid(&self, from: u32, to: u32) -> bool {
        self.pid
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn finish(&self, me: Process, tag: u32) {
        self.tag.store(tag, Ordering::Relaxed);
        // L1 (Release): the start time after the pid; pairs with `holder`'s Acquire.
        self.start_time.store(me.start_time, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has now: a child that exited and was reaped.
    fn reaped_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    #[cfg_attr(miri, ignore = "probes pids and reads /proc")]
    fn self_is_alive_with_its_own_start_time_and_cached() {
        let me = Process::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert_eq!(Process::current(), me);
        assert_eq!(Process::of(me.pid), Some(me));
        assert!(!me.is_gone());
        assert!(!holder_gone(me.pid, 0), "pid-only rule: our pid runs");
        assert!(pid_alive(me.pid) && !process_gone(me.pid));
    }

    #[test]
    #[cfg_attr(miri, ignore = "probes pids and reads /proc")]
    fn our_pid_with_another_start_time_is_a_previous_process() {
        let me = Process::current();
        assert!(holder_gone(me.pid, me.start_time + 1));
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns a process")]
    fn a_dead_pid_is_gone_with_or_without_a_start_time() {
        let pid = reaped_pid();
        assert!(!pid_alive(pid));
        assert!(holder_gone(pid, 0) && holder_gone(pid, 12345));
        assert_eq!(Process::of(pid), None);
        assert_eq!(process_start_time(pid), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns a process")]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let t0 = std::time::Instant::now();
        while !process_gone(pid) {
            assert!(
                t0.elapsed().as_secs() < 5,
                "child {pid} never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(pid_alive(pid), "not reaped yet");
        assert!(holder_gone(pid, 0));
        child.wait().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns a process")]
    fn a_reused_pid_with_another_start_time_is_gone() {
        // A live process that is not us, recorded with a start time it does not have:
        // what a reused pid looks like.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let live = Process::of(child.id()).unwrap();
        assert!(live.start_time > 0);
        assert!(!live.is_gone());
        assert!(!holder_gone(live.pid, 0));
        assert!(holder_gone(live.pid, live.start_time - 1));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(live.is_gone());
    }

    #[test]
    #[cfg_attr(miri, ignore = "probes pids")]
    fn pid_zero_and_garbage_are_gone() {
        for pid in [0, u32::MAX, u32::MAX - 1, 1 << 31] {
            assert!(holder_gone(pid, 0), "{pid}");
            assert!(!pid_alive(pid), "{pid}");
            assert_eq!(process_start_time(pid), None, "{pid}");
        }
        // No process has a pid above pid_max (at most 2^22).
        assert!(holder_gone((1 << 22) + 7, 99));
    }

    #[test]
    #[cfg_attr(miri, ignore = "probes pids and reads /proc")]
    fn claim_release_and_take_over() {
        let h = Holder::new();
        let me = Process::current();
        assert_eq!(h.holder(), None);
        assert_eq!(h.claim(me, 7, false), Ok(Claimed::Free));
        assert_eq!(h.holder(), Some(me));
        assert_eq!(h.tag(), 7);
        assert!(h.is_held());
        // Held by a live process (us): refused, with or without take-over.
        assert_eq!(h.claim(me, 8, true), Err(me));
        let other = Process {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!h.release(Process { pid: 1, ..me }));
        assert!(h.release(me));
        assert_eq!(h.holder(), None);
        assert_eq!(h.tag(), 0);
        // A dead holder: refused without take-over, taken with it.
        let dead = Process {
            pid: reaped_pid(),
            start_time: 42,
        };
        h.forge(dead, 3);
        assert!(!h.is_held());
        assert_eq!(h.claim(me, 9, false), Err(dead));
        assert_eq!(h.claim(me, 9, true), Ok(Claimed::FromGone(dead)));
        assert_eq!((h.holder(), h.tag()), (Some(me), 9));
        // A previous process that had our pid: gone.
        h.forge(other, 0);
        assert_eq!(h.claim(me, 1, true), Ok(Claimed::FromGone(other)));
        // A take-over from a holder the slot no longer names fails.
        assert!(!h.take_over_from(dead, me, 0));
        assert!(h.release(me));
    }

    #[test]
    #[cfg_attr(miri, ignore = "probes pids and reads /proc")]
    fn a_claim_being_made_reads_as_held() {
        // Between the pid CAS and the start-time store: pid set, start time 0.
        let h = Holder::new();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        h.forge(
            Process {
                pid: child.id(),
                start_time: 0,
            },
            0,
        );
        assert!(h.is_held());
        assert!(h.claim(Process::current(), 0, true).is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!h.is_held());
    }
}
