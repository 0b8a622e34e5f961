//! `secondary`: attaching to a running primary, for the `shmdp-secondary` program and for
//! any application (on the host, later in a guest) built on shmdp.
//!
//! [`Secondary::attach`] finds the primary of a `--file-prefix` through its runtime
//! directory, checks that it is alive (its lock is held), greets it on the control socket,
//! and maps every memseg it lists at whatever address the kernel gives, validating each
//! header. Objects are then found by name with [`Secondary::lookup`]. The control
//! connection stays open while attached: the primary frees the secondary's slot when it
//! closes, and [`PrimaryWatch`] tells the secondary when the primary goes away. A guest
//! (or the host, with the segment file) opens an IVSHMEM export segment instead
//! ([`ivshmem`]); both give the objects through [`Dataplane`].
//!
//! Where it sits: over `shm`, `shm-ring`, `shm-mempool` and `pmds`; it parses no command
//! line. The programs and their tools are `shmdp-app`'s.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod dataplane;
pub mod ivshmem;

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use shm::control::{self, Reply, Request, Welcome, PROTOCOL_VERSION};
use shm::runtime::{FilePrefix, Liveness, RuntimeDir};
use shm::{Memseg, Memzone};

pub use dataplane::{Dataplane, ObjectError};

/// Why attaching failed. Each message is one line with the fix.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No primary has run with this prefix (or it shut down cleanly).
    #[error("no primary is running with --file-prefix {prefix}; start one with: shmdp-primary --file-prefix {prefix}")]
    NoPrimary {
        /// The prefix.
        prefix: String,
    },
    /// The primary's files exist but it is dead.
    #[error("the primary of --file-prefix {prefix} (pid {pid}) is dead (stale files); start a new one with: shmdp-primary --file-prefix {prefix}")]
    PrimaryDead {
        /// The prefix.
        prefix: String,
        /// Pid that held it.
        pid: u32,
    },
    /// The control socket could not be reached.
    #[error("cannot reach the primary's control socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The primary refused us.
    #[error("the primary refused to attach us: {0}")]
    Refused(String),
    /// The runtime directory or the process on the socket is not what this user can
    /// trust (another user's, a symlink, writable by others).
    #[error("{0}")]
    Untrusted(String),
    /// The primary answered something unexpected.
    #[error("control protocol error: {0}")]
    Protocol(String),
    /// A memseg could not be mapped or validated.
    #[error(transparent)]
    Memseg(#[from] shm::Error),
}

impl AttachError {
    /// True when attaching again shortly may work (the primary is starting up).
    pub fn is_retryable(&self) -> bool {
        match self {
            AttachError::Connect { .. } => true,
            AttachError::Memseg(e) => e.is_retryable(),
            AttachError::NoPrimary { .. }
            | AttachError::PrimaryDead { .. }
            | AttachError::Refused(_)
            | AttachError::Untrusted(_)
            | AttachError::Protocol(_) => false,
        }
    }
}

/// An attached secondary.
#[derive(Debug)]
pub struct Secondary {
    prefix: FilePrefix,
    conn: UnixStream,
    welcome: Welcome,
    memsegs: Vec<Memseg>,
    /// This process's device table, for the ports it opens (a secondary runs no device:
    /// vhost and virtio-user ports are polled in the primary).
    devices: pmds::ethdev::Devices,
    /// Per memseg: an IVSHMEM export segment (guest-writable, never trusted to be intact).
    exported: Vec<bool>,
}

