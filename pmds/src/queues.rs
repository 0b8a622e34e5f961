//! How this build holds claimed queues ([`Registry::Rx`](pmds_ethdev::Registry::Rx) and
//! [`Registry::Tx`](pmds_ethdev::Registry::Tx)): an enum with one variant per driver whose
//! bursts are cheaper than a virtual call would add, and [`RxKind::Dyn`]/[`TxKind::Dyn`]
//! for every other driver. Only the ring driver is here: its io path moves 8-byte
//! handles ring to ring in a few nanoseconds a burst, and statically dispatched it
//! compiles into the forwarding loop whole (measured: a `Box<dyn>` per burst cost it ~16%);
//! the copying drivers (pcap, AF_PACKET, vhost, virtio-user) spend far more per packet than
//! a call per burst. A new driver needs nothing here; a variant is an optimisation.

use std::any::Any;

use pmds_ethdev::{Burst, QueueShm, RxBurst, TxBurst};
use shm_mempool::{Mbuf, MbufCache};

#[cfg(feature = "ring")]
use pmds_net_ring::queues::{RingRxQueue, RingTxQueue};

/// A claimed rx queue's driver side.
// The ring queue is inline on purpose: boxing it would add back the indirection this
// enum removes (one per claimed queue, never moved in the hot path).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RxKind {
    /// `net_ring`.
    #[cfg(feature = "ring")]
    Ring(RingRxQueue),
    /// Any other driver.
    Dyn(Box<dyn RxBurst>),
}

/// A claimed tx queue's driver side.
// Inline on purpose, as `RxKind`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TxKind {
    /// `net_ring`.
    #[cfg(feature = "ring")]
    Ring(RingTxQueue),
    /// Any other driver.
    Dyn(Box<dyn TxBurst>),
}

impl RxKind {
    /// Holds `q`, in its own variant when it has one.
    pub fn of(q: Box<dyn RxBurst>) -> RxKind {
        #[cfg(feature = "ring")]
        if (&*q as &dyn Any).is::<RingRxQueue>() {
            let any: Box<dyn Any> = q;
            return RxKind::Ring(*any.downcast().expect("checked above"));
        }
        RxKind::Dyn(q)
    }
}

impl TxKind {
    /// Holds `q`, in its own variant when it has one.
    pub fn of(q: Box<dyn TxBurst>) -> TxKind {
        #[cfg(feature = "ring")]
        if (&*q as &dyn Any).is::<RingTxQueue>() {
            let any: Box<dyn Any> = q;
            return TxKind::Ring(*any.downcast().expect("checked above"));
        }
        TxKind::Dyn(q)
    }

    /// The queue as a trait object.
    pub fn as_dyn(&mut self) -> &mut dyn TxBurst {
        match self {
            #[cfg(feature = "ring")]
            TxKind::Ring(q) => q,
            TxKind::Dyn(q) => &mut **q,
        }
    }
}

impl RxBurst for RxKind {
    #[inline(always)]
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        match self {
            #[cfg(feature = "ring")]
            RxKind::Ring(r) => r.rx_burst(q, cache, out, max),
            RxKind::Dyn(r) => r.rx_burst(q, cache, out, max),
        }
    }

    fn exhausted(&self) -> bool {
        match self {
            #[cfg(feature = "ring")]
            RxKind::Ring(r) => r.exhausted(),
            RxKind::Dyn(r) => r.exhausted(),
        }
    }

    fn forward_to<'c>(
        &mut self,
        tx: &mut dyn TxBurst,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)> {
        match self {
            #[cfg(feature = "ring")]
            RxKind::Ring(r) => r.forward_to(tx, cache, max, unsent, started),
            RxKind::Dyn(r) => r.forward_to(tx, cache, max, unsent, started),
        }
    }
}

impl TxBurst for TxKind {
    #[inline(always)]
    fn tx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        match self {
            #[cfg(feature = "ring")]
            TxKind::Ring(t) => t.tx_burst(q, cache, pkts),
            TxKind::Dyn(t) => t.tx_burst(q, cache, pkts),
        }
    }

    fn flush(&mut self) -> Burst {
        self.as_dyn().flush()
    }

    fn idle(&mut self) {
        self.as_dyn().idle();
    }
}

/// io forwarding, statically dispatched where both sides have a variant.
#[inline(always)]
pub(crate) fn forward<'c>(
    rx: &mut RxKind,
    tx: &mut TxKind,
    cache: &'c MbufCache,
    max: usize,
    unsent: &mut Vec<Mbuf<'c>>,
    started: bool,
) -> Option<(usize, usize)> {
    match (rx, tx) {
        #[cfg(feature = "ring")]
        (RxKind::Ring(r), TxKind::Ring(t)) => r.forward_to_ring(t, cache, max, unsent, started),
        (rx, tx) => rx.forward_to(tx.as_dyn(), cache, max, unsent, started),
    }
}
