//! The port API: a port lives in a memzone of the primary's memseg ([`crate::layout`]);
//! any process opens it by name or id ([`Port::open`]) and polls the queues it claims.
//!
//! Model: the primary probes ports from devargs ([`Port::create`]), which creates what the
//! driver needs (rings, the output pcap file) and writes the port's description. A queue
//! has one poller at a time: [`Port::rx_queue`] / [`Port::tx_queue`] claim it in shared
//! memory with the caller's pid and start time, a second claim (in any process) is refused
//! with [`PortError::QueueTaken`], and the claim of a process that died is taken over. A
//! queue's driver state that must outlive a poller (the pcap reader's position) and its
//! statistics live in the queue block, so a new poller continues where the old one was.
//!
//! `rx_burst` fills a caller-owned vector (give it the capacity: nothing is allocated);
//! `tx_burst` sends from the front of one and removes what it sent: what is not sent stays
//! the caller's, as with DPDK's `rte_eth_tx_burst`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shm::{Memseg, Memzone, MemzoneKind, Region};
use shm_mempool::{GuestDrop, GuestPool, Mbuf, MbufCache, MbufHandle, MbufPool};
use shm_ring::{Ring, SyncMode};

use crate::devargs::{DevArgs, Driver};
use crate::layout::*;
use crate::pcap_file::{self, PcapWriter};

/// Port errors: each one line that says what and how to fix.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Bad devargs or configuration.
    #[error("{0}")]
    Config(String),
    /// The port's memzone is not a valid port.
    #[error("bad port: {0}")]
    BadPort(String),
    /// Another live process polls this queue.
    #[error("port {port} {dir} queue {queue} is polled by pid {pid}; stop that process or use another queue")]
    QueueTaken {
        /// Port name.
        port: String,
        /// "rx" or "tx".
        dir: &'static str,
        /// Queue index.
        queue: u16,
        /// The poller.
        pid: u32,
    },
    /// A queue index past the port's queues.
    #[error("port {port} has {have} {dir} queues; there is no queue {queue}")]
    NoQueue {
        /// Port name.
        port: String,
        /// "rx" or "tx".
        dir: &'static str,
        /// Asked.
        queue: u16,
        /// Available.
        have: u16,
    },
    /// I/O on a driver's file.
    #[error("port {port}: {what}: {source}")]
    Io {
        /// Port name.
        port: String,
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

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

pub use shm::stats::{PortStats, QueueStats};

/// What a process needs to find the driver's resources.
enum DriverRes {
    /// Rings per rx queue and per tx queue.
    Ring {
        rx: Vec<Ring<u64>>,
        tx: Vec<Ring<u64>>,
        /// Guest-facing port (`guest_pool=`): its rings are in an IVSHMEM export segment
        /// and packets are copied between this pool and the host's at the boundary.
        guest_pool: Option<MbufPool>,
    },
    /// Files or interfaces.
    Pcap {
        rx: Option<PcapEnd>,
        tx: Option<PcapEnd>,
    },
    /// The vhost-user backend, when it runs in this process (the primary's).
    Vhost {
        dev: Option<Arc<crate::vhost::VhostDevice>>,
    },
    /// The vhost-user frontend, when connected in this process (the primary's).
    VirtioUser {
        dev: Option<Arc<crate::vhost::frontend::VirtioUserDevice>>,
    },
}

/// Where a pcap port's rx or tx side goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PcapEnd {
    File(PathBuf),
    Iface(String),
}

/// Both sides of a pcap port, from its devargs.
struct PcapEnds {
    rx: Option<PcapEnd>,
    tx: Option<PcapEnd>,
}

impl PcapEnds {
    fn of(d: &DevArgs) -> Result<PcapEnds, String> {
        let iface = d.get("iface");
        let pick = |file: &str, ifc: &str| -> Result<Option<PcapEnd>, String> {
            let f = d.get(file).map(|p| PcapEnd::File(PathBuf::from(p)));
            let i = d.get(ifc).or(iface).map(|n| PcapEnd::Iface(n.to_string()));
            match (f, i) {
                (Some(_), Some(_)) => Err(format!("give {file}= or {ifc}=/iface=, not both")),
                (f, i) => Ok(f.or(i)),
            }
        };
        Ok(PcapEnds {
            rx: pick("rx_pcap", "rx_iface")?,
            tx: pick("tx_pcap", "tx_iface")?,
        })
    }
}

struct PortShared {
    _region: Region,
    info: PortInfo,
    name: String,
    devargs: DevArgs,
    ctrl: NonNull<PortCtrl>,
    queues: NonNull<QueueBlock>,
    /// The queues' in-flight records (`INFLIGHT_MAX` handles per queue block).
    inflight: NonNull<u64>,
    res: DriverRes,
}

// SAFETY: the pointers target shared memory kept mapped by `_region`; everything reached
// through them is atomics.
unsafe impl Send for PortShared {}
// SAFETY: as for Send.
unsafe impl Sync for PortShared {}

/// A port, opened in this process. Cheap to clone.
#[derive(Clone)]
pub struct Port {
    shared: Arc<PortShared>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.shared.info.port_id)
            .field("name", &self.shared.name)
            .finish()
    }
}

/// Finds a memzone by name in any memseg of the process group.
pub type ZoneFinder<'a> = &'a dyn Fn(&str) -> Option<Memzone>;

