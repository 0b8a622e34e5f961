//! [`Port`]: a port lives in a memzone of the primary's memseg ([`crate::layout`]); any
//! process opens it by name or id ([`Port::open`]) and polls the queues it claims.
//!
//! Model: the primary probes ports from devargs ([`Port::create`]): the driver checks them
//! and creates what it needs ([`NetDriver::probe`]), the port's description is written,
//! and what runs in the primary starts ([`NetDriver::start`]). Every process that opens
//! the port re-parses the devargs text from shared memory and asks the driver for its
//! resources ([`NetDriver::attach`]). A queue has one poller at a time:
//! [`Port::rx_queue`] / [`Port::tx_queue`] claim it in shared memory with the caller's pid
//! and start time ([`crate::QueueShm`]), a second claim (in any process) is refused with
//! [`PortError::QueueTaken`], and the claim of a process that died is taken over.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shm::{Memseg, Memzone, MemzoneKind, Region};
use shm_mempool::{MbufCache, MbufPool};

use crate::devargs::{Args, DevArgs};
use crate::driver::{by_id, Attach, Burst, Devices, DriverId, PortDriver, Probe, Registry};
use crate::layout::*;
use crate::queue::{QueueShm, RxQueue, TxQueue};
use crate::{BadPortReason, ConfigError, PortError, PortStats, QueueStats};

/// How the primary configures a port at probe time.
#[derive(Debug, Clone)]
pub struct PortSetup {
    /// Port id.
    pub port_id: u16,
    /// Descriptors per queue (ring capacity for `net_ring`).
    pub nb_desc: u32,
    /// The pool rx queues allocate from.
    pub rx_pool: MbufPool,
    /// A MAC address (locally administered, derived from the port id, when `None`).
    pub mac: Option<[u8; 6]>,
}

/// Finds a memzone by name in any memseg of the process group.
pub type ZoneFinder<'a> = &'a dyn Fn(&str) -> Option<Memzone>;

/// A port as this process opened it: its shared memory and its driver's state here.
pub(crate) struct PortCore {
    _region: Region,
    pub(crate) info: PortInfo,
    pub(crate) args: Args,
    ctrl: NonNull<PortCtrl>,
    queues: NonNull<QueueBlock>,
    /// The queues' in-flight records (`INFLIGHT_MAX` handles per queue block).
    inflight: NonNull<u64>,
    pub(crate) driver: Box<dyn PortDriver>,
}

// SAFETY: the pointers target shared memory kept mapped by `_region`; everything reached
// through them is atomics (the in-flight records are written only under a queue claim).
unsafe impl Send for PortCore {}
// SAFETY: as for Send.
unsafe impl Sync for PortCore {}

impl PortCore {
    pub(crate) fn ctrl(&self) -> &PortCtrl {
        // SAFETY: bounds- and alignment-checked at open; kept mapped; atomics only.
        unsafe { self.ctrl.as_ref() }
    }

    /// Queue block `i` (rx queues 0..MAX_QUEUES, tx queues after).
    pub(crate) fn block(&self, i: usize) -> &QueueBlock {
        assert!(i < 2 * MAX_QUEUES as usize);
        // SAFETY: `i < 2 * MAX_QUEUES` blocks, checked at open; atomics only.
        unsafe { &*self.queues.as_ptr().wrapping_add(i) }
    }

    /// The in-flight record of queue block `q` (raw: its poller writes it).
    pub(crate) fn inflight_slots(&self, q: usize) -> *mut u64 {
        debug_assert!(q < 2 * MAX_QUEUES as usize);
        self.inflight
            .as_ptr()
            .wrapping_add(q.min(2 * MAX_QUEUES as usize - 1) * INFLIGHT_MAX)
    }

    pub(crate) fn is_started(&self) -> bool {
        self.ctrl().started.load(Ordering::Acquire) != 0
    }
}

/// A port, opened in this process, with the drivers of registry `R`. Cheap to clone.
pub struct Port<R: Registry> {
    pub(crate) core: Arc<PortCore>,
    registry: PhantomData<R>,
}

impl<R: Registry> Clone for Port<R> {
    fn clone(&self) -> Self {
        Port {
            core: self.core.clone(),
            registry: PhantomData,
        }
    }
}

impl<R: Registry> std::fmt::Debug for Port<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.core.info.port_id)
            .field("name", &self.core.args.name)
            .finish()
    }
}

