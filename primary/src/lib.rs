//! `primary`: the process that owns a shmdp process group's shared memory, as a library.
//!
//! [`Primary::start`] takes the prefix's lock (cleaning up after a crashed predecessor),
//! picks the backing store, creates the memsegs, reserves the requested memzones, creates
//! the rings and mbuf pools ([`PoolRegistry`]), sets up the IVSHMEM export groups (their
//! exported ports, guest views and metadata blocks: `export.rs`), probes the ports, marks
//! the memsegs ready and only then opens the control socket ([`ControlServer`]), so a
//! secondary that gets a greeting always finds ready memory. [`Primary::shutdown`] (or
//! dropping the value on an error path) marks the memsegs closing, tells the secondaries,
//! stops the ports' drivers and removes every file the run created, hugepage files
//! included.
//!
//! Where it sits: over `shm`, `shm-ring`, `shm-mempool` and `pmds`; it parses no command
//! line. The program `shmdp-primary` (in `shmdp-app`) turns its command line and config
//! file into a [`PrimaryConfig`] and runs this.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod control_server;
mod export;
mod pools;

use std::path::PathBuf;
use std::sync::Arc;

use shm::backing::{self, Backing};
use shm::control::MemsegRecord;
use shm::runtime::{PrimaryLock, RuntimeDir};
use shm::{Memseg, MemsegSpec, MemzoneKind};

pub use control_server::{ControlHooks, ControlServer, SecondaryEvent};
pub use pools::PoolRegistry;

/// Name of the memseg sized by `-m`.
pub const MAIN_MEMSEG: &str = "main";
/// Memzone every primary reserves in the main memseg, describing the run.
pub const RUN_INFO_ZONE: &str = "shmdp_run";

/// One extra memseg to create (`--memseg NAME=MiB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemsegRequest {
    /// Name.
    pub name: String,
    /// Requested size in bytes (rounded up to a power of two).
    pub size_bytes: u64,
}

/// One memzone to reserve at start (`--memzone NAME=SIZE[@MEMSEG]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemzoneRequest {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub len_bytes: u64,
    /// Memseg to reserve it in.
    pub memseg: String,
}

/// One ring to create at start (`--ring NAME=CAPACITY[:MODE][@MEMSEG]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingRequest {
    /// Name.
    pub name: String,
    /// Exact capacity in elements.
    pub capacity: u32,
    /// Producer/consumer mode.
    pub mode: shm_ring::SyncMode,
    /// Memseg to create it in.
    pub memseg: String,
}

/// An mbuf pool to create at start (`rte_pktmbuf_pool_create` style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolRequest {
    /// Name of the pool (its memzone).
    pub name: String,
    /// Number of mbufs.
    pub count: u32,
    /// Per-lcore cache size (0..=512).
    pub cache_size: u32,
    /// Data room bytes per mbuf.
    pub data_room: u32,
    /// Memseg to put it in.
    pub memseg: String,
}

/// Everything [`Primary::start`] needs.
#[derive(Debug, Clone)]
pub struct PrimaryConfig {
    /// Common process options.
    pub eal: shm::eal::EalOptions,
    /// Memsegs besides the main one.
    pub memsegs: Vec<MemsegRequest>,
    /// Memzones to reserve.
    pub memzones: Vec<MemzoneRequest>,
    /// Rings (of 8-byte handles) to create.
    pub rings: Vec<RingRequest>,
    /// Mbuf pools to create.
    pub mempools: Vec<MempoolRequest>,
    /// Ports to probe, in port-id order.
    pub vdevs: Vec<pmds::DevArgs>,
    /// Descriptors per port queue (ring capacity of `net_ring` queues).
    pub nb_desc: u32,
    /// IVSHMEM export groups.
    pub exports: Vec<ExportRequest>,
    /// Operator group (`--group NAME`): its members may attach; the runtime directory is
    /// 0750 and the files 0660, group NAME. `None`: this user (and root) only, 0700/0600.
    pub group: Option<String>,
}

