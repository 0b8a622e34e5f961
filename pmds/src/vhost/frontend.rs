//! The `net_virtio_user` driver: shmdp as the vhost-user *frontend* (DPDK's virtio-user).
//! The port's virtqueues live in a memzone of the main memseg, and the memory table we
//! give the backend is that memseg's file, with guest-physical = our virtual addresses, so
//! descriptors point straight at mbuf data: no copy on our side. The backend (our
//! `net_vhost`, DPDK's vhost PMD, any vhost-user device) maps the same file.
//!
//! Driver-side split ring (virtio 1.x §2.7): we fill descriptors and `avail.ring`, then
//! publish `avail.idx` with **Release (D1)**; we read `used.idx` with **Acquire (D2)**
//! before the used elements and the bytes the device wrote. Before deciding whether to
//! kick, a **SeqCst fence (D3)** orders our `avail.idx` store before the load of the
//! device's `used.flags`.
//!
//! Buffers in flight are mbufs in transit (their handles sit in the ring's state), so a
//! queue can be dropped and claimed again, and what the device still holds stays tagged.
//! The used elements the device returns are checked (index in range, a buffer we posted,
//! a length that fits) like anything else read from shared memory.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shm::Memseg;
use shm_mempool::{Mbuf, MbufCache, MbufHandle, MbufPool};

use super::net::{
    header_len, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF, VRING_USED_F_NO_NOTIFY,
};
use super::proto::{self, code, PROTOCOL_F_MQ};
use super::vring::{Desc, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE};

/// Default entries per virtqueue (DPDK's virtio-user default).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// No buffer at this descriptor.
const NONE: u64 = u64::MAX;

/// Bytes one vring takes in the queue memzone (page-aligned).
pub fn vring_bytes(size: u16) -> u64 {
    let n = u64::from(size);
    let avail_end = (16 * n + 6 + 2 * n).next_multiple_of(64);
    (avail_end + 6 + 8 * n).next_multiple_of(4096)
}

/// One virtqueue's driver state, handed from queue object to queue object.
pub struct DriverRing {
    desc: *mut Desc,
    avail: *mut u16,
    used: *mut u16,
    size: u16,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    inflight: Vec<u64>,
    /// Where each posted buffer starts (for prefetching what the device wrote).
    addrs: Vec<u64>,
    kick: Arc<File>,
}

// SAFETY: the pointers target the port's memzone, mapped for the process's lifetime (the
// memseg outlives its ports); one queue object at a time uses a ring (`Mutex<Option<_>>`).
unsafe impl Send for DriverRing {}

impl std::fmt::Debug for DriverRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverRing")
            .field("size", &self.size)
            .field("avail_idx", &self.avail_idx)
            .field("last_used", &self.last_used)
            .finish()
    }
}

impl DriverRing {
    fn used_idx(&self) -> u16 {
        // D2: Acquire, before reading used elements and the buffers' bytes.
        // SAFETY: `used + 1` is the 2-aligned idx word of the used area in our memzone.
        unsafe { AtomicU16::from_ptr(self.used.wrapping_add(1)) }.load(Ordering::Acquire)
    }

    fn used_elem(&self, i: u16) -> (u32, u32) {
        let slot = usize::from(i & (self.size - 1));
        let p = self
            .used
            .cast::<u8>()
            .wrapping_add(4 + 8 * slot)
            .cast::<[u32; 2]>();
        // SAFETY: inside the used area (4-aligned); volatile: the device writes it.
        let [id, len] = unsafe { std::ptr::read_volatile(p) };
        (u32::from_le(id), u32::from_le(len))
    }

