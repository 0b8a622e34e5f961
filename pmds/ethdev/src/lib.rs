//! `pmds-ethdev`: the port API of shmdp (DPDK's `lib/ethdev`), with no driver in it.
//!
//! Where it sits: above `shm`, `shm-ring` and `shm-mempool`, below every driver crate
//! (`pmds/net/*`) and the facade crate `pmds`, which lists the drivers in its
//! [`Registry`]. Ports are owned by the primary, which probes them from DPDK-style
//! devargs into memzones of its main memseg; any process of the group opens a port by
//! name or id and polls the queues it claims.
//!
//! - [`devargs`]: parsing against a registry's drivers.
//! - [`layout`]: the port's fixed layout in shared memory.
//! - [`Port`] (`port.rs`): probe, open, control, statistics.
//! - [`QueueShm`], [`RxQueue`], [`TxQueue`] (`queue.rs`): claims and bursts; every
//!   burst's [`Burst`] is counted there, once.
//! - [`driver`]: the traits a driver implements ([`NetDriver`], [`PortDriver`],
//!   [`RxBurst`], [`TxBurst`]), the registry, and the per-process [`Devices`] table
//!   (each program makes one and passes it to [`Port::create`] and [`Port::open`]).
//! - [`hosted`]: for drivers whose device runs in the primary (vhost, virtio-user).
//! - [`PortError`] (`error.rs`): typed errors and reasons.
#![deny(missing_docs)]

pub mod devargs;
pub mod driver;
mod error;
pub mod hosted;
pub mod layout;
mod port;
mod queue;

pub use devargs::{Args, DevArgs};
pub use driver::{
    Attach, Burst, Devices, DriverId, NetDriver, PortDriver, Probe, Queues, Registry, RxBurst,
    TxBurst,
};
pub use error::{BadPortReason, ConfigError, DevArgsError, PortError, Reason, RegistryClash};
pub use hosted::{Hosted, HostedDevice, HostedKind};
pub use port::{Port, PortSetup, ZoneFinder};
pub use queue::{QueueShm, RxQueue, TxQueue, MAX_BURST};
pub use shm::stats::{PortStats, QueueStats};
