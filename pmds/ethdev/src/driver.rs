//! The driver side of the port API: what a driver crate implements, and the registry that
//! maps `net_<name>` to it.
//!
//! Where it sits: [`crate::Port`] holds one [`PortDriver`] per port and process, and each
//! claimed queue one [`RxBurst`] or [`TxBurst`]; nothing in the port API names a driver.
//! A driver crate provides a [`NetDriver`] (its number, its `net_<name>`, its devargs keys,
//! probe and attach), and the facade crate lists it in its [`Registry`].
//!
//! Batch-first (ixy's `rx_batch`/`tx_batch`): each burst returns one [`Burst`] saying
//! what it did, and the port counts it into the queue's statistics in shared memory
//! ([`crate::QueueShm`]), the only place packets are counted. The port checks that it is
//! started before it calls a driver, and bounds `max` by [`crate::MAX_BURST`].

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use shm::Memseg;
use shm_mempool::{Mbuf, MbufCache};

use crate::devargs::Args;
use crate::layout::PortInfo;
use crate::queue::QueueShm;
use crate::{PortError, PortSetup, RegistryClash, ZoneFinder};

/// A driver's number in a port's shared layout (`PortInfo::driver`). Each driver crate
/// picks its own; [`Registry`] users check that no two of theirs share one
/// ([`check_registry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriverId(pub u16);

/// What one rx or tx burst did, as the driver reports it; the port counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Packets received, or sent (not counting `dropped`).
    pub packets: u64,
    /// Their bytes (0 where the driver does not touch the data: ring ports).
    pub bytes: u64,
    /// Rx: packets lost for want of an mbuf.
    pub no_mbuf: u64,
    /// Bad input: malformed records or chains, refused handles, broken rings.
    pub errors: u64,
    /// Packets the driver dropped (tx: cannot be sent on this port at all; lost buffers
    /// a killed poller left in transit).
    pub dropped: u64,
}

impl Burst {
    /// `packets` packets of `bytes` bytes, nothing else.
    #[inline(always)]
    pub fn moved(packets: usize, bytes: u64) -> Burst {
        Burst {
            packets: packets as u64,
            bytes,
            ..Burst::default()
        }
    }
}

/// Queue counts a probe decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queues {
    /// Rx queues.
    pub rx: u16,
    /// Tx queues.
    pub tx: u16,
}

/// What a driver is given when the primary probes a port.
#[derive(Clone, Copy)]
pub struct Probe<'a> {
    /// The memseg the port's memzone goes in (and the ring driver's rings).
    pub seg: &'a Memseg,
    /// The devargs.
    pub devargs: &'a Args,
    /// The primary's configuration.
    pub setup: &'a PortSetup,
    /// Descriptors per queue (`nb_desc=` or the setup's).
    pub nb_desc: u32,
    /// Finds named objects of the process group.
    pub find: ZoneFinder<'a>,
    /// The devices this process runs.
    pub devices: &'a Devices,
}

impl std::fmt::Debug for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("devargs", &self.devargs.text)
            .finish()
    }
}

/// What a driver is given when a process opens a port.
#[derive(Clone, Copy)]
pub struct Attach<'a> {
    /// The port's description.
    pub info: &'a PortInfo,
    /// Its devargs (parsed again in this process).
    pub devargs: &'a Args,
    /// Finds named objects of the process group.
    pub find: ZoneFinder<'a>,
    /// The devices this process runs.
    pub devices: &'a Devices,
}

impl std::fmt::Debug for Attach<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("devargs", &self.devargs.text)
            .finish()
    }
}

