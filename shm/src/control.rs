//! The control protocol between a primary and its secondaries, over the unix stream socket
//! `ctl.sock` in the runtime directory.
//!
//! Each message is a little-endian `u32` length followed by that many bytes of postcard.
//! A secondary opens the connection with [`Request::Hello`] and keeps it open for as long
//! as it is attached: the primary frees the secondary's slot when the connection closes (the
//! kernel closes it when the process dies, however it dies), and the secondary learns that
//! the primary is gone when its end reads EOF. Messages from a peer are untrusted: a frame
//! larger than [`MAX_FRAME`] or one that does not decode ends the connection.
//!
//! Both ends check who is at the other end before believing anything (unix(7),
//! `SO_PEERCRED`): the primary admits only its own user, root or its `--group`
//! ([`crate::access::Access::admits`]) and takes the pid from the kernel, not from Hello;
//! a secondary connects only through [`connect`], which checks the runtime directory and
//! that the socket's listener runs as the directory's owner. The primary reads requests
//! with [`recv_within`]: a frame at most [`MAX_REQUEST`] bytes, due whole within a
//! deadline, so a peer cannot hold a connection by trickling bytes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 4;
/// Largest frame either side accepts.
pub const MAX_FRAME: u32 = 1 << 20;
/// Largest request frame the primary accepts (requests are a few dozen bytes).
pub const MAX_REQUEST: u32 = 4096;

/// What a secondary asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First message: who the secondary is.
    Hello {
        /// [`PROTOCOL_VERSION`] of the secondary.
        protocol: u32,
        /// Its pid.
        pid: u32,
        /// Program name, for the primary's log.
        program: String,
    },
    /// The list of memsegs again.
    Memsegs,
    /// Orderly detach.
    Bye,
    /// Statistics of every mempool. Allowed as the first message of a connection (a query
    /// connection: no Hello, no process slot, closed after the reply) or on an attached one.
    PoolStats,
    /// Statistics of every port; allowed on a query connection like `PoolStats`.
    PortStats,
    /// The processes attached now (the primary first), with the owner tags their buffers
    /// carry: what an exact pool audit calls live. Allowed on a query connection like
    /// `PoolStats`. A process is listed until the primary has reclaimed what it held, so
    /// a dead process missing from the list has been cleaned up.
    Processes,
}

/// What the primary answers (or announces).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `Hello`.
    Welcome(Welcome),
    /// The request was refused; the connection closes.
    Refused {
        /// One line saying why and what to do.
        reason: String,
    },
    /// Answer to `Memsegs`.
    Memsegs(Vec<MemsegRecord>),
    /// Sent to every secondary when the primary shuts down.
    Closing,
    /// Answer to `PoolStats`.
    PoolStats(Vec<crate::stats::PoolStats>),
    /// Answer to `PortStats`.
    PortStats(Vec<crate::stats::PortStats>),
    /// Answer to `Processes`.
    Processes(Vec<ProcessRecord>),
}

/// One process attached to the primary (or the primary itself, slot 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process slot (0 = the primary).
    pub slot: u32,
    /// Pid.
    pub pid: u32,
    /// The owner tag written into the headers of the mbufs it holds.
    pub owner_tag: u32,
    /// Program name it gave in its Hello.
    pub program: String,
}

/// The primary's greeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Process slot assigned to the secondary (1-based; 0 is the primary).
    pub slot: u32,
    /// The owner tag of this attachment: what the secondary writes into the mbuf headers
    /// it holds. Unique for the primary's run: a slot used again (after a goodbye or a
    /// death) comes with another tag, so nothing of the earlier holder is mistaken for the
    /// new one's.
    pub owner_tag: u32,
    /// The primary's pid.
    pub primary_pid: u32,
    /// Generation of the run.
    pub generation: u64,
    /// Every memseg of the primary.
    pub memsegs: Vec<MemsegRecord>,
}

/// One memseg as the primary describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemsegRecord {
    /// Index.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Path of the file to map.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// True when on hugetlbfs.
    pub hugetlb: bool,
    /// True for an IVSHMEM export segment: a guest may write anything into it, so a
    /// secondary that finds it unusable continues without it.
    pub exported: bool,
}

/// Writes one framed message.
///
/// # Errors
/// I/O errors of the stream.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body =
        postcard::to_stdvec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one framed message; `Ok(None)` on a clean EOF before a frame.