/// An IVSHMEM export group: the memseg named `group` becomes one guest's segment, and its
/// metadata block names `items` (each must live in that memseg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The group (and its memseg's) name.
    pub group: String,
    /// What is exported: kind and object name.
    pub items: Vec<(ivshmem_meta::Kind, String)>,
}

/// Name of the memzone holding an export segment's metadata block (the first memzone of
/// the segment, at [`ivshmem_meta::META_OFFSET`]).
pub const EXPORT_META_ZONE: &str = "shmdp_ivshmem";

/// Name of the pool made for ports when no `--mempool` is given (as testpmd's).
pub const DEFAULT_POOL: &str = "mbuf_pool";

/// Errors of the primary. Each is one line saying what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// From the shm layer.
    #[error(transparent)]
    Shm(#[from] shm::Error),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The control socket could not be opened.
    #[error("control socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result of the primary.
pub type Result<T> = std::result::Result<T, PrimaryError>;

/// A running primary.
#[derive(Debug)]
pub struct Primary {
    lock: Option<PrimaryLock>,
    memsegs: Vec<Arc<Memseg>>,
    backing: Backing,
    control: Option<ControlServer>,
    fallback_warning: Option<String>,
    pools: Arc<PoolRegistry>,
    ports: Arc<std::sync::Mutex<Vec<pmds::Port>>>,
    /// The devices this process runs for its ports (vhost-user backends, virtio-user
    /// connections): this process's one table, passed to every port it probes.
    devices: pmds::ethdev::Devices,
    /// Names of the memsegs exported to guests.
    exported: Vec<String>,
}

impl Primary {
    /// Starts a primary as described above.
    ///
    /// # Errors
    /// Any [`PrimaryError`]; nothing is left on disk when one is returned.
    pub fn start(config: &PrimaryConfig) -> Result<Primary> {
        let eal = &config.eal;
        let mut requests = vec![MemsegRequest {
            name: MAIN_MEMSEG.into(),
            size_bytes: eal.memory_mib << 20,
        }];
        for m in &config.memsegs {
            shm::runtime::check_memseg_name(&m.name).map_err(PrimaryError::Config)?;
            if requests.iter().any(|r| r.name == m.name) {
                return Err(PrimaryError::Config(format!(
                    "memseg {:?} is given twice",
                    m.name
                )));
            }
            requests.push(m.clone());
        }
        for (i, e) in config.exports.iter().enumerate() {
            if e.group == MAIN_MEMSEG {
                return Err(PrimaryError::Config(format!(
                    "--ivshmem {}: the main memseg holds everything and cannot be exported; export a memseg of its own (--memseg vm1=16)",
                    e.group
                )));
            }
            if !requests.iter().any(|r| r.name == e.group) {
                return Err(PrimaryError::Config(format!(
                    "--ivshmem {0}: no memseg named {0}; add --memseg {0}=16 and create the exported objects in it (e.g. --ring {0}_rx=1024@{0})",
                    e.group
                )));
            }
            if config.exports[..i].iter().any(|o| o.group == e.group) {
                return Err(PrimaryError::Config(format!(
                    "--ivshmem {}: the group is given twice",
                    e.group
                )));
            }
        }
        for (i, d) in config.vdevs.iter().enumerate() {
            if config.vdevs[..i].iter().any(|e| e.name == d.name) {
                return Err(PrimaryError::Config(format!(
                    "--vdev {}: port name {} is given twice; number the instances (net_ring0, net_ring1, ...)",
                    d.text, d.name
                )));
            }
        }
        for z in &config.memzones {
            if !requests.iter().any(|r| r.name == z.memseg) {
                return Err(PrimaryError::Config(format!(
                    "memzone {:?} names memseg {:?}, which does not exist (memsegs: {})",
                    z.name,
                    z.memseg,
                    requests
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        // Take the prefix first: cleaning up a crashed run frees its hugepages before we
        // count the free ones.
        let access = match &config.group {
            Some(name) => shm::access::Access::for_group_name(name)?,
            None => shm::access::Access::private(),
        };
        let lock = PrimaryLock::acquire(&RuntimeDir::for_prefix(&eal.file_prefix), access)?;
        // The checked directory, by its canonical path.
        let dir = lock.dir().clone();
        if let Some(old) = lock.stale_owner() {
            tracing::warn!(
                "removed the files of a crashed run (pid {}, generation {}) of prefix {}",
                old.pid,
                old.generation,
                dir.prefix()
            );
        }
        // From here on, dropping `primary` on an error removes everything created.
        let mut primary = Primary {
            lock: Some(lock),
            memsegs: Vec::new(),
            backing: Backing::Shm {
                dir: PathBuf::from("/dev/shm"),
            },
            control: None,
            fallback_warning: None,
            pools: Arc::new(PoolRegistry::default()),
            ports: Arc::new(std::sync::Mutex::new(Vec::new())),
            devices: pmds::ethdev::Devices::new(),
            exported: config.exports.iter().map(|e| e.group.clone()).collect(),
        };
        // Size every memseg for the largest page size we might get, then pick the store.
        let max_page = backing::huge_mounts()
            .iter()
            .map(|m| m.page_size)
            .max()
            .unwrap_or(4096);
        let sizes_for = |page: u64| -> Result<Vec<u64>> {
            requests
                .iter()
                .map(|r| {
                    backing::memseg_size(r.size_bytes, page).ok_or_else(|| {
                        PrimaryError::Config(format!("memseg {} is too large", r.name))
                    })
                })
                .collect()
        };
        let (backing, warning) = backing::choose_backing(
            eal.huge_dir.as_deref(),
            eal.no_huge,
            &sizes_for(if eal.no_huge { 4096 } else { max_page })?,
        )?;
        let sizes = sizes_for(backing.page_size())?;
        primary.backing = backing.clone();
        primary.fallback_warning = warning;
        let generation = primary.lock.as_ref().expect("set").generation();
        for (i, (req, size)) in requests.iter().zip(&sizes).enumerate() {
            let path = backing.dir().join(dir.memseg_file_name(&req.name));
            let spec = MemsegSpec {
                name: req.name.clone(),
                id: i as u32,
                size_bytes: *size,
                path: path.clone(),
                page_size: backing.page_size(),
                hugetlb: backing.is_hugetlbfs(),
                creator_pid: std::process::id(),
                generation,
            };
            // Link first, so a crash between the two steps still leaves a findable file.
            let link = dir.memseg_link(&req.name);
            std::os::unix::fs::symlink(&path, &link).map_err(|e| shm::Error::Io {
                what: format!("link {}", link.display()),
                source: e,
            })?;
            let seg = Memseg::create_with_access(&spec, access)?;
            primary.memsegs.push(Arc::new(seg));
        }
        // Export segments get their metadata block first, so it sits at the documented offset.
        for e in &config.exports {
            let seg = primary
                .memsegs
                .iter()
                .find(|s| s.name() == e.group)
                .expect("checked above");
            let zone = seg.reserve(
                EXPORT_META_ZONE,
                ivshmem_meta::BLOCK_SIZE as u64,
                4096,
                MemzoneKind::Raw,
            )?;
            assert_eq!(
                zone.offset,
                ivshmem_meta::META_OFFSET,
                "first memzone of the segment"
            );
        }
        let run = primary.memsegs[0].reserve(RUN_INFO_ZONE, 64, 64, MemzoneKind::Raw)?;
        let info = [std::process::id() as u64, generation];
        run.region()
            .write(run.offset, &info)
            .map_err(shm::Error::from)?;
        for z in &config.memzones {
            let seg = primary
                .memsegs
                .iter()
                .find(|s| s.name() == z.memseg)
                .expect("checked above");
            seg.reserve(&z.name, z.len_bytes, 64, MemzoneKind::Raw)?;
        }
        for r in &config.rings {
            let seg = primary
                .memsegs
                .iter()
                .find(|s| s.name() == r.memseg)
                .expect("checked above");
            shm_ring::Ring::<u64>::create(seg, &r.name, r.capacity, r.mode)
                .map_err(|e| PrimaryError::Config(format!("ring {}: {e}", r.name)))?;
        }
        for p in &config.mempools {
            let seg = primary
                .memsegs
                .iter()
                .find(|s| s.name() == p.memseg)
                .ok_or_else(|| {
                    PrimaryError::Config(format!(
                        "mempool {:?} names memseg {:?}, which does not exist",
                        p.name, p.memseg
                    ))
                })?;
            let guest_writable = primary.is_exported(seg);
            primary
                .pools
                .create(seg, p, guest_writable)
                .map_err(|e| PrimaryError::Config(e.to_string()))?;
        }
        primary.check_unique_names()?;
        let mut exports = config.exports.clone();
        let mut vdevs = config.vdevs.clone();
        let exported_ports = primary.prepare_exported_ports(config, &mut exports, &mut vdevs)?;
        primary.qualify_guest_ports(&mut vdevs)?;
        if !vdevs.is_empty() {
            // Ports allocate from the first pool outside any export segment: a pool a guest
            // can write to is no place for host packets.
            let host_pool = config
                .mempools
                .iter()
                .find(|m| !config.exports.iter().any(|e| e.group == m.memseg))
                .and_then(|m| primary.pools.get(&m.name));
            let pool = match host_pool {
                Some(p) => p,
                None => {
                    let req = MempoolRequest {
                        name: DEFAULT_POOL.into(),
                        count: 8191,
                        cache_size: 256,
                        data_room: shm_mempool::DEFAULT_DATA_ROOM,
                        memseg: MAIN_MEMSEG.into(),
                    };
                    primary
                        .pools
                        .create(&primary.memsegs[0], &req, false)
                        .map_err(|e| {
                            PrimaryError::Config(format!("default mbuf pool: {e} (raise -m)"))
                        })?
                }
            };
            for (i, d) in vdevs.iter().enumerate() {
                let setup = pmds::PortSetup {
                    port_id: i as u16,
                    nb_desc: config.nb_desc,
                    rx_pool: pool.clone(),
                    mac: None,
                };
                let segs = primary.memsegs.clone();
                let exported = primary.exported.clone();
                let find = move |name: &str| {
                    let all = segs
                        .iter()
                        .map(|s| (&**s, exported.iter().any(|e| e == s.name())));
                    shm::names::resolve(all, name).ok()
                };
                let port =
                    pmds::Port::create(&primary.memsegs[0], d, &setup, &find, &primary.devices)
                        .map_err(|e| PrimaryError::Config(shm::error_chain(&e)))?;
                port.start();
                primary
                    .ports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(port);
            }
        }
        for p in &exported_ports {
            primary.create_guest_view(p, config.nb_desc)?;
        }
        for e in &exports {
            primary.write_export(e)?;
        }
        for seg in &primary.memsegs {
            seg.mark_ready();
        }
        let records = primary.memseg_records();
        primary.control = Some(ControlServer::start(
            &dir.socket_path(),
            records,
            generation,
            Arc::new(pools::Hooks {
                pools: primary.pools.clone(),
                ports: primary.ports.clone(),
            }),
            access,
        )?);
        Ok(primary)
    }

    /// Opens the ring of 8-byte handles named `name` in any memseg.
    ///
    /// # Errors
    /// [`shm_ring::RingError::BadRing`] if there is none.
    pub fn ring(
        &self,
        name: &str,
    ) -> std::result::Result<shm_ring::Ring<u64>, shm_ring::RingError> {
        let all = self.memsegs.iter().map(|s| (&**s, self.is_exported(s)));
        let zone = shm::names::resolve(all, name)
            .map_err(|e| shm_ring::RingError::BadRing(e.to_string()))?;
        shm_ring::Ring::from_memzone(&zone)
    }

    fn is_exported(&self, seg: &Memseg) -> bool {
        self.exported.iter().any(|e| e == seg.name())
    }

    /// Refuses a name reserved in two of the primary's own memsegs (export segments
    /// excepted: their objects are always named with their group, `NAME@GROUP`).
    fn check_unique_names(&self) -> Result<()> {
        let mut seen: Vec<(String, &str)> = Vec::new();
        for seg in self.memsegs.iter().filter(|s| !self.is_exported(s)) {
            for z in seg.memzones()? {
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == z.name) {
                    return Err(PrimaryError::Config(format!(
                        "{} is created in memsegs {other} and {}; give one of them another name",
                        z.name,
                        seg.name()
                    )));
                }
                seen.push((z.name, seg.name()));
            }
        }
        Ok(())
    }

    /// Creates an mbuf pool of `count` buffers with a per-lcore cache of `cache_size` and
    /// `data_room` bytes each (the primary's `rte_pktmbuf_pool_create`) in the main memseg,
    /// and registers it for statistics and reclaim.
    ///
    /// # Errors
    /// [`PrimaryError::Config`] for bad parameters, a duplicate name or no room.
    pub fn create_mbuf_pool(
        &self,
        name: &str,
        count: u32,
        cache_size: u32,
        data_room: u32,
    ) -> Result<shm_mempool::MbufPool> {
        let req = MempoolRequest {
            name: name.to_string(),
            count,
            cache_size,
            data_room,
            memseg: MAIN_MEMSEG.to_string(),
        };
        self.pools
            .create(&self.memsegs[0], &req, false)
            .map_err(|e| PrimaryError::Config(e.to_string()))
    }

    /// The mbuf pool named `name`.
    pub fn mbuf_pool(&self, name: &str) -> Option<shm_mempool::MbufPool> {
        self.pools.get(name)
    }

    /// The ports, by id.
    pub fn ports(&self) -> Vec<pmds::Port> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The pools this primary created (and reclaims for).
    pub fn pools(&self) -> &PoolRegistry {
        &self.pools
    }

    /// The memsegs, main first.
    pub fn memsegs(&self) -> &[Arc<Memseg>] {
        &self.memsegs
    }

    /// The backing store in use.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The warning to print when hugepages were wanted but /dev/shm is used.
    pub fn fallback_warning(&self) -> Option<&str> {
        self.fallback_warning.as_deref()
    }

    /// This run's generation.
    pub fn generation(&self) -> u64 {
        self.lock.as_ref().map_or(0, |l| l.generation())
    }

    /// The runtime directory.
    pub fn runtime_dir(&self) -> Option<&RuntimeDir> {
        self.lock.as_ref().map(|l| l.dir())
    }

    /// The control server (secondary slots and events).
    pub fn control(&self) -> Option<&ControlServer> {
        self.control.as_ref()
    }

    /// Describes the memsegs as the control protocol does.
    pub fn memseg_records(&self) -> Vec<MemsegRecord> {
        self.memsegs
            .iter()
            .map(|s| MemsegRecord {
                id: s.header().memseg_id,
                name: s.name().to_string(),
                path: s
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                size_bytes: s.size_bytes(),
                hugetlb: s.is_hugetlb(),
                exported: self.exported.iter().any(|g| g == s.name()),
            })
            .collect()
    }

    /// Stops: marks memsegs closing, tells secondaries, removes every file of the run.
    /// Returns how many memseg files were removed.
    pub fn shutdown(mut self) -> usize {
        self.teardown()
    }

    fn teardown(&mut self) -> usize {
        for seg in &self.memsegs {
            seg.set_state(shm::MemsegState::Closing);
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        for p in self.ports.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            p.stop_driver();
        }
        let n = self.memsegs.len();
        self.memsegs.clear();
        if let Some(lock) = self.lock.take() {
            lock.remove_run();
        }
        n
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.teardown();
    }
}
