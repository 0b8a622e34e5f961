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
//!
//! With `VIRTIO_F_IN_ORDER` (virtio 1.x §2.7.9; DPDK's vhost and ours offer it) the
//! descriptor of a post is its avail position, so the device returns buffers in the order
//! they were posted and may return a batch with one used element naming its last buffer;
//! the buffers before it were used whole. Posting only ever uses descriptors outside the
//! outstanding window, so a device that names the wrong buffer costs an error, not a
//! descriptor in use twice.

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
    header_len, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VRING_USED_F_NO_NOTIFY,
};
use super::proto::{self, code, PROTOCOL_F_MQ};
use super::vring::{Desc, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE};

/// Default entries per virtqueue (DPDK's virtio-user default).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// No buffer at this descriptor.
const NONE: u64 = u64::MAX;
/// Used length of a buffer an in-order device returned without an element of its own:
/// the whole buffer (virtio 1.x §2.7.9).
pub const WHOLE_BUFFER: u32 = u32::MAX;

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
    /// The device's used index as last loaded (see [`DriverRing::used_limit`]).
    seen_used: u16,
    /// Free descriptor ids (a stack) when not in order.
    free: Vec<u16>,
    /// `VIRTIO_F_IN_ORDER` negotiated: descriptors are posted in ring order (id = avail
    /// position masked) and come back in that order; `free` is unused.
    in_order: bool,
    /// In order: avail position of the oldest buffer the device has not returned.
    next_reclaim: u16,
    /// In order: buffers of the current used batch not handed out yet, and the length
    /// the device gave the batch's last buffer (the others were used whole).
    batch_left: u16,
    batch_len: u32,
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
    /// A fresh ring of `size` entries whose areas are at `desc`, `avail` and `used` in our
    /// memory (zeroed), kicked through `kick`.
    fn new(
        desc: *mut Desc,
        avail: *mut u16,
        used: *mut u16,
        size: u16,
        in_order: bool,
        kick: File,
    ) -> DriverRing {
        DriverRing {
            desc,
            avail,
            used,
            size,
            avail_idx: 0,
            last_used: 0,
            seen_used: 0,
            free: if in_order {
                Vec::new()
            } else {
                (0..size).rev().collect()
            },
            in_order,
            next_reclaim: 0,
            batch_left: 0,
            batch_len: 0,
            inflight: vec![NONE; usize::from(size)],
            addrs: vec![0; usize::from(size)],
            kick: Arc::new(kick),
        }
    }

    fn used_idx(&self) -> u16 {
        // D2: Acquire, before reading used elements and the buffers' bytes.
        // SAFETY: `used + 1` is the 2-aligned idx word of the used area in our memzone.
        unsafe { AtomicU16::from_ptr(self.used.wrapping_add(1)) }.load(Ordering::Acquire)
    }

    /// How far the device has returned buffers: the used index loaded once everything up
    /// to the last loaded value has been taken, so a burst loads the line the device keeps
    /// writing once, not once per buffer.
    #[inline]
    fn used_limit(&mut self) -> u16 {
        if self.last_used == self.seen_used {
            self.seen_used = self.used_idx();
        }
        self.seen_used
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

    /// Free descriptors.
    fn free_len(&self) -> usize {
        if self.in_order {
            usize::from(self.size - self.avail_idx.wrapping_sub(self.next_reclaim))
        } else {
            self.free.len()
        }
    }

    /// A free descriptor for the next post (in order: the one at the avail position).
    fn take_free(&mut self) -> Option<u16> {
        if self.in_order {
            // Free: not inside the outstanding window [next_reclaim, avail_idx).
            (self.free_len() > 0).then_some(self.avail_idx & (self.size - 1))
        } else {
            self.free.pop()
        }
    }

    /// Gives back a descriptor [`DriverRing::take_free`] returned and that was not posted
    /// (in order there is nothing to do: the avail position did not move).
    fn put_free(&mut self, id: u16) {
        if !self.in_order {
            self.free.push(id);
        }
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
    fn prefetch_used(&mut self, max: usize) {
        self.seen_used = self.used_idx();
        let ready = usize::from(self.seen_used.wrapping_sub(self.last_used))
            .min(usize::from(self.size))
            .min(max);
        for k in 0..ready as u16 {
            // In order, the buffers come back as they were posted (and the device may
            // not have written every used element).
            let id = if self.in_order {
                self.next_reclaim.wrapping_add(k)
            } else {
                self.used_elem(self.last_used.wrapping_add(k)).0 as u16
            };
            let id = usize::from(id & (self.size - 1));
            super::vring::prefetch(self.addrs[id] as *const u8);
        }
    }

    /// Prefetches for writing the descriptors and avail slots the next `k` posts use (the
    /// device last read them from another core).
    fn prefetch_posts(&self, k: usize) {
        let k = k.min(self.free_len());
        let mask = usize::from(self.size - 1);
        if self.in_order {
            let mut j = 0;
            while j < k {
                let id = usize::from(self.avail_idx).wrapping_add(j) & mask;
                super::vring::prefetch_write(self.desc.wrapping_add(id).cast());
                j += 4;
            }
        } else {
            for &id in &self.free[self.free.len() - k..] {
                super::vring::prefetch_write(self.desc.wrapping_add(usize::from(id)).cast());
            }
        }
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
    #[inline(always)]
    fn next_used(&mut self) -> Option<Result<(u16, u32, u64), ()>> {
        if self.in_order {
            return self.next_used_in_order();
        }
        let used_idx = self.used_limit();
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

    /// In order (virtio 1.x §2.7.9): buffers come back in the order they were posted. A
    /// batch starts with the used element at its first position, which names the head of
    /// its last buffer; the device may skip the elements of the others, which were used
    /// whole ([`WHOLE_BUFFER`]). An element naming a buffer that is not outstanding, or a
    /// batch longer than the used index allows, is one error and the device's stretch is
    /// skipped; our buffers stay outstanding (and come home when the port stops), and
    /// posting never reuses an outstanding descriptor.
    #[inline(always)]
    fn next_used_in_order(&mut self) -> Option<Result<(u16, u32, u64), ()>> {
        let mask = self.size - 1;
        if self.batch_left == 0 {
            let used_idx = self.used_limit();
            let ready = used_idx.wrapping_sub(self.last_used);
            if ready == 0 {
                return None;
            }
            let outstanding = self.avail_idx.wrapping_sub(self.next_reclaim);
            let (last, len) = self.used_elem(self.last_used);
            let span = u16::try_from(last)
                .ok()
                .filter(|&l| l < self.size)
                .map(|l| l.wrapping_sub(self.next_reclaim) & mask);
            match span {
                Some(span) if span < ready && span < outstanding => {
                    self.batch_left = span + 1;
                    self.batch_len = len;
                    self.last_used = self.last_used.wrapping_add(span + 1);
                }
                _ => {
                    self.last_used = used_idx;
                    return Some(Err(()));
                }
            }
        }
        self.batch_left -= 1;
        let id = self.next_reclaim & mask;
        self.next_reclaim = self.next_reclaim.wrapping_add(1);
        let len = if self.batch_left == 0 {
            self.batch_len
        } else {
            WHOLE_BUFFER
        };
        let h = std::mem::replace(&mut self.inflight[usize::from(id)], NONE);
        if h == NONE {
            return Some(Err(()));
        }
        Some(Ok((id, len, h)))
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
            rings.push(Mutex::new(Some(DriverRing::new(
                desc as *mut Desc,
                avail as *mut u16,
                used as *mut u16,
                size,
                in_order,
                kick,
            ))));
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
            let len = if len == WHOLE_BUFFER {
                posted
            } else {
                len as usize
            };
            if len < hdr || len > posted {
                o.errors += 1;
                continue;
            }
            let nbufs = if hdr == 12 {
                u16::from_le_bytes([m.data()[10], m.data()[11]]).max(1)
            } else {
                1
            };
            // The frame after the header (one segment: posted buffers are single).
            if !m.keep_range(hdr, len - hdr) {
                o.errors += 1;
                continue;
            }
            let mut ok = true;
            for _ in 1..nbufs {
                match r.next_used() {
                    Some(Ok((_, l, h))) => match cache.reclaim(MbufHandle(h)) {
                        Ok(mut seg) => {
                            let p = seg.data_len();
                            let l = if l == WHOLE_BUFFER { p as u32 } else { l };
                            if !seg.keep_range(0, l as usize) {
                                ok = false;
                                continue;
                            }
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
        r.prefetch_posts(r.free_len());
        let mut posted = false;
        while let Some(id) = r.take_free() {
            // A whole data room per descriptor, in transit while the device holds it.
            let Some((h, buf, room)) = cache.alloc_in_transit() else {
                r.put_free(id);
                o.no_mbuf += 1;
                break;
            };
            r.post(id, buf as u64, room, VRING_DESC_F_WRITE, h.0);
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
                Ok((_, _, h)) => {
                    if cache.free_reclaimed(MbufHandle(h)).is_err() {
                        o.errors += 1;
                    }
                }
                Err(()) => o.errors += 1,
            }
        }
        let k = pkts.len().min(r.free_len());
        r.prefetch_posts(k);
        for m in &pkts[..k] {
            // Where the virtio-net header goes (the device read these bytes last).
            super::vring::prefetch_write(m.data().as_ptr().wrapping_sub(hdr));
        }
        let pool_id = self.dev.pool.mempool().id();
        // The virtio-net header is all zeros (no offloads). It is 10 or 12 bytes: two
        // overlapping 8-byte stores clear it (a memset call costs more than the rest of
        // the header's work).
        let zero = |h: &mut [u8]| {
            let n = h.len();
            h[..8].copy_from_slice(&[0; 8]);
            h[n - 8..].copy_from_slice(&[0; 8]);
        };
        for m in pkts.drain(..k) {
            // Ours and plain (one segment, unshared, headroom for the header): posted as
            // it is. Otherwise one fresh buffer of the port's pool gets a copy.
            let direct = if m.handle().pool_id() == pool_id {
                m.into_transit_prepending(hdr, zero)
            } else {
                Err(m)
            };
            let (handle, addr, len) = match direct {
                Ok(t) => t,
                Err(m) => {
                    self.scratch.clear();
                    self.scratch.resize(m.pkt_len() as usize, 0);
                    m.copy_out(0, &mut self.scratch);
                    drop(m);
                    let copied = cache
                        .alloc_from(&self.scratch)
                        .map_err(|_| ())
                        .and_then(|c| c.into_transit_prepending(hdr, zero).map_err(drop));
                    match copied {
                        Ok(t) => t,
                        Err(()) => {
                            o.no_mbuf += 1;
                            continue;
                        }
                    }
                }
            };
            let addr = addr as u64;
            if addr < lo || addr + len as u64 > hi {
                // Not inside the memory the device maps (cannot happen for our pool).
                let _ = cache.free_reclaimed(handle);
                o.errors += 1;
                continue;
            }
            let id = r.take_free().expect("k <= free descriptors");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver ring of `size` entries over `mem` (zeroed), as `connect` lays it out.
    fn ring(mem: &mut [u64], size: u16, in_order: bool) -> DriverRing {
        let base = mem.as_mut_ptr().cast::<u8>();
        let n = usize::from(size);
        let used_off = (16 * n + 6 + 2 * n).next_multiple_of(64);
        assert!(used_off + 6 + 8 * n <= mem.len() * 8);
        DriverRing::new(
            base.cast(),
            base.wrapping_add(16 * n).cast(),
            base.wrapping_add(used_off).cast(),
            size,
            in_order,
            eventfd().unwrap(),
        )
    }

    /// What the device does: element `pos` = (id, len), then used.idx = `idx`.
    fn device_returns(r: &DriverRing, pos: u16, id: u32, len: u32, idx: u16) {
        let slot = usize::from(pos & (r.size - 1));
        let p = r
            .used
            .cast::<u8>()
            .wrapping_add(4 + 8 * slot)
            .cast::<[u32; 2]>();
        // SAFETY: inside the test's used area, 4-aligned.
        unsafe { p.write([id, len]) };
        // SAFETY: used.idx, 2-aligned.
        unsafe { AtomicU16::from_ptr(r.used.wrapping_add(1)) }.store(idx, Ordering::Release);
    }

    fn post_n(r: &mut DriverRing, n: u64, first_handle: u64) {
        for h in first_handle..first_handle + n {
            let id = r.take_free().unwrap();
            r.post(id, 0x1000 * h, 64, 0, h);
        }
        r.publish();
    }

    #[test]
    fn in_order_posts_in_ring_order_and_takes_back_batches() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, true);
        post_n(&mut r, 4, 100);
        for i in 0..4u16 {
            // SAFETY: avail.ring[i] of the test ring.
            let entry = unsafe { r.avail.wrapping_add(2 + usize::from(i)).read() };
            assert_eq!(entry, i);
        }
        assert_eq!(r.free_len(), 4);
        // One element for three buffers: the first two were used whole.
        device_returns(&r, 0, 2, 50, 3);
        assert_eq!(r.next_used(), Some(Ok((0, WHOLE_BUFFER, 100))));
        assert_eq!(r.next_used(), Some(Ok((1, WHOLE_BUFFER, 101))));
        assert_eq!(r.next_used(), Some(Ok((2, 50, 102))));
        assert_eq!(r.next_used(), None);
        assert_eq!(r.free_len(), 7);
        // The next batch's element sits at its first position.
        device_returns(&r, 3, 3, 7, 4);
        assert_eq!(r.next_used(), Some(Ok((3, 7, 103))));
        // Wrapping the ring: descriptors 4..8 then 0..2.
        post_n(&mut r, 6, 200);
        device_returns(&r, 4, 1, 9, 10);
        let got: Vec<_> = std::iter::from_fn(|| r.next_used()).collect();
        let ids: Vec<u16> = got.iter().map(|g| g.unwrap().0).collect();
        assert_eq!(ids, [4, 5, 6, 7, 0, 1]);
        assert_eq!(got[5], Ok((1, 9, 205)));
        assert_eq!(r.free_len(), 8);
    }

    #[test]
    fn an_in_order_element_naming_no_outstanding_buffer_is_one_error() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, true);
        post_n(&mut r, 2, 100);
        // Names descriptor 5, which was never posted; then an index far ahead.
        device_returns(&r, 0, 5, 0, 1);
        assert_eq!(r.next_used(), Some(Err(())));
        assert_eq!(r.next_used(), None, "the bad stretch is skipped once");
        assert_eq!(
            r.free_len(),
            6,
            "our buffers stay outstanding, never reposted"
        );
        device_returns(&r, 1, 0x1_0000, 0, 2);
        assert_eq!(r.next_used(), Some(Err(())));
        // A batch longer than the used index allows.
        device_returns(&r, 2, 1, 0, 3);
        assert_eq!(r.next_used(), Some(Err(())));
        // Posting continues after the outstanding window.
        assert_eq!(r.take_free(), Some(2));
        assert!(r.inflight[..2].iter().all(|&h| h != NONE));
    }

    #[test]
    fn not_in_order_returns_what_each_element_names() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, false);
        post_n(&mut r, 3, 100);
        device_returns(&r, 0, 1, 5, 1);
        assert_eq!(r.next_used(), Some(Ok((1, 5, 101))));
        device_returns(&r, 1, 1, 5, 2);
        assert_eq!(r.next_used(), Some(Err(())), "a buffer returned twice");
    }
}