impl Port {
    /// A `net_ring` port over existing rings (DPDK's `rte_eth_from_rings`): rx queue `i`
    /// dequeues from ring `rx[i]`, tx queue `i` enqueues into `tx[i]`. The same ring as rx
    /// and tx makes a loopback; two ports with their rings swapped make a cross-connected
    /// pair, usable from any processes.
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
    ) -> Result<Port, PortError> {
        let mut text = name.to_string();
        for r in rx {
            text += &format!(",rx_ring={r}");
        }
        for t in tx {
            text += &format!(",tx_ring={t}");
        }
        let devargs = DevArgs::parse(&text).map_err(PortError::Config)?;
        if devargs.driver != Driver::Ring {
            return Err(PortError::Config(format!(
                "{name}: from_rings makes net_ring ports (name it net_ringN)"
            )));
        }
        Port::create(seg, &devargs, setup, find)
    }

    /// Probes a port (primary): creates its memzone in `seg` and whatever its driver needs.
    ///
    /// # Errors
    /// [`PortError::Config`] for bad devargs values, unusable files or no room.
    pub fn create(
        seg: &Memseg,
        devargs: &DevArgs,
        setup: &PortSetup,
        find: ZoneFinder<'_>,
    ) -> Result<Port, PortError> {
        let cfg = |why: String| PortError::Config(format!("{}: {why}", devargs.name));
        let (nb_rx, nb_tx) = match devargs.driver {
            Driver::Ring => {
                let q = devargs
                    .number("queues", 1, 1..=u32::from(MAX_QUEUES))
                    .map_err(PortError::Config)?;
                let (rx_rings, tx_rings) = (devargs.get_all("rx_ring"), devargs.get_all("tx_ring"));
                let named = !rx_rings.is_empty() || !tx_rings.is_empty();
                if named && devargs.get("queues").is_some() {
                    return Err(cfg(
                        "with rx_ring=/tx_ring= there is one queue per ring; drop queues=".into(),
                    ));
                }
                if rx_rings.len() > MAX_QUEUES as usize || tx_rings.len() > MAX_QUEUES as usize {
                    return Err(cfg(format!("at most {MAX_QUEUES} rings per direction")));
                }
                if named {
                    (rx_rings.len() as u16, tx_rings.len() as u16)
                } else {
                    (q as u16, q as u16)
                }
            }
            Driver::Pcap => {
                let p = PcapEnds::of(devargs).map_err(cfg)?;
                if p.rx.is_none() && p.tx.is_none() {
                    return Err(cfg(
                        "give rx_pcap=FILE and/or tx_pcap=FILE, or iface=/rx_iface=/tx_iface=IFACE"
                            .into(),
                    ));
                }
                (u16::from(p.rx.is_some()), u16::from(p.tx.is_some()))
            }
            Driver::Vhost => {
                let q = devargs
                    .number(
                        "queues",
                        1,
                        1..=u32::from(crate::vhost::backend::MAX_QUEUE_PAIRS),
                    )
                    .map_err(PortError::Config)?;
                (q as u16, q as u16)
            }
            Driver::VirtioUser => {
                let q = devargs
                    .number(
                        "queues",
                        1,
                        1..=u32::from(crate::vhost::backend::MAX_QUEUE_PAIRS),
                    )
                    .map_err(PortError::Config)?;
                (q as u16, q as u16)
            }
        };
        let nb_desc = devargs
            .number("nb_desc", setup.nb_desc, 1..=1 << 20)
            .map_err(PortError::Config)?;
        // Driver resources first: a bad file is an error before anything is reserved.
        match devargs.driver {
            Driver::Ring => {
                if devargs.get("rx_ring").is_none() && devargs.get("tx_ring").is_none() {
                    for q in 0..nb_rx {
                        Ring::<u64>::create(
                            seg,
                            &ring_name(&devargs.name, q),
                            nb_desc,
                            SyncMode::SP_SC,
                        )
                        .map_err(|e| cfg(e.to_string()))?;
                    }
                }
            }
            Driver::Pcap => {
                for key in ["iface", "rx_iface", "tx_iface"] {
                    if let Some(name) = devargs.get(key) {
                        crate::af_packet::ifindex(name)
                            .map_err(|e| cfg(format!("{key}={name}: {e}")))?;
                    }
                }
                if let Some(rx) = devargs.get("rx_pcap") {
                    pcap_file::PcapReader::open(Path::new(rx), 0)
                        .map_err(|e| cfg(format!("rx_pcap {rx}: {e}")))?;
                }
                if let Some(tx) = devargs.get("tx_pcap") {
                    std::fs::write(tx, pcap_file::file_header())
                        .map_err(|e| cfg(format!("tx_pcap {tx}: {e}")))?;
                }
            }
            Driver::Vhost => {
                let path = devargs.get("iface").ok_or_else(|| {
                    cfg("give iface=/path/to/socket (the vhost-user socket)".into())
                })?;
                let client = match devargs.get("client") {
                    None | Some("0") => false,
                    Some("1") => true,
                    Some(v) => return Err(cfg(format!("client={v}: expected 0 or 1"))),
                };
                if crate::vhost::backend::find(Path::new(path)).is_some() {
                    return Err(cfg(format!("iface {path} is served by another port")));
                }
                let _ = client;
            }
            Driver::VirtioUser => {
                let path = devargs.get("path").ok_or_else(|| {
                    cfg("give path=/path/to/socket (the vhost-user backend's socket)".into())
                })?;
                if crate::vhost::frontend::find(Path::new(path)).is_some() {
                    return Err(cfg(format!("path {path} is used by another port")));
                }
                let size = devargs
                    .number("queue_size", 256, 16..=32768)
                    .map_err(PortError::Config)?;
                if !size.is_power_of_two() {
                    return Err(cfg(format!("queue_size={size} must be a power of two")));
                }
            }
        }
        let pool = setup.rx_pool.mempool();
        let mut info = PortInfo {
            magic: PORT_MAGIC,
            layout_major: PORT_LAYOUT_MAJOR,
            layout_minor: PORT_LAYOUT_MINOR,
            info_size: PORT_INFO_SIZE as u32,
            port_id: setup.port_id,
            driver: devargs.driver as u16,
            nb_rx_queues: nb_rx,
            nb_tx_queues: nb_tx,
            nb_desc,
            rx_pool_id: pool.id(),
            mac: setup
                .mac
                .unwrap_or([0x02, 0x53, 0x48, 0x4d, 0x00, setup.port_id as u8]),
            reserved0: [0; 2],
            devargs_len: devargs.text.len() as u32,
            name: shm::layout::encode_name(&devargs.name).ok_or_else(|| cfg("bad name".into()))?,
            rx_pool: shm::layout::encode_name(pool.name())
                .ok_or_else(|| cfg("bad pool name".into()))?,
            devargs: [0; DEVARGS_LEN],
            reserved: [0; 84],
        };
        info.devargs[..devargs.text.len()].copy_from_slice(devargs.text.as_bytes());
        let zone = seg
            .reserve(&devargs.name, PORT_BYTES, 64, MemzoneKind::Port)
            .map_err(|e| cfg(e.to_string()))?;
        // virtio-user: a memseg of its own (rings and buffer slots), the only memory the
        // backend is given; made before the port's memzone is written.
        let vu_mem = match devargs.driver {
            Driver::VirtioUser => {
                let size = devargs
                    .number("queue_size", 256, 16..=32768)
                    .map_err(PortError::Config)? as u16;
                Some((
                    crate::vhost::frontend::PortMemory::create(
                        &devargs.name,
                        2 * usize::from(nb_rx),
                        size,
                    )
                    .map_err(cfg)?,
                    size,
                ))
            }
            _ => None,
        };
        let r = zone.region();
        r.fill(zone.offset, PORT_BYTES, 0)
            .map_err(|e| cfg(e.to_string()))?;
        r.write(zone.offset, &info)
            .map_err(|e| cfg(e.to_string()))?;
        // The vhost backend starts last: nothing can fail after it but opening the port.
        let vhost = match devargs.driver {
            Driver::Vhost => {
                let path = Path::new(devargs.get("iface").expect("checked above"));
                let client = devargs.get("client") == Some("1");
                Some(crate::vhost::VhostDevice::start(path, nb_rx, client).map_err(cfg)?)
            }
            _ => None,
        };
        let virtio_user = match vu_mem {
            Some((mem, size)) => {
                let path = Path::new(devargs.get("path").expect("checked above"));
                Some(
                    crate::vhost::frontend::VirtioUserDevice::connect(
                        mem,
                        path,
                        nb_rx,
                        size,
                        std::time::Duration::from_secs(5),
                        crate::vhost::wire::process_stop(),
                    )
                    .map_err(cfg)?,
                )
            }
            None => None,
        };
        let port = Port::open(&zone, find).inspect_err(|_| {
            if let Some(d) = &vhost {
                crate::vhost::backend::stop(d);
            }
            if let Some(d) = &virtio_user {
                crate::vhost::frontend::stop(d);
            }
        })?;
        port.ctrl().link_up.store(1, Ordering::Relaxed);
        Ok(port)
    }

    /// Opens the port in `zone` (any process), validating it and finding its driver's
    /// resources.
    ///
    /// # Errors
    /// [`PortError::BadPort`] naming what is wrong.
    pub fn open(zone: &Memzone, find: ZoneFinder<'_>) -> Result<Port, PortError> {
        let bad = |why: String| PortError::BadPort(format!("{}: {why}", zone.name));
        if zone.kind != MemzoneKind::Port || zone.len_bytes < PORT_BYTES {
            return Err(bad("not a port memzone".into()));
        }
        let r = zone.region();
        let info: PortInfo = r.read_copy(zone.offset).map_err(|e| bad(e.to_string()))?;
        if info.magic != PORT_MAGIC {
            return Err(bad("bad magic".into()));
        }
        if info.layout_major != PORT_LAYOUT_MAJOR || u64::from(info.info_size) != PORT_INFO_SIZE {
            return Err(bad(format!(
                "layout version {} (this build reads {PORT_LAYOUT_MAJOR}); run primary and secondary from the same shmdp release",
                info.layout_major
            )));
        }
        let driver = Driver::from_u16(info.driver).ok_or_else(|| bad("unknown driver".into()))?;
        if info.nb_rx_queues > MAX_QUEUES || info.nb_tx_queues > MAX_QUEUES {
            return Err(bad("impossible queue counts".into()));
        }
        let text = info
            .devargs
            .get(..info.devargs_len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad("bad devargs text".into()))?;
        let devargs = DevArgs::parse(text).map_err(bad)?;
        if devargs.driver != driver {
            return Err(bad("devargs and driver disagree".into()));
        }
        let name = devargs.name.clone();
        let ring = |n: &str| -> Result<Ring<u64>, PortError> {
            let z = find(n).ok_or_else(|| {
                bad(format!(
                    "ring {n} not found; create it on the primary with --ring {n}=1024"
                ))
            })?;
            Ring::from_memzone(&z).map_err(|e| bad(format!("ring {n}: {e}")))
        };
        let res = match driver {
            Driver::Ring => {
                match (devargs.get("rx_ring"), devargs.get("tx_ring")) {
                    _ if devargs.get("guest_pool").is_some()
                        && devargs.get("rx_ring").is_none()
                        && devargs.get("tx_ring").is_none() =>
                    {
                        return Err(bad("guest_pool= needs rx_ring=/tx_ring= rings in the guest's export segment".into()));
                    }
                    // Named rings: one queue per ring, in order (from_rings).
                    (Some(_), _) | (_, Some(_)) => DriverRes::Ring {
                        rx: devargs
                            .get_all("rx_ring")
                            .into_iter()
                            .map(ring)
                            .collect::<Result<_, _>>()?,
                        tx: devargs
                            .get_all("tx_ring")
                            .into_iter()
                            .map(ring)
                            .collect::<Result<_, _>>()?,
                        guest_pool: match devargs.get("guest_pool") {
                            None => None,
                            Some(n) => {
                                let z = find(n)
                                    .ok_or_else(|| bad(format!("guest pool {n} not found")))?;
                                Some(
                                    shm_mempool::Mempool::from_memzone(&z)
                                        .and_then(MbufPool::from_mempool)
                                        .map_err(|e| bad(format!("guest pool {n}: {e}")))?,
                                )
                            }
                        },
                    },
                    // Loopback: queue q's rx and tx are the same ring.
                    (None, None) => DriverRes::Ring {
                        guest_pool: None,
                        rx: (0..info.nb_rx_queues)
                            .map(|q| ring(&ring_name(&name, q)))
                            .collect::<Result<_, _>>()?,
                        tx: (0..info.nb_tx_queues)
                            .map(|q| ring(&ring_name(&name, q)))
                            .collect::<Result<_, _>>()?,
                    },
                }
            }
            Driver::Pcap => {
                let p = PcapEnds::of(&devargs).map_err(bad)?;
                DriverRes::Pcap { rx: p.rx, tx: p.tx }
            }
            Driver::VirtioUser => {
                let path = devargs.get("path").ok_or_else(|| bad("no path=".into()))?;
                DriverRes::VirtioUser {
                    dev: crate::vhost::frontend::find(Path::new(path)),
                }
            }
            Driver::Vhost => {
                let path = PathBuf::from(
                    devargs
                        .get("iface")
                        .ok_or_else(|| bad("no iface=".into()))?,
                );
                DriverRes::Vhost {
                    dev: crate::vhost::backend::find(&path),
                }
            }
        };
        if let DriverRes::Ring { rx, tx, .. } = &res {
            if rx.len() != usize::from(info.nb_rx_queues)
                || tx.len() != usize::from(info.nb_tx_queues)
            {
                return Err(bad("queue counts do not match the devargs".into()));
            }
        }
        let oob = |e: shm::OutOfBounds| bad(e.to_string());
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
            shared: Arc::new(PortShared {
                _region: r.clone(),
                info,
                name,
                devargs,
                ctrl,
                queues,
                inflight,
                res,
            }),
        })
    }

    fn ctrl(&self) -> &PortCtrl {
        // SAFETY: bounds- and alignment-checked at open; kept mapped; atomics only.
        unsafe { self.shared.ctrl.as_ref() }
    }

    /// Queue block `i` (rx queues 0..MAX_QUEUES, tx queues after).
    /// The in-flight record of queue block `q` (its handles, raw: the poller writes them).
    fn inflight_slots(&self, q: usize) -> *mut u64 {
        debug_assert!(q < 2 * MAX_QUEUES as usize);
        self.shared
            .inflight
            .as_ptr()
            .wrapping_add(q.min(2 * MAX_QUEUES as usize - 1) * INFLIGHT_MAX)
    }

    /// Frees what a poller killed inside a burst left in queue block `q`'s in-flight
    /// record (handles in transit and in no ring); returns how many. `enqueued` is how
    /// many of the listed handles are known to have reached the ring (a single-producer
    /// ring's tail past the record's position): they are the ring's, not freed.
    fn recover_inflight(
        &self,
        q: usize,
        cache: &MbufCache,
        mut guest: Option<&mut GuestPool>,
        enqueued: usize,
    ) -> u64 {
        // Acquire: pairs with the Release that published the count, so the handles are seen.
        let n = self.block(q).inflight.swap(0, Ordering::Acquire) as usize;
        let mut freed = 0;
        for i in enqueued.min(n)..n.min(INFLIGHT_MAX) {
            // SAFETY: inside this queue's record (bounds-checked at open); the poller that
            // wrote it is gone and we hold the claim, so nobody writes it now.
            let h = MbufHandle(unsafe { self.inflight_slots(q).wrapping_add(i).read_volatile() });
            // Only handles still in transit were lost; anything else someone owns.
            let back = match guest.as_deref_mut() {
                Some(g) => g.discard(h.0).is_ok(),
                None => cache.adopt(h).is_ok(),
            };
            freed += u64::from(back);
        }
        if let Some(g) = guest {
            g.flush();
        }
        if freed > 0 {
            add(&self.block(q).dropped, freed);
            tracing::warn!(
                "{} rx queue {q}: freed {freed} mbufs a killed poller had taken off the ring",
                self.name()
            );
        }
        freed
    }

    fn block(&self, i: usize) -> &QueueBlock {
        assert!(i < 2 * MAX_QUEUES as usize);
        // SAFETY: `i < 2 * MAX_QUEUES` blocks, checked at open; atomics only.
        unsafe { &*self.shared.queues.as_ptr().wrapping_add(i) }
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.shared.info.port_id
    }

    /// Port name (e.g. `net_pcap0`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Driver.
    pub fn driver(&self) -> Driver {
        self.shared.devargs.driver
    }

    /// The devargs it was probed with.
    pub fn devargs(&self) -> &str {
        &self.shared.devargs.text
    }

    /// Rx queue count.
    pub fn nb_rx_queues(&self) -> u16 {
        self.shared.info.nb_rx_queues
    }

    /// Tx queue count.
    pub fn nb_tx_queues(&self) -> u16 {
        self.shared.info.nb_tx_queues
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.shared.info.mac
    }

    /// Id of the pool rx queues allocate from.
    pub fn rx_pool_id(&self) -> u32 {
        self.shared.info.rx_pool_id
    }

    /// Name of the pool rx queues allocate from.
    pub fn rx_pool_name(&self) -> String {
        shm::layout::decode_name(&self.shared.info.rx_pool)
            .unwrap_or_default()
            .to_string()
    }

    /// Starts the port: queues deliver and accept packets.
    pub fn start(&self) {
        self.ctrl().started.store(1, Ordering::Release);
    }

    /// Stops the port: rx returns nothing, tx sends nothing.
    pub fn stop(&self) {
        self.ctrl().started.store(0, Ordering::Release);
    }

    /// True while started.
    pub fn is_started(&self) -> bool {
        self.ctrl().started.load(Ordering::Acquire) != 0
    }

    /// True while the link is up (virtual ports: always, once probed).
    pub fn link_up(&self) -> bool {
        if let DriverRes::Vhost { dev: Some(d) } = &self.shared.res {
            // Up while a frontend is connected with every vring started.
            return d.ready();
        }
        if let DriverRes::VirtioUser { dev: Some(d) } = &self.shared.res {
            // Down for good once the backend took the port's memory away.
            if d.dropped() {
                return false;
            }
        }
        self.ctrl().link_up.load(Ordering::Relaxed) != 0
    }

    /// Sets promiscuous mode (recorded; virtual ports deliver everything anyway).
    pub fn set_promiscuous(&self, on: bool) {
        self.ctrl()
            .promiscuous
            .store(u32::from(on), Ordering::Relaxed);
    }

    /// Promiscuous mode.
    pub fn promiscuous(&self) -> bool {
        self.ctrl().promiscuous.load(Ordering::Relaxed) != 0
    }

    /// Sets all-multicast mode (recorded).
    pub fn set_all_multicast(&self, on: bool) {
        self.ctrl()
            .all_multicast
            .store(u32::from(on), Ordering::Relaxed);
    }

    /// All-multicast mode.
    pub fn all_multicast(&self) -> bool {
        self.ctrl().all_multicast.load(Ordering::Relaxed) != 0
    }

    /// Port statistics (sums) with per-queue figures.
    pub fn stats(&self) -> PortStats {
        let q = |i: usize| {
            let b = self.block(i);
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
        match &self.shared.res {
            // Relaxed: a counter.
            DriverRes::Vhost { dev: Some(d) } => d.protocol_errors.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Zeroes every counter as reported: records each one's value as its baseline (the
    /// counters themselves have one writer, the queue's poller).
    pub fn reset_stats(&self) {
        for i in 0..2 * MAX_QUEUES as usize {
            let b = self.block(i);
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
        let pid = |i: usize| self.block(i).owner_pid.load(Ordering::Relaxed);
        (
            (0..self.nb_rx_queues() as usize).map(pid).collect(),
            (0..self.nb_tx_queues() as usize)
                .map(|i| pid(MAX_QUEUES as usize + i))
                .collect(),
        )
    }

    fn claim(&self, dir: &'static str, queue: u16) -> Result<QueueClaim, PortError> {
        let (have, base) = if dir == "rx" {
            (self.nb_rx_queues(), 0)
        } else {
            (self.nb_tx_queues(), MAX_QUEUES as usize)
        };
        if queue >= have {
            return Err(PortError::NoQueue {
                port: self.name().to_string(),
                dir,
                queue,
                have,
            });
        }
        let index = base + queue as usize;
        let block = self.block(index);
        let me = std::process::id();
        let my_start = shm_mempool::process_start_time(me).unwrap_or(0);
        loop {
            let cur = block.owner_pid.load(Ordering::Acquire);
            if cur != 0 {
                let recorded = block.owner_start.load(Ordering::Acquire);
                let dead = shm_mempool::process_gone(cur)
                    || (recorded != 0
                        && shm_mempool::process_start_time(cur).is_some_and(|t| t != recorded));
                if !dead {
                    return Err(PortError::QueueTaken {
                        port: self.name().to_string(),
                        dir,
                        queue,
                        pid: cur,
                    });
                }
            }
            // AcqRel: the new poller sees the old one's position and counters.
            if block
                .owner_pid
                .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                block.owner_start.store(my_start, Ordering::Release);
                return Ok(QueueClaim {
                    port: self.clone(),
                    index,
                    pid: me,
                });
            }
        }
    }

    /// Claims rx queue `queue` for this thread; received mbufs come from (pcap) or are
    /// adopted into (ring) `cache`, which must belong to the port's rx pool for pcap.
    ///
    /// # Errors
    /// [`PortError::NoQueue`], [`PortError::QueueTaken`], [`PortError::Config`] for a
    /// cache of the wrong pool, [`PortError::Io`] when the pcap file cannot be mapped.
    pub fn rx_queue<'c>(&self, queue: u16, cache: &'c MbufCache) -> Result<RxQueue<'c>, PortError> {
        let claim = self.claim("rx", queue)?;
        let kind = match &self.shared.res {
            DriverRes::VirtioUser { dev } => {
                self.check_pool(cache)?;
                RxKind::VirtioUser(
                    crate::vhost::frontend::VirtioUserQueue::take(
                        self.virtio_user_here(dev)?,
                        2 * usize::from(queue),
                    )
                    .map_err(|e| self.cfg(e))?,
                )
            }
            DriverRes::Vhost { dev, .. } => {
                self.check_pool(cache)?;
                RxKind::Vhost(crate::vhost::VhostQueue::new(
                    self.vhost_here(dev)?,
                    2 * usize::from(queue) + 1,
                ))
            }
            DriverRes::Ring { rx, guest_pool, .. } => {
                let ring = &rx[queue as usize];
                RxKind::Ring(if guest_pool.is_some() {
                    // In the guest's segment: bounded host operations, private head (the
                    // queue claim above makes this the only host consumer).
                    RingRx::Untrusted(ring.untrusted_consumer())
                } else if ring.mode().single_consumer {
                    RingRx::Sc(crate::ring_port::ScRx {
                        cons: ring.sc_consumer().map_err(|e| self.cfg(e))?,
                        ring: ring.clone(),
                    })
                } else {
                    RingRx::Mc(ring.mc_consumer().map_err(|e| self.cfg(e))?)
                })
            }
            DriverRes::Pcap {
                rx: Some(PcapEnd::Iface(name)),
                ..
            } => {
                self.check_pool(cache)?;
                let sock = crate::af_packet::PacketSocket::open(name, true, false)
                    .map_err(|source| self.io(&format!("open interface {name}"), source))?;
                RxKind::Iface(sock)
            }
            DriverRes::Pcap { rx, .. } => {
                self.check_pool(cache)?;
                let Some(PcapEnd::File(path)) = rx.as_ref() else {
                    unreachable!("pcap rx queue exists only with rx_pcap or an interface")
                };
                let block = self.block(claim.index);
                let resume = block.position.load(Ordering::Acquire);
                let reader = pcap_file::PcapReader::open(path, resume).map_err(|e| {
                    PortError::Config(format!("{}: rx_pcap {}: {e}", self.name(), path.display()))
                })?;
                RxKind::Pcap(PcapRx {
                    reader,
                    done: false,
                })
            }
        };
        let mut guest = self.guest_pool(cache)?;
        if matches!(kind, RxKind::Ring(_)) {
            self.recover_inflight(claim.index, cache, guest.as_mut(), 0);
        }
        Ok(RxQueue {
            guest,
            port: self.clone(),
            claim,
            cache,
            kind,
        })
    }

    /// Claims tx queue `queue` for this thread; `cache` is where mbufs that come back
    /// unsent are adopted again.
    ///
    /// # Errors
    /// As [`Port::rx_queue`].
    pub fn tx_queue<'c>(&self, queue: u16, cache: &'c MbufCache) -> Result<TxQueue<'c>, PortError> {
        let claim = self.claim("tx", queue)?;
        let kind = match &self.shared.res {
            DriverRes::VirtioUser { dev } => TxKind::VirtioUser(
                crate::vhost::frontend::VirtioUserQueue::take(
                    self.virtio_user_here(dev)?,
                    2 * usize::from(queue) + 1,
                )
                .map_err(|e| self.cfg(e))?,
            ),
            DriverRes::Vhost { dev, .. } => TxKind::Vhost(crate::vhost::VhostQueue::new(
                self.vhost_here(dev)?,
                2 * usize::from(queue),
            )),
            DriverRes::Ring { tx, guest_pool, .. } => {
                let ring = &tx[queue as usize];
                TxKind::Ring(if guest_pool.is_some() {
                    // As for rx: bounded, private head, exclusive by the queue claim.
                    RingTx::Untrusted(ring.untrusted_producer())
                } else if ring.mode().single_producer {
                    RingTx::Sp(crate::ring_port::SpTx::new(
                        ring.clone(),
                        ring.sp_producer().map_err(|e| self.cfg(e))?,
                        cache.owner(),
                    ))
                } else {
                    RingTx::Mp(ring.mp_producer().map_err(|e| self.cfg(e))?)
                })
            }
            DriverRes::Pcap {
                tx: Some(PcapEnd::Iface(name)),
                ..
            } => {
                let sock = crate::af_packet::PacketSocket::open(name, false, true)
                    .map_err(|source| self.io(&format!("open interface {name}"), source))?;
                TxKind::Iface(sock)
            }
            DriverRes::Pcap { tx, .. } => {
                let Some(PcapEnd::File(path)) = tx.as_ref() else {
                    unreachable!("pcap tx queue exists only with tx_pcap or an interface")
                };
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|source| self.io("open tx_pcap", source))?;
                TxKind::Pcap(PcapWriter::append(BufWriter::with_capacity(1 << 18, file)))
            }
        };
        match &kind {
            TxKind::Ring(RingTx::Sp(sp)) => {
                // Relaxed: the previous poller's claim release (Release) ordered it.
                let from = self.block(claim.index).tx_from.load(Ordering::Relaxed);
                let enqueued = sp.ring.prod_tail().wrapping_sub(from) as usize;
                self.recover_inflight(claim.index, cache, None, enqueued);
            }
            TxKind::Ring(_) => {
                self.recover_inflight(claim.index, cache, None, 0);
            }
            _ => {}
        }
        Ok(TxQueue {
            guest: self.guest_pool(cache)?,
            port: self.clone(),
            claim,
            cache,
            kind,
            handles: vec![0; MAX_BURST].into_boxed_slice(),
        })
    }

    /// Stops what the driver runs in this process (a vhost-user backend's thread and
    /// socket); the primary calls it when it stops.
    pub fn stop_driver(&self) {
        match &self.shared.res {
            DriverRes::Vhost { dev: Some(d) } => crate::vhost::backend::stop(d),
            DriverRes::VirtioUser { dev: Some(d) } => crate::vhost::frontend::stop(d),
            _ => {}
        }
    }

    /// The virtio-user device of this port, if this process connected it.
    fn virtio_user_here(
        &self,
        dev: &Option<Arc<crate::vhost::frontend::VirtioUserDevice>>,
    ) -> Result<Arc<crate::vhost::frontend::VirtioUserDevice>, PortError> {
        dev.clone().ok_or_else(|| {
            PortError::Config(format!(
                "{}: a net_virtio_user port is polled in the primary, which owns its connection: forward with shmdp-primary --fwd",
                self.name()
            ))
        })
    }

    /// The vhost backend of this port, if this process runs it (the guest's memory is
    /// mapped only there).
    fn vhost_here(
        &self,
        dev: &Option<Arc<crate::vhost::VhostDevice>>,
    ) -> Result<Arc<crate::vhost::VhostDevice>, PortError> {
        dev.clone().ok_or_else(|| {
            PortError::Config(format!(
                "{}: a net_vhost port is polled in the primary, where the frontend's memory is mapped: forward with shmdp-primary --fwd",
                self.name()
            ))
        })
    }

    /// For a guest-facing ring port, the host's handle on the guest's pool: the only way
    /// the host reads or writes guest-writable mbufs (copies through a choke point; no
    /// cache slot, those live in guest-writable memory too).
    fn guest_pool(&self, host: &MbufCache) -> Result<Option<GuestPool>, PortError> {
        match &self.shared.res {
            DriverRes::Ring {
                guest_pool: Some(pool),
                ..
            } => GuestPool::open(pool, host.owner())
                .map(Some)
                .map_err(|e| self.cfg(e)),
            _ => Ok(None),
        }
    }

    fn check_pool(&self, cache: &MbufCache) -> Result<(), PortError> {
        if cache.pool().mempool().id() != self.rx_pool_id() {
            return Err(PortError::Config(format!(
                "{}: rx queue needs a cache of pool {}",
                self.name(),
                self.rx_pool_name()
            )));
        }
        Ok(())
    }

    fn cfg(&self, e: impl std::fmt::Display) -> PortError {
        PortError::Config(format!("{}: {e}", self.name()))
    }

    fn io(&self, what: &str, source: std::io::Error) -> PortError {
        PortError::Io {
            port: self.name().to_string(),
            what: what.to_string(),
            source,
        }
    }
}