impl<R: Registry> Port<R> {
    /// A port over existing rings (DPDK's `rte_eth_from_rings`): rx queue `i` dequeues
    /// from ring `rx[i]`, tx queue `i` enqueues into `tx[i]`. `name` names a driver that
    /// takes `rx_ring=`/`tx_ring=` (`net_ringN`). The same ring as rx and tx makes a
    /// loopback; two ports with their rings swapped make a cross-connected pair, usable
    /// from any processes.
    ///
    /// # Errors
    /// As [`Port::create`].
    pub fn from_rings(
        seg: &Memseg,
        name: &str,
        rx: &[&str],
        tx: &[&str],
        setup: &PortSetup,
        find: ZoneFinder<'_>,
        devices: &Devices,
    ) -> Result<Port<R>, PortError> {
        let mut text = name.to_string();
        for r in rx {
            text += &format!(",rx_ring={r}");
        }
        for t in tx {
            text += &format!(",tx_ring={t}");
        }
        let devargs = DevArgs::<R>::parse(&text).map_err(|e| PortError::devargs(name, e))?;
        let keys = devargs.net_driver().keys();
        if !keys.contains(&"rx_ring") || !keys.contains(&"tx_ring") {
            return Err(PortError::config(name, ConfigError::NotRingDriver));
        }
        Port::create(seg, &devargs, setup, find, devices)
    }

    /// Probes a port (primary): creates its memzone in `seg` and whatever its driver needs,
    /// recording what it runs in this process in `devices` (the process's table: the one
    /// its ports are opened with).
    ///
    /// # Errors
    /// [`PortError::DevArgs`] or [`PortError::Config`] for bad devargs values,
    /// [`PortError::Failed`] for unusable files or no room.
    pub fn create(
        seg: &Memseg,
        devargs: &DevArgs<R>,
        setup: &PortSetup,
        find: ZoneFinder<'_>,
        devices: &Devices,
    ) -> Result<Port<R>, PortError> {
        let name = devargs.name.as_str();
        let cfg = |why: ConfigError| PortError::config(name, why);
        let driver = devargs.net_driver();
        let nb_desc = devargs.number("nb_desc", setup.nb_desc, 1..=1 << 20)?;
        let probe = Probe {
            seg,
            devargs,
            setup,
            nb_desc,
            find,
            devices,
        };
        // Driver resources first: a bad file is an error before anything is reserved.
        let queues = driver.probe(&probe)?;
        if queues.rx > MAX_QUEUES || queues.tx > MAX_QUEUES {
            return Err(cfg(ConfigError::TooManyQueues { max: MAX_QUEUES }));
        }
        let pool = setup.rx_pool.mempool();
        let mut info = PortInfo {
            magic: PORT_MAGIC,
            layout_major: PORT_LAYOUT_MAJOR,
            layout_minor: PORT_LAYOUT_MINOR,
            info_size: PORT_INFO_SIZE as u32,
            port_id: setup.port_id,
            driver: driver.id().0,
            nb_rx_queues: queues.rx,
            nb_tx_queues: queues.tx,
            nb_desc,
            rx_pool_id: pool.id(),
            mac: setup
                .mac
                .unwrap_or([0x02, 0x53, 0x48, 0x4d, 0x00, setup.port_id as u8]),
            reserved0: [0; 2],
            devargs_len: devargs.text.len() as u32,
            name: shm::layout::encode_name(name).ok_or_else(|| {
                cfg(ConfigError::BadName {
                    name: name.to_string(),
                })
            })?,
            rx_pool: shm::layout::encode_name(pool.name()).ok_or_else(|| {
                cfg(ConfigError::BadName {
                    name: pool.name().to_string(),
                })
            })?,
            devargs: [0; DEVARGS_LEN],
            reserved: [0; 84],
        };
        info.devargs[..devargs.text.len()].copy_from_slice(devargs.text.as_bytes());
        let zone = seg
            .reserve(name, PORT_BYTES, 64, MemzoneKind::Port)
            .map_err(|e| PortError::failed(name, "reserving its memzone", e))?;
        let r = zone.region();
        let written = |e: shm::OutOfBounds| PortError::failed(name, "writing its memzone", e);
        r.fill(zone.offset, PORT_BYTES, 0).map_err(written)?;
        r.write(zone.offset, &info).map_err(written)?;
        // What runs here starts last: nothing can fail after it but opening the port.
        driver.start(&probe, queues)?;
        let port = Port::open(&zone, find, devices).inspect_err(|_| driver.abandon(&probe))?;
        port.core.ctrl().link_up.store(1, Ordering::Relaxed);
        Ok(port)
    }