impl Secondary {
    /// Attaches to the primary of `prefix`, retrying for up to two seconds while the
    /// primary is still starting.
    ///
    /// # Errors
    /// See [`AttachError`].
    pub fn attach(prefix: &FilePrefix, program: &str) -> Result<Secondary, AttachError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match Self::attach_once(prefix, program) {
                Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn attach_once(prefix: &FilePrefix, program: &str) -> Result<Secondary, AttachError> {
        // Nothing in the directory is believed before the directory itself is checked.
        let dir = match RuntimeDir::for_prefix(prefix).check_existing() {
            Ok(Some((dir, _owner))) => dir,
            Ok(None) => {
                return Err(AttachError::NoPrimary {
                    prefix: prefix.to_string(),
                })
            }
            Err(e) => return Err(untrusted(e)),
        };
        match dir.probe() {
            Liveness::NoRun => {
                return Err(AttachError::NoPrimary {
                    prefix: prefix.to_string(),
                })
            }
            Liveness::Stale { owner } => {
                return Err(AttachError::PrimaryDead {
                    prefix: prefix.to_string(),
                    pid: owner.map_or(0, |o| o.pid),
                })
            }
            Liveness::Alive { .. } => {}
        }
        // Checks the directory again and that the listener runs as its owner (SO_PEERCRED).
        let mut conn = control::connect(&dir).map_err(untrusted)?;
        let proto = |e: std::io::Error| AttachError::Protocol(e.to_string());
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(proto)?;
        let sent = control::send(
            &mut conn,
            &Request::Hello {
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
                program: program.to_string(),
            },
        );
        // A primary that refuses us may have answered and closed before our Hello landed:
        // its reason is worth more than the broken pipe.
        if let Err(e) = sent {
            return match control::recv::<Reply>(&mut conn) {
                Ok(Some(Reply::Refused { reason })) => Err(AttachError::Refused(reason)),
                _ => Err(proto(e)),
            };
        }
        let welcome =
            match control::recv::<Reply>(&mut conn).map_err(proto)? {
                Some(Reply::Welcome(w)) => w,
                Some(Reply::Refused { reason }) => return Err(AttachError::Refused(reason)),
                Some(Reply::Closing) | None => return Err(AttachError::Protocol(
                    "the primary closed the connection during the greeting (is it shutting down?)"
                        .into(),
                )),
                Some(other) => {
                    return Err(AttachError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )))
                }
            };
        conn.set_read_timeout(None).map_err(proto)?;
        let mut memsegs = Vec::with_capacity(welcome.memsegs.len());
        let mut exported = Vec::with_capacity(welcome.memsegs.len());
        for rec in &welcome.memsegs {
            let seg = match Memseg::attach(std::path::Path::new(&rec.path)) {
                Ok(seg) => seg,
                // A guest can write anything into its export segment, its memseg header
                // included: a ruined export costs this process that segment, nothing more.
                Err(e) if rec.exported => {
                    tracing::warn!(
                        "export segment {} is unusable ({e}); continuing without it",
                        rec.name
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if rec.exported
                && (seg.header().generation != welcome.generation
                    || seg.size_bytes() != rec.size_bytes)
            {
                tracing::warn!(
                    "export segment {} has a scribbled header; continuing without it",
                    rec.name
                );
                continue;
            }
            if seg.header().generation != welcome.generation || seg.size_bytes() != rec.size_bytes {
                return Err(AttachError::Memseg(shm::Error::BadMemseg(format!(
                    "{} belongs to generation {} but the primary runs generation {}",
                    rec.path,
                    seg.header().generation,
                    welcome.generation
                ))));
            }
            memsegs.push(seg);
            exported.push(rec.exported);
        }
        Ok(Secondary {
            prefix: prefix.clone(),
            conn,
            welcome,
            memsegs,
            devices: pmds::ethdev::Devices::new(),
            exported,
        })
    }

    /// The prefix attached to.
    pub fn prefix(&self) -> &FilePrefix {
        &self.prefix
    }

    /// Process slot the primary gave us.
    pub fn slot(&self) -> u32 {
        self.welcome.slot
    }

    /// The primary's pid.
    pub fn primary_pid(&self) -> u32 {
        self.welcome.primary_pid
    }

    /// The run's generation.
    pub fn generation(&self) -> u64 {
        self.welcome.generation
    }

    /// The mapped memsegs, in the primary's order.
    pub fn memsegs(&self) -> &[Memseg] {
        &self.memsegs
    }

    /// Finds a memzone by name ([`shm::names`]): `NAME` in the primary's own memsegs only
    /// (exactly one), `NAME@MEMSEG` in that memseg only (how an export group's objects are
    /// named: a guest rewriting its segment's table can never shadow a host object).
    ///
    /// # Errors
    /// [`shm::Error::NotFound`] if absent; [`shm::Error::BadMemseg`] if a table searched
    /// is corrupt (a scribbled export segment breaks only `NAME@that-export`).
    pub fn lookup(&self, name: &str) -> Result<Memzone, shm::Error> {
        shm::names::resolve(self.memsegs.iter().zip(self.exported.iter().copied()), name)
    }

    /// Opens the ring of 8-byte handles named `name` in any memseg.
    ///
    /// # Errors
    /// [`shm_ring::RingError::BadRing`] if absent or invalid.
    pub fn ring(&self, name: &str) -> Result<shm_ring::Ring<u64>, shm_ring::RingError> {
        let zone = self
            .lookup(name)
            .map_err(|e| shm_ring::RingError::BadRing(e.to_string()))?;
        shm_ring::Ring::from_memzone(&zone)
    }

    /// This process's owner tag: what its mbufs carry in their headers, so the primary can
    /// reclaim them if this process dies.
    pub fn owner_tag(&self) -> shm_mempool::OwnerTag {
        shm_mempool::OwnerTag(self.welcome.owner_tag)
    }

    /// Opens the mbuf pool named `name` in any memseg.
    ///
    /// # Errors
    /// [`shm_mempool::PoolError::BadPool`] if absent, invalid or not an mbuf pool.
    pub fn mbuf_pool(&self, name: &str) -> Result<shm_mempool::MbufPool, shm_mempool::PoolError> {
        let zone = self
            .lookup(name)
            .map_err(|e| shm_mempool::PoolError::BadPool(e.to_string()))?;
        shm_mempool::MbufPool::from_mempool(shm_mempool::Mempool::from_memzone(&zone)?)
    }

    /// True when `name` (as given to [`lookup`](Self::lookup)) is in an export segment
    /// (`NAME@GROUP` of an exported memseg): an object a guest can write.
    pub fn in_export(&self, name: &str) -> bool {
        let (_, seg) = shm::names::split_qualified(name);
        seg.is_some_and(|seg| {
            self.memsegs
                .iter()
                .zip(&self.exported)
                .any(|(m, &exported)| exported && m.name() == seg)
        })
    }

    /// A per-thread allocator on `pool`, opened as `name`: with a cache slot in the
    /// primary's own memsegs, without one in an export segment. An export pool's cache
    /// slots are guest-writable, so the primary never reads or flushes them when this
    /// process dies (it reclaims there through the guest-facing path only): nobody on the
    /// host holds one.
    ///
    /// # Errors
    /// [`shm_mempool::PoolError::NoCacheSlot`] when every cache slot is held.
    pub fn allocator(
        &self,
        name: &str,
        pool: &shm_mempool::MbufPool,
    ) -> Result<shm_mempool::MbufCache, shm_mempool::PoolError> {
        if self.in_export(name) {
            pool.uncached(self.owner_tag())
        } else {
            pool.cache(self.owner_tag())
        }
    }

    /// Every port of the process group, by id.
    ///
    /// # Errors
    /// [`pmds::PortError::BadPort`] when a port's memzone is invalid,
    /// [`pmds::PortError::Broken`] when a memseg's directory is.
    pub fn ports(&self) -> Result<Vec<pmds::Port>, pmds::PortError> {
        let find = |name: &str| self.lookup(name).ok();
        let mut ports = Vec::new();
        // Ports are never exported to guests: export segments are not searched.
        for (seg, _) in self
            .memsegs
            .iter()
            .zip(&self.exported)
            .filter(|(_, &exported)| !exported)
        {
            let zones = seg
                .memzones()
                .map_err(|e| pmds::PortError::broken(seg.name(), "its memzones", e))?;
            for z in zones.iter().filter(|z| z.kind == shm::MemzoneKind::Port) {
                ports.push(pmds::Port::open(z, &find, &self.devices)?);
            }
        }
        ports.sort_by_key(pmds::Port::id);
        Ok(ports)
    }

    /// Statistics of every port, as the primary reports them.
    ///
    /// # Errors
    /// If the primary cannot be reached or answers something else.
    pub fn port_stats(&self) -> std::io::Result<Vec<shm::stats::PortStats>> {
        let dir = shm::runtime::RuntimeDir::for_prefix(&self.prefix);
        match control::query(&dir, &Request::PortStats)? {
            Reply::PortStats(stats) => Ok(stats),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected answer to PortStats",
            )),
        }
    }