/// Name of the ring behind queue `q` of a `net_ring` port made without named rings.
pub fn ring_name(port: &str, q: u16) -> String {
    format!("{port}_q{q}")
}

/// A claimed queue; released on drop.
struct QueueClaim {
    port: Port,
    index: usize,
    pid: u32,
}

impl QueueClaim {
    fn block(&self) -> &QueueBlock {
        self.port.block(self.index)
    }

    /// Adds to the queue's counters. Relaxed: counters publish no data, they are numbers
    /// read for reports; plain load and store, as the claim makes this the only writer
    /// (a reset moves the baselines, never the counters).
    #[inline(always)]
    fn count(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            let b = self.block();
            add(&b.packets, packets);
            if bytes > 0 {
                add(&b.bytes, bytes);
            }
        }
    }

    #[cold]
    fn bump(&self, counter: fn(&QueueBlock) -> &AtomicU64, n: u64) {
        add(counter(self.block()), n);
    }
}

/// Adds to a counter with one writer (the queue's poller). Relaxed: a number.
#[inline(always)]
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Drop for QueueClaim {
    fn drop(&mut self) {
        let b = self.block();
        b.owner_start.store(0, Ordering::Relaxed);
        // Release: the next poller sees our position and counters.
        let _ = b
            .owner_pid
            .compare_exchange(self.pid, 0, Ordering::Release, Ordering::Relaxed);
    }
}

