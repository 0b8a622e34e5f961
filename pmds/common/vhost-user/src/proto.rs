//! The vhost-user wire protocol (QEMU's docs/interop/vhost-user.rst), backend side, for
//! the messages a virtio-net device needs. Every message is a 12-byte header — request
//! `u32`, flags `u32` (version 1 in bits 0-1, REPLY 0x4, NEED_REPLY 0x8), payload size
//! `u32` — then the payload; file descriptors ride with the header (SCM_RIGHTS).
//!
//! [`decode`] turns header and payload into a [`Msg`] and refuses anything malformed
//! (sizes that do not match the request, too many regions, fds that do not match) without
//! touching a socket: it is what the fuzz target exercises. [`recv`] and [`send_reply`]
//! do the socket part, through [`wire`]: with a deadline on every whole message.

use crate::VhostError;
use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::wire::{self, Until, WireError};

/// Most regions a memory table may hold (QEMU sends at most 8 without the mem-slots
/// feature).
pub const MAX_REGIONS: usize = 64;

/// Most queue pairs of one port (both sides).
pub const MAX_QUEUE_PAIRS: u16 = 8;

/// One region of the frontend's memory table, as `SET_MEM_TABLE` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    /// Guest physical address of the first byte.
    pub guest_phys_addr: u64,
    /// Bytes.
    pub size: u64,
    /// The frontend's virtual address of the first byte.
    pub user_addr: u64,
    /// Offset of the first byte in the file.
    pub mmap_offset: u64,
}

/// Where a vring is, as the frontend described it (its own virtual addresses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VringAddrs {
    /// Entries (a power of two).
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Driver ("available") area.
    pub avail: u64,
    /// Device ("used") area.
    pub used: u64,
    /// First available index to process (`SET_VRING_BASE`).
    pub base: u16,
}

/// Header flag: protocol version 1.
pub const VERSION: u32 = 0x1;
/// Header flag: this is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the frontend wants an ack (with `REPLY_ACK` negotiated).
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// Largest payload accepted.
pub const MAX_PAYLOAD: u32 = 4096;
/// Most fds one message may carry.
pub const MAX_FDS: usize = wire::MAX_FDS;
/// Protocol feature: several queue pairs.
pub const PROTOCOL_F_MQ: u64 = 1 << 0;
/// Protocol feature: acks on request.
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;

/// A request the backend understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// `GET_FEATURES` (1).
    GetFeatures,
    /// `SET_FEATURES` (2).
    SetFeatures(u64),
    /// `SET_OWNER` (3).
    SetOwner,
    /// `RESET_OWNER` (4).
    ResetOwner,
    /// `SET_MEM_TABLE` (5): one fd per region.
    SetMemTable(Vec<RegionSpec>),
    /// `SET_VRING_NUM` (8).
    SetVringNum {
        /// Vring.
        index: u32,
        /// Entries.
        num: u32,
    },
    /// `SET_VRING_ADDR` (9).
    SetVringAddr {
        /// Vring.
        index: u32,
        /// Where (size and base are not set by this message).
        addrs: VringAddrs,
    },
    /// `SET_VRING_BASE` (10).
    SetVringBase {
        /// Vring.
        index: u32,
        /// First available index.
        base: u32,
    },
    /// `GET_VRING_BASE` (11): stops the vring.
    GetVringBase(u32),
    /// `SET_VRING_KICK` (12); `has_fd` false when the no-fd bit is set.
    SetVringKick {
        /// Vring.
        index: u32,
        /// An fd came with it.
        has_fd: bool,
    },
    /// `SET_VRING_CALL` (13).
    SetVringCall {
        /// Vring.
        index: u32,
        /// An fd came with it.
        has_fd: bool,
    },
    /// `SET_VRING_ERR` (14).
    SetVringErr {
        /// Vring.
        index: u32,
        /// An fd came with it.
        has_fd: bool,
    },
    /// `GET_PROTOCOL_FEATURES` (15).
    GetProtocolFeatures,
    /// `SET_PROTOCOL_FEATURES` (16).
    SetProtocolFeatures(u64),
    /// `GET_QUEUE_NUM` (17).
    GetQueueNum,
    /// `SET_VRING_ENABLE` (18).
    SetVringEnable {
        /// Vring.
        index: u32,
        /// Enable or disable.
        enable: bool,
    },
    /// `GET_MAX_MEM_SLOTS` (36).
    GetMaxMemSlots,
    /// A request we do not implement (answered with a failure when an ack is wanted).
    Unsupported(u32),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code.
    pub request: u32,
    /// Flags.
    pub flags: u32,
    /// Payload bytes.
    pub size: u32,
}

