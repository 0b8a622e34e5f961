//! The `net_virtio_user` driver: shmdp as the vhost-user *frontend* (DPDK's virtio-user).
//!
//! Trust: the backend at `path=` gets memory it can write at any moment, so it gets a
//! memseg of its own ([`PortMemory`]: this port's vrings and buffer slots, nothing else),
//! never the main memseg. Received frames are copied out of the slots into mbufs of the
//! caller's (host) pool; frames to send are copied from any pool into a slot. The socket's
//! peer is checked with `SO_PEERCRED` before anything is sent (our uid or root), and every
//! exchange has a deadline and gives up at once on a signal ([`pmds_common_vhost_user::wire`]): a backend
//! that never answers is one error line at start, never a primary stuck in `connect`.
//!
//! The driver side of each virtqueue is [`DriverRing`] (virtio 1.x §2.7, orderings D1-D3).
//! The rings and slots are reached only as `PeerSpan`s (`pmds_common_vhost_user::peer_mem`):
//! no `unsafe` here.

use pmds_common_vhost_user::VhostError;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm_mempool::{Mbuf, MbufCache};

pub use crate::driver_ring::{DriverRing, DEFAULT_QUEUE_SIZE, WHOLE_BUFFER};
pub use crate::frontend_mem::{vring_bytes, PortMemory, SLOT_BYTES};

