//! Live Linux interfaces for the pcap driver (`iface=`, `rx_iface=`, `tx_iface=`), through
//! an AF_PACKET socket with memory-mapped TPACKET_V2 rings: receiving reads frames the
//! kernel wrote into the shared ring (no system call per packet), sending fills frames of
//! the tx ring and kicks the kernel once per burst.
//!
//! The socket belongs to the process that polls the queue: it is opened when the queue is
//! claimed and closed when the claim is dropped. The kernel is the only other party to the
//! rings; the frame status words are the handshake (acquire to read what the kernel
//! wrote, release to hand a frame back).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use libc::{c_int, c_void};

/// Bytes per ring frame (the largest packet is this minus [`DATA_OFF`]).
const FRAME_SIZE: usize = 2048;
/// Frames per ring.
const FRAME_NR: usize = 4096;
/// Bytes per ring block (frames do not straddle blocks).
const BLOCK_SIZE: usize = 1 << 16;
/// Where a frame's packet data starts in the tx ring: the aligned TPACKET_V2 header.
const DATA_OFF: usize = 32;

const _: () = assert!(std::mem::size_of::<libc::tpacket2_hdr>() == DATA_OFF);

/// One mapped TPACKET_V2 ring.
struct Ring {
    base: NonNull<u8>,
    next: usize,
}

impl Ring {
    fn frame(&self, i: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(i * FRAME_SIZE)
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: frame `i < FRAME_NR` lies in the mapping (kept alive by the socket that
        // owns this ring); `tp_status` is the first, 4-aligned field of the frame header,
        // shared with the kernel, so it is only accessed atomically.
        unsafe { &*self.frame(i).cast::<AtomicU32>() }
    }
}

/// An AF_PACKET socket bound to one interface, with an rx ring, a tx ring or both.
pub struct PacketSocket {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    rx: Option<Ring>,
    tx: Option<Ring>,
}

impl std::fmt::Debug for PacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSocket")
            .field("fd", &self.fd)
            .field("rx", &self.rx.is_some())
            .field("tx", &self.tx.is_some())
            .finish()
    }
}

// SAFETY: the mapping belongs to this socket alone (the kernel is the other party and
// synchronises through the status words); nothing is tied to a thread.
unsafe impl Send for PacketSocket {}

/// The interface index of `name`, or an error saying it does not exist.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?} in this network namespace"),
        ));
    }
    Ok(idx)
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: &OwnedFd, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of the given size for the duration of the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (value as *const T).cast::<c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret).map(|_| ())
}

