//! Socket I/O of the vhost-user control connection with deadlines: a peer on the other
//! end of the socket (a frontend, a backend) is untrusted in time as well as in content.
//! Every wait here is a `poll(2)` in slices of [`SLICE`], so a wait notices its cancel
//! flag (a signal, a port being stopped) within one slice whatever the peer does; every
//! whole message, once started, and every answer has a deadline ([`MESSAGE_TIMEOUT`]), so
//! a peer that trickles bytes or never answers costs its connection, never a thread of
//! ours forever. Sockets are used with `MSG_DONTWAIT` only: nothing here blocks in the
//! kernel past a slice.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a whole message may take once its first byte arrived, and how long a peer
/// has to answer a request or to take a message we send.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest single wait: the cancel flag is checked at least this often.
pub const SLICE: Duration = Duration::from_millis(50);
/// Most fds accepted with one message.
pub const MAX_FDS: usize = 8;

/// Why an exchange with the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer did not send or take a whole message in time.
    #[error("the peer did not answer within {} s", .0.as_secs_f32())]
    TimedOut(Duration),
    /// The cancel flag was raised (a signal, the port stopping).
    #[error("stopped while waiting for the peer")]
    Cancelled,
    /// A socket error. Its OS error is in the message (these errors are folded into
    /// one-line peer errors), so it is not also a `source`.
    #[error("socket: {0}")]
    Io(std::io::Error),
    /// The peer sent something malformed.
    #[error("{0}")]
    Protocol(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> WireError {
        WireError::Io(e)
    }
}

/// Where a wait ends: a deadline (none: wait for as long as the peer likes, still
/// checking the cancel flag), and the flag.
#[derive(Debug, Clone, Copy)]
pub struct Until<'a> {
    /// The deadline, if any.
    pub at: Option<Instant>,
    /// What the deadline was (for the error).
    pub limit: Duration,
    /// Raised: give up at the next slice.
    pub cancel: &'a AtomicBool,
}

impl<'a> Until<'a> {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration, cancel: &'a AtomicBool) -> Until<'a> {
        Until {
            at: Some(Instant::now() + limit),
            limit,
            cancel,
        }
    }

    /// No deadline, only the flag.
    pub fn never(cancel: &'a AtomicBool) -> Until<'a> {
        Until {
            at: None,
            limit: Duration::MAX,
            cancel,
        }
    }
}

/// Waits until `fd` is ready for `events` (or hung up), the deadline passes or the flag
/// is raised.
///
/// # Errors
/// [`WireError::TimedOut`], [`WireError::Cancelled`], or a `poll` error.
pub fn wait(fd: RawFd, events: libc::c_short, until: Until<'_>) -> Result<(), WireError> {
    loop {
        // Relaxed: a flag checked once per slice; a late look costs one slice.
        if until.cancel.load(Ordering::Relaxed) {
            return Err(WireError::Cancelled);
        }
        let slice = match until.at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(WireError::TimedOut(until.limit));
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack, count 1; poll only writes `revents`.
        let n = unsafe { libc::poll(&mut p, 1, slice.as_millis().max(1) as libc::c_int) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
    }
}

fn would_block(e: nix::Error) -> bool {
    e == nix::Error::EAGAIN || e == nix::Error::EINTR
}

/// Receives into `buf` what the peer sends, with any fds that come with the first bytes;
/// at least one byte, waiting until `until`. `Ok((0, _))` when the peer closed.
///
/// # Errors
/// As [`wait`], a socket error, or more than [`MAX_FDS`] fds.
pub fn recv_some(
    sock: &UnixStream,
    buf: &mut [u8],
    until: Until<'_>,
) -> Result<(usize, Vec<File>), WireError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    let fd = sock.as_raw_fd();
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        let got = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        );
        match got {
            Ok(msg) => {
                let mut files = Vec::new();
                let mut truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                // SAFETY: the kernel just installed `fd` in this process
                                // for us; we are its only owner.
                                files.push(unsafe { File::from_raw_fd(fd) });
                            }
                        }
                    }
                } else {
                    truncated = true;
                }
                if truncated || files.len() > MAX_FDS {
                    return Err(WireError::Protocol(format!(
                        "more than {MAX_FDS} fds with one message"
                    )));
                }
                return Ok((msg.bytes, files));
            }
            Err(e) if would_block(e) => wait(fd, libc::POLLIN, until)?,
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}

/// Fills `buf` from the socket before `until`, refusing fds (they belong to a message's
/// first bytes).
///
/// # Errors
/// [`WireError::Closed`] when the peer closes first, as [`recv_some`] otherwise.
pub fn recv_exact(sock: &UnixStream, buf: &mut [u8], until: Until<'_>) -> Result<(), WireError> {
    let mut done = 0;
    while done < buf.len() {
        let (n, files) = recv_some(sock, &mut buf[done..], until)?;
        if !files.is_empty() {
            return Err(WireError::Protocol("fds in the middle of a message".into()));
        }
        if n == 0 {
            return Err(WireError::Closed);
        }
        done += n;
    }
    Ok(())
}