enum RingRx {
    Sc(crate::ring_port::ScRx),
    Mc(shm_ring::McConsumer<u64>),
    /// A ring in a guest's export segment (guest-facing port).
    Untrusted(shm_ring::UntrustedConsumer<u64>),
}

enum RingTx {
    Sp(crate::ring_port::SpTx),
    Mp(shm_ring::MpProducer<u64>),
    /// A ring in a guest's export segment (guest-facing port).
    Untrusted(shm_ring::UntrustedProducer<u64>),
}

struct PcapRx {
    reader: pcap_file::PcapReader,
    done: bool,
}

enum RxKind {
    Ring(RingRx),
    Pcap(PcapRx),
    Iface(crate::af_packet::PacketSocket),
    Vhost(crate::vhost::VhostQueue),
    VirtioUser(crate::vhost::frontend::VirtioUserQueue),
}

enum TxKind {
    Ring(RingTx),
    Pcap(PcapWriter<BufWriter<File>>),
    Iface(crate::af_packet::PacketSocket),
    Vhost(crate::vhost::VhostQueue),
    VirtioUser(crate::vhost::frontend::VirtioUserQueue),
}

/// Most packets one burst moves.
pub const MAX_BURST: usize = 512;

impl std::fmt::Debug for RxQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RxQueue({} rx {})", self.port.name(), self.claim.index)
    }
}

