//! Fixed layout of a ring inside its memzone. Offsets from the start of the memzone:
//!
//! ```text
//! 0     64   RingInfo   magic "SHMDPRNG", layout version, header size, flags, element
//!                       size, slot count, capacity, name   (written once, read as a copy)
//! 64    64   RingCtrl   failed flag, corruption counter
//! 128   64   prod       HeadTail { head, tail, owner } (producers' cache line)
//! 192   64   (guard: keeps the adjacent-line prefetcher from pairing prod and cons)
//! 256   64   cons       HeadTail { head, tail, owner } (consumers' cache line)
//! 320   64   (guard)
//! 384   ...  slots[slot_count] of elem_size bytes each
//! ```
//!
//! Indices are free-running `u32`s; slot = index & (slot_count - 1). The number of
//! elements is `prod.tail - cons.tail` (wrapping), at most `capacity` (which may be any
//! value up to `slot_count`: all slots are usable, unlike DPDK's default of count - 1).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::sync::AtomicU32;

/// First bytes of every ring.
pub const RING_MAGIC: [u8; 8] = *b"SHMDPRNG";
/// Layout major version; readers refuse any other.
pub const RING_LAYOUT_MAJOR: u16 = 1;
/// Layout minor version.
pub const RING_LAYOUT_MINOR: u16 = 0;
/// Offset of [`RingCtrl`].
pub const CTRL_OFF: u64 = 64;
/// Offset of the producers' [`HeadTail`].
pub const PROD_OFF: u64 = 128;
/// Offset of the consumers' [`HeadTail`].
pub const CONS_OFF: u64 = 256;
/// Offset of slot 0; also the header size.
pub const SLOTS_OFF: u64 = 384;
/// Largest slot count.
pub const MAX_SLOTS: u32 = 1 << 31;

/// Ring flag: single producer (enqueue without CAS).
pub const RING_F_SP_ENQ: u32 = 1 << 0;
/// Ring flag: single consumer (dequeue without CAS).
pub const RING_F_SC_DEQ: u32 = 1 << 1;
/// All known flags.
pub const RING_F_KNOWN: u32 = RING_F_SP_ENQ | RING_F_SC_DEQ;

/// The immutable description at offset 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RingInfo {
    /// [`RING_MAGIC`].
    pub magic: [u8; 8],
    /// [`RING_LAYOUT_MAJOR`].
    pub layout_major: u16,
    /// [`RING_LAYOUT_MINOR`].
    pub layout_minor: u16,
    /// [`SLOTS_OFF`].
    pub hdr_size: u32,
    /// `RING_F_*`.
    pub flags: u32,
    /// Bytes per element (8, 16 or 32).
    pub elem_size: u32,
    /// Number of slots, a power of two.
    pub slot_count: u32,
    /// Most elements the ring holds (1..=slot_count).
    pub capacity: u32,
    /// Ring name, NUL-padded.
    pub name: [u8; 32],
}

/// Shared health words at [`CTRL_OFF`].
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingCtrl {
    /// Non-zero once an operation found the indices impossible or a peer stalled.
    pub failed: AtomicU32,
    /// How many times corruption was detected.
    pub corrupt_events: AtomicU32,
}

/// A head/tail pair, alone on its cache line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct HeadTail {
    /// Next index to reserve.
    pub head: AtomicU32,
    /// Next index not yet published (everything before it is complete).
    pub tail: AtomicU32,
    /// Pid holding the single-producer/consumer role (0 = free); unused for MP/MC.
    pub owner: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<RingInfo>() == 64);
    assert!(size_of::<RingCtrl>() == 64);
    assert!(size_of::<HeadTail>() == 64);
};
// Under loom the atomics are larger; they must still fit the reserved space.
const _: () = assert!(std::mem::size_of::<RingCtrl>() <= (PROD_OFF - CTRL_OFF) as usize);
const _: () = assert!(std::mem::size_of::<HeadTail>() <= (CONS_OFF - PROD_OFF) as usize);