impl PacketSocket {
    /// Opens a socket on `iface` with the rings asked for.
    pub fn open(iface: &str, rx: bool, tx: bool) -> io::Result<PacketSocket> {
        let index = ifindex(iface)?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let raw =
            check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, c_int::from(proto)) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version = libc::tpacket_versions::TPACKET_V2 as c_int;
        setsockopt(&fd, libc::PACKET_VERSION, &version)?;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: (FRAME_NR * FRAME_SIZE / BLOCK_SIZE) as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: FRAME_NR as u32,
        };
        if rx {
            setsockopt(&fd, libc::PACKET_RX_RING, &req)?;
        }
        if tx {
            setsockopt(&fd, libc::PACKET_TX_RING, &req)?;
            // Frames go straight to the device, as a NIC driver would send them.
            let one: c_int = 1;
            let _ = setsockopt(&fd, libc::PACKET_QDISC_BYPASS, &one);
        }
        let ring_len = FRAME_NR * FRAME_SIZE;
        let map_len = ring_len * (usize::from(rx) + usize::from(tx));
        // SAFETY: maps the rings the kernel just set up on this socket (rx first, then tx,
        // as packet(7) specifies); the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let mut sock = PacketSocket {
            fd,
            map,
            map_len,
            rx: None,
            tx: None,
        };
        if rx {
            sock.rx = Some(Ring { base: map, next: 0 });
        }
        if tx {
            let off = if rx { ring_len } else { 0 };
            let base = NonNull::new(map.as_ptr().wrapping_add(off)).expect("inside the mapping");
            sock.tx = Some(Ring { base, next: 0 });
        }
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let ret = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(ret)?;
        Ok(sock)
    }

    /// Hands each received frame to `take` (which returns false to stop, e.g. when out of
    /// mbufs: that frame stays in the ring for the next call), at most `max`; returns how
    /// many were taken.
    pub fn recv_burst(&mut self, max: usize, mut take: impl FnMut(&[u8]) -> bool) -> usize {
        let Some(ring) = self.rx.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while n < max {
            let i = ring.next;
            // Acquire: pairs with the kernel's release of the frame; the data is visible.
            let status = ring.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the frame header is ours until we give it back (TP_STATUS_USER).
            let hdr = unsafe { ring.frame(i).cast::<libc::tpacket2_hdr>().read() };
            let off = usize::from(hdr.tp_mac);
            let len = hdr.tp_snaplen as usize;
            let ok = off >= DATA_OFF && off + len <= FRAME_SIZE;
            let taken = if ok {
                // SAFETY: `[off, off + len)` lies inside this frame (checked above) and the
                // frame is ours (TP_STATUS_USER).
                let data =
                    unsafe { std::slice::from_raw_parts(ring.frame(i).wrapping_add(off), len) };
                if status & libc::TP_STATUS_VLAN_VALID != 0 && len >= 12 {
                    // The kernel took the 802.1Q tag out: put it back.
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        hdr.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    let mut tagged = [0u8; FRAME_SIZE];
                    tagged[..12].copy_from_slice(&data[..12]);
                    tagged[12..14].copy_from_slice(&tpid.to_be_bytes());
                    tagged[14..16].copy_from_slice(&hdr.tp_vlan_tci.to_be_bytes());
                    tagged[16..16 + len - 12].copy_from_slice(&data[12..]);
                    take(&tagged[..len + 4])
                } else {
                    take(data)
                }
            } else {
                true
            };
            if !taken {
                break;
            }
            // Release: the kernel may reuse the frame after this store.
            ring.status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            ring.next = (i + 1) % FRAME_NR;
            n += 1;
        }
        n
    }

    /// Queues the packets `frames` yields (each as segments) into the tx ring and kicks the
    /// kernel once; returns how many were queued (fewer when the ring is full or a packet
    /// is larger than a frame).
    pub fn send_burst<'a, I, S>(&mut self, frames: I) -> usize
    where
        I: IntoIterator<Item = (usize, S)>,
        S: IntoIterator<Item = &'a [u8]>,
    {
        let Some(ring) = self.tx.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for (len, segments) in frames {
            let i = ring.next;
            // Acquire: the kernel has finished with the frame's previous contents.
            let status = ring.status(i).load(Ordering::Acquire);
            if status != libc::TP_STATUS_AVAILABLE && status != libc::TP_STATUS_WRONG_FORMAT {
                break;
            }
            if len > FRAME_SIZE - DATA_OFF {
                break;
            }
            let mut at = DATA_OFF;
            for seg in segments {
                if at + seg.len() > DATA_OFF + len {
                    break;
                }
                // SAFETY: `[at, at + seg.len())` lies in this frame (`at + seg.len() <=
                // DATA_OFF + len <= FRAME_SIZE`), which is ours (status AVAILABLE).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        seg.as_ptr(),
                        ring.frame(i).wrapping_add(at),
                        seg.len(),
                    )
                };
                at += seg.len();
            }
            let hdr = ring.frame(i).cast::<libc::tpacket2_hdr>();
            // SAFETY: the frame header is ours (status AVAILABLE); `tp_len` is a plain
            // field the kernel reads after our release below.
            unsafe { (*hdr).tp_len = (at - DATA_OFF) as u32 };
            // Release: the kernel sees the data and length before the request.
            ring.status(i)
                .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
            ring.next = (i + 1) % FRAME_NR;
            n += 1;
        }
        if n > 0 {
            // SAFETY: a zero-length send on our socket asks the kernel to transmit the
            // frames marked SEND_REQUEST; it does not read our buffers.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
        }
        n
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // A blocking kick: the kernel sends every frame still marked SEND_REQUEST
            // before we unmap the ring.
            // SAFETY: as in `send_burst`.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    0,
                    std::ptr::null(),
                    0,
                )
            };
        }
        // SAFETY: unmaps exactly the mapping made in `open`; no reference into it outlives
        // `self` (rings and frames are only borrowed during calls).
        unsafe { libc::munmap(self.map.as_ptr().cast::<c_void>(), self.map_len) };
    }
}
