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
//!
//! Every other atomic here is Relaxed and publishes no data: `stop`, `connected`, `ready`
//! and `polled` are flags read for decisions that tolerate a stale value for a moment (a
//! loop that runs once more, a link reported up one poll late), and `protocol_errors`
//! is a counter. `last_avail` is ordered by G2 where it matters (see `report`).

use crate::VhostError;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::guard::Quota;
use super::mem::{GuestMemory, MAX_REGIONS};
use super::net::{
    VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF,
};
use super::proto::{self, Msg, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK};
use super::vring::VringAddrs;
use super::wire::{self, WireError};

pub use pmds_common_vhost_user::proto::MAX_QUEUE_PAIRS;

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
    /// This port's share of the SIGBUS guard ([`GUARD_SHARE`] mappings), used by
    /// whichever frontend is connected.
    guard: Quota,
}

/// Most regions one memory table can have: one fd each, at most [`proto::MAX_FDS`] per
/// message (and [`MAX_REGIONS`] in any case).
pub const TABLE_REGIONS: usize = if proto::MAX_FDS < MAX_REGIONS {
    proto::MAX_FDS
} else {
    MAX_REGIONS
};

/// Mappings of frontend memory one port may have guarded at once: two full memory tables
/// (the one in use and the one replacing it). A frontend asking for more (tables kept
/// alive past that) loses its request and its connection; other ports' shares are
/// untouched.
pub const GUARD_SHARE: usize = 2 * TABLE_REGIONS;

/// How long a `SET_MEM_TABLE` waits for pollers to let go of older tables when the port's
/// share has no room for the new one.
const GUARD_WAIT: Duration = Duration::from_millis(500);

/// Stops backend `dev` and removes the socket it listened on.
pub fn stop(dev: &Arc<VhostDevice>) {
    dev.shutdown();
}

impl VhostDevice {
    /// Starts the backend for socket `path` with `pairs` queue pairs: listens there (or,
    /// with `client`, connects to a frontend listening there, retrying every second).
    ///
    /// # Errors
    /// One line when the socket cannot be bound or the thread not started.
    pub fn start(path: &Path, pairs: u16, client: bool) -> Result<Arc<VhostDevice>, VhostError> {
        if !(1..=MAX_QUEUE_PAIRS).contains(&pairs) {
            return Err(crate::setup_err!(
                "queues={pairs} must be 1..={MAX_QUEUE_PAIRS}"
            ));
        }
        // Reserved first: a port beyond the guard's room is refused before it listens.
        let guard = Quota::reserve(GUARD_SHARE)
            .map_err(|e| crate::guard_err!("iface {}: {e}", path.display()))?;
        let listener = if client {
            None
        } else {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                // Only a socket of ours left by a crashed run is removed: never a file,
                // a link (not followed) or another user's socket.
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                if !meta.file_type().is_socket() || meta.uid() != nix::unistd::geteuid().as_raw() {
                    return Err(crate::setup_err!(
                        "iface {}: exists and is not a socket of ours; remove it or choose another path",
                        path.display()
                    ));
                }
                // A socket left by a crashed run: nobody answers on it.
                if UnixStream::connect(path).is_ok() {
                    return Err(crate::setup_err!(
                        "iface {}: another process is listening on this socket",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)
                .map_err(|e| crate::setup_err!("iface {}: cannot listen: {e}", path.display()))?;
            // Ours alone (whatever the umask); the peer's uid is checked on accept too.
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                let _ = std::fs::remove_file(path);
                return Err(crate::setup_err!(
                    "iface {}: chmod 0600: {e}",
                    path.display()
                ));
            }
            Some(l)
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
            guard,
        });
        let d = dev.clone();
        std::thread::Builder::new()
            .name(format!("vhost {}", path.display()))
            .spawn(move || d.serve(listener))
            .map_err(|e| crate::setup_err!("cannot start the vhost-user thread: {e}"))?;
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
        // Relaxed: published by the Release store of `acked` just below (G2).
        s.last_avail.store(u32::from(last_avail), Ordering::Relaxed);
        // G2: Release, so the control thread that sees `seen` also sees `last_avail`.
        s.acked.store(seen, Ordering::Release);
    }