    /// Statistics of every mempool, as the primary reports them.
    ///
    /// # Errors
    /// If the primary cannot be reached or answers something else.
    pub fn pool_stats(&self) -> std::io::Result<Vec<shm::stats::PoolStats>> {
        pool_stats(&self.prefix)
    }

    /// Starts watching the control connection: the returned watch fires when the primary
    /// says it is closing or the connection drops (the primary died).
    ///
    /// # Errors
    /// If the connection cannot be duplicated.
    pub fn watch_primary(&self) -> std::io::Result<PrimaryWatch> {
        let mut conn = self.conn.try_clone()?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("primary-watch".into())
            .spawn(move || {
                let why = loop {
                    match control::recv::<Reply>(&mut conn) {
                        Ok(Some(Reply::Closing)) => break PrimaryGone::Closing,
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break PrimaryGone::Died,
                    }
                };
                let _ = tx.send(why);
            })?;
        Ok(PrimaryWatch { rx })
    }

    /// Detaches politely (the primary logs a detach rather than a death).
    pub fn detach(mut self) {
        let _ = control::send(&mut self.conn, &Request::Bye);
    }

    /// A description of everything attached to, for printing.
    pub fn info(&self) -> AttachInfo {
        AttachInfo {
            prefix: self.prefix.to_string(),
            primary_pid: self.primary_pid(),
            generation: self.generation(),
            slot: self.slot(),
            memsegs: self
                .memsegs
                .iter()
                .map(|s| MemsegInfo {
                    id: s.header().memseg_id,
                    name: s.name().to_string(),
                    path: s
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    size_bytes: s.size_bytes(),
                    hugetlb: s.is_hugetlb(),
                    mapped_at: format!("{:#x}", s.region().base_va()),
                    memzones: match s.memzones() {
                        Ok(zs) => zs
                            .into_iter()
                            .map(|z| MemzoneInfo {
                                name: z.name,
                                offset: z.offset,
                                len_bytes: z.len_bytes,
                                align: z.align,
                                kind: z.kind,
                            })
                            .collect(),
                        Err(_) => Vec::new(),
                    },
                })
                .collect(),
        }
    }
}

