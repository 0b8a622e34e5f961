//! The vhost-user backend of a `net_vhost` port: a control thread that serves one frontend
//! (QEMU's virtio-net, DPDK's virtio-user) on a unix socket — listening, or connecting
//! and reconnecting with `client=1` — and publishes what the frontend set up (memory
//! table, vrings, features) to the data path.
//!
//! Protocol messages are parsed and answered by rust-vmm's `vhost` crate
//! (`BackendReqHandler`): it fits, because the control plane is a blocking thread. The
//! data path is ours (`vring.rs`, `net.rs`): rust-vmm's `virtio-queue` publishes the used
//! index per element and translates through `vm-memory` per access, where a polling
//! burst wants one publication per burst and one translation per buffer.
//!
//! Control to data path, without a lock on the data path: the control thread builds an
//! immutable [`Config`] snapshot under its mutex, stores it, and bumps `generation`
//! (**Release, G1**); a polling queue compares `generation` (**Acquire, G1**) once per
//! burst and, when it moved, takes the snapshot (a rare lock) and restarts its ring. A
//! queue publishes its next available index after every burst and acknowledges each
//! generation it has seen (**Release, G2**), so `GET_VRING_BASE` (the frontend stopping a
//! ring) can wait for the poller to let go (**Acquire, G2**) and report where it stopped.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    BackendReqHandler, Error as VuError, Result as VuResult, VhostUserBackendReqHandlerMut,
};

use super::mem::{GuestMemory, RegionSpec};
use super::net::{
    VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use super::vring::VringAddrs;

/// Most queue pairs of one port.
pub const MAX_QUEUE_PAIRS: u16 = 8;

/// A vring the data path may use.
#[derive(Debug, Clone)]
pub struct ReadyVring {
    /// Where it is.
    pub addrs: VringAddrs,
    /// The frontend's "call" eventfd (interrupt the guest), if any.
    pub call: Option<Arc<File>>,
}

/// What the frontend has set up, as one immutable snapshot.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The memory table.
    pub mem: Option<Arc<GuestMemory>>,
    /// Negotiated virtio features.
    pub features: u64,
    /// Per vring (2 per queue pair: even = guest receive, odd = guest transmit): set when
    /// started and enabled.
    pub vrings: Vec<Option<ReadyVring>>,
}

#[derive(Debug, Default)]
struct VringCtl {
    addrs: VringAddrs,
    has_addrs: bool,
    started: bool,
    enabled: bool,
    call: Option<Arc<File>>,
    kick: Option<File>,
}

#[derive(Debug, Default)]
struct Control {
    features: u64,
    protocol_features: u64,
    mem: Option<Arc<GuestMemory>>,
    vrings: Vec<VringCtl>,
}

/// Per-vring words the data path writes.
#[derive(Debug, Default)]
struct VringShared {
    /// Next available index (low 16 bits) the poller will take.
    last_avail: AtomicU32,
    /// Last generation the poller has seen (G2).
    acked: AtomicU64,
    /// A queue polls this vring.
    polled: AtomicBool,
}

/// One `net_vhost` port's backend, shared by its control thread and its polling queues.
#[derive(Debug)]
pub struct VhostDevice {
    path: PathBuf,
    client: bool,
    pairs: u16,
    ctl: Mutex<Control>,
    snapshot: Mutex<Arc<Config>>,
    generation: AtomicU64,
    shared: Vec<VringShared>,
    connected: AtomicBool,
    /// Every vring started and enabled (the port's link).
    ready: AtomicBool,
    stop: AtomicBool,
    stream: Mutex<Option<UnixStream>>,
    /// Malformed messages and refused requests, for the port's error count.
    pub protocol_errors: AtomicU64,
}

fn registry() -> &'static Mutex<Vec<Arc<VhostDevice>>> {
    static DEVICES: OnceLock<Mutex<Vec<Arc<VhostDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

/// The backend serving socket `path` in this process, if one was started here.
pub fn find(path: &Path) -> Option<Arc<VhostDevice>> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|d| d.path == path)
        .cloned()
}