impl std::fmt::Debug for TxQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.claim.index - MAX_QUEUES as usize;
        write!(f, "TxQueue({} tx {q})", self.port.name())
    }
}

/// A claimed rx queue.
pub struct RxQueue<'c> {
    port: Port,
    claim: QueueClaim,
    cache: &'c MbufCache,
    kind: RxKind,
    /// Guest-facing ports: the guest's pool (packets are copied out of it).
    guest: Option<GuestPool>,
}

impl<'c> RxQueue<'c> {
    /// The port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// io forwarding of up to `max` packets from this queue to `tx` without making mbufs,
    /// where it can be done: both are ring queues of host processes and every packet
    /// waiting is a local entry of this process (it sent them: a loopback forwarded by one
    /// lcore, testpmd's io over `net_ring`). The handles move from ring to ring; both
    /// ports count them. `None`: use [`rx_burst`](Self::rx_burst) and
    /// [`TxQueue::tx_burst`] (nothing was taken). `Some((received, sent))`: those not sent
    /// (the tx ring was full) are in `unsent` (give it the capacity of a burst), to drop.
    #[inline]
    pub fn forward_to(
        &mut self,
        tx: &mut TxQueue<'c>,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
    ) -> Option<(usize, usize)> {
        if self.guest.is_some() || tx.guest.is_some() || !tx.port.is_started() {
            return None;
        }
        let (RxKind::Ring(RingRx::Sc(rx)), TxKind::Ring(RingTx::Sp(sp))) =
            (&mut self.kind, &mut tx.kind)
        else {
            return None;
        };
        if !self.port.is_started() {
            return Some((0, 0));
        }
        let (n, sent) = crate::ring_port::forward_local(rx, sp, self.cache, max, unsent)?;
        if n > 0 {
            self.claim.count(n as u64, 0);
            tx.claim.count(sent as u64, 0);
        }
        Some((n, sent))
    }