/// Sorts a failure of [`control::connect`] or of the directory check: an untrusted
/// directory or listener is final, an unreachable socket is retried.
fn untrusted(e: shm::Error) -> AttachError {
    match e {
        shm::Error::Io { what, source } => AttachError::Connect {
            path: what.strip_prefix("connect ").unwrap_or(&what).to_string(),
            source,
        },
        other => AttachError::Untrusted(other.to_string()),
    }
}

/// How the primary went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryGone {
    /// It announced a clean shutdown.
    Closing,
    /// The connection dropped without notice: it crashed or was killed.
    Died,
}

/// Notification that the primary is gone; see [`Secondary::watch_primary`].
#[derive(Debug)]
pub struct PrimaryWatch {
    rx: Receiver<PrimaryGone>,
}

impl PrimaryWatch {
    /// Waits up to `timeout`; `Some` once the primary is gone.
    pub fn wait(&self, timeout: Duration) -> Option<PrimaryGone> {
        match self.rx.recv_timeout(timeout) {
            Ok(g) => Some(g),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(PrimaryGone::Died),
        }
    }
}

/// What `shmdp-secondary info` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachInfo {
    /// Prefix.
    pub prefix: String,
    /// Primary pid.
    pub primary_pid: u32,
    /// Run generation.
    pub generation: u64,
    /// Our slot.
    pub slot: u32,
    /// Memsegs.
    pub memsegs: Vec<MemsegInfo>,
}

/// One memseg in [`AttachInfo`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemsegInfo {
    /// Index.
    pub id: u32,
    /// Name.
    pub name: String,
    /// File.
    pub path: String,
    /// Size.
    pub size_bytes: u64,
    /// On hugetlbfs.
    pub hugetlb: bool,
    /// Where it is mapped in this process (differs from the primary's address).
    pub mapped_at: String,
    /// Its memzones.
    pub memzones: Vec<MemzoneInfo>,
}

/// One memzone in [`MemsegInfo`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemzoneInfo {
    /// Name.
    pub name: String,
    /// Offset from the memseg base.
    pub offset: u64,
    /// Length.
    pub len_bytes: u64,
    /// Alignment.
    pub align: u64,
    /// Kind.
    pub kind: shm::MemzoneKind,
}

/// Asks the primary of `prefix` for every mempool's statistics on a query connection (no
/// process slot is taken).
///
/// # Errors
/// If the primary cannot be reached or answers something else.
pub fn pool_stats(prefix: &FilePrefix) -> std::io::Result<Vec<shm::stats::PoolStats>> {
    let dir = shm::runtime::RuntimeDir::for_prefix(prefix);
    match control::query(&dir, &Request::PoolStats)? {
        Reply::PoolStats(stats) => Ok(stats),
        Reply::Refused { reason } => Err(std::io::Error::other(reason)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected answer to PoolStats",
        )),
    }
}

/// The processes attached to the primary of `prefix` (the primary first), with their owner
/// tags: a query connection, no process slot (what `shmdp_app::audit` calls live).
///
/// # Errors
/// If the primary cannot be reached or answers something else.
pub fn processes(prefix: &FilePrefix) -> std::io::Result<Vec<control::ProcessRecord>> {
    let dir = shm::runtime::RuntimeDir::for_prefix(prefix);
    match control::query(&dir, &Request::Processes)? {
        Reply::Processes(list) => Ok(list),
        Reply::Refused { reason } => Err(std::io::Error::other(reason)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected answer to Processes",
        )),
    }
}