impl Header {
    /// Parses the 12 header bytes.
    ///
    /// # Errors
    /// A wrong version, a reply where a request belongs, or an oversized payload.
    pub fn parse(b: &[u8; 12]) -> Result<Header, VhostError> {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            request: word(0),
            flags: word(4),
            size: word(8),
        };
        if h.flags & 0x3 != VERSION {
            return Err(crate::peer_err!(
                "message version {} (1 expected)",
                h.flags & 0x3
            ));
        }
        if h.flags & FLAG_REPLY != 0 {
            return Err(VhostError::Peer(
                "a reply where a request was expected".into(),
            ));
        }
        if h.size > MAX_PAYLOAD {
            return Err(crate::peer_err!(
                "payload of {} bytes (at most {MAX_PAYLOAD})",
                h.size
            ));
        }
        Ok(h)
    }

    /// The frontend wants an ack.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

fn u32_at(p: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(p: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"))
}

/// Decodes request `h` with `payload`, which came with `nfds` file descriptors.
///
/// # Errors
/// One line when the payload or the fd count does not fit the request.
pub fn decode(h: &Header, payload: &[u8], nfds: usize) -> Result<Msg, VhostError> {
    let size = |want: usize| -> Result<(), VhostError> {
        if payload.len() == want {
            Ok(())
        } else {
            Err(crate::peer_err!(
                "request {}: payload of {} bytes, {want} expected",
                h.request,
                payload.len()
            ))
        }
    };
    let fds = |want: usize| -> Result<(), VhostError> {
        if nfds == want {
            Ok(())
        } else {
            Err(crate::peer_err!(
                "request {}: {nfds} fds, {want} expected",
                h.request
            ))
        }
    };
    let state = || -> Result<(u32, u32), VhostError> {
        size(8)?;
        fds(0)?;
        Ok((u32_at(payload, 0), u32_at(payload, 4)))
    };
    // SET_VRING_KICK/CALL/ERR: index in bits 0-7, bit 8 set when no fd is sent.
    let vring_fd = || -> Result<(u32, bool), VhostError> {
        size(8)?;
        let v = u64_at(payload, 0);
        let has_fd = v & 0x100 == 0;
        fds(usize::from(has_fd))?;
        Ok(((v & 0xff) as u32, has_fd))
    };
    let none = |m: Msg| -> Result<Msg, VhostError> {
        // Some frontends send an 8-byte zero payload with argument-less requests.
        if !payload.is_empty() && payload.len() != 8 {
            return Err(crate::peer_err!(
                "request {}: unexpected payload",
                h.request
            ));
        }
        fds(0)?;
        Ok(m)
    };
    let value = || -> Result<u64, VhostError> {
        size(8)?;
        fds(0)?;
        Ok(u64_at(payload, 0))
    };
    Ok(match h.request {
        1 => none(Msg::GetFeatures)?,
        2 => Msg::SetFeatures(value()?),
        3 => none(Msg::SetOwner)?,
        4 => none(Msg::ResetOwner)?,
        5 => {
            if payload.len() < 8 {
                return Err(VhostError::Peer("SET_MEM_TABLE: short payload".into()));
            }
            let n = u32_at(payload, 0) as usize;
            if n == 0 || n > MAX_REGIONS {
                return Err(crate::peer_err!(
                    "SET_MEM_TABLE: {n} regions (1..={MAX_REGIONS})"
                ));
            }
            size(8 + 32 * n)?;
            fds(n)?;
            Msg::SetMemTable(
                (0..n)
                    .map(|i| {
                        let o = 8 + 32 * i;
                        RegionSpec {
                            guest_phys_addr: u64_at(payload, o),
                            size: u64_at(payload, o + 8),
                            user_addr: u64_at(payload, o + 16),
                            mmap_offset: u64_at(payload, o + 24),
                        }
                    })
                    .collect(),
            )
        }
        8 => {
            let (index, num) = state()?;
            Msg::SetVringNum { index, num }
        }
        9 => {
            size(40)?;
            fds(0)?;
            Msg::SetVringAddr {
                index: u32_at(payload, 0),
                addrs: VringAddrs {
                    size: 0,
                    desc: u64_at(payload, 8),
                    used: u64_at(payload, 16),
                    avail: u64_at(payload, 24),
                    base: 0,
                },
            }
        }
        10 => {
            let (index, base) = state()?;
            Msg::SetVringBase { index, base }
        }
        11 => Msg::GetVringBase(state()?.0),
        12 => {
            let (index, has_fd) = vring_fd()?;
            Msg::SetVringKick { index, has_fd }
        }
        13 => {
            let (index, has_fd) = vring_fd()?;
            Msg::SetVringCall { index, has_fd }
        }
        14 => {
            let (index, has_fd) = vring_fd()?;
            Msg::SetVringErr { index, has_fd }
        }
        15 => none(Msg::GetProtocolFeatures)?,
        16 => Msg::SetProtocolFeatures(value()?),
        17 => none(Msg::GetQueueNum)?,
        18 => {
            let (index, num) = state()?;
            Msg::SetVringEnable {
                index,
                enable: num != 0,
            }
        }
        36 => none(Msg::GetMaxMemSlots)?,
        other => Msg::Unsupported(other),
    })
}

/// One request as received: header, payload, and the fds that came with it.
pub type Received = (Header, Vec<u8>, Vec<File>);

/// Receives one request: waits for its first bytes for as long as the frontend likes
/// (waking every second to ask `idle` whether to give up: `false` ends the wait with
/// [`WireError::Cancelled`]), then the rest of the header and the payload within
/// [`wire::MESSAGE_TIMEOUT`].
///
/// # Errors
/// `Ok(None)` when the frontend closed the connection between messages; `Err` for a
/// socket error, a stall inside a message, a raised `stop`, or a malformed header.
pub fn recv(
    sock: &UnixStream,
    stop: &AtomicBool,
    mut idle: impl FnMut() -> bool,
) -> Result<Option<Received>, WireError> {
    let mut hdr = [0u8; 12];
    let (n, files) = loop {
        match wire::recv_some(sock, &mut hdr, Until::after(Duration::from_secs(1), stop)) {
            Err(WireError::TimedOut(_)) if idle() => continue,
            Err(WireError::TimedOut(_)) => return Err(WireError::Cancelled),
            r => break r?,
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let until = Until::after(wire::MESSAGE_TIMEOUT, stop);
    wire::recv_exact(sock, &mut hdr[n..], until)?;
    let h = Header::parse(&hdr).map_err(|e| WireError::Protocol(e.to_string()))?;
    let mut payload = vec![0u8; h.size as usize];
    wire::recv_exact(sock, &mut payload, until)?;
    Ok(Some((h, payload, files)))
}

/// Sends the reply to request `h` with `payload` (within [`wire::MESSAGE_TIMEOUT`]).
///
/// # Errors
/// A socket error, or a frontend that does not take it in time.
pub fn send_reply(
    sock: &UnixStream,
    h: &Header,
    payload: &[u8],
    stop: &AtomicBool,
) -> Result<(), WireError> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&h.request.to_le_bytes());
    out.extend_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    wire::send_all(sock, &out, &[], Until::after(wire::MESSAGE_TIMEOUT, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(request: u32, size: u32) -> Header {
        Header {
            request,
            flags: VERSION,
            size,
        }
    }

    #[test]
    fn decodes_the_messages_a_net_backend_needs() {
        assert_eq!(decode(&hdr(1, 0), &[], 0), Ok(Msg::GetFeatures));
        assert_eq!(
            decode(&hdr(2, 8), &(1u64 << 32).to_le_bytes(), 0),
            Ok(Msg::SetFeatures(1 << 32))
        );
        let mut p = 2u32.to_le_bytes().to_vec();
        p.extend_from_slice(&256u32.to_le_bytes());
        assert_eq!(
            decode(&hdr(8, 8), &p, 0),
            Ok(Msg::SetVringNum { index: 2, num: 256 })
        );
        assert_eq!(
            decode(&hdr(12, 8), &0x101u64.to_le_bytes(), 0),
            Ok(Msg::SetVringKick {
                index: 1,
                has_fd: false
            })
        );
        assert_eq!(
            decode(&hdr(13, 8), &1u64.to_le_bytes(), 1),
            Ok(Msg::SetVringCall {
                index: 1,
                has_fd: true
            })
        );
        let mut m = 1u32.to_le_bytes().to_vec();
        m.extend_from_slice(&[0; 4]);
        for v in [0u64, 0x1000, 0x7f00_0000, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            decode(&hdr(5, 40), &m, 1),
            Ok(Msg::SetMemTable(vec![RegionSpec {
                guest_phys_addr: 0,
                size: 0x1000,
                user_addr: 0x7f00_0000,
                mmap_offset: 0
            }]))
        );
        assert_eq!(decode(&hdr(99, 0), &[], 0), Ok(Msg::Unsupported(99)));
    }

    #[test]
    fn refuses_malformed_messages() {
        assert!(decode(&hdr(2, 4), &[0; 4], 0).is_err(), "short value");
        assert!(
            decode(&hdr(13, 8), &1u64.to_le_bytes(), 0).is_err(),
            "fd missing"
        );
        assert!(decode(&hdr(8, 8), &[0; 8], 3).is_err(), "stray fds");
        let mut m = 1000u32.to_le_bytes().to_vec();
        m.extend_from_slice(&[0; 4]);
        assert!(decode(&hdr(5, 8), &m, 0).is_err(), "too many regions");
        let mut m = 2u32.to_le_bytes().to_vec();
        m.extend_from_slice(&[0; 36]);
        assert!(
            decode(&hdr(5, 40), &m, 2).is_err(),
            "regions and size disagree"
        );
        let mut h = [0u8; 12];
        h[4] = 2;
        assert!(Header::parse(&h).is_err(), "version 2");
        h[4] = 1 | 4;
        assert!(Header::parse(&h).is_err(), "a reply");
        h[4] = 1;
        h[8..12].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(Header::parse(&h).is_err(), "oversized");
    }
}

/// Frontend side: sends request `request` with `payload` and `fds`, all of it before
/// `until` (usually [`wire::MESSAGE_TIMEOUT`] from now).
///
/// # Errors
/// A socket error, a backend that does not take it in time, or the cancel flag.
pub fn send_request(
    sock: &UnixStream,
    request: u32,
    payload: &[u8],
    fds: &[RawFd],
    until: Until<'_>,
) -> Result<(), WireError> {
    let mut msg = Vec::with_capacity(12 + payload.len());
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&VERSION.to_le_bytes());
    msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    msg.extend_from_slice(payload);
    wire::send_all(sock, &msg, fds, until)
}

/// Frontend side: reads the reply to `request`, the whole of it before `until`, and
/// returns its payload.
///
/// # Errors
/// A socket error, a backend that does not answer in time, the cancel flag, or a reply
/// that is not the one expected.
pub fn recv_reply(sock: &UnixStream, request: u32, until: Until<'_>) -> Result<Vec<u8>, WireError> {
    let mut hdr = [0u8; 12];
    wire::recv_exact(sock, &mut hdr, until)?;
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (code, flags, size) = (word(0), word(4), word(8));
    if code != request || flags & FLAG_REPLY == 0 || size > MAX_PAYLOAD {
        return Err(WireError::Protocol(format!(
            "reply to request {request}: got request {code}, flags {flags:#x}, {size} bytes"
        )));
    }
    let mut payload = vec![0u8; size as usize];
    wire::recv_exact(sock, &mut payload, until)?;
    Ok(payload)
}

/// Request codes the frontend sends.
pub mod code {
    /// `GET_FEATURES`.
    pub const GET_FEATURES: u32 = 1;
    /// `SET_FEATURES`.
    pub const SET_FEATURES: u32 = 2;
    /// `SET_OWNER`.
    pub const SET_OWNER: u32 = 3;
    /// `SET_MEM_TABLE`.
    pub const SET_MEM_TABLE: u32 = 5;
    /// `SET_VRING_NUM`.
    pub const SET_VRING_NUM: u32 = 8;
    /// `SET_VRING_ADDR`.
    pub const SET_VRING_ADDR: u32 = 9;
    /// `SET_VRING_BASE`.
    pub const SET_VRING_BASE: u32 = 10;
    /// `GET_VRING_BASE`.
    pub const GET_VRING_BASE: u32 = 11;
    /// `SET_VRING_KICK`.
    pub const SET_VRING_KICK: u32 = 12;
    /// `SET_VRING_CALL`.
    pub const SET_VRING_CALL: u32 = 13;
    /// `GET_PROTOCOL_FEATURES`.
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    /// `SET_PROTOCOL_FEATURES`.
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    /// `GET_QUEUE_NUM`.
    pub const GET_QUEUE_NUM: u32 = 17;
    /// `SET_VRING_ENABLE`.
    pub const SET_VRING_ENABLE: u32 = 18;
}