/// Sends all of `msg` before `until`, with `fds` on its first byte.
///
/// # Errors
/// As [`wait`], or a socket error (a peer gone is [`WireError::Closed`]).
pub fn send_all(
    sock: &UnixStream,
    msg: &[u8],
    fds: &[RawFd],
    until: Until<'_>,
) -> Result<(), WireError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    let fd = sock.as_raw_fd();
    let mut done = 0;
    while done < msg.len() {
        let iov = [IoSlice::new(&msg[done..])];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if done == 0 && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<()>(
            fd,
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => done += n,
            Err(e) if would_block(e) => wait(fd, libc::POLLOUT, until)?,
            Err(nix::Error::EPIPE | nix::Error::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    Ok(())
}

/// Connects to the unix socket at `path`, retrying until `until` (the peer may not have
/// started yet). The connect itself never blocks: a listener that does not accept (its
/// backlog full) is retried like an absent one, so a signal is noticed within a slice.
///
/// # Errors
/// The last connect error once the deadline passed, or [`WireError::Cancelled`].
pub fn connect(path: &std::path::Path, until: Until<'_>) -> Result<UnixStream, WireError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    loop {
        // Relaxed: as in `wait`.
        if until.cancel.load(Ordering::Relaxed) {
            return Err(WireError::Cancelled);
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(std::io::Error::from)?;
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(e) if until.at.is_some_and(|at| Instant::now() >= at) => {
                return Err(std::io::Error::from(e).into())
            }
            Err(_) => std::thread::sleep(SLICE),
        }
    }
}

/// The uid and pid of the process at the other end of `sock` (`SO_PEERCRED`: who
/// connected, or who listened, as the kernel recorded it; the peer cannot forge it).
///
/// # Errors
/// A socket error.
pub fn peer_cred(sock: &UnixStream) -> Result<(u32, i32), WireError> {
    let c = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok((c.uid(), c.pid()))
}

/// The process's stop flag for waits on peers: the primary raises it from its SIGINT and
/// SIGTERM handlers (`signal_hook::flag::register`), so a port connecting to a silent
/// peer at start gives up within one [`SLICE`].
pub fn process_stop() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(Default::default)
}

/// A non-blocking, close-on-exec eventfd (a vring's kick or call), as a `File`.
///
/// # Errors
/// One line when the kernel refuses.
pub fn eventfd() -> Result<File, crate::VhostError> {
    // SAFETY: plain syscall; a valid fd is owned by the File below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(crate::setup_err!(
            "eventfd: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether a peer of `uid` may be given our memory: ours, or root's.
pub fn uid_allowed(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_times_out_and_a_raised_flag_cancels() {
        let (a, _b) = UnixStream::pair().unwrap();
        let flag = AtomicBool::new(false);
        let t0 = Instant::now();
        let mut buf = [0u8; 4];
        let e = recv_exact(
            &a,
            &mut buf,
            Until::after(Duration::from_millis(120), &flag),
        );
        assert!(matches!(e, Err(WireError::TimedOut(_))), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        flag.store(true, Ordering::Relaxed);
        let e = recv_exact(&a, &mut buf, Until::never(&flag));
        assert!(matches!(e, Err(WireError::Cancelled)), "{e:?}");
    }

    #[test]
    fn a_trickled_message_is_bounded_by_its_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        let flag = AtomicBool::new(false);
        let t = std::thread::spawn(move || {
            for _ in 0..20 {
                if send_all(&b, &[1], &[], Until::never(&AtomicBool::new(false))).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let mut buf = [0u8; 64];
        let e = recv_exact(
            &a,
            &mut buf,
            Until::after(Duration::from_millis(150), &flag),
        );
        assert!(matches!(e, Err(WireError::TimedOut(_))), "{e:?}");
        drop(a);
        t.join().unwrap();
    }

    #[test]
    fn connect_does_not_block_on_a_listener_that_never_accepts() {
        let dir = std::env::temp_dir().join(format!("shmdp-wire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full.sock");
        let _ = std::fs::remove_file(&path);
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let flag = AtomicBool::new(false);
        // Fill the backlog (std listens with 128).
        let mut held = Vec::new();
        while let Ok(s) = connect(&path, Until::after(Duration::ZERO, &flag)) {
            held.push(s);
            assert!(held.len() < 10_000);
        }
        let t0 = Instant::now();
        let e = connect(&path, Until::after(Duration::from_millis(200), &flag));
        assert!(e.is_err());
        assert!(t0.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bytes_and_fds_cross_and_a_closed_peer_is_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let flag = AtomicBool::new(false);
        let f = File::open("/dev/null").unwrap();
        send_all(&a, b"hello", &[f.as_raw_fd()], Until::never(&flag)).unwrap();
        let mut buf = [0u8; 5];
        let (n, files) = recv_some(&b, &mut buf, Until::never(&flag)).unwrap();
        assert_eq!((n, files.len()), (5, 1));
        drop(a);
        assert!(matches!(
            recv_exact(&b, &mut buf, Until::never(&flag)),
            Err(WireError::Closed)
        ));
        let (uid, pid) = peer_cred(&b).unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert!(uid_allowed(uid));
    }
}