use pmds_common_vhost_user::proto::{self, code, PROTOCOL_F_MQ};
pub(crate) use pmds_common_vhost_user::wire::eventfd;
use pmds_common_vhost_user::wire::{self, Until, WireError};
use pmds_common_virtio::features::{
    header_len, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use pmds_common_virtio::split::{VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE};

/// How long stopping a port may wait for the backend to stop its rings, all rings
/// together: a stopping primary does not wait on a silent backend for long.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// A connected virtio-user port: the control connection, the shared memory and the
/// rings' driver state.
#[derive(Debug)]
pub struct VirtioUserDevice {
    path: PathBuf,
    pairs: u16,
    sock: Mutex<UnixStream>,
    hdr_len: usize,
    rings: Vec<Mutex<Option<DriverRing>>>,
    _calls: Vec<File>,
    /// The backend took the memory away: the port is stopped (see [`Self::dropped`]).
    dropped: AtomicBool,
    /// Declared last: dropped after the rings that point into it.
    mem: PortMemory,
}

/// Stops device `dev`: the backend stops its rings, the buffers still posted go back to
/// the pool, the connection closes.
pub fn stop(dev: &Arc<VirtioUserDevice>) {
    dev.shutdown();
}

impl VirtioUserDevice {
    /// Connects to the vhost-user backend at `path` (retrying the connect for up to
    /// `wait`), checks who it is, negotiates and sets up `pairs` queue pairs of `size`
    /// entries in `mem` (made for `2 * pairs` vrings of `size`). Every request and reply
    /// has [`wire::MESSAGE_TIMEOUT`]; `cancel` raised (a signal) ends any wait at once.
    ///
    /// # Errors
    /// One line: no backend, a backend of another user, a backend that does not answer,
    /// one without VERSION_1 (or MQ for several pairs), or `cancel` raised.
    pub fn connect(
        mem: PortMemory,
        path: &Path,
        pairs: u16,
        size: u16,
        wait: Duration,
        cancel: &AtomicBool,
    ) -> Result<Arc<VirtioUserDevice>, VhostError> {
        let at = |e: WireError| match e {
            WireError::TimedOut(_) => pmds_common_vhost_user::peer_err!(
                "path {}: {e}; check that a vhost-user backend serves this socket",
                path.display()
            ),
            e => pmds_common_vhost_user::peer_err!("path {}: {e}", path.display()),
        };
        let sock = wire::connect(path, Until::after(wait, cancel)).map_err(|e| match e {
            WireError::Cancelled => at(e),
            e => pmds_common_vhost_user::setup_err!(
                "path {}: no vhost-user backend answers ({e}); start the backend first",
                path.display()
            ),
        })?;
        // Before anything is sent: the memory we are about to share goes to this process.
        let (uid, pid) = wire::peer_cred(&sock).map_err(at)?;
        if !wire::uid_allowed(uid) {
            return Err(pmds_common_vhost_user::setup_err!(
                "path {}: the backend (pid {pid}) runs as uid {uid}, not as us or root; refusing to share memory with it",
                path.display()
            ));
        }
        let u64_of = |p: Vec<u8>| -> Result<u64, VhostError> {
            p.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| {
                    pmds_common_vhost_user::setup_err!("path {}: short reply", path.display())
                })
        };
        let until = || Until::after(wire::MESSAGE_TIMEOUT, cancel);
        let ask = |req: u32| -> Result<u64, VhostError> {
            proto::send_request(&sock, req, &[], &[], until()).map_err(at)?;
            u64_of(proto::recv_reply(&sock, req, until()).map_err(at)?)
        };
        let tell = |req: u32, payload: &[u8], fds: &[i32]| -> Result<(), VhostError> {
            proto::send_request(&sock, req, payload, fds, until()).map_err(at)
        };
        let offered = ask(code::GET_FEATURES)?;
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err(VhostError::Peer(
                "the backend does not offer VIRTIO_F_VERSION_1".into(),
            ));
        }
        if pairs > 1 && offered & VIRTIO_NET_F_MQ == 0 {
            return Err(pmds_common_vhost_user::setup_err!(
                "queues={pairs}: the backend does not offer multiqueue"
            ));
        }
        let want = VIRTIO_F_VERSION_1
            | VIRTIO_NET_F_MRG_RXBUF
            | VIRTIO_F_IN_ORDER
            | VHOST_USER_F_PROTOCOL_FEATURES
            | if pairs > 1 { VIRTIO_NET_F_MQ } else { 0 };
        let features = offered & want;
        let in_order = features & VIRTIO_F_IN_ORDER != 0;
        tell(code::SET_OWNER, &[], &[])?;
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let pf = ask(code::GET_PROTOCOL_FEATURES)?;
            tell(
                code::SET_PROTOCOL_FEATURES,
                &(pf & PROTOCOL_F_MQ).to_le_bytes(),
                &[],
            )?;
            if pairs > 1 && ask(code::GET_QUEUE_NUM)? < u64::from(pairs) {
                return Err(pmds_common_vhost_user::setup_err!(
                    "queues={pairs}: the backend has fewer queue pairs"
                ));
            }
        }
        tell(code::SET_FEATURES, &features.to_le_bytes(), &[])?;
        // The memory table: the port's own memfd, at our own addresses.
        let (base, len) = (mem.base(), mem.len_bytes());
        let mut table = 1u32.to_le_bytes().to_vec();
        table.extend_from_slice(&[0; 4]);
        for v in [base, len, base, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        tell(code::SET_MEM_TABLE, &table, &[mem.fd()])?;
        let mut rings = Vec::new();
        let mut calls = Vec::new();
        for i in 0..2 * u32::from(pairs) {
            let vr = mem.vring(i as usize);
            let at = vr.addr();
            let n = u64::from(size);
            let used_off = (16 * n + 6 + 2 * n).next_multiple_of(64);
            let (desc, avail, used) = (at, at + 16 * n, at + used_off);
            let (Some(desc_area), Some(avail_area), Some(used_area)) = (
                vr.sub(0, 16 * n as usize),
                vr.sub(16 * n as usize, 6 + 2 * n as usize),
                vr.sub(used_off as usize, 6 + 8 * n as usize),
            ) else {
                return Err(pmds_common_vhost_user::setup_err!(
                    "vring {i} does not fit its memory"
                ));
            };
            let state = |a: u32, b: u32| {
                let mut p = a.to_le_bytes().to_vec();
                p.extend_from_slice(&b.to_le_bytes());
                p
            };
            tell(code::SET_VRING_NUM, &state(i, u32::from(size)), &[])?;
            tell(code::SET_VRING_BASE, &state(i, 0), &[])?;
            let mut addr = state(i, 0);
            for v in [desc, used, avail, 0] {
                addr.extend_from_slice(&v.to_le_bytes());
            }
            tell(code::SET_VRING_ADDR, &addr, &[])?;
            let kick = eventfd()?;
            let call = eventfd()?;
            use std::os::fd::AsRawFd;
            tell(
                code::SET_VRING_KICK,
                &u64::from(i).to_le_bytes(),
                &[kick.as_raw_fd()],
            )?;
            tell(
                code::SET_VRING_CALL,
                &u64::from(i).to_le_bytes(),
                &[call.as_raw_fd()],
            )?;
            calls.push(call);
            // We poll: no interrupts (the device then never writes the call eventfd).
            avail_area.store_u16(0, VRING_AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
            let ring = DriverRing::new(
                desc_area,
                avail_area,
                used_area,
                (size, in_order),
                mem.slots(i as usize),
                kick,
            )
            .ok_or_else(|| {
                pmds_common_vhost_user::setup_err!("vring {i} does not fit its memory")
            })?;
            rings.push(Mutex::new(Some(ring)));
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            for i in 0..2 * u32::from(pairs) {
                let mut p = i.to_le_bytes().to_vec();
                p.extend_from_slice(&1u32.to_le_bytes());
                tell(code::SET_VRING_ENABLE, &p, &[])?;
            }
        }
        let dev = Arc::new(VirtioUserDevice {
            path: path.to_path_buf(),
            pairs,
            sock: Mutex::new(sock),
            hdr_len: header_len(features),
            rings,
            _calls: calls,
            dropped: AtomicBool::new(false),
            mem,
        });
        Ok(dev)
    }

    /// Queue pairs.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// The memory shared with the backend.
    pub fn memory(&self) -> &PortMemory {
        &self.mem
    }

    /// The port was dropped because the backend took its memory away (the SIGBUS guard
    /// fired on it): its queues move nothing any more and the connection is closed.
    pub fn dropped(&self) -> bool {
        // Relaxed: a flag; what it stands for (the guard's hit) is read with Acquire.
        self.dropped.load(Ordering::Relaxed)
    }

    /// True when the port is (now) dropped: once per burst, one load of the guard's flag.
    /// The first caller to see the flag stops the port: one line, the connection shut;
    /// it alone returns `Some(true)` (count one error), later callers `Some(false)`.
    #[inline]
    fn memory_gone(&self) -> Option<bool> {
        if !self.mem.taken_away() {
            return None;
        }
        Some(self.drop_port())
    }

    #[cold]
    fn drop_port(&self) -> bool {
        // Relaxed: the first swapper logs and shuts; nothing else is ordered by it.
        if self.dropped.swap(true, Ordering::Relaxed) {
            return false;
        }
        tracing::warn!(
            "{}: virtio-user: the backend took the port's shared memory away (the SIGBUS guard replaced it); port stopped",
            self.path.display()
        );
        // try_lock: a shutdown already holding the socket closes it anyway.
        if let Ok(sock) = self.sock.try_lock() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        true
    }

    /// Asks the backend to stop every ring (all answers within [`SHUTDOWN_TIMEOUT`]; the
    /// first that does not come ends the asking), then closes the connection.
    fn shutdown(&self) {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        // Not the process's stop flag: a signal is what usually brings us here.
        let never = AtomicBool::new(false);
        let until = Until::after(SHUTDOWN_TIMEOUT, &never);
        for i in 0..self.rings.len() as u32 {
            let mut p = i.to_le_bytes().to_vec();
            p.extend_from_slice(&0u32.to_le_bytes());
            if proto::send_request(&sock, code::GET_VRING_BASE, &p, &[], until).is_err()
                || proto::recv_reply(&sock, code::GET_VRING_BASE, until).is_err()
            {
                break;
            }
        }
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}

/// A queue of a virtio-user port, polled by one thread: holds its ring while it lives.
#[derive(Debug)]
pub struct VirtioUserQueue {
    dev: Arc<VirtioUserDevice>,
    index: usize,
    ring: Option<DriverRing>,
}

/// What a burst did besides moving packets.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Packets moved.
    pub packets: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Impossible used elements (unknown id, bad length) and unusable packets.
    pub errors: u64,
    /// No mbuf to copy into.
    pub no_mbuf: u64,
}