    /// Receives up to `max` packets (at most [`MAX_BURST`]) into `out`; returns how many.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf<'c>>, max: usize) -> usize {
        if !self.port.is_started() {
            return 0;
        }
        let max = max.min(MAX_BURST);
        let port_id = self.port.id();
        let mut bytes = 0u64;
        let start = out.len();
        match &mut self.kind {
            RxKind::Ring(RingRx::Sc(sc)) if self.guest.is_none() => {
                // Pointer speed between host processes (ring_port.rs): packets counted,
                // headers untouched when this process produced them.
                let done = sc.rx_burst(self.cache, out, max);
                if done.refused > 0 || done.corrupt {
                    self.claim
                        .bump(|b| &b.errors, done.refused + u64::from(done.corrupt));
                }
                let n = out.len() - start;
                self.claim.count(n as u64, 0);
                return n;
            }
            RxKind::Ring(ring) => {
                // The handles go straight into the queue's in-flight record in shared
                // memory, so a poller killed before adopting them all loses nothing: the
                // next one to claim the queue frees them (`recover_inflight`).
                // SAFETY: this queue's record (bounds-checked at open); we hold the
                // queue's claim, so only this thread writes it.
                let handles = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.port.inflight_slots(self.claim.index),
                        INFLIGHT_MAX,
                    )
                };
                let max = max.min(INFLIGHT_MAX);
                let got = match ring {
                    RingRx::Sc(c) => c.cons.dequeue_burst(&mut handles[..max]),
                    RingRx::Mc(c) => c.dequeue_burst(&mut handles[..max]),
                    RingRx::Untrusted(c) => c.dequeue_burst(&mut handles[..max]),
                }
                .unwrap_or_else(|_| {
                    self.claim.bump(|b| &b.errors, 1);
                    0
                });
                // Release: the handles above before the count that lists them.
                let inflight = &self.claim.block().inflight;
                inflight.store(got as u32, Ordering::Release);
                let (mut refused, mut nombuf) = (0, 0);
                for &h in &handles[..got] {
                    let adopted = match &mut self.guest {
                        // Guest-facing: the packet lives in guest-writable memory; the
                        // guest pool's choke point validates it and copies it into a host
                        // mbuf (no later change by the guest can reach it), and gives the
                        // guest's buffers back.
                        Some(g) => match g.receive(h, self.cache) {
                            Ok(m) => Ok(m),
                            Err(GuestDrop::NoBuffer) => {
                                nombuf += 1;
                                continue;
                            }
                            Err(_) => {
                                refused += 1;
                                continue;
                            }
                        },
                        None => self.cache.adopt(MbufHandle(h)),
                    };
                    match adopted {
                        Ok(mut m) => {
                            m.set_port(port_id);
                            bytes += u64::from(m.pkt_len());
                            out.push(m);
                        }
                        Err(_) => refused += 1,
                    }
                }
                if let Some(g) = &mut self.guest {
                    // Before the record is cleared: a poller killed in between leaves
                    // handles that are no longer in transit, which recovery refuses.
                    g.flush();
                }
                if refused > 0 {
                    self.claim.bump(|b| &b.errors, refused);
                }
                if nombuf > 0 {
                    self.claim.bump(|b| &b.dropped, nombuf);
                }
                // Every listed handle is adopted (or refused): the record is empty again.
                inflight.store(0, Ordering::Release);
            }
            RxKind::Vhost(q) => {
                let o = q.receive(self.cache, out, max);
                bytes = o.bytes;
                if o.bad_chains > 0 || o.broken {
                    self.claim
                        .bump(|b| &b.errors, o.bad_chains + u64::from(o.broken));
                }
                if o.dropped > 0 {
                    self.claim.bump(|b| &b.dropped, o.dropped);
                }
                for m in &mut out[start..] {
                    m.set_port(port_id);
                }
            }
            RxKind::VirtioUser(q) => {
                let o = q.receive(self.cache, out, max);
                bytes = o.bytes;
                if o.errors > 0 {
                    self.claim.bump(|b| &b.errors, o.errors);
                }
                if o.no_mbuf > 0 {
                    self.claim.bump(|b| &b.dropped, o.no_mbuf);
                }
                for m in &mut out[start..] {
                    m.set_port(port_id);
                }
            }
            RxKind::Pcap(p) => {
                let mut nombuf = 0;
                while out.len() - start < max && !p.done {
                    let before = p.reader.position();
                    match p.reader.next_record() {
                        Ok(Some(rec)) => match self.cache.alloc_from(rec.data) {
                            Ok(mut m) => {
                                m.set_port(port_id);
                                bytes += rec.data.len() as u64;
                                out.push(m);
                            }
                            Err(_) => {
                                // Retry this record on the next burst.
                                p.reader.rewind_to(before);
                                nombuf += 1;
                                break;
                            }
                        },
                        Ok(None) => p.done = true,
                        Err(e) => {
                            tracing::warn!(
                                "{}: rx_pcap: {e}; the packets before it were delivered",
                                self.port.name()
                            );
                            self.claim.bump(|b| &b.errors, 1);
                            p.done = true;
                        }
                    }
                }
                if nombuf > 0 {
                    self.claim.bump(|b| &b.dropped, nombuf);
                }
                self.claim
                    .block()
                    .position
                    .store(p.reader.position(), Ordering::Release);
            }
            RxKind::Iface(sock) => {
                let mut nombuf = 0;
                let cache = self.cache;
                sock.recv_burst(max, |frame| match cache.alloc_from(frame) {
                    Ok(mut m) => {
                        m.set_port(port_id);
                        bytes += frame.len() as u64;
                        out.push(m);
                        true
                    }
                    Err(_) => {
                        nombuf += 1;
                        false
                    }
                });
                if nombuf > 0 {
                    self.claim.bump(|b| &b.dropped, nombuf);
                }
            }
        }
        let n = out.len() - start;
        self.claim.count(n as u64, bytes);
        n
    }

    /// True when the queue will never deliver more (a pcap file read to its end).
    pub fn exhausted(&self) -> bool {
        matches!(&self.kind, RxKind::Pcap(p) if p.done)
    }
}