/// A driver: `net_<name>`, its devargs keys, and how ports are probed and attached.
pub trait NetDriver: Send + Sync + 'static {
    /// Its number in the port layout.
    fn id(&self) -> DriverId;
    /// Its DPDK-style name, e.g. `net_ring` (instances are `net_ring0`, `net_ring1`...).
    fn name(&self) -> &'static str;
    /// The devargs keys it takes.
    fn keys(&self) -> &'static [&'static str];
    /// Primary, before the port's memzone is reserved: checks the devargs, makes what the
    /// queues need (rings, the output file) and says how many queues there are.
    ///
    /// # Errors
    /// [`PortError::DevArgs`] or [`PortError::Config`] naming the bad value,
    /// [`PortError::Failed`] when what the queues need cannot be made.
    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError>;
    /// Primary, once the memzone is reserved and before it is written: starts what runs
    /// in this process (a vhost-user backend, a virtio-user connection) and records it in
    /// `p.devices`, where [`attach`](Self::attach) finds it. Nothing can fail after it but
    /// opening the port, which then calls [`PortDriver::stop`].
    ///
    /// # Errors
    /// [`PortError::Failed`] when it cannot start.
    fn start(&self, p: &Probe<'_>, queues: Queues) -> Result<(), PortError> {
        let _ = (p, queues);
        Ok(())
    }
    /// Undoes [`start`](Self::start) when the port could not be opened after it.
    fn abandon(&self, p: &Probe<'_>) {
        let _ = p;
    }
    /// Any process: finds the port's resources.
    ///
    /// # Errors
    /// [`PortError::BadPort`] naming what is missing, [`PortError::Broken`] what is unusable.
    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError>;
}

/// One port's driver state in one process (what [`NetDriver::attach`] found).
pub trait PortDriver: Send + Sync {
    /// Opens rx queue `q.queue()` for the caller, who holds its claim; `cache` is the
    /// caller's. What opening did (buffers a killed poller left in transit, freed) goes
    /// in `opened`.
    ///
    /// # Errors
    /// [`PortError`] when the queue cannot be polled here.
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError>;
    /// Opens tx queue `q.queue()`, as [`rx_queue`](Self::rx_queue).
    ///
    /// # Errors
    /// As `rx_queue`.
    fn tx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError>;
    /// The link as the driver knows it (`None`: as recorded in the port).
    fn link_up(&self) -> Option<bool> {
        None
    }
    /// Errors counted outside any queue, in the process that runs the driver.
    fn errors(&self) -> u64 {
        0
    }
    /// Stops what the driver runs in this process.
    fn stop(&self) {}
}

/// A claimed rx queue's driver side. Single consumer: enforced by `&mut self`.
pub trait RxBurst: Any + std::fmt::Debug {
    /// Receives up to `max` packets (at most [`crate::MAX_BURST`], and `out` has the
    /// room) from `cache`'s pool into `out`, each with its port set; says what it did.
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst;
    /// True when the queue will never deliver more (a capture file read to its end).
    fn exhausted(&self) -> bool {
        false
    }
    /// io forwarding to `tx` without making mbufs, where this driver can do it (see
    /// [`crate::RxQueue::forward_to`]); `None`: nothing was taken, use the bursts.
    /// `started`: whether this queue's port is started (`tx`'s is).
    fn forward_to<'c>(
        &mut self,
        tx: &mut dyn TxBurst,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)> {
        let _ = (tx, cache, max, unsent, started);
        None
    }
}

/// A claimed tx queue's driver side. Single producer: enforced by `&mut self`. A driver's
/// [`RxBurst::forward_to`] recognises its own tx queues by upcasting to `dyn Any` and
/// downcasting.
pub trait TxBurst: Any + std::fmt::Debug {
    /// Sends from the front of `pkts`, removing what it took (sent, or dropped and counted
    /// in `dropped`); what stays is the caller's.
    fn tx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst;
    /// Flushes buffered output; errors go in the result.
    fn flush(&mut self) -> Burst {
        Burst::default()
    }
    /// The lcore has nothing to do: land what a slow peer held up (cheap).
    fn idle(&mut self) {}
}

/// The drivers an application can probe (the facade crate's list), and how its claimed
/// queues are held: [`Registry::Rx`]/[`Registry::Tx`] are enums with a variant for each
/// driver whose bursts cost less than a virtual call would add (the ring driver's
/// pointer-speed path) and one holding any other driver's `Box<dyn RxBurst>`/`TxBurst`.
pub trait Registry: Copy + Default + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// How a claimed rx queue's driver side is held.
    type Rx: RxBurst;
    /// How a claimed tx queue's driver side is held.
    type Tx: TxBurst;
    /// Every driver, once each.
    fn drivers() -> &'static [&'static dyn NetDriver];
    /// Holds what a driver opened (once per claim: a downcast per known variant).
    fn rx(q: Box<dyn RxBurst>) -> Self::Rx;
    /// Holds what a driver opened.
    fn tx(q: Box<dyn TxBurst>) -> Self::Tx;
    /// io forwarding from `rx` to `tx` without making mbufs, where a driver can (see
    /// [`RxBurst::forward_to`]): statically dispatched for the variants that have one.
    fn forward<'c>(
        rx: &mut Self::Rx,
        tx: &mut Self::Tx,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)>;
}