impl VirtioUserQueue {
    /// Takes vring `index` (even: our rx, odd: our tx) of `dev`.
    ///
    /// # Errors
    /// When another queue object of this process holds it.
    pub fn take(dev: Arc<VirtioUserDevice>, index: usize) -> Result<VirtioUserQueue, VhostError> {
        let ring = dev.rings[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                VhostError::Setup("the vring is held by another queue of this process".into())
            })?;
        Ok(VirtioUserQueue {
            dev,
            index,
            ring: Some(ring),
        })
    }

    /// Receives up to `max` packets into `out` (copied into mbufs of `cache`) and posts
    /// every free buffer slot again.
    pub fn receive<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Outcome {
        let mut o = Outcome::default();
        if let Some(first) = self.dev.memory_gone() {
            o.errors = u64::from(first);
            return o;
        }
        let hdr = self.dev.hdr_len;
        let slot = SLOT_BYTES as usize;
        let Some(r) = self.ring.as_mut() else {
            return o;
        };
        r.prefetch_used(max);
        // A bound on used elements looked at per burst: a backend that keeps moving its
        // used index past elements naming no buffer of ours must not hold this lcore
        // (each bad element is an error, and the burst ends after a ring's worth).
        let mut budget = max.saturating_add(usize::from(r.size()));
        while o.packets < max && budget > 0 {
            budget -= 1;
            let Some(first) = r.next_used() else { break };
            let Ok((id, len, _)) = first else {
                o.errors += 1;
                continue;
            };
            let len = if len == WHOLE_BUFFER {
                slot
            } else {
                len as usize
            };
            let p = r.slot(id);
            let nbufs = if hdr == 12 {
                let mut b = [0u8; 2];
                // Bytes 10..12 of the slot: the header's num_buffers.
                p.copy_out(10, &mut b);
                u16::from_le_bytes(b).clamp(1, r.size())
            } else {
                1
            };
            let mut ok = len >= hdr && len <= slot;
            let mut m = cache.alloc();
            match &mut m {
                // `[hdr, len)` of descriptor `id`'s slot (`len <= SLOT_BYTES`, checked in
                // `ok`).
                Some(m) if ok => ok = p.append_to(hdr, len - hdr, cache, m),
                Some(_) => {}
                None => ok = false,
            }
            // The other buffers of a frame spread over several (mergeable rx buffers).
            for _ in 1..nbufs {
                match r.next_used() {
                    Some(Ok((id, l, _))) => {
                        let l = if l == WHOLE_BUFFER { slot } else { l as usize };
                        let src = r.slot(id);
                        ok = ok
                            && l <= slot
                            // `l <= SLOT_BYTES` bytes of descriptor `id`'s slot.
                            && m.as_mut().is_some_and(|m| src.append_to(0, l, cache, m));
                    }
                    _ => ok = false,
                }
            }
            match m {
                Some(m) if ok => {
                    o.packets += 1;
                    o.bytes += u64::from(m.pkt_len());
                    out.push(m);
                }
                None => o.no_mbuf += 1,
                Some(_) => o.errors += 1,
            }
        }
        // Refill every free descriptor: each always names its own slot.
        r.prefetch_posts(r.free_len());
        let mut posted = false;
        while let Some(id) = r.take_free() {
            r.post(
                id,
                r.slot(id).addr(),
                slot as u32,
                VRING_DESC_F_WRITE,
                u64::from(id),
            );
            posted = true;
        }
        if posted {
            r.publish();
        }
        o
    }

    /// Sends from the front of `pkts` (removing what was sent): each frame is copied into
    /// a free buffer slot behind a zeroed virtio-net header and its mbuf freed at once;
    /// slots the device has used are free again.
    pub fn send(&mut self, pkts: &mut Vec<Mbuf<'_>>) -> Outcome {
        let mut o = Outcome::default();
        if let Some(first) = self.dev.memory_gone() {
            // The packets stay the caller's (dropped by the port's tx accounting).
            o.errors = u64::from(first);
            return o;
        }
        let hdr = self.dev.hdr_len;
        let Some(r) = self.ring.as_mut() else {
            return o;
        };
        // What the device has sent: the slots are ours again. At most a ring's worth of
        // used elements per burst, whatever the backend keeps writing.
        for _ in 0..r.size() {
            match r.next_used() {
                None => break,
                Some(Err(())) => o.errors += 1,
                Some(Ok(_)) => {}
            }
        }
        let k = pkts.len().min(r.free_len());
        r.prefetch_posts(k);
        r.prefetch_slots(k);
        for m in pkts.drain(..k) {
            let len = m.pkt_len() as usize;
            if hdr + len > SLOT_BYTES as usize {
                // Larger than a buffer slot: dropped (a frame up to 2036 bytes fits).
                o.errors += 1;
                continue;
            }
            let Some(id) = r.take_free() else { break };
            let p = r.slot(id);
            // The zeroed virtio-net header (10 or 12 bytes; one 12-byte store, the frame
            // goes over the rest).
            // `[0, 12)` of descriptor `id`'s slot (`SLOT_BYTES` long), which the device
            // does not own until we post it.
            p.copy_in(0, &[0; 12]);
            let mut off = hdr;
            for seg in m.segments() {
                // The segments add up to `pkt_len`, checked above; each copy is bounded by
                // the slot all the same.
                if off + seg.len() > SLOT_BYTES as usize {
                    break;
                }
                // `[off, off + seg.len())` of descriptor `id`'s slot (bounded just above),
                // which the device does not own until we post it; `seg` is our mbuf's data.
                p.copy_in(off, seg);
                off += seg.len();
            }
            drop(m);
            r.post(id, p.addr(), off as u32, 0, u64::from(id));
            o.bytes += (off - hdr) as u64;
            o.packets += 1;
        }
        if o.packets > 0 {
            r.publish();
        }
        o
    }
}

