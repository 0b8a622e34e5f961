//! Named crash points: where the crash-exactness tests kill a process.
//!
//! Every step of the ownership protocols (pool caches, rings, port queues) where a process
//! could die with a buffer in the middle of a move is marked with [`crash_point!`]. In a
//! normal build the macro expands to nothing. Built with the `crash-points` feature
//! (`cargo build --features shm/crash-points`, which the crash tests do in a target
//! directory of their own), a process started with
//!
//! ```text
//! SHMDP_CRASH_AT=NAME[:N]      # the Nth time (default 1st) NAME is reached ...
//! SHMDP_CRASH_HOW=kill|stop    # ... SIGKILL itself (default) or SIGSTOP itself
//! ```
//!
//! dies (or stops, for the tests of a stalled peer) exactly there, as a `kill -9` landing
//! on that instruction would. [`POINTS`] lists every name, so a test can visit them all; a
//! name used in code and missing from the list is a test failure (debug builds assert it).

/// Every crash point, by protocol. Names are `protocol.step`.
pub const POINTS: &[&str] = &[
    // shm-mempool: an mbuf allocated (tagged) but still in the cache; freed into the
    // cache but not yet marked free.
    "mbuf.alloc_after_tag",
    "mbuf.free_after_put",
    // shm-mempool caches: a refill's dequeue done, the cache length not yet raised; a
    // flush's enqueue done, the length not yet lowered.
    "cache.refill_after_dequeue",
    "cache.flush_after_enqueue",
    // pmds ring ports (and MbufSender/MbufReceiver): an rx burst claimed but not
    // released; local entries written but not published.
    "ring_port.rx_before_release",
    "ring_port.tx_before_commit",
    // shm-ring, multi-producer enqueue: head CAS won, slots not written; slots written,
    // tail not published.
    "ring.mp_after_head_cas",
    "ring.mp_after_copy",
    // shm-ring, multi-consumer dequeue: head CAS won, slots not copied; copied, tail not
    // published.
    "ring.mc_after_head_cas",
    "ring.mc_after_copy",
    // shm-ring, a consumer adopting the range of a dead or long-stopped consumer: its
    // record says it is adopting, the VOIDED CAS not done yet; done, its count not yet
    // settled. Reached only behind such a peer ([`REPAIR_POINTS`]).
    "ring.adopt_recorded",
    "ring.adopt_voided",
];

/// The points of [`POINTS`] that only a process repairing behind a stopped or dead peer
/// reaches (`tests/tests/stopped_peer.rs` visits them), not mixed work alone.
pub const REPAIR_POINTS: &[&str] = &["ring.adopt_recorded", "ring.adopt_voided"];

/// Marks a crash point (see the [module docs](crate::crash)). `$name` must be listed in
/// [`POINTS`].
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        $crate::crash::hit($name)
    };
}

/// Called by [`crash_point!`]: nothing unless built with `crash-points`.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Called by [`crash_point!`]: dies or stops here when `SHMDP_CRASH_AT` names this point and
/// its hit count is reached.
#[cfg(feature = "crash-points")]
#[inline(never)]
pub fn hit(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    struct Armed {
        name: String,
        nth: u64,
        stop: bool,
    }
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    debug_assert!(
        POINTS.contains(&name),
        "crash point {name} is not in POINTS"
    );
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("SHMDP_CRASH_AT").ok()?;
        let (name, nth) = match spec.split_once(':') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1).max(1)),
            None => (spec, 1),
        };
        let stop = std::env::var("SHMDP_CRASH_HOW").is_ok_and(|h| h == "stop");
        Some(Armed { name, nth, stop })
    });
    let Some(a) = armed else { return };
    if a.name != name {
        return;
    }
    // Relaxed: a count of this process's own hits; which thread reaches N first is moot.
    if HITS.fetch_add(1, Ordering::Relaxed) + 1 != a.nth {
        return;
    }
    let sig = if a.stop {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGKILL
    };
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
}

#[cfg(test)]
mod tests {
    #[test]
    fn points_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for p in super::POINTS {
            assert!(seen.insert(p), "{p} listed twice");
            assert!(
                p.split_once('.')
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()),
                "{p}: names are protocol.step"
            );
        }
    }
}
