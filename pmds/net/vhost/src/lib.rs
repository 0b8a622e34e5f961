//! `pmds-net-vhost`: the `net_vhost` driver (DPDK's `net_vhost`), a port whose peer is a
//! vhost-user frontend — a QEMU guest's virtio-net device, or a virtio-user process such as `dpdk-testpmd --vdev
//! net_virtio_user0,path=...`. The primary runs the backend ([`backend`]); packets move
//! between the guest's virtqueues ([`vring`], [`net`]) and shmdp mbufs by copying, a burst
//! at a time. The guest's memory ([`mem`]) is mapped only in the process that received its
//! file descriptors, the primary: its forwarding lcores (`shmdp-primary --fwd`) poll
//! vhost ports; a secondary that tries is told so.
//!
//! Trust: the peer on the other end of a vhost-user socket is as untrusted as a guest.
//! Its uid is checked (`SO_PEERCRED`: ours or root) before anything is exchanged; every
//! exchange has a deadline and gives up on a signal ([`wire`]); its memory is reached only
//! through the checked accessors of [`peer_mem`] (its bytes read only by copying); memory
//! it shares must be sealed against shrinking or be on hugetlbfs, and every mapping of it
//! is under the SIGBUS guard ([`mem`], [`guard`]);
//! memory we share with a backend is a sealed memfd of the port's own holding only its
//! rings and buffers (`pmds-net-virtio-user`). Whatever the peer does costs it its connection
//! (a counted error), never the primary its life or another port its service.
//!
//! Where it sits: a driver crate under `pmds/net/`; the facade `pmds` registers
//! [`VhostDriver`] ([`driver`]). The vhost-user protocol pieces ([`proto`], [`wire`],
//! [`guard`], [`peer_mem`], [`mem::sealed_memfd`], [`VhostError`]) live in
//! `pmds-common-vhost-user`, shared with `pmds-net-virtio-user`, and are re-exported here
//! under their old paths; the virtqueue layout and feature bits come from
//! `pmds-common-virtio`. This crate has no `unsafe` of its own: guest memory is reached
//! only through [`peer_mem`]'s checked accessors. A started
//! backend is recorded in the process's device table (`pmds_ethdev::Devices`) under its
//! socket path, where attaching the port finds it.
#![deny(missing_docs)]

// The modules that read peer-written memory (guest RAM, a backend's used rings) carry
// clippy's unwrap/expect/panic/indexing denials: nothing derived from that memory may
// panic (tests excepted).
pub mod backend;
pub mod driver;
#[cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
pub mod mem;
#[cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
pub mod net;
#[cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
pub mod vring;

pub use pmds_common_vhost_user::{guard, guard_err, peer_err, peer_mem, proto, setup_err, wire};

use std::fs::File;
use std::sync::Arc;

use shm_mempool::{Mbuf, MbufCache};

use backend::Config;
pub use backend::VhostDevice;
pub use driver::{VhostDriver, DRIVER_ID};
use net::{BurstOutcome, NetQueue};
pub use pmds_common_vhost_user::VhostError;
use vring::{SplitRing, VringAddrs};

/// One vring of a vhost port as a polling queue sees it: restarted whenever the frontend
/// changes its setup (checked once per burst with one atomic load).
#[derive(Debug)]
pub struct VhostQueue {
    dev: Arc<VhostDevice>,
    vring: usize,
    seen: u64,
    cfg: Arc<Config>,
    net: Option<NetQueue>,
    call: Option<Arc<File>>,
    /// Setup errors (a vring outside guest memory), for the port's error count.
    pub setup_errors: u64,
}

impl VhostQueue {
    /// Polls vring `vring` of `dev` (even: the guest's receive queue, odd: its transmit).
    pub fn new(dev: Arc<VhostDevice>, vring: usize) -> VhostQueue {
        dev.set_polled(vring, true);
        VhostQueue {
            dev,
            vring,
            seen: 0,
            cfg: Arc::new(Config::default()),
            net: None,
            call: None,
            setup_errors: 0,
        }
    }

    #[inline]
    fn refresh(&mut self) {
        let g = self.dev.generation();
        if g != self.seen {
            self.reload(g);
        }
    }

    #[cold]
    fn reload(&mut self, g: u64) {
        let cfg = self.dev.snapshot();
        let ready = cfg.vrings.get(self.vring).cloned().flatten();
        let same = |old: &Config| {
            let was = old.vrings.get(self.vring).cloned().flatten();
            match (&was, &ready, &old.mem, &cfg.mem) {
                (Some(a), Some(b), Some(m1), Some(m2)) => {
                    a.addrs == b.addrs && Arc::ptr_eq(m1, m2) && old.features == cfg.features
                }
                _ => false,
            }
        };
        if !(self.net.is_some() && same(&self.cfg)) {
            self.net = match (&ready, &cfg.mem) {
                (Some(r), Some(mem)) => match SplitRing::start(
                    mem.clone(),
                    &VringAddrs {
                        base: self.dev.last_avail(self.vring),
                        ..r.addrs
                    },
                ) {
                    Ok(ring) => Some(NetQueue::new(ring, cfg.features)),
                    Err(e) => {
                        self.setup_errors += 1;
                        tracing::warn!("{}: vring {}: {e}", self.dev.path().display(), self.vring);
                        None
                    }
                },
                _ => None,
            };
        }
        self.call = ready.and_then(|r| r.call);
        self.cfg = cfg;
        self.seen = g;
        let last = self.net.as_ref().map(NetQueue::last_avail);
        match last {
            Some(l) => self.dev.report(self.vring, l, g),
            None => self.dev.report_stopped(self.vring, g),
        }
    }

    fn after(&mut self, o: &BurstOutcome) {
        if o.broken {
            self.setup_errors += 1;
            self.net = None;
        }
        if o.notify {
            if let Some(c) = &self.call {
                backend::signal(c);
            }
        }
        if let Some(n) = &self.net {
            self.dev.report(self.vring, n.last_avail(), self.seen);
        }
    }

    /// Guest transmit queue → up to `max` mbufs from `cache` appended to `out`.
    #[inline]
    pub fn receive<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> BurstOutcome {
        self.refresh();
        let Some(n) = &mut self.net else {
            return BurstOutcome::default();
        };
        let o = n.dequeue(cache, out, max);
        self.after(&o);
        o
    }

    /// `pkts` → the guest's receive queue (written ones removed and freed).
    #[inline]
    pub fn send(&mut self, pkts: &mut Vec<Mbuf<'_>>) -> BurstOutcome {
        self.refresh();
        let Some(n) = &mut self.net else {
            return BurstOutcome::default();
        };
        let o = n.enqueue(pkts);
        self.after(&o);
        o
    }
}

impl Drop for VhostQueue {
    fn drop(&mut self) {
        self.dev.set_polled(self.vring, false);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_memory_is_reached_only_through_peer_mem() {
        // The files that touch guest memory: none may build a slice from a raw pointer or
        // hold an `unsafe` block of its own (the patterns are split so this file does not
        // match itself).
        let slice = concat!("from_raw", "_parts");
        let block = concat!("unsafe", " {");
        for (name, src) in [
            ("net.rs", include_str!("net.rs")),
            ("vring.rs", include_str!("vring.rs")),
            ("mem.rs", include_str!("mem.rs")),
        ] {
            assert!(
                !src.contains(slice),
                "{name} makes a slice from a raw pointer"
            );
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            assert!(!code.contains(block), "{name} has an unsafe block");
        }
    }
}