/// A claimed tx queue.
pub struct TxQueue<'c> {
    port: Port,
    claim: QueueClaim,
    cache: &'c MbufCache,
    kind: TxKind,
    /// Scratch space for one burst of handles (allocated once, at claim time).
    handles: Box<[u64]>,
    /// Guest-facing ports: the guest's pool (packets are copied into it).
    guest: Option<GuestPool>,
}

impl<'c> TxQueue<'c> {
    /// The port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// Sends packets from the front of `pkts` and removes the ones sent (they belong to the
    /// port now); returns how many. What is not sent stays in `pkts`, the caller's.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf<'c>>) -> usize {
        if !self.port.is_started() || pkts.is_empty() {
            return 0;
        }
        let mut bytes = 0u64;
        let sent = match (&mut self.kind, &mut self.guest) {
            (TxKind::Ring(ring), Some(g)) => {
                let handles = &mut self.handles;
                // Copy into the guest's pool through its choke point: the guest can only
                // reach its own segment.
                let (mut k, mut i, mut too_long) = (0, 0, 0);
                while i < pkts.len() && k < handles.len() {
                    match g.send(&pkts[i]) {
                        Ok(h) => {
                            handles[k] = h;
                            k += 1;
                            i += 1;
                        }
                        Err(GuestDrop::TooLong) => {
                            // Cannot be sent to this guest at all: dropped (counted).
                            drop(pkts.remove(i));
                            too_long += 1;
                        }
                        Err(_) => break,
                    }
                }
                if too_long > 0 {
                    self.claim.bump(|b| &b.dropped, too_long);
                }
                let pushed = match ring {
                    RingTx::Sp(p) => p.prod.enqueue_burst(&handles[..k]),
                    RingTx::Mp(p) => p.enqueue_burst(&handles[..k]),
                    RingTx::Untrusted(p) => p.enqueue_burst(&handles[..k]),
                }
                .unwrap_or_else(|_| {
                    // Busy or corrupt (the guest broke its ring): counted, nothing sent.
                    self.claim.bump(|b| &b.errors, 1);
                    0
                });
                // Copies that did not fit go back to the guest pool; their originals stay
                // the caller's.
                for &h in &handles[pushed..k] {
                    let _ = g.discard(h);
                }
                g.flush();
                bytes = pkts[..pushed].iter().map(|m| u64::from(m.pkt_len())).sum();
                pkts.drain(..pushed);
                pushed
            }
            (TxKind::Ring(RingTx::Sp(sp)), None) => {
                // Pointer speed between host processes (ring_port.rs): packets counted.
                // SAFETY: this queue's record (bounds-checked at open); we hold the
                // queue's claim, so only this thread writes it.
                let record = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.port.inflight_slots(self.claim.index),
                        INFLIGHT_MAX,
                    )
                };
                let sent = sp.tx_burst(self.cache, pkts, Some((self.claim.block(), record)));
                self.claim.count(sent as u64, 0);
                return sent;
            }
            (TxKind::Ring(ring), None) => {
                // Shared mbufs cannot cross processes: the first one ends the burst.
                let k = pkts
                    .iter()
                    .take(MAX_BURST)
                    .take_while(|m| !m.is_shared())
                    .count();
                let k = k.min(INFLIGHT_MAX);
                // The handles are listed in the queue's in-flight record as they go into
                // transit, so a poller killed before the enqueue loses nothing: the next
                // one to claim the queue frees them (`recover_inflight`).
                // SAFETY: this queue's record (bounds-checked at open); we hold the
                // queue's claim, so only this thread writes it.
                let handles = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.port.inflight_slots(self.claim.index),
                        INFLIGHT_MAX,
                    )
                };
                let inflight = &self.claim.block().inflight;
                for (i, (slot, m)) in handles.iter_mut().zip(pkts.drain(..k)).enumerate() {
                    bytes += u64::from(m.pkt_len());
                    *slot = m.into_transit().expect("checked unshared").0;
                    // Release: the handle above before the count that lists it.
                    inflight.store(i as u32 + 1, Ordering::Release);
                }
                let pushed = match ring {
                    RingTx::Sp(p) => p.prod.enqueue_burst(&handles[..k]),
                    RingTx::Mp(p) => p.enqueue_burst(&handles[..k]),
                    RingTx::Untrusted(p) => p.enqueue_burst(&handles[..k]),
                }
                .unwrap_or(0);
                // Enqueued handles belong to the ring now: only the rest stay listed while
                // they are adopted back.
                handles.copy_within(pushed..k, 0);
                inflight.store((k - pushed) as u32, Ordering::Release);
                // Not enqueued: take them back (still ours, in transit) in order, in front.
                let back: Vec<Mbuf<'c>> = handles[..k - pushed]
                    .iter()
                    .filter_map(|&h| self.cache.adopt(MbufHandle(h)).ok())
                    .collect();
                inflight.store(0, Ordering::Release);
                if !back.is_empty() {
                    bytes -= back.iter().map(|m| u64::from(m.pkt_len())).sum::<u64>();
                    pkts.splice(0..0, back);
                }
                pushed
            }
            (TxKind::Vhost(q), _) => {
                let before = pkts.len();
                let o = q.send(pkts);
                if o.bad_chains > 0 || o.broken {
                    self.claim
                        .bump(|b| &b.errors, o.bad_chains + u64::from(o.broken));
                }
                if o.dropped > 0 {
                    self.claim.bump(|b| &b.dropped, o.dropped);
                }
                bytes = o.bytes;
                // Dropped ones (too large for the guest's buffers) left `pkts` too.
                self.claim.count(o.packets as u64, bytes);
                return before - pkts.len();
            }
            (TxKind::VirtioUser(q), _) => {
                let before = pkts.len();
                let o = q.send(pkts);
                if o.errors > 0 {
                    self.claim.bump(|b| &b.errors, o.errors);
                }
                if o.no_mbuf > 0 {
                    self.claim.bump(|b| &b.dropped, o.no_mbuf);
                }
                self.claim.count(o.packets as u64, o.bytes);
                return before - pkts.len();
            }
            (TxKind::Pcap(w), _) => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let mut k = 0;
                for m in pkts.iter() {
                    if w.write(ts, m.pkt_len() as usize, m.segments()).is_err() {
                        self.claim.bump(|b| &b.errors, 1);
                        break;
                    }
                    bytes += u64::from(m.pkt_len());
                    k += 1;
                }
                pkts.drain(..k);
                k
            }
            (TxKind::Iface(sock), _) => {
                let k = sock.send_burst(
                    pkts.iter()
                        .take(MAX_BURST)
                        .map(|m| (m.pkt_len() as usize, m.segments())),
                );
                bytes = pkts[..k].iter().map(|m| u64::from(m.pkt_len())).sum();
                pkts.drain(..k);
                k
            }
        };
        self.claim.count(sent as u64, bytes);
        sent
    }

    /// Flushes buffered output (pcap) so readers see every packet sent so far, and does
    /// what [`idle`](Self::idle) does.
    pub fn flush(&mut self) {
        if let TxKind::Pcap(w) = &mut self.kind {
            if w.flush().is_err() {
                self.claim.bump(|b| &b.errors, 1);
            }
        }
        self.idle();
    }

    /// Call when the lcore has nothing to do (cheap: a load or two): a guest-facing port
    /// gives back guest buffers it took for sending and lands a free-ring publication it
    /// had to leave pending behind a slow guest, which a guest waiting on its own free
    /// ring needs even when no traffic comes.
    pub fn idle(&mut self) {
        if let Some(g) = &mut self.guest {
            g.flush();
        }
        if let TxKind::Ring(RingTx::Untrusted(p)) = &mut self.kind {
            let _ = p.complete();
        }
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        self.flush();
        if let TxKind::Ring(RingTx::Sp(sp)) = &mut self.kind {
            sp.release();
        }
    }
}

#[cfg(test)]
#[path = "ethdev_tests.rs"]
mod tests;
