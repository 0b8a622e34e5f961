//! The control protocol between a primary and its secondaries, over the unix stream socket
//! `ctl.sock` in the runtime directory.
//!
//! Each message is a little-endian `u32` length followed by that many bytes of postcard.
//! A secondary opens the connection with [`Request::Hello`] and keeps it open for as long
//! as it is attached: the primary frees the secondary's slot when the connection closes (the
//! kernel closes it when the process dies, however it dies), and the secondary learns that
//! the primary is gone when its end reads EOF. Messages from a peer are untrusted: a frame
//! larger than [`MAX_FRAME`] or one that does not decode ends the connection.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame either side accepts.
pub const MAX_FRAME: u32 = 1 << 20;

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
}

/// The primary's greeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Process slot assigned to the secondary (1-based; 0 is the primary).
    pub slot: u32,
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

/// Sends one request on a fresh query connection to the control socket at `path` and reads
/// the reply (for requests that need no process slot, such as [`Request::PoolStats`]).
///
/// # Errors
/// I/O errors, or `UnexpectedEof` when the primary closes without answering.
pub fn query(path: &std::path::Path, request: &Request) -> io::Result<Reply> {
    let mut conn = std::os::unix::net::UnixStream::connect(path)?;
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
    fn oversized_and_garbage_frames_are_errors() {
        let mut r: &[u8] = &(MAX_FRAME + 1).to_le_bytes();
        assert!(recv::<Request>(&mut r).is_err());
        let mut r: &[u8] = &[3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(recv::<Request>(&mut r).is_err());
        let mut r: &[u8] = &[9, 0, 0, 0, 1];
        assert!(recv::<Request>(&mut r).is_err(), "truncated body");
    }
}