/// Stops backend `dev` and removes the socket it listened on.
pub fn stop(dev: &Arc<VhostDevice>) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| !Arc::ptr_eq(d, dev));
    dev.shutdown();
}

impl VhostDevice {
    /// Starts the backend for socket `path` with `pairs` queue pairs: listens there (or,
    /// with `client`, connects to a frontend listening there, retrying every second).
    ///
    /// # Errors
    /// One line when the socket cannot be bound or the thread not started.
    pub fn start(path: &Path, pairs: u16, client: bool) -> Result<Arc<VhostDevice>, String> {
        if !(1..=MAX_QUEUE_PAIRS).contains(&pairs) {
            return Err(format!("queues={pairs} must be 1..={MAX_QUEUE_PAIRS}"));
        }
        if find(path).is_some() {
            return Err(format!(
                "iface {} is served by another port",
                path.display()
            ));
        }
        let listener = if client {
            None
        } else {
            if path.exists() {
                // A socket left by a crashed run: nobody answers on it.
                if UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "iface {}: another process is listening on this socket",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
            Some(
                UnixListener::bind(path)
                    .map_err(|e| format!("iface {}: cannot listen: {e}", path.display()))?,
            )
        };
        let dev = Arc::new(VhostDevice {
            path: path.to_path_buf(),
            client,
            pairs,
            ctl: Mutex::new(Control {
                vrings: (0..2 * pairs).map(|_| VringCtl::default()).collect(),
                ..Control::default()
            }),
            snapshot: Mutex::new(Arc::new(Config::default())),
            generation: AtomicU64::new(1),
            shared: (0..2 * pairs).map(|_| VringShared::default()).collect(),
            connected: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stream: Mutex::new(None),
            protocol_errors: AtomicU64::new(0),
        });
        let d = dev.clone();
        std::thread::Builder::new()
            .name(format!("vhost {}", path.display()))
            .spawn(move || d.serve(listener))
            .map_err(|e| format!("cannot start the vhost-user thread: {e}"))?;
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dev.clone());
        Ok(dev)
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue pairs.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// True while a frontend is connected.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// True while a frontend has every vring started and enabled.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The current generation (G1: Acquire, pairs with the Release in `publish`).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Config> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The data path's report for `vring` after a burst or a restart.
    #[inline]
    pub fn report(&self, vring: usize, last_avail: u16, seen: u64) {
        let s = &self.shared[vring];
        s.last_avail.store(u32::from(last_avail), Ordering::Relaxed);
        // G2: Release, so the control thread that sees `seen` also sees `last_avail`.
        s.acked.store(seen, Ordering::Release);
    }

    /// The data path's report for a `vring` it does not run (stopped or never started).
    pub fn report_stopped(&self, vring: usize, seen: u64) {
        // G2, as in `report`.
        self.shared[vring].acked.store(seen, Ordering::Release);
    }

    /// Marks `vring` as polled (or not) by a queue of this process.
    pub fn set_polled(&self, vring: usize, polled: bool) {
        self.shared[vring].polled.store(polled, Ordering::Relaxed);
    }

    /// Stops serving and removes the listening socket.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if !self.client {
            let _ = std::fs::remove_file(&self.path);
            // Wake the accept() so the thread sees `stop`.
            let _ = UnixStream::connect(&self.path);
        }
    }

    fn serve(self: Arc<Self>, listener: Option<UnixListener>) {
        while !self.stop.load(Ordering::Relaxed) {
            let stream = match &listener {
                Some(l) => match l.accept() {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
                None => match UnixStream::connect(&self.path) {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = stream.try_clone().ok();
            self.connected.store(true, Ordering::Relaxed);
            tracing::info!("{}: vhost-user frontend connected", self.path.display());
            let handler = Arc::new(Mutex::new(Handler { dev: self.clone() }));
            let mut req = BackendReqHandler::from_stream(stream, handler);
            loop {
                match req.handle_request() {
                    Ok(()) => {}
                    Err(VuError::Disconnected | VuError::PartialMessage) => break,
                    Err(VuError::SocketBroken(_) | VuError::SocketError(_)) => break,
                    Err(e) => {
                        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "{}: vhost-user: {e}; closing the connection",
                            self.path.display()
                        );
                        break;
                    }
                }
            }
            self.connected.store(false, Ordering::Relaxed);
            *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!("{}: vhost-user frontend gone", self.path.display());
            // Forget everything the frontend set up: the rings stop, the memory goes when
            // the last poller lets go of its snapshot.
            {
                let mut c = self.ctl.lock().unwrap_or_else(|p| p.into_inner());
                *c = Control {
                    vrings: (0..2 * self.pairs).map(|_| VringCtl::default()).collect(),
                    ..Control::default()
                };
                self.publish(&c);
            }
        }
    }

    /// Builds and stores the snapshot of `c`, then bumps the generation (G1).
    fn publish(&self, c: &Control) {
        let cfg = Config {
            mem: c.mem.clone(),
            features: c.features,
            vrings: c
                .vrings
                .iter()
                .map(|v| {
                    (v.started && v.enabled && v.has_addrs && c.mem.is_some()).then(|| ReadyVring {
                        addrs: v.addrs,
                        call: v.call.clone(),
                    })
                })
                .collect(),
        };
        self.ready
            .store(cfg.vrings.iter().all(Option::is_some), Ordering::Relaxed);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
        // G1: Release, after the snapshot is stored.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Waits (bounded) until the poller of `vring`, if any, has seen generation `g`.
    fn wait_for_poller(&self, vring: usize, g: u64) {
        let s = &self.shared[vring];
        let t0 = Instant::now();
        while s.polled.load(Ordering::Relaxed)
            && s.acked.load(Ordering::Acquire) < g
            && t0.elapsed() < Duration::from_millis(500)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Features offered to the frontend.
fn offered_features(pairs: u16) -> u64 {
    let mq = if pairs > 1 { VIRTIO_NET_F_MQ } else { 0 };
    VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES | mq
}

struct Handler {
    dev: Arc<VhostDevice>,
}

impl Handler {
    fn ctl(&self) -> std::sync::MutexGuard<'_, Control> {
        self.dev.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn vring(c: &mut Control, index: u32) -> VuResult<&mut VringCtl> {
        c.vrings
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }
}

fn unsupported<T>(what: &'static str) -> VuResult<T> {
    Err(VuError::InvalidOperation(what))
}

impl VhostUserBackendReqHandlerMut for Handler {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        let mut c = self.ctl();
        for v in &mut c.vrings {
            *v = VringCtl::default();
        }
        self.dev.publish(&c);
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(offered_features(self.dev.pairs))
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        tracing::debug!("SET_FEATURES {features:#x}");
        if features & !offered_features(self.dev.pairs) != 0 {
            return Err(VuError::InvalidParam);
        }
        let mut c = self.ctl();
        c.features = features;
        // Without protocol features a ring is enabled as soon as it starts.
        if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            for v in &mut c.vrings {
                v.enabled = true;
            }
        }
        self.dev.publish(&c);
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<vhost::VhostUserMemoryRegionBase>>> {
        let specs: Vec<RegionSpec> = ctx
            .iter()
            .map(|r| RegionSpec {
                guest_phys_addr: r.guest_phys_addr,
                size: r.memory_size,
                user_addr: r.user_addr,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        let mem = GuestMemory::map(&specs, files).map_err(|e| {
            tracing::warn!("{}: {e}", self.dev.path.display());
            VuError::InvalidParam
        })?;
        let mut c = self.ctl();
        c.mem = Some(Arc::new(mem));
        self.dev.publish(&c);
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        let mut c = self.ctl();
        let v = Self::vring(&mut c, index)?;
        if num == 0 || num > 32768 || !num.is_power_of_two() {
            return Err(VuError::InvalidParam);
        }
        v.addrs.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let mut c = self.ctl();
        let v = Self::vring(&mut c, index)?;
        v.addrs.desc = descriptor;
        v.addrs.used = used;
        v.addrs.avail = available;
        v.has_addrs = true;
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        tracing::debug!("SET_VRING_BASE {index} {base}");
        let mut c = self.ctl();
        Self::vring(&mut c, index)?.addrs.base = base as u16;
        self.dev.shared[index as usize]
            .last_avail
            .store(base & 0xffff, Ordering::Relaxed);
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        tracing::debug!("GET_VRING_BASE {index}");
        let g = {
            let mut c = self.ctl();
            let v = Self::vring(&mut c, index)?;
            v.started = false;
            v.kick = None;
            self.dev.publish(&c);
            self.dev.generation.load(Ordering::Relaxed)
        };
        self.dev.wait_for_poller(index as usize, g);
        let last = self.dev.shared[index as usize]
            .last_avail
            .load(Ordering::Relaxed);
        Ok(VhostUserVringState::new(index, last))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        tracing::debug!("SET_VRING_KICK {index}");
        let mut c = self.ctl();
        let v = Self::vring(&mut c, u32::from(index))?;
        // We poll: the kick fd is kept (the frontend expects it held) but not read.
        v.kick = fd;
        v.started = true;
        self.dev.publish(&c);
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let mut c = self.ctl();
        Self::vring(&mut c, u32::from(index))?.call = fd.map(Arc::new);
        self.dev.publish(&c);
        Ok(())
    }

    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> VuResult<()> {
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.ctl().protocol_features = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.dev.pairs))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        tracing::debug!("SET_VRING_ENABLE {index} {enable}");
        let mut c = self.ctl();
        Self::vring(&mut c, index)?.enabled = enable;
        self.dev.publish(&c);
        Ok(())
    }

    fn get_config(&mut self, _o: u32, _s: u32, _f: VhostUserConfigFlags) -> VuResult<Vec<u8>> {
        unsupported("GET_CONFIG")
    }

    fn set_config(&mut self, _o: u32, _b: &[u8], _f: VhostUserConfigFlags) -> VuResult<()> {
        unsupported("SET_CONFIG")
    }

    fn set_gpu_socket(&mut self, _g: vhost::vhost_user::GpuBackend) -> VuResult<()> {
        unsupported("SET_GPU_SOCKET")
    }

    fn get_shared_object(&mut self, _u: VhostUserSharedMsg) -> VuResult<File> {
        unsupported("GET_SHARED_OBJECT")
    }

    fn get_inflight_fd(&mut self, _i: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        unsupported("GET_INFLIGHT_FD")
    }

    fn set_inflight_fd(&mut self, _i: &VhostUserInflight, _f: File) -> VuResult<()> {
        unsupported("SET_INFLIGHT_FD")
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(super::mem::MAX_REGIONS as u64)
    }

    fn add_mem_region(
        &mut self,
        _r: &VhostUserSingleMemoryRegion,
        _fd: File,
        _p: Option<bool>,
    ) -> VuResult<Option<vhost::VhostUserMemoryRegionBase>> {
        unsupported("ADD_MEM_REG")
    }

    fn remove_mem_region(&mut self, _r: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        unsupported("REM_MEM_REG")
    }

    fn set_device_state_fd(
        &mut self,
        _d: VhostTransferStateDirection,
        _p: VhostTransferStatePhase,
        _f: File,
    ) -> VuResult<Option<File>> {
        unsupported("SET_DEVICE_STATE_FD")
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        unsupported("CHECK_DEVICE_STATE")
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        unsupported("GET_SHMEM_CONFIG")
    }

    fn set_log_base(&mut self, _l: &VhostUserLog, _f: File) -> VuResult<()> {
        unsupported("SET_LOG_BASE")
    }
}

/// Interrupts the guest through a vring's call eventfd (only when the driver asked).
pub fn signal(call: &File) {
    let _ = (&*call).write(&1u64.to_ne_bytes());
}
