//! The memory a `net_virtio_user` port shares with its backend: a memseg of its own, in
//! an anonymous memfd that holds only this port's vrings and packet buffers.
//!
//! The backend maps whatever fd it is given, whole and read-write, and may write any of
//! it at any moment: it is as untrusted as a guest. So it is never given the main memseg
//! (every pool, ring and packet of the process) but this memseg, and nothing here is
//! ever read back as a structure of ours: the memseg's header and directory are written
//! once at creation and never looked up (the memseg is in no name lookup), the vrings
//! are read through the checks in [`crate::device`], and packet bytes are copied out
//! of the buffers once into mbufs of a host pool and checked there. All of it is reached
//! only as [`PeerSpan`]s (`pmds_common_vhost_user::peer_mem`), like a guest's memory.
//! No mbuf header and no pool ring lives in shared memory: the buffers are plain slots of
//! [`SLOT_BYTES`], one per descriptor, their bookkeeping in the queue's private memory.
//!
//! The memfd is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before the backend
//! sees it, so the backend cannot truncate it under us; the mapping is registered with
//! the SIGBUS guard as well ([`pmds_common_vhost_user::guard`]), so nothing it does to the file can kill
//! the process.
//!
//! Layout: memseg header and directory, then the vrings memzone (`vq`, [`vring_bytes`]
//! per vring), then the buffers memzone (`bufs`, `queue_size` slots per vring, vring `v`'s
//! descriptor `d` owning slot `v * queue_size + d`).

use pmds_common_vhost_user::VhostError;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use shm::{Memseg, MemzoneKind, Region};

use pmds_common_vhost_user::guard::{Guarded, Quota};
use pmds_common_vhost_user::peer_mem::PeerSpan;

/// Bytes of one packet buffer: the virtio-net header and a frame of up to
/// `SLOT_BYTES - 12` bytes (more with mergeable rx buffers, spread over several).
pub const SLOT_BYTES: u64 = 2048;
/// Most bytes one port may share (queues × queue_size × 2 KiB per vring, and the rings).
pub const MAX_PORT_BYTES: u64 = 256 << 20;
/// Room for the memseg's header and directory.
const HEADER_BYTES: u64 = 64 << 10;

pub use pmds_common_virtio::split::vring_bytes;

/// The shared memory of one virtio-user port.
#[derive(Debug)]
pub struct PortMemory {
    /// Unregistered before the mapping goes (declared before `seg`).
    guard: Guarded,
    seg: Memseg,
    /// All of `seg`'s mapping, the one way into it.
    span: PeerSpan,
    file: File,
    rings_off: u64,
    bufs_off: u64,
    size: u16,
    vrings: usize,
}

impl PortMemory {
    /// Creates the memory of port `name` for `vrings` vrings of `size` entries.
    ///
    /// # Errors
    /// One line: too much memory for those queue counts, or a memfd/mmap failure.
    pub fn create(name: &str, vrings: usize, size: u16) -> Result<PortMemory, VhostError> {
        let ring_bytes = vrings as u64 * vring_bytes(size);
        let buf_bytes = vrings as u64 * u64::from(size) * SLOT_BYTES;
        let total = HEADER_BYTES + ring_bytes + buf_bytes;
        if total > MAX_PORT_BYTES {
            return Err(pmds_common_vhost_user::setup_err!(
                "{} vrings of {size} entries need {} MiB of buffers (at most {} MiB): lower queues= or queue_size=",
                vrings,
                total >> 20,
                MAX_PORT_BYTES >> 20
            ));
        }
        let file = pmds_common_vhost_user::memfd::sealed_memfd(&format!("shmdp-{name}"), total)
            .map_err(|e| pmds_common_vhost_user::setup_err!("port memory: {e}"))?;
        let map = memmap2::MmapOptions::new()
            .len(total as usize)
            .map_raw(&file)
            .map_err(|e| pmds_common_vhost_user::setup_err!("map the port memory: {e}"))?;
        // One mapping: a share of one slot of the guard's table.
        let base = map.as_mut_ptr();
        let guard = Quota::reserve(1)?.register(base as usize, total as usize)?;
        let seg = Memseg::create_in_region(Region::from_mmap(map), &format!("{name}_vu"), 0)
            .map_err(|e| VhostError::Setup(e.to_string()))?;
        let rings = seg
            .reserve("vq", ring_bytes, 4096, MemzoneKind::Raw)
            .map_err(|e| VhostError::Setup(e.to_string()))?;
        let bufs = seg
            .reserve("bufs", buf_bytes, 4096, MemzoneKind::Raw)
            .map_err(|e| VhostError::Setup(e.to_string()))?;
        seg.mark_ready();
        // SAFETY: the whole of `seg`'s mapping (`total` bytes, shared, read-write), which
        // lives as long as this value; every span of it is used by the rings of the
        // device that owns this value, and the device drops them first.
        let span = unsafe { PeerSpan::new(base, total as usize) };
        Ok(PortMemory {
            guard,
            span,
            rings_off: rings.offset,
            bufs_off: bufs.offset,
            seg,
            file,
            size,
            vrings,
        })
    }