    fn post(&mut self, id: u16, addr: u64, len: u32, flags: u16, handle: u64) {
        let d = Desc {
            addr: addr.to_le(),
            len: len.to_le(),
            flags: flags.to_le(),
            next: 0,
        };
        // SAFETY: `id < size`: inside the descriptor table (16-byte aligned).
        unsafe { std::ptr::write_volatile(self.desc.wrapping_add(usize::from(id)), d) };
        let slot = usize::from(self.avail_idx & (self.size - 1));
        // SAFETY: avail.ring[slot], inside the avail area; the device reads it after D1.
        unsafe { std::ptr::write_volatile(self.avail.wrapping_add(2 + slot), id.to_le()) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.inflight[usize::from(id)] = handle;
        self.addrs[usize::from(id)] = addr;
    }

    /// Warms the cache for up to `max` used elements and the start of their buffers (the
    /// device just wrote both from another core): the misses overlap instead of queueing
    /// behind each other. Hints only; ids are masked and the addresses are our own.
    fn prefetch_used(&self, max: usize) {
        let ready = usize::from(self.used_idx().wrapping_sub(self.last_used))
            .min(usize::from(self.size))
            .min(max);
        for k in 0..ready as u16 {
            let (id, _) = self.used_elem(self.last_used.wrapping_add(k));
            let id = id as usize & (usize::from(self.size) - 1);
            super::vring::prefetch(self.addrs[id] as *const u8);
        }
    }

    /// Prefetches for writing the descriptors and avail slots the next `k` posts use (the
    /// device last read them from another core).
    fn prefetch_posts(&self, k: usize) {
        let k = k.min(self.free.len());
        for &id in &self.free[self.free.len() - k..] {
            super::vring::prefetch_write(self.desc.wrapping_add(usize::from(id)).cast());
        }
        let mask = usize::from(self.size - 1);
        let mut j = 0;
        while j < k {
            let slot = usize::from(self.avail_idx).wrapping_add(j) & mask;
            super::vring::prefetch_write(self.avail.wrapping_add(2 + slot).cast());
            j += 32;
        }
    }

    /// Publishes the posted descriptors and kicks the device if it asked for kicks.
    fn publish(&mut self) {
        // D1: Release, publishing the descriptors and avail entries written above.
        // SAFETY: `avail + 1` is avail.idx, 2-aligned, in our memzone.
        unsafe { AtomicU16::from_ptr(self.avail.wrapping_add(1)) }
            .store(self.avail_idx, Ordering::Release);
        // D3: our idx store before the load of the device's flags.
        fence(Ordering::SeqCst);
        // SAFETY: used.flags, 2-aligned, in our memzone.
        let flags = unsafe { AtomicU16::from_ptr(self.used) }.load(Ordering::Relaxed);
        if flags & VRING_USED_F_NO_NOTIFY == 0 {
            let _ = (&*self.kick).write(&1u64.to_ne_bytes());
        }
    }

    /// Takes the next used element: (descriptor id, bytes written, the mbuf handle).
    fn next_used(&mut self) -> Option<Result<(u16, u32, u64), ()>> {
        let used_idx = self.used_idx();
        if self.last_used == used_idx {
            return None;
        }
        if used_idx.wrapping_sub(self.last_used) > self.size {
            // More used than ever posted: a broken device. Skip to its index (once), so
            // a bad value costs one error, not a walk over 64K elements.
            self.last_used = used_idx;
            return Some(Err(()));
        }
        let (id, len) = self.used_elem(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
        let Some(h) = usize::try_from(id)
            .ok()
            .and_then(|i| self.inflight.get(i).copied())
            .filter(|&h| h != NONE)
        else {
            return Some(Err(()));
        };
        self.inflight[id as usize] = NONE;
        self.free.push(id as u16);
        Some(Ok((id as u16, len, h)))
    }
}

/// A connected virtio-user port: the control connection and the rings' driver state.
#[derive(Debug)]
pub struct VirtioUserDevice {
    path: PathBuf,
    pairs: u16,
    sock: Mutex<UnixStream>,
    hdr_len: usize,
    rings: Vec<Mutex<Option<DriverRing>>>,
    _calls: Vec<File>,
    region: (u64, u64),
    pool: MbufPool,
}

fn registry() -> &'static Mutex<Vec<Arc<VirtioUserDevice>>> {
    static DEVICES: OnceLock<Mutex<Vec<Arc<VirtioUserDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

/// The virtio-user device of socket `path` in this process, if connected here.
pub fn find(path: &Path) -> Option<Arc<VirtioUserDevice>> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|d| d.path == path)
        .cloned()
}