    /// Opens the port in `zone` (any process), validating it and finding its driver's
    /// resources (the devices this process runs: in `devices`, its table).
    ///
    /// # Errors
    /// [`PortError::BadPort`] naming what is wrong.
    pub fn open(
        zone: &Memzone,
        find: ZoneFinder<'_>,
        devices: &Devices,
    ) -> Result<Port<R>, PortError> {
        let bad = |why: BadPortReason| PortError::bad_port(&zone.name, why);
        let oob = |e: shm::OutOfBounds| PortError::broken(&zone.name, "its memzone", e);
        if zone.kind != MemzoneKind::Port || zone.len_bytes < PORT_BYTES {
            return Err(bad(BadPortReason::NotPort));
        }
        let r = zone.region();
        let info: PortInfo = r.read_copy(zone.offset).map_err(oob)?;
        if info.magic != PORT_MAGIC {
            return Err(bad(BadPortReason::Magic));
        }
        if info.layout_major != PORT_LAYOUT_MAJOR || u64::from(info.info_size) != PORT_INFO_SIZE {
            return Err(bad(BadPortReason::Layout {
                found: info.layout_major,
                reads: PORT_LAYOUT_MAJOR,
            }));
        }
        let driver = by_id::<R>(DriverId(info.driver))
            .ok_or_else(|| bad(BadPortReason::UnknownDriver { id: info.driver }))?;
        if info.nb_rx_queues > MAX_QUEUES || info.nb_tx_queues > MAX_QUEUES {
            return Err(bad(BadPortReason::QueueCounts));
        }
        let text = info
            .devargs
            .get(..info.devargs_len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad(BadPortReason::DevArgsText))?;
        let args =
            Args::parse_with(text, R::drivers()).map_err(|e| bad(BadPortReason::DevArgs(e)))?;
        if args.driver != driver.id() {
            return Err(bad(BadPortReason::DriverMismatch));
        }
        let drv = driver.attach(&Attach {
            info: &info,
            devargs: &args,
            find,
            devices,
        })?;
        let ctrl = r
            .span_of::<PortCtrl>(zone.offset + PORT_CTRL_OFF, 1)
            .map_err(oob)?;
        let queues = r
            .span_of::<QueueBlock>(zone.offset + QUEUES_OFF, 2 * u64::from(MAX_QUEUES))
            .map_err(oob)?;
        let inflight = r
            .span_of::<u64>(
                zone.offset + INFLIGHT_OFF,
                2 * u64::from(MAX_QUEUES) * INFLIGHT_MAX as u64,
            )
            .map_err(oob)?;
        Ok(Port {
            core: Arc::new(PortCore {
                _region: r.clone(),
                info,
                args,
                ctrl,
                queues,
                inflight,
                driver: drv,
            }),
            registry: PhantomData,
        })
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.core.info.port_id
    }

    /// Port name (e.g. `net_pcap0`).
    pub fn name(&self) -> &str {
        &self.core.args.name
    }

    /// Driver.
    pub fn driver(&self) -> DriverId {
        self.core.args.driver
    }