    /// Where the data path stopped on `vring` (or the base the frontend set): a queue that
    /// starts the ring again continues from here, not from the first base.
    pub fn last_avail(&self, vring: usize) -> u16 {
        let s = &self.shared[vring];
        // G2: Acquire, pairs with the Release in `report`.
        let _ = s.acked.load(Ordering::Acquire);
        s.last_avail.load(Ordering::Relaxed) as u16
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
            // Wake the accept() so the thread sees `stop`, then remove the socket.
            let _ = UnixStream::connect(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn serve(self: Arc<Self>, listener: Option<UnixListener>) {
        while !self.stop.load(Ordering::Relaxed) {
            let stream = match &listener {
                Some(l) => match l.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        // EMFILE and the like: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
                // Non-blocking connect: a frontend that listens but never accepts cannot
                // hold this thread past a stop.
                None => {
                    match wire::connect(&self.path, wire::Until::after(Duration::ZERO, &self.stop))
                    {
                        Ok(s) => s,
                        Err(_) => {
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    }
                }
            };
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // The frontend gives us memory to map and rings to follow: ours or root's only.
            match wire::peer_cred(&stream) {
                Ok((uid, _)) if wire::uid_allowed(uid) => {}
                who => {
                    self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    let who = match who {
                        Ok((uid, pid)) => format!("pid {pid} runs as uid {uid}, not as us or root"),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(
                        "{}: vhost-user frontend refused: {who}",
                        self.path.display()
                    );
                    if self.client {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    continue;
                }
            }
            *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = stream.try_clone().ok();
            self.connected.store(true, Ordering::Relaxed);
            tracing::info!("{}: vhost-user frontend connected", self.path.display());
            let mut handler = Handler {
                dev: self.clone(),
                reply_ack: false,
            };
            self.converse(&stream, &mut handler);
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

    /// Serves one connected frontend until it goes, breaks the protocol, stalls inside a
    /// message, takes its memory away, or the device stops. Every way out but a clean
    /// close is counted in `protocol_errors` and logged in one line; the caller then
    /// forgets what the frontend set up (the port stays, waiting for the next one).
    fn converse(&self, sock: &UnixStream, handler: &mut Handler) {
        let taken_away = || {
            self.ctl
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mem
                .as_ref()
                .is_some_and(|m| m.taken_away())
        };
        let why: String = loop {
            // While idle, wake every second to see whether the memory is still there.
            let got = proto::recv(sock, &self.stop, || !taken_away());
            if taken_away() {
                break "the frontend truncated its memory after sharing it".into();
            }
            let (h, payload, files) = match got {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(WireError::Cancelled) if self.stop.load(Ordering::Relaxed) => return,
                Err(e) => break e.to_string(),
            };
            let msg = match proto::decode(&h, &payload, files.len()) {
                Ok(m) => m,
                Err(e) => break e.to_string(),
            };
            tracing::debug!("{}: vhost-user {msg:?}", self.path.display());
            let mem_table = matches!(msg, Msg::SetMemTable(_));
            let result = handler.handle(msg, files);
            if let Err(e) = &result {
                self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{}: vhost-user request {} refused: {e}",
                    self.path.display(),
                    h.request
                );
            }
            let sent = match &result {
                Ok(Some(reply)) => proto::send_reply(sock, &h, reply, &self.stop),
                Ok(None) if h.need_reply() && handler.reply_ack => {
                    proto::send_reply(sock, &h, &0u64.to_le_bytes(), &self.stop)
                }
                Err(_) if h.need_reply() && handler.reply_ack => {
                    proto::send_reply(sock, &h, &1u64.to_le_bytes(), &self.stop)
                }
                _ => Ok(()),
            };
            if let Err(e) = sent {
                break format!("reply: {e}");
            }
            if mem_table && result.is_err() {
                // Memory we refused: nothing the frontend sets up next can work.
                return;
            }
        };
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "{}: vhost-user: {why}; closing the connection",
            self.path.display()
        );
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

    /// Waits (at most [`GUARD_WAIT`]) until the port's share of the SIGBUS guard has room
    /// for `regions` more mappings (pollers let go of older tables within a burst).
    ///
    /// # Errors
    /// One line when it has not.
    fn room_for(&self, regions: usize) -> Result<(), VhostError> {
        let t0 = Instant::now();
        loop {
            let used = self.guard.in_use();
            if used + regions <= self.guard.limit() {
                return Ok(());
            }
            if t0.elapsed() > GUARD_WAIT {
                return Err(crate::guard_err!(
                    "memory table of {regions} regions: {used} mappings of earlier tables are still guarded, and this port's share of the SIGBUS guard is {}",
                    self.guard.limit()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
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
    VIRTIO_F_VERSION_1
        | VIRTIO_NET_F_MRG_RXBUF
        | VIRTIO_F_IN_ORDER
        | VHOST_USER_F_PROTOCOL_FEATURES
        | mq
}

struct Handler {
    dev: Arc<VhostDevice>,
    /// `REPLY_ACK` negotiated: requests flagged NEED_REPLY get an ack.
    reply_ack: bool,
}

impl Handler {
    fn ctl(&self) -> std::sync::MutexGuard<'_, Control> {
        self.dev.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out one request; `Ok(Some(payload))` for requests that are answered.
    fn handle(&mut self, msg: Msg, mut files: Vec<File>) -> Result<Option<Vec<u8>>, VhostError> {
        let dev = self.dev.clone();
        let vring = |c: &mut Control, index: u32| -> Result<usize, VhostError> {
            if (index as usize) < c.vrings.len() {
                Ok(index as usize)
            } else {
                Err(crate::peer_err!(
                    "vring {index} (the port has {})",
                    c.vrings.len()
                ))
            }
        };
        let value = |v: u64| Ok(Some(v.to_le_bytes().to_vec()));
        match msg {
            Msg::GetFeatures => value(offered_features(dev.pairs)),
            Msg::SetFeatures(f) => {
                if f & !offered_features(dev.pairs) != 0 {
                    return Err(crate::peer_err!("features {f:#x} were not offered"));
                }
                let mut c = self.ctl();
                c.features = f;
                // Without protocol features a ring is enabled as soon as it starts.
                if f & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
                    for v in &mut c.vrings {
                        v.enabled = true;
                    }
                }
                dev.publish(&c);
                Ok(None)
            }
            Msg::SetOwner => Ok(None),
            Msg::ResetOwner => {
                let mut c = self.ctl();
                for v in &mut c.vrings {
                    *v = VringCtl::default();
                }
                dev.publish(&c);
                Ok(None)
            }
            Msg::SetMemTable(specs) => {
                dev.room_for(specs.len())?;
                let mem = GuestMemory::map_in(&specs, files, &dev.guard)?;
                let mut c = self.ctl();
                c.mem = Some(Arc::new(mem));
                dev.publish(&c);
                Ok(None)
            }
            Msg::SetVringNum { index, num } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                if num == 0 || num > 32768 || !num.is_power_of_two() {
                    return Err(crate::peer_err!("vring size {num}"));
                }
                c.vrings[i].addrs.size = num as u16;
                Ok(None)
            }
            Msg::SetVringAddr { index, addrs } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                let v = &mut c.vrings[i];
                v.addrs.desc = addrs.desc;
                v.addrs.used = addrs.used;
                v.addrs.avail = addrs.avail;
                v.has_addrs = true;
                Ok(None)
            }
            Msg::SetVringBase { index, base } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                c.vrings[i].addrs.base = base as u16;
                // Relaxed: read by a poller only after it sees the generation that a later
                // SET_VRING_KICK/ENABLE publishes (G1), which orders this store too.
                dev.shared[i]
                    .last_avail
                    .store(base & 0xffff, Ordering::Relaxed);
                Ok(None)
            }
            Msg::GetVringBase(index) => {
                let (i, g) = {
                    let mut c = self.ctl();
                    let i = vring(&mut c, index)?;
                    c.vrings[i].started = false;
                    c.vrings[i].kick = None;
                    dev.publish(&c);
                    // Relaxed: our own bump above, read under the same lock.
                    (i, dev.generation.load(Ordering::Relaxed))
                };
                dev.wait_for_poller(i, g);
                // Relaxed: after the Acquire of `acked` in `wait_for_poller` (G2).
                let last = dev.shared[i].last_avail.load(Ordering::Relaxed);
                let mut reply = index.to_le_bytes().to_vec();
                reply.extend_from_slice(&last.to_le_bytes());
                Ok(Some(reply))
            }
            Msg::SetVringKick { index, has_fd } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                // We poll: the kick fd is kept (the frontend expects it held), not read.
                c.vrings[i].kick = if has_fd { files.pop() } else { None };
                c.vrings[i].started = true;
                dev.publish(&c);
                Ok(None)
            }
            Msg::SetVringCall { index, has_fd } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                c.vrings[i].call = if has_fd {
                    files.pop().map(Arc::new)
                } else {
                    None
                };
                dev.publish(&c);
                Ok(None)
            }
            Msg::SetVringErr { index, .. } => {
                let mut c = self.ctl();
                vring(&mut c, index)?;
                Ok(None)
            }
            Msg::GetProtocolFeatures => value(PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK),
            Msg::SetProtocolFeatures(f) => {
                self.reply_ack = f & PROTOCOL_F_REPLY_ACK != 0;
                self.ctl().protocol_features = f;
                Ok(None)
            }
            Msg::GetQueueNum => value(u64::from(dev.pairs)),
            Msg::SetVringEnable { index, enable } => {
                let mut c = self.ctl();
                let i = vring(&mut c, index)?;
                c.vrings[i].enabled = enable;
                dev.publish(&c);
                Ok(None)
            }
            Msg::GetMaxMemSlots => value(super::mem::MAX_REGIONS as u64),
            Msg::Unsupported(code) => Err(crate::peer_err!("request {code} is not supported")),
        }
    }
}

/// Interrupts the guest through a vring's call eventfd (only when the driver asked).
pub fn signal(call: &File) {
    let _ = (&*call).write(&1u64.to_ne_bytes());
}