///
/// # Errors
/// I/O errors, a frame over [`MAX_FRAME`], or a body that does not decode
/// (`InvalidData`).
pub fn recv<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one framed message of at most `max_len` bytes from `conn`, waiting up to
/// `idle` (`None`: for ever) for its first byte and then at most `frame` for the whole
/// frame, however the peer spaces its bytes. `Ok(None)` on a clean EOF before a frame.
///
/// # Errors
/// `TimedOut`/`WouldBlock` when a deadline passes, `InvalidData` for a frame over
/// `max_len` or a body that does not decode, other I/O errors.
pub fn recv_within<T: DeserializeOwned>(
    conn: &mut UnixStream,
    idle: Option<Duration>,
    frame: Duration,
    max_len: u32,
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    conn.set_read_timeout(idle)?;
    let first = loop {
        match conn.read(&mut len) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    let deadline = Instant::now() + frame;
    read_by(conn, &mut len[first..], deadline)?;
    let len = u32::from_le_bytes(len);
    if len > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds {max_len}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    read_by(conn, &mut body, deadline)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Fills `buf` from `conn` before `deadline` (each read waits only for what is left).
fn read_by(conn: &mut UnixStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "control frame not complete within its deadline",
            ));
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Connects to the control socket of the runtime directory `dir` as a secondary: checks
/// the directory first ([`crate::runtime::RuntimeDir::check_existing`]), then that the
/// process listening on the socket runs as the directory's owner or root
/// (`SO_PEERCRED`), so a socket someone else put in our way is never spoken to.
///
/// # Errors
/// [`crate::Error::Untrusted`] for a directory or listener we cannot trust (one line with
/// the fix); [`crate::Error::Io`] when the socket cannot be reached (no primary, or it is
/// starting).
pub fn connect(dir: &crate::runtime::RuntimeDir) -> crate::Result<UnixStream> {
    let Some((dir, owner)) = dir.check_existing()? else {
        return Err(crate::Error::io(
            format!("connect {}", dir.socket_path().display()),
            io::ErrorKind::NotFound.into(),
        ));
    };
    let path = dir.socket_path();
    let conn = UnixStream::connect(&path)
        .map_err(|e| crate::Error::io(format!("connect {}", path.display()), e))?;
    let peer = crate::access::peer_cred(&conn)
        .map_err(|e| crate::Error::io(format!("SO_PEERCRED on {}", path.display()), e))?;
    if peer.uid != owner && peer.uid != 0 {
        return Err(crate::Error::Untrusted(format!(
            "the process on {} (pid {}) runs as uid {}, not as uid {owner} who owns the runtime directory; it is not the primary, do not use this prefix until it is gone",
            path.display(),
            peer.pid,
            peer.uid
        )));
    }
    Ok(conn)
}

/// Sends one request on a fresh query connection to the primary of runtime directory
/// `dir` (through [`connect`]) and reads the reply, for requests that need no process
/// slot, such as [`Request::PoolStats`].
///
/// # Errors
/// I/O errors (`PermissionDenied` for an untrusted directory or listener), or
/// `UnexpectedEof` when the primary closes without answering.
pub fn query(dir: &crate::runtime::RuntimeDir, request: &Request) -> io::Result<Reply> {
    let mut conn = connect(dir).map_err(|e| match e {
        crate::Error::Io { source, .. } => source,
        other => io::Error::new(io::ErrorKind::PermissionDenied, other.to_string()),
    })?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    send(&mut conn, request)?;
    recv::<Reply>(&mut conn)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the primary closed without answering",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            pid: 42,
            program: "t".into(),
        };
        send(&mut buf, &hello).unwrap();
        send(&mut buf, &Request::Bye).unwrap();
        let mut r = &buf[..];
        assert_eq!(recv::<Request>(&mut r).unwrap(), Some(hello));
        assert_eq!(recv::<Request>(&mut r).unwrap(), Some(Request::Bye));
        assert_eq!(recv::<Request>(&mut r).unwrap(), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "socket timeouts are not supported by Miri")]
    fn a_trickled_frame_times_out_on_its_whole_frame_deadline() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let body = postcard::to_stdvec(&Request::Memsegs).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let writer = std::thread::spawn(move || {
            // One byte every 60 ms: each read would meet a per-read timeout of 100 ms.
            for byte in frame {
                if b.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(60));
            }
        });
        let t = Instant::now();
        let r = recv_within::<Request>(&mut a, None, Duration::from_millis(100), MAX_REQUEST);
        assert!(r.is_err(), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        drop(a);
        writer.join().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "socket timeouts are not supported by Miri")]
    fn recv_within_reads_whole_frames_and_limits_their_size() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut b, &Request::Bye).unwrap();
        let r = recv_within::<Request>(&mut a, None, Duration::from_secs(1), MAX_REQUEST);
        assert_eq!(r.unwrap(), Some(Request::Bye));
        b.write_all(&(MAX_REQUEST + 1).to_le_bytes()).unwrap();
        let r = recv_within::<Request>(&mut a, None, Duration::from_secs(1), MAX_REQUEST);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
        drop(b);
        let r = recv_within::<Request>(&mut a, None, Duration::from_secs(1), MAX_REQUEST);
        assert!(matches!(r, Ok(None)), "{r:?}");
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut r: &[u8] = &(MAX_FRAME + 1).to_le_bytes();
        assert!(recv::<Request>(&mut r).is_err());
        let mut r: &[u8] = &[3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(recv::<Request>(&mut r).is_err());
        let mut r: &[u8] = &[9, 0, 0, 0, 1];
        assert!(recv::<Request>(&mut r).is_err(), "truncated body");
    }
}
