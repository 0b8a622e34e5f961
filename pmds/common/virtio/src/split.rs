//! The split virtqueue layout (virtio 1.x §2.7), from the addresses of its three areas:
//!
//! ```text
//! desc   16 B x size  { addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16 }
//! avail  flags u16, idx u16, ring[size] u16, used_event u16
//! used   flags u16, idx u16, ring[size] { id u32, len u32 }, avail_event u16
//! ```
//!
//! All fields are little-endian. The device side reads a descriptor with one volatile copy,
//! the driver side writes it with one; neither keeps a reference into the table.

/// Descriptor flag: the chain continues at `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer (else it reads it).
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors (not negotiated here).
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// `avail.flags`: the driver does not want interrupts.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `used.flags`: the device does not need kicks (it polls).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// Largest queue size (virtio: 32768).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// One descriptor of the table, as laid out in memory (little-endian fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical (or, for vhost-user, frontend-virtual) address of the buffer.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// `VRING_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor of the chain when `flags` has [`VRING_DESC_F_NEXT`].
    pub next: u16,
}

const _: () = assert!(std::mem::size_of::<Desc>() == 16);

/// Bytes one vring of `size` entries takes (page-aligned): descriptors, avail, used
/// (virtio 1.x §2.7: 16, 6 + 2n and 6 + 8n bytes; used 64-aligned here).
pub fn vring_bytes(size: u16) -> u64 {
    let n = u64::from(size);
    let avail_end = (16 * n + 6 + 2 * n).next_multiple_of(64);
    (avail_end + 6 + 8 * n).next_multiple_of(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vring_bytes_hold_the_three_areas_page_aligned() {
        assert_eq!(vring_bytes(256), 8192);
        for size in [16u16, 256, 1024, 32768] {
            let n = u64::from(size);
            let b = vring_bytes(size);
            assert_eq!(b % 4096, 0);
            assert!(b >= 16 * n + 6 + 2 * n + 6 + 8 * n);
        }
    }
}