/// The driver numbered `id` in `R`.
pub fn by_id<R: Registry>(id: DriverId) -> Option<&'static dyn NetDriver> {
    R::drivers().iter().copied().find(|d| d.id() == id)
}

/// Checks that no two drivers of `drivers` share a number or a name.
///
/// # Errors
/// The first clash.
pub fn check_registry(drivers: &[&'static dyn NetDriver]) -> Result<(), RegistryClash> {
    for (i, a) in drivers.iter().enumerate() {
        for b in &drivers[i + 1..] {
            if a.id() == b.id() || a.name() == b.name() {
                return Err(RegistryClash {
                    first: a.name(),
                    second: b.name(),
                });
            }
        }
    }
    Ok(())
}

/// The devices one process runs (vhost-user backends, virtio-user connections): found by
/// driver and key (a socket path) when a port is attached, removed when it stops.
/// Each program makes one table and passes it to [`crate::Port::create`] and
/// [`crate::Port::open`], which hand it to drivers in [`Probe`] and [`Attach`].
/// Cheap to clone: clones share the table (a port's driver keeps one to remove its device
/// when it stops).
#[derive(Clone, Default)]
pub struct Devices(Arc<Mutex<Vec<Device>>>);

/// One entry: the driver, its key, the device.
type Device = (DriverId, String, Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = self.list();
        f.debug_list()
            .entries(list.iter().map(|(d, k, _)| (d, k)))
            .finish()
    }
}

impl Devices {
    /// An empty table.
    pub fn new() -> Devices {
        Devices::default()
    }

    /// The list, even after a panic while it was held: every change is one push or
    /// retain, so it is never left half-changed.
    fn list(&self) -> MutexGuard<'_, Vec<Device>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `dev` as driver `driver`'s device for `key`.
    ///
    /// # Errors
    /// When `key` has a device of that driver already (handing `dev` back).
    pub fn add<T: Any + Send + Sync>(
        &self,
        driver: DriverId,
        key: &str,
        dev: Arc<T>,
    ) -> Result<(), Arc<T>> {
        let mut list = self.list();
        if list.iter().any(|(d, k, _)| *d == driver && k == key) {
            return Err(dev);
        }
        list.push((driver, key.to_string(), dev));
        Ok(())
    }

    /// Driver `driver`'s device for `key`, if this process runs one.
    pub fn find<T: Any + Send + Sync>(&self, driver: DriverId, key: &str) -> Option<Arc<T>> {
        self.list()
            .iter()
            .find(|(d, k, _)| *d == driver && k == key)
            .and_then(|(_, _, dev)| dev.clone().downcast::<T>().ok())
    }

    /// Forgets `dev` as driver `driver`'s device for `key` if it is the one recorded
    /// there (not a later device on the same key); says whether it was.
    pub fn remove_this<T: Any + Send + Sync>(
        &self,
        driver: DriverId,
        key: &str,
        dev: &Arc<T>,
    ) -> bool {
        let mut list = self.list();
        let same = |e: &Device| {
            e.0 == driver && e.1 == key && std::ptr::addr_eq(Arc::as_ptr(&e.2), Arc::as_ptr(dev))
        };
        let Some(i) = list.iter().position(same) else {
            return false;
        };
        list.remove(i);
        true
    }

    /// Forgets driver `driver`'s device for `key`; returns it.
    pub fn remove(&self, driver: DriverId, key: &str) -> Option<Arc<dyn Any + Send + Sync>> {
        let mut list = self.list();
        let i = list.iter().position(|(d, k, _)| *d == driver && k == key)?;
        Some(list.remove(i).2)
    }
}