/// Stops device `dev`: the backend stops its rings, the buffers still posted go back to
/// the pool, the connection closes.
pub fn stop(dev: &Arc<VirtioUserDevice>) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| !Arc::ptr_eq(d, dev));
    dev.shutdown();
}

fn eventfd() -> Result<File, String> {
    // SAFETY: plain syscall; a valid fd is owned by the File below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl VirtioUserDevice {
    /// Connects to the vhost-user backend at `path` (retrying for up to `wait`), negotiates
    /// and sets up `pairs` queue pairs of `size` entries whose rings are at `rings_off` in
    /// `seg` (zeroed, [`vring_bytes`] each); rx buffers come from `pool`.
    ///
    /// # Errors
    /// One line: no backend, a backend without VERSION_1 (or MQ for several pairs), a
    /// memseg without a file to share.
    pub fn connect(
        seg: &Memseg,
        rings_off: u64,
        path: &Path,
        pairs: u16,
        size: u16,
        pool: MbufPool,
        wait: Duration,
    ) -> Result<Arc<VirtioUserDevice>, String> {
        let file_path = seg.path().ok_or("virtio-user needs a file-backed memseg")?;
        let t0 = Instant::now();
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() >= wait => {
                    return Err(format!(
                        "path {}: no vhost-user backend answers ({e}); start the backend first",
                        path.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let io = |e: std::io::Error| format!("path {}: {e}", path.display());
        let u64_of = |p: Vec<u8>| -> Result<u64, String> {
            p.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| "short reply".to_string())
        };
        let ask = |req: u32| -> Result<u64, String> {
            proto::send_request(&sock, req, &[], &[]).map_err(io)?;
            u64_of(proto::recv_reply(&sock, req)?)
        };
        let tell = |req: u32, payload: &[u8], fds: &[i32]| -> Result<(), String> {
            proto::send_request(&sock, req, payload, fds).map_err(io)
        };
        let offered = ask(code::GET_FEATURES)?;
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err("the backend does not offer VIRTIO_F_VERSION_1".into());
        }
        if pairs > 1 && offered & VIRTIO_NET_F_MQ == 0 {
            return Err(format!(
                "queues={pairs}: the backend does not offer multiqueue"
            ));
        }
        let want = VIRTIO_F_VERSION_1
            | VIRTIO_NET_F_MRG_RXBUF
            | VHOST_USER_F_PROTOCOL_FEATURES
            | if pairs > 1 { VIRTIO_NET_F_MQ } else { 0 };
        let features = offered & want;
        tell(code::SET_OWNER, &[], &[])?;
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let pf = ask(code::GET_PROTOCOL_FEATURES)?;
            tell(
                code::SET_PROTOCOL_FEATURES,
                &(pf & PROTOCOL_F_MQ).to_le_bytes(),
                &[],
            )?;
            if pairs > 1 && ask(code::GET_QUEUE_NUM)? < u64::from(pairs) {
                return Err(format!("queues={pairs}: the backend has fewer queue pairs"));
            }
        }
        tell(code::SET_FEATURES, &features.to_le_bytes(), &[])?;
        // The memory table: the main memseg's file, at our own addresses.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file_path)
            .map_err(|e| format!("{}: {e}", file_path.display()))?;
        let base = seg.region().base_va() as u64;
        let len = seg.size_bytes();
        let mut table = 1u32.to_le_bytes().to_vec();
        table.extend_from_slice(&[0; 4]);
        for v in [base, len, base, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        tell(code::SET_MEM_TABLE, &table, &[file.as_raw_fd()])?;
        let mut rings = Vec::new();
        let mut calls = Vec::new();
        for i in 0..2 * u32::from(pairs) {
            let at = base + rings_off + u64::from(i) * vring_bytes(size);
            let n = u64::from(size);
            let (desc, avail) = (at, at + 16 * n);
            let used = at + (16 * n + 6 + 2 * n).next_multiple_of(64);
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
            // SAFETY: avail.flags of this vring, 2-aligned, inside the zeroed ring memzone.
            unsafe { AtomicU16::from_ptr(avail as *mut u16) }
                .store(VRING_AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
            rings.push(Mutex::new(Some(DriverRing {
                desc: desc as *mut Desc,
                avail: avail as *mut u16,
                used: used as *mut u16,
                size,
                avail_idx: 0,
                last_used: 0,
                free: (0..size).rev().collect(),
                inflight: vec![NONE; usize::from(size)],
                addrs: vec![0; usize::from(size)],
                kick: Arc::new(kick),
            })));
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
            region: (base, len),
            pool,
        });
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dev.clone());
        Ok(dev)
    }

    /// Queue pairs.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    fn shutdown(&self) {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..self.rings.len() as u32 {
            let mut p = i.to_le_bytes().to_vec();
            p.extend_from_slice(&0u32.to_le_bytes());
            if proto::send_request(&sock, code::GET_VRING_BASE, &p, &[]).is_err()
                || proto::recv_reply(&sock, code::GET_VRING_BASE).is_err()
            {
                break;
            }
        }
        let _ = sock.shutdown(std::net::Shutdown::Both);
        // The device has stopped: what it held comes home.
        if let Ok(back) = self.pool.uncached(shm_mempool::OwnerTag::PRIMARY) {
            for r in &self.rings {
                if let Some(ring) = r.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    for h in ring.inflight.iter_mut().filter(|h| **h != NONE) {
                        drop(back.adopt(MbufHandle(*h)));
                        *h = NONE;
                    }
                }
            }
        }
    }
}

