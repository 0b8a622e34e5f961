//! The primary's end of the control socket: greets secondaries, hands out process slots and
//! notices when a secondary goes away (its connection closes, which the kernel does however
//! the process dies), freeing its slot at once.
//!
//! One thread accepts; one thread per connection reads requests. Everything a secondary
//! sends is untrusted: bad frames end that connection and nothing else.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm::control::{self, MemsegRecord, Reply, Request, Welcome, PROTOCOL_VERSION};

use crate::{PrimaryError, Result};

/// What the control server asks of the rest of the primary.
pub trait ControlHooks: Send + Sync + std::fmt::Debug {
    /// A secondary detached or died; runs before its slot can be given to another process,
    /// so everything tagged with the slot can be reclaimed. `start_time` is the process's
    /// /proc start time read when it attached (to tell a reused pid apart).
    fn secondary_gone(&self, slot: u32, pid: u32, start_time: Option<u64>);
    /// Statistics of every mempool.
    fn pool_stats(&self) -> Vec<shm::stats::PoolStats>;
    /// Statistics of every port.
    fn port_stats(&self) -> Vec<shm::stats::PortStats>;
}

/// Most secondaries attached at once.
pub const MAX_SECONDARIES: usize = 64;

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
    conn: UnixStream,
}

#[derive(Debug)]
struct Shared {
    slots: Mutex<Vec<Option<SlotEntry>>>,
    memsegs: Vec<MemsegRecord>,
    generation: u64,
    events: Mutex<Sender<SecondaryEvent>>,
    hooks: Arc<dyn ControlHooks>,
}

/// The running control server.
#[derive(Debug)]
pub struct ControlServer {
    shared: Arc<Shared>,
    path: PathBuf,
    events: Mutex<Receiver<SecondaryEvent>>,
}

impl ControlServer {
    /// Binds the socket at `path` and starts serving.
    ///
    /// # Errors
    /// [`PrimaryError::Socket`] if the socket cannot be bound.
    pub fn start(
        path: &Path,
        memsegs: Vec<MemsegRecord>,
        generation: u64,
        hooks: Arc<dyn ControlHooks>,
    ) -> Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| PrimaryError::Socket {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            slots: Mutex::new((0..MAX_SECONDARIES).map(|_| None).collect()),
            memsegs,
            generation,
            events: Mutex::new(tx),
            hooks,
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

    /// Waits up to `timeout` for the next secondary event.
    pub fn next_event(&self, timeout: Duration) -> Option<SecondaryEvent> {
        lock(&self.events).recv_timeout(timeout).ok()
    }

    /// Tells every secondary that the primary is closing, and removes the socket.
    pub fn stop(self) {
        let _ = std::fs::remove_file(&self.path);
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
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                let s = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("ctl-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve(conn, &s) {
                            tracing::debug!("control connection ended: {e}");
                        }
                    });
            }
            Err(e) => tracing::warn!("control socket accept: {e}"),
        }
    }
}

fn serve(mut conn: UnixStream, shared: &Shared) -> io::Result<()> {
    // A greeting must come promptly; after that the connection may idle for ever.
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (pid, program) = match control::recv::<Request>(&mut conn)? {
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
            (pid, program)
        }
        Some(Request::PoolStats) => {
            // A query connection: answer and close, no slot.
            control::send(&mut conn, &Reply::PoolStats(shared.hooks.pool_stats()))?;
            return Ok(());
        }
        Some(Request::PortStats) => {
            control::send(&mut conn, &Reply::PortStats(shared.hooks.port_stats()))?;
            return Ok(());
        }
        _ => {
            let reason = "expected Hello as the first control message".to_string();
            control::send(&mut conn, &Reply::Refused { reason })?;
            return Ok(());
        }
    };
    let start_time = shm_mempool::process_start_time(pid);
    let slot = {
        let mut slots = lock(&shared.slots);
        let Some(free) = slots.iter().position(|s| s.is_none()) else {
            let reason = format!(
                "all {MAX_SECONDARIES} secondary slots are in use; detach a secondary first"
            );
            drop(slots);
            control::send(&mut conn, &Reply::Refused { reason })?;
            return Ok(());
        };
        slots[free] = Some(SlotEntry {
            pid,
            conn: conn.try_clone()?,
        });
        free as u32 + 1
    };
    tracing::info!("secondary attached: slot {slot}, pid {pid}, {program}");
    let _ = lock(&shared.events).send(SecondaryEvent::Attached { slot, pid, program });
    let welcome = Welcome {
        slot,
        primary_pid: std::process::id(),
        generation: shared.generation,
        memsegs: shared.memsegs.clone(),
    };
    let result = (|| -> io::Result<bool> {
        control::send(&mut conn, &Reply::Welcome(welcome))?;
        conn.set_read_timeout(None)?;
        loop {
            match control::recv::<Request>(&mut conn)? {
                Some(Request::Memsegs) => {
                    control::send(&mut conn, &Reply::Memsegs(shared.memsegs.clone()))?
                }
                Some(Request::PoolStats) => {
                    control::send(&mut conn, &Reply::PoolStats(shared.hooks.pool_stats()))?
                }
                Some(Request::PortStats) => {
                    control::send(&mut conn, &Reply::PortStats(shared.hooks.port_stats()))?
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
    // Reclaim before the slot is free: a new secondary in this slot gets the same owner tag.
    shared.hooks.secondary_gone(slot, pid, start_time);
    lock(&shared.slots)[slot as usize - 1] = None;
    if died {
        tracing::warn!("secondary died: slot {slot}, pid {pid} (connection closed without goodbye); slot freed");
    } else {
        tracing::info!("secondary detached: slot {slot}, pid {pid}");
    }
    let _ = lock(&shared.events).send(SecondaryEvent::Gone { slot, pid, died });
    result.map(|_| ())
}