    /// The mapping faulted and the SIGBUS guard replaced it with zeros: the backend took
    /// the memory away (not by shrinking it: the memfd is sealed). The port is to be
    /// dropped. One atomic load.
    #[inline]
    pub fn taken_away(&self) -> bool {
        self.guard.hit()
    }

    /// Raises the guard's flag as a fault would (tests of the port's side).
    #[cfg(test)]
    pub(crate) fn take_away_for_test(&self) {
        self.guard.raise_for_test();
    }

    /// Our address of the first byte (also its guest-physical address for the backend).
    pub fn base(&self) -> u64 {
        self.seg.region().base_va() as u64
    }

    /// Bytes shared.
    pub fn len_bytes(&self) -> u64 {
        self.seg.size_bytes()
    }

    /// The memfd given to the backend.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Vring `v`'s memory ([`vring_bytes`] from its descriptor table), valid while this
    /// value lives.
    pub fn vring(&self, v: usize) -> PeerSpan {
        assert!(v < self.vrings, "vring {v} of {}", self.vrings);
        let off = self.rings_off + v as u64 * vring_bytes(self.size);
        self.span
            .sub(off as usize, vring_bytes(self.size) as usize)
            .unwrap_or(PeerSpan::EMPTY)
    }

    /// Vring `v`'s `queue_size` buffer slots, valid while this value lives.
    pub fn slots(&self, v: usize) -> PeerSpan {
        assert!(v < self.vrings, "vring {v} of {}", self.vrings);
        let len = u64::from(self.size) * SLOT_BYTES;
        let off = self.bufs_off + v as u64 * len;
        self.span
            .sub(off as usize, len as usize)
            .unwrap_or(PeerSpan::EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_memory_is_a_sealed_memfd_with_only_rings_and_slots() {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let m = PortMemory::create("vu0", 2, 256).unwrap();
        let seals = SealFlag::from_bits_truncate(fcntl(&m.file, FcntlArg::F_GET_SEALS).unwrap());
        assert!(seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW));
        assert!(m.file.set_len(4096).is_err(), "cannot shrink");
        assert_eq!(
            m.len_bytes(),
            HEADER_BYTES + 2 * vring_bytes(256) + 2 * 256 * SLOT_BYTES
        );
        let last = m.slots(1).addr() + 256 * SLOT_BYTES;
        assert_eq!(m.slots(1).len() as u64, 256 * SLOT_BYTES);
        assert!(last <= m.base() + m.len_bytes());
        assert!(m.vring(1).addr() + vring_bytes(256) <= m.slots(0).addr());
        assert_eq!(m.vring(0).addr(), m.base() + m.rings_off);
        assert!(PortMemory::create("vu1", 16, 32768).is_err(), "too large");
    }
}