    /// The driver's name (`net_ring`...).
    pub fn driver_name(&self) -> &'static str {
        by_id::<R>(self.core.args.driver).map_or("?", |d| d.name())
    }

    /// The devargs it was probed with.
    pub fn devargs(&self) -> &str {
        &self.core.args.text
    }

    /// Rx queue count.
    pub fn nb_rx_queues(&self) -> u16 {
        self.core.info.nb_rx_queues
    }

    /// Tx queue count.
    pub fn nb_tx_queues(&self) -> u16 {
        self.core.info.nb_tx_queues
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.core.info.mac
    }

    /// Id of the pool rx queues allocate from.
    pub fn rx_pool_id(&self) -> u32 {
        self.core.info.rx_pool_id
    }

    /// Name of the pool rx queues allocate from.
    pub fn rx_pool_name(&self) -> String {
        shm::layout::decode_name(&self.core.info.rx_pool)
            .unwrap_or_default()
            .to_string()
    }

    /// Starts the port: queues deliver and accept packets.
    pub fn start(&self) {
        self.core.ctrl().started.store(1, Ordering::Release);
    }

    /// Stops the port: rx returns nothing, tx sends nothing.
    pub fn stop(&self) {
        self.core.ctrl().started.store(0, Ordering::Release);
    }

    /// True while started.
    pub fn is_started(&self) -> bool {
        self.core.is_started()
    }

    /// True while the link is up (virtual ports: always, once probed; a vhost port while
    /// its frontend is connected with every vring started).
    pub fn link_up(&self) -> bool {
        if let Some(up) = self.core.driver.link_up() {
            return up;
        }
        self.core.ctrl().link_up.load(Ordering::Relaxed) != 0
    }

    /// Sets promiscuous mode (recorded; virtual ports deliver everything anyway).
    pub fn set_promiscuous(&self, on: bool) {
        self.core
            .ctrl()
            .promiscuous
            .store(u32::from(on), Ordering::Relaxed);
    }

    /// Promiscuous mode.
    pub fn promiscuous(&self) -> bool {
        self.core.ctrl().promiscuous.load(Ordering::Relaxed) != 0
    }

    /// Sets all-multicast mode (recorded).
    pub fn set_all_multicast(&self, on: bool) {
        self.core
            .ctrl()
            .all_multicast
            .store(u32::from(on), Ordering::Relaxed);
    }

    /// All-multicast mode.
    pub fn all_multicast(&self) -> bool {
        self.core.ctrl().all_multicast.load(Ordering::Relaxed) != 0
    }

    /// Port statistics (sums) with per-queue figures.
    pub fn stats(&self) -> PortStats {
        let q = |i: usize| {
            let b = self.core.block(i);
            // Relaxed: numbers for a report; each counter minus its value at the last reset.
            let since = |c: &AtomicU64, base: &AtomicU64| {
                c.load(Ordering::Relaxed)
                    .wrapping_sub(base.load(Ordering::Relaxed))
            };
            QueueStats {
                packets: since(&b.packets, &b.reset_packets),
                bytes: since(&b.bytes, &b.reset_bytes),
                dropped: since(&b.dropped, &b.reset_dropped),
                errors: since(&b.errors, &b.reset_errors),
            }
        };
        let rx: Vec<QueueStats> = (0..self.nb_rx_queues() as usize).map(q).collect();
        let tx: Vec<QueueStats> = (0..self.nb_tx_queues() as usize)
            .map(|i| q(MAX_QUEUES as usize + i))
            .collect();
        PortStats {
            id: self.id(),
            name: self.name().to_string(),
            rx_packets: rx.iter().map(|s| s.packets).sum(),
            tx_packets: tx.iter().map(|s| s.packets).sum(),
            rx_bytes: rx.iter().map(|s| s.bytes).sum(),
            tx_bytes: tx.iter().map(|s| s.bytes).sum(),
            rx_dropped: rx.iter().map(|s| s.dropped).sum(),
            tx_dropped: tx.iter().map(|s| s.dropped).sum(),
            errors: rx.iter().chain(&tx).map(|s| s.errors).sum::<u64>() + self.driver_errors(),
            rx_queues: rx,
            tx_queues: tx,
        }
    }

    /// Errors the driver counts outside any queue, in the process that runs it: a vhost-user
    /// frontend that broke the protocol, stalled, or took its memory away (each cost it its
    /// connection).
    pub fn driver_errors(&self) -> u64 {
        self.core.driver.errors()
    }

    /// Zeroes every counter as reported: records each one's value as its baseline (the
    /// counters themselves have one writer, the queue's poller).
    pub fn reset_stats(&self) {
        for i in 0..2 * MAX_QUEUES as usize {
            let b = self.core.block(i);
            for (c, base) in [
                (&b.packets, &b.reset_packets),
                (&b.bytes, &b.reset_bytes),
                (&b.dropped, &b.reset_dropped),
                (&b.errors, &b.reset_errors),
            ] {
                // Relaxed: numbers for a report.
                base.store(c.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Pid polling each rx queue, then each tx queue (0 = none).
    pub fn pollers(&self) -> (Vec<u32>, Vec<u32>) {
        let pid = |i: usize| self.core.block(i).claim.pid();
        (
            (0..self.nb_rx_queues() as usize).map(pid).collect(),
            (0..self.nb_tx_queues() as usize)
                .map(|i| pid(MAX_QUEUES as usize + i))
                .collect(),
        )
    }

    /// Claims rx queue `queue` for this thread; received mbufs come from (file and
    /// copying drivers) or are adopted into (ring) `cache`, which must belong to the
    /// port's rx pool for the drivers that allocate.
    ///
    /// # Errors
    /// [`PortError::NoQueue`], [`PortError::QueueTaken`], [`PortError::WrongPool`] for a
    /// cache of the wrong pool, [`PortError::Io`] when the driver cannot open its file.
    pub fn rx_queue<'c>(
        &self,
        queue: u16,
        cache: &'c MbufCache,
    ) -> Result<RxQueue<'c, R>, PortError> {
        let mut q = QueueShm::claim(self.core.clone(), "rx", queue)?;
        let mut opened = Burst::default();
        let driver = self.core.driver.rx_queue(&mut q, cache, &mut opened)?;
        q.count(&opened);
        Ok(RxQueue::new(self.clone(), q, cache, driver))
    }

    /// Claims tx queue `queue` for this thread; `cache` is where mbufs that come back
    /// unsent are adopted again.
    ///
    /// # Errors
    /// As [`Port::rx_queue`].
    pub fn tx_queue<'c>(
        &self,
        queue: u16,
        cache: &'c MbufCache,
    ) -> Result<TxQueue<'c, R>, PortError> {
        let mut q = QueueShm::claim(self.core.clone(), "tx", queue)?;
        let mut opened = Burst::default();
        let driver = self.core.driver.tx_queue(&mut q, cache, &mut opened)?;
        q.count(&opened);
        Ok(TxQueue::new(self.clone(), q, cache, driver))
    }

    /// Stops what the driver runs in this process (a vhost-user backend's thread and
    /// socket); the primary calls it when it stops.
    pub fn stop_driver(&self) {
        self.core.driver.stop();
    }
}
