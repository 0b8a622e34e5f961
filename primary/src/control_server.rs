//! The primary's end of the control socket: greets secondaries, hands out process slots and
//! notices when a secondary goes away (its connection closes, which the kernel does however
//! the process dies), freeing its slot at once.
//!
//! One thread accepts; one thread per admitted connection reads requests. Everything a
//! secondary sends is untrusted: bad frames end that connection and nothing else.
//!
//! Other local users get nothing (the access rules are in [`shm::access`]):
//! - the socket is 0600 (0660 with `--group`) inside a 0700 (0750) directory;
//! - every accepted connection's `SO_PEERCRED` is checked on the accept thread: a peer
//!   that is not this user, root or (with `--group`) a member of the group is refused at
//!   once, counted, and logged once per uid, without a thread;
//! - a Hello's pid must be the peer's kernel-reported pid;
//! - at most [`MAX_PENDING`] connections may wait for their first request (a newer one
//!   evicts the oldest, so idle connections cannot lock a real secondary out) and at most
//!   [`MAX_SECONDARIES`] may be attached; a request frame is at most
//!   [`control::MAX_REQUEST`] bytes and is due whole within [`FRAME_TIMEOUT`];
//! - when descriptors run out (`EMFILE`/`ENFILE`) the accept loop backs off (10 ms
//!   doubling to 1 s) instead of spinning on the connection it cannot take.

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm::access::{Access, PeerCred};
use shm::control::{self, MemsegRecord, Reply, Request, Welcome, MAX_REQUEST, PROTOCOL_VERSION};
use shm_mempool::OwnerTag;

use crate::{PrimaryError, Result};

/// What the control server asks of the rest of the primary.
pub trait ControlHooks: Send + Sync + std::fmt::Debug {
    /// A secondary detached or died; runs before its slot can be given to another process,
    /// so everything tagged with the slot can be reclaimed. `start_time` is the process's
    /// /proc start time read when it attached (to tell a reused pid apart).
    fn secondary_gone(&self, slot: u32, tag: OwnerTag, pid: u32, start_time: Option<u64>);
    /// Statistics of every mempool.
    fn pool_stats(&self) -> Vec<shm::stats::PoolStats>;
    /// Statistics of every port.
    fn port_stats(&self) -> Vec<shm::stats::PortStats>;
}

/// Most secondaries attached at once.
pub const MAX_SECONDARIES: usize = 64;
/// Most connections waiting for their first request at once.
pub const MAX_PENDING: usize = 16;
/// How long a new connection may take to send its first request.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request frame may take from its first byte to its last.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct refused uids logged by name (later ones are only counted).
const MAX_LOGGED_UIDS: usize = 32;

/// Something that happened to a secondary, for the primary's log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondaryEvent {
    /// A secondary attached.
    Attached {
        /// Its slot.
        slot: u32,
        /// Its pid.
        pid: u32,
        /// Its program name.
        program: String,
    },
    /// A secondary detached (said Bye) or died (connection closed without Bye).
    Gone {
        /// Its slot, now free.
        slot: u32,
        /// Its pid.
        pid: u32,
        /// True when it closed without saying Bye (crashed or killed).
        died: bool,
    },
}

#[derive(Debug)]
struct SlotEntry {
    pid: u32,
    /// The owner tag its buffers carry.
    owner_tag: u32,
    program: String,
    conn: UnixStream,
}

#[derive(Debug)]
struct Shared {
    slots: Mutex<Vec<Option<SlotEntry>>>,
    memsegs: Vec<MemsegRecord>,
    generation: u64,
    events: Mutex<Sender<SecondaryEvent>>,
    hooks: Arc<dyn ControlHooks>,
    access: Access,
    /// Connections that have not sent their first request yet, oldest first, by id.
    pending: Mutex<VecDeque<(u64, UnixStream)>>,
    next_conn: AtomicU64,
    /// Attachments so far (each gets an owner tag of its own).
    attachments: AtomicU32,
    /// Connections refused because of who the peer is (not this user, root or group).
    refused: AtomicU64,
    /// Uids whose refusal was logged.
    refused_uids: Mutex<Vec<u32>>,
}