impl Drop for VirtioUserQueue {
    fn drop(&mut self) {
        if let Some(r) = self.ring.take() {
            *self.dev.rings[self.index]
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmds_net_vhost::backend::{self, VhostDevice};
    use shm::{Memseg, Region};
    use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};
    use std::time::Instant;

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A sealed memfd cannot be made to fault from outside (so no process test): the
    /// guard's flag is raised as its handler would, and the port's side is checked.
    #[test]
    fn a_guard_hit_on_the_port_memory_stops_the_port_and_counts_one_error() {
        let sock = std::env::temp_dir().join(format!("shmdp-vuguard-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let backend = VhostDevice::start(&sock, 1, false).unwrap();
        let mem = PortMemory::create("vuguard", 2, 64).unwrap();
        let never = AtomicBool::new(false);
        let dev =
            VirtioUserDevice::connect(mem, &sock, 1, 64, Duration::from_secs(5), &never).unwrap();
        wait("the backend sees the frontend", || backend.is_connected());
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "vuguard", 1).unwrap();
        seg.mark_ready();
        let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(511, 0, 1)).unwrap();
        let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
        let mut rx = VirtioUserQueue::take(dev.clone(), 0).unwrap();
        let mut tx = VirtioUserQueue::take(dev.clone(), 1).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.receive(&cache, &mut out, 32).errors, 0);
        assert!(!dev.dropped());

        dev.memory().take_away_for_test();
        let first = rx.receive(&cache, &mut out, 32);
        let mut pkts = vec![cache.alloc().unwrap()];
        let then = tx.send(&mut pkts);
        assert_eq!(
            (first.errors, first.packets),
            (1, 0),
            "one error, counted once"
        );
        assert_eq!(
            (then.errors, then.packets),
            (0, 0),
            "stopped: nothing moves"
        );
        assert_eq!(pkts.len(), 1, "what was not sent stays the caller's");
        assert!(dev.dropped());
        assert_eq!(rx.receive(&cache, &mut out, 32).errors, 0);
        assert!(out.is_empty());
        // The connection is shut: the backend sees its frontend go.
        wait("the backend sees the frontend go", || {
            !backend.is_connected()
        });
        drop((rx, tx, pkts));
        stop(&dev);
        backend::stop(&backend);
    }
}