/// A queue of a virtio-user port, polled by one thread: holds its ring while it lives.
#[derive(Debug)]
pub struct VirtioUserQueue {
    dev: Arc<VirtioUserDevice>,
    index: usize,
    ring: Option<DriverRing>,
    scratch: Vec<u8>,
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
    /// No mbuf to post or to copy into.
    pub no_mbuf: u64,
}

impl VirtioUserQueue {
    /// Takes vring `index` (even: our rx, odd: our tx) of `dev`.
    ///
    /// # Errors
    /// When another queue object of this process holds it.
    pub fn take(dev: Arc<VirtioUserDevice>, index: usize) -> Result<VirtioUserQueue, String> {
        let ring = dev.rings[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the vring is held by another queue of this process")?;
        Ok(VirtioUserQueue {
            dev,
            index,
            ring: Some(ring),
            scratch: Vec::with_capacity(super::net::MAX_FRAME + 64),
        })
    }

    /// Receives up to `max` packets into `out` and posts fresh buffers from `cache`.
    pub fn receive<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Outcome {
        let mut o = Outcome::default();
        let hdr = self.dev.hdr_len;
        let Some(r) = self.ring.as_mut() else {
            return o;
        };
        r.prefetch_used(max);
        while o.packets < max {
            let Some(first) = r.next_used() else { break };
            let Ok((_, len, h)) = first else {
                o.errors += 1;
                continue;
            };
            let Ok(mut m) = cache.reclaim(MbufHandle(h)) else {
                o.errors += 1;
                continue;
            };
            let posted = m.data_len();
            let len = len as usize;
            if len < hdr || len > posted {
                o.errors += 1;
                continue;
            }
            let nbufs = if hdr == 12 {
                u16::from_le_bytes([m.data()[10], m.data()[11]]).max(1)
            } else {
                1
            };
            m.trim(posted - len);
            m.adj(hdr);
            let mut ok = true;
            for _ in 1..nbufs {
                match r.next_used() {
                    Some(Ok((_, l, h))) => match cache.reclaim(MbufHandle(h)) {
                        Ok(mut seg) => {
                            let p = seg.data_len();
                            if (l as usize) > p {
                                ok = false;
                                continue;
                            }
                            seg.trim(p - l as usize);
                            if m.chain(seg).is_err() {
                                ok = false;
                            }
                        }
                        Err(_) => ok = false,
                    },
                    _ => ok = false,
                }
            }
            if !ok {
                o.errors += 1;
                continue;
            }
            o.packets += 1;
            o.bytes += u64::from(m.pkt_len());
            out.push(m);
        }
        // Refill every free descriptor.
        r.prefetch_posts(r.free.len());
        let mut posted = false;
        while let Some(id) = r.free.pop() {
            let Some(mut m) = cache.alloc() else {
                r.free.push(id);
                o.no_mbuf += 1;
                break;
            };
            let room = m.tailroom();
            let Some(buf) = m.append(room) else {
                r.free.push(id);
                break;
            };
            let addr = buf.as_ptr() as u64;
            let Ok(h) = m.into_transit() else {
                r.free.push(id);
                break;
            };
            r.post(id, addr, room as u32, VRING_DESC_F_WRITE, h.0);
            posted = true;
        }
        if posted {
            r.publish();
        }
        o
    }

    /// Sends from the front of `pkts` (removing what was sent), reclaiming what the
    /// device has used; copies into `cache` the packets it cannot post as they are.
    pub fn send<'c>(&mut self, cache: &'c MbufCache, pkts: &mut Vec<Mbuf<'c>>) -> Outcome {
        let mut o = Outcome::default();
        let hdr = self.dev.hdr_len;
        let (lo, hi) = (self.dev.region.0, self.dev.region.0 + self.dev.region.1);
        let Some(r) = self.ring.as_mut() else {
            return o;
        };
        // What the device has sent is ours again: free it.
        while let Some(u) = r.next_used() {
            match u {
                Ok((_, _, h)) => drop(cache.reclaim(MbufHandle(h))),
                Err(()) => o.errors += 1,
            }
        }
        let k = pkts.len().min(r.free.len());
        r.prefetch_posts(k);
        for m in &pkts[..k] {
            // Where the virtio-net header goes (the device read these bytes last).
            super::vring::prefetch_write(m.data().as_ptr().wrapping_sub(hdr));
        }
        let pool_id = self.dev.pool.mempool().id();
        for mut m in pkts.drain(..k) {
            let direct = !m.is_shared()
                && m.nb_segs() == 1
                && m.headroom() >= hdr
                && m.handle().pool_id() == pool_id;
            if !direct {
                // Chained, shared or from another pool: one fresh buffer of the port's pool.
                self.scratch.clear();
                self.scratch.resize(m.pkt_len() as usize, 0);
                m.copy_out(0, &mut self.scratch);
                match cache.alloc_from(&self.scratch) {
                    Ok(c) if c.nb_segs() == 1 && c.headroom() >= hdr => m = c,
                    _ => {
                        o.no_mbuf += 1;
                        continue;
                    }
                }
            }
            let Some(h) = m.prepend(hdr) else {
                o.errors += 1;
                continue;
            };
            // A header of constant size is zeroed inline (a 12-byte memset call costs more
            // than the rest of the header work).
            match <&mut [u8; 12]>::try_from(&mut *h) {
                Ok(h12) => *h12 = [0; 12],
                Err(_) => h.fill(0),
            }
            let addr = m.data().as_ptr() as u64;
            let len = m.data_len();
            if addr < lo || addr + len as u64 > hi {
                o.errors += 1;
                continue;
            }
            let Ok(handle) = m.into_transit() else {
                o.errors += 1;
                continue;
            };
            let id = r.free.pop().expect("k <= free descriptors");
            r.post(id, addr, len as u32, 0, handle.0);
            o.bytes += (len - hdr) as u64;
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