/// The running control server.
#[derive(Debug)]
pub struct ControlServer {
    shared: Arc<Shared>,
    path: PathBuf,
    events: Mutex<Receiver<SecondaryEvent>>,
}

impl ControlServer {
    /// Binds the socket at `path` (in a runtime directory already checked), gives it
    /// `access`'s mode and group, and starts serving the peers `access` admits.
    ///
    /// # Errors
    /// [`PrimaryError::Socket`] if the socket cannot be bound; [`PrimaryError::Shm`] if
    /// its mode cannot be set.
    pub fn start(
        path: &Path,
        memsegs: Vec<MemsegRecord>,
        generation: u64,
        hooks: Arc<dyn ControlHooks>,
        access: Access,
    ) -> Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| PrimaryError::Socket {
            path: path.to_path_buf(),
            source,
        })?;
        // The directory is 0700/0750, so nobody else reaches the socket before this.
        access.apply_path(path)?;
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            slots: Mutex::new((0..MAX_SECONDARIES).map(|_| None).collect()),
            memsegs,
            generation,
            events: Mutex::new(tx),
            hooks,
            access,
            pending: Mutex::new(VecDeque::new()),
            next_conn: AtomicU64::new(0),
            // 1: attachment 0 of slot 0 is the primary's own tag.
            attachments: AtomicU32::new(1),
            refused: AtomicU64::new(0),
            refused_uids: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(|source| PrimaryError::Socket {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ControlServer {
            shared,
            path: path.to_path_buf(),
            events: Mutex::new(rx),
        })
    }

    /// Pids of the attached secondaries, by slot (slot = index + 1).
    pub fn secondaries(&self) -> Vec<(u32, u32)> {
        lock(&self.shared.slots)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|e| (i as u32 + 1, e.pid)))
            .collect()
    }

    /// Connections refused so far because the peer was not admitted.
    pub fn refused_peers(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the next secondary event.
    pub fn next_event(&self, timeout: Duration) -> Option<SecondaryEvent> {
        lock(&self.events).recv_timeout(timeout).ok()
    }

    /// Tells every secondary that the primary is closing, and removes the socket.
    pub fn stop(self) {
        let _ = std::fs::remove_file(&self.path);
        let refused = self.refused_peers();
        if refused > 0 {
            tracing::warn!("control socket: refused {refused} connections of peers not admitted");
        }
        for (_, conn) in lock(&self.shared.pending).drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        for entry in lock(&self.shared.slots).iter_mut().flatten() {
            let _ = entry
                .conn
                .set_write_timeout(Some(Duration::from_millis(100)));
            let _ = control::send(&mut entry.conn, &Reply::Closing);
            let _ = entry.conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut backoff = Duration::ZERO;
    let mut warned_fds = false;
    loop {
        match listener.accept() {
            Ok((conn, _)) => match admit(conn, &shared) {
                Ok(()) => backoff = Duration::ZERO,
                // The connection could not be kept (its clone or its thread found no
                // descriptor or memory) and was closed: back off as for a failed accept,
                // or the loop would accept and drop the whole backlog at full speed.
                Err(e) => back_off(&e, &mut backoff, &mut warned_fds),
            },
            Err(e) if is_resource_shortage(&e) => {
                // The connection stays in the backlog; accepting again at once would fail
                // again at once. Wait for descriptors (or memory) to free up.
                back_off(&e, &mut backoff, &mut warned_fds);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Sleeps after a resource shortage, doubling from 10 ms to 1 s; warns the first time.
fn back_off(e: &io::Error, backoff: &mut Duration, warned: &mut bool) {
    if !*warned {
        tracing::warn!(
            "control socket: accept: {e}; backing off until descriptors free up (logged once)"
        );
        *warned = true;
    }
    *backoff = (*backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::sleep(*backoff);
}

fn is_resource_shortage(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|x| *x as i32 == n)
    })
}

/// Checks who is at the other end and, if admitted, hands the connection to a thread of
/// its own, registered as pending (evicting the oldest pending one beyond the cap).
///
/// An error is a resource shortage (no descriptor for the clone, no memory for the thread):
/// the connection has been closed and the caller backs off.
fn admit(conn: UnixStream, shared: &Arc<Shared>) -> io::Result<()> {
    let cred = match shm::access::peer_cred(&conn) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("control connection without credentials: {e}");
            return Ok(());
        }
    };
    if !shared.access.admits(&cred) {
        refuse_stranger(conn, cred, shared);
        return Ok(());
    }
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let handle = match conn.try_clone() {
        Ok(h) => h,
        Err(e) if is_resource_shortage(&e) => return Err(e),
        Err(_) => return Ok(()),
    };
    if conn.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return Ok(());
    }
    {
        let mut pending = lock(&shared.pending);
        pending.push_back((id, handle));
        while pending.len() > MAX_PENDING {
            if let Some((_, old)) = pending.pop_front() {
                // Wakes its thread with EOF; that thread then ends.
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("ctl-conn".into())
        .spawn(move || {
            if let Err(e) = serve(conn, cred, id, &s) {
                tracing::debug!("control connection ended: {e}");
            }
            unpend(&s, id);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            unpend(shared, id);
            Err(e)
        }
    }
}

fn unpend(shared: &Shared, id: u64) {
    lock(&shared.pending).retain(|(i, _)| *i != id);
}

/// Refuses a peer that is not admitted: one non-blocking reply saying why, close, count;
/// the first refusal of each uid is logged.
fn refuse_stranger(mut conn: UnixStream, cred: PeerCred, shared: &Shared) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let first = {
        let mut uids = lock(&shared.refused_uids);
        let first = !uids.contains(&cred.uid) && uids.len() < MAX_LOGGED_UIDS;
        if first {
            uids.push(cred.uid);
        }
        first
    };
    let me = shm::access::my_uid();
    let group = shared
        .access
        .group()
        .map(|g| format!(" or a member of group {g}"))
        .unwrap_or_default();
    if first {
        tracing::warn!(
            "control socket: refused pid {} uid {}: not uid {me}, root{group} (further refusals of this uid are only counted)",
            cred.pid,
            cred.uid
        );
    }
    let reason = format!(
        "uid {} may not use this primary: only uid {me}, root{group}; run as that user, or ask for a primary started with --group",
        cred.uid
    );
    if conn.set_nonblocking(true).is_ok() {
        let _ = control::send(&mut conn, &Reply::Refused { reason });
    }
}

/// The primary and every attached secondary, with their owner tags. A secondary stays
/// listed until `secondary_gone` (its reclaim) has returned.
fn processes(shared: &Shared) -> Vec<control::ProcessRecord> {
    let mut out = vec![control::ProcessRecord {
        slot: 0,
        pid: std::process::id(),
        owner_tag: OwnerTag::PRIMARY.0,
        program: "shmdp-primary".into(),
    }];
    out.extend(lock(&shared.slots).iter().enumerate().filter_map(|(i, s)| {
        s.as_ref().map(|e| control::ProcessRecord {
            slot: i as u32 + 1,
            pid: e.pid,
            owner_tag: e.owner_tag,
            program: e.program.clone(),
        })
    }));
    out
}

/// A program name fit for one log line: printable ASCII, at most 64 characters.
fn sanitize_program(p: &str) -> String {
    p.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

fn serve(mut conn: UnixStream, cred: PeerCred, id: u64, shared: &Shared) -> io::Result<()> {
    let first = control::recv_within::<Request>(
        &mut conn,
        Some(HELLO_TIMEOUT),
        FRAME_TIMEOUT,
        MAX_REQUEST,
    )?;
    let (pid, program) = match first {
        Some(Request::Hello {
            protocol,
            pid,
            program,
        }) => {
            if protocol != PROTOCOL_VERSION {
                let reason = format!(
                    "control protocol {protocol} is not supported (primary speaks {PROTOCOL_VERSION}); run primary and secondary from the same shmdp release"
                );
                control::send(&mut conn, &Reply::Refused { reason })?;
                return Ok(());
            }
            if pid != cred.pid {
                tracing::warn!(
                    "control socket: refused a Hello naming pid {pid} from pid {} (uid {})",
                    cred.pid,
                    cred.uid
                );
                let reason = format!(
                    "Hello names pid {pid} but the kernel says this connection is pid {}'s; a secondary may only name itself",
                    cred.pid
                );
                control::send(&mut conn, &Reply::Refused { reason })?;
                return Ok(());
            }
            (pid, sanitize_program(&program))
        }
        Some(Request::PoolStats) => {
            // A query connection of an admitted peer: answer and close, no slot.
            control::send(&mut conn, &Reply::PoolStats(shared.hooks.pool_stats()))?;
            return Ok(());
        }
        Some(Request::PortStats) => {
            control::send(&mut conn, &Reply::PortStats(shared.hooks.port_stats()))?;
            return Ok(());
        }
        Some(Request::Processes) => {
            control::send(&mut conn, &Reply::Processes(processes(shared)))?;
            return Ok(());
        }
        None => return Ok(()),
        Some(_) => {
            let reason = "expected Hello as the first control message".to_string();
            control::send(&mut conn, &Reply::Refused { reason })?;
            return Ok(());
        }
    };
    let start_time = shm::liveness::process_start_time(pid);
    let (slot, tag) = {
        let mut slots = lock(&shared.slots);
        let Some(free) = slots.iter().position(|s| s.is_none()) else {
            let reason = format!(
                "all {MAX_SECONDARIES} secondary slots are in use; detach a secondary first"
            );
            drop(slots);
            control::send(&mut conn, &Reply::Refused { reason })?;
            return Ok(());
        };
        let slot = free as u32 + 1;
        // Relaxed: a counter; the slots mutex orders the attachments themselves.
        let attachment = shared.attachments.fetch_add(1, Ordering::Relaxed);
        let tag = OwnerTag::attached(slot, attachment);
        slots[free] = Some(SlotEntry {
            pid,
            owner_tag: tag.0,
            program: program.clone(),
            conn: conn.try_clone()?,
        });
        (slot, tag)
    };
    // Attached: no longer subject to eviction (slots are capped on their own).
    unpend(shared, id);
    tracing::info!("secondary attached: slot {slot}, pid {pid}, {program}");
    let _ = lock(&shared.events).send(SecondaryEvent::Attached { slot, pid, program });
    let welcome = Welcome {
        slot,
        owner_tag: tag.0,
        primary_pid: std::process::id(),
        generation: shared.generation,
        memsegs: shared.memsegs.clone(),
    };
    let result = (|| -> io::Result<bool> {
        control::send(&mut conn, &Reply::Welcome(welcome))?;
        loop {
            // Idle for ever between requests; each request due whole within its deadline.
            match control::recv_within::<Request>(&mut conn, None, FRAME_TIMEOUT, MAX_REQUEST)? {
                Some(Request::Memsegs) => {
                    control::send(&mut conn, &Reply::Memsegs(shared.memsegs.clone()))?
                }
                Some(Request::PoolStats) => {
                    control::send(&mut conn, &Reply::PoolStats(shared.hooks.pool_stats()))?
                }
                Some(Request::PortStats) => {
                    control::send(&mut conn, &Reply::PortStats(shared.hooks.port_stats()))?
                }
                Some(Request::Processes) => {
                    control::send(&mut conn, &Reply::Processes(processes(shared)))?
                }
                Some(Request::Bye) => return Ok(false),
                Some(Request::Hello { .. }) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "second Hello"))
                }
                None => return Ok(true),
            }
        }
    })();
    let died = result.as_ref().map_or(true, |d| *d);
    // Reclaim before the slot is free (a new secondary in this slot gets another tag, but
    // the pid checks of cache slots want the process gone first).
    shared.hooks.secondary_gone(slot, tag, pid, start_time);
    lock(&shared.slots)[slot as usize - 1] = None;
    if died {
        tracing::warn!("secondary died: slot {slot}, pid {pid} (connection closed without goodbye); slot freed");
    } else {
        tracing::info!("secondary detached: slot {slot}, pid {pid}");
    }
    let _ = lock(&shared.events).send(SecondaryEvent::Gone { slot, pid, died });
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[derive(Debug)]
    struct NoHooks;

    impl ControlHooks for NoHooks {
        fn secondary_gone(&self, _: u32, _: OwnerTag, _: u32, _: Option<u64>) {}
        fn pool_stats(&self) -> Vec<shm::stats::PoolStats> {
            Vec::new()
        }
        fn port_stats(&self) -> Vec<shm::stats::PortStats> {
            Vec::new()
        }
    }

    fn server(tag: &str) -> (PathBuf, ControlServer) {
        let dir = std::env::temp_dir().join(format!("shmdp-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let s = ControlServer::start(&path, Vec::new(), 1, Arc::new(NoHooks), Access::private())
            .unwrap();
        (dir, s)
    }

    fn hello(pid: u32) -> Request {
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            pid,
            program: "t\x1b[2J".into(),
        }
    }

    #[test]
    fn the_socket_is_0600_and_a_hello_must_name_the_peers_own_pid() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, s) = server("pid");
        let path = dir.join("ctl.sock");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut c = UnixStream::connect(&path).unwrap();
        control::send(&mut c, &hello(std::process::id() + 1)).unwrap();
        let r = control::recv::<Reply>(&mut c).unwrap();
        assert!(matches!(r, Some(Reply::Refused { .. })), "{r:?}");
        let mut c = UnixStream::connect(&path).unwrap();
        control::send(&mut c, &hello(std::process::id())).unwrap();
        let r = control::recv::<Reply>(&mut c).unwrap();
        assert!(matches!(r, Some(Reply::Welcome(_))), "{r:?}");
        assert_eq!(s.secondaries(), [(1, std::process::id())]);
        // A query connection lists the primary and the attached secondary with its tag.
        let mut q = UnixStream::connect(&path).unwrap();
        control::send(&mut q, &Request::Processes).unwrap();
        match control::recv::<Reply>(&mut q).unwrap() {
            Some(Reply::Processes(list)) => {
                assert_eq!(list.len(), 2, "{list:?}");
                assert_eq!(list[0].owner_tag, OwnerTag::PRIMARY.0);
                assert_eq!((list[1].slot, list[1].pid), (1, std::process::id()));
                assert!(OwnerTag(list[1].owner_tag).is_process());
                assert_eq!(list[1].program, "t[2J");
            }
            r => panic!("{r:?}"),
        }
        s.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn idle_connections_beyond_the_pending_cap_evict_the_oldest() {
        let (dir, s) = server("evict");
        let path = dir.join("ctl.sock");
        let mut idle: Vec<UnixStream> = (0..MAX_PENDING + 4)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // The four oldest are shut down by the server: they read EOF long before the
        // Hello deadline.
        let t = std::time::Instant::now();
        for c in &mut idle[..4] {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(c.read(&mut b).unwrap(), 0, "evicted");
        }
        assert!(t.elapsed() < HELLO_TIMEOUT);
        assert!(lock(&s.shared.pending).len() <= MAX_PENDING);
        // A real Hello still gets through.
        let mut c = UnixStream::connect(&path).unwrap();
        control::send(&mut c, &hello(std::process::id())).unwrap();
        assert!(matches!(
            control::recv::<Reply>(&mut c).unwrap(),
            Some(Reply::Welcome(_))
        ));
        s.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn program_names_are_made_fit_for_one_log_line() {
        assert_eq!(sanitize_program("t\x1b[2J\nx"), "t[2Jx");
        assert_eq!(sanitize_program(&"a".repeat(300)).len(), 64);
        let emfile = io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32);
        assert!(is_resource_shortage(&emfile));
        assert!(!is_resource_shortage(&io::Error::from(
            io::ErrorKind::Interrupted
        )));
    }
}
