//! `pmds`: the port API and the poll-mode drivers of shmdp, as one crate to depend on
//! (DPDK's `lib/ethdev` plus `drivers/net`).
//!
//! Where it sits: a facade over the crates under `pmds/` — `pmds-ethdev` (the port API:
//! [`Port`], queue claims, statistics, devargs, the driver traits), one crate per driver
//! under `pmds/net/` (`ring`, `pcap`, `af-packet`, `vhost`, `virtio-user`) and
//! `pmds/common/virtio` (what the virtio drivers share). It registers the drivers
//! ([`Drivers`], one line and one cargo feature each) and re-exports the API with the
//! registry filled in, so `pmds::Port`, `pmds::DevArgs` and the driver modules keep their
//! paths.
//!
//! Ports are owned by the primary, which probes them from DPDK-style devargs
//! (`net_ring0`, `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`) into memzones of its main
//! memseg; any process of the group opens a port by name or id and polls the queues it
//! claims. Mbufs come from `shm-mempool`.
//!
//! Adding a driver: a crate under `pmds/net/` implementing `pmds_ethdev::NetDriver` (with
//! its own `DriverId`), a dependency and feature here, and its line in
//! [`Drivers::drivers`]. Its queues are held as `Box<dyn RxBurst>`/`TxBurst` ([`queues`]);
//! a driver whose bursts are cheaper than a virtual call may get its own variant there.
#![deny(missing_docs)]

use pmds_ethdev::{DriverId, NetDriver, Registry, RxBurst, TxBurst};
use shm_mempool::{Mbuf, MbufCache};

pub mod queues;

/// The drivers this build has (one cargo feature each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drivers;

impl Registry for Drivers {
    type Rx = queues::RxKind;
    type Tx = queues::TxKind;

    fn drivers() -> &'static [&'static dyn NetDriver] {
        &[
            #[cfg(feature = "ring")]
            &pmds_net_ring::RingDriver,
            #[cfg(feature = "pcap")]
            &pmds_net_pcap::PcapDriver,
            #[cfg(feature = "vhost")]
            &pmds_net_vhost::VhostDriver,
            #[cfg(feature = "virtio-user")]
            &pmds_net_virtio_user::VirtioUserDriver,
        ]
    }

    fn rx(q: Box<dyn RxBurst>) -> queues::RxKind {
        queues::RxKind::of(q)
    }

    fn tx(q: Box<dyn TxBurst>) -> queues::TxKind {
        queues::TxKind::of(q)
    }

    #[inline(always)]
    fn forward<'c>(
        rx: &mut queues::RxKind,
        tx: &mut queues::TxKind,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)> {
        queues::forward(rx, tx, cache, max, unsent, started)
    }
}

/// A port with this build's drivers.
pub type Port = pmds_ethdev::Port<Drivers>;
/// A claimed rx queue of a [`Port`].
pub type RxQueue<'c> = pmds_ethdev::RxQueue<'c, Drivers>;
/// A claimed tx queue of a [`Port`].
pub type TxQueue<'c> = pmds_ethdev::TxQueue<'c, Drivers>;
/// Devargs checked against this build's drivers.
pub type DevArgs = pmds_ethdev::DevArgs<Drivers>;

pub use pmds_ethdev::{layout, PortError, PortSetup, PortStats, QueueStats};
#[cfg(feature = "pcap")]
pub use pmds_net_pcap::pcap_file;
#[cfg(feature = "ring")]
pub use pmds_net_ring::{ring_port, MbufReceiver, MbufSender};

/// The in-tree drivers by name, for callers that test a port's driver
/// (`port.driver() == Driver::Ring`); a port's driver is a [`DriverId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `net_ring`: queues are shm rings of mbuf handles.
    Ring,
    /// `net_pcap`: rx from a pcap file or a live interface, tx to a pcap file or one.
    Pcap,
    /// vhost-user backend (`net_vhost`): the peer is a QEMU guest or a virtio-user process.
    Vhost,
    /// virtio-user (`net_virtio_user`): shmdp as the vhost-user frontend.
    VirtioUser,
}

impl Driver {
    /// Its number in the port layout (each driver crate's `DRIVER_ID`).
    pub fn id(self) -> DriverId {
        match self {
            Driver::Ring => DriverId(1),
            Driver::Pcap => DriverId(2),
            Driver::Vhost => DriverId(3),
            Driver::VirtioUser => DriverId(4),
        }
    }

    /// The DPDK-style driver name.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Ring => "net_ring",
            Driver::Pcap => "net_pcap",
            Driver::Vhost => "net_vhost",
            Driver::VirtioUser => "net_virtio_user",
        }
    }
}

impl PartialEq<Driver> for DriverId {
    fn eq(&self, other: &Driver) -> bool {
        *self == other.id()
    }
}

impl PartialEq<DriverId> for Driver {
    fn eq(&self, other: &DriverId) -> bool {
        self.id() == *other
    }
}

/// Devargs parsing (`pmds::devargs::DevArgs`, `pmds::devargs::Driver`).
pub mod devargs {
    pub use crate::{DevArgs, Driver};
    pub use pmds_ethdev::devargs::Args;
}

/// The port API (`pmds::ethdev::Port`, `pmds::ethdev::MAX_BURST`...).
pub mod ethdev {
    pub use crate::{Port, RxQueue, TxQueue};
    pub use pmds_ethdev::{
        Burst, Devices, DriverId, PortError, PortSetup, PortStats, QueueShm, QueueStats,
        ZoneFinder, MAX_BURST,
    };
    #[cfg(feature = "ring")]
    pub use pmds_net_ring::ring_name;
}

/// The vhost-user drivers: the backend (`net_vhost`) and, as [`vhost::frontend`],
/// virtio-user (`net_virtio_user`).
#[cfg(feature = "vhost")]
pub mod vhost {
    pub use pmds_net_vhost::*;
    #[cfg(feature = "virtio-user")]
    pub use pmds_net_virtio_user::{device as frontend, driver_ring, frontend_mem};
}

#[cfg(test)]
mod tests;
