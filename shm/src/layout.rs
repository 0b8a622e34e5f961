//! The fixed, documented layout of a memseg's first 16 KiB: the memseg header and the
//! memzone table. Everything here is `#[repr(C)]`, little-endian on the only supported
//! target (x86_64), position independent (offsets from the memseg base, never pointers),
//! and pinned by compile-time asserts. Changing any pin means bumping
//! [`MEMSEG_LAYOUT_MAJOR`].
//!
//! ```text
//! offset  size   what
//! 0       128    MemsegHeader
//! 128     16256  MemzoneEntry[254]   (64 bytes each)
//! 16384   ...    memzones (each aligned to 64 bytes or more)
//! ```

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First 8 bytes of every memseg.
pub const MEMSEG_MAGIC: [u8; 8] = *b"SHMDPSEG";
/// Incompatible layout changes bump this; a reader refuses any other major.
pub const MEMSEG_LAYOUT_MAJOR: u16 = 1;
/// Compatible additions bump this; readers accept any minor.
pub const MEMSEG_LAYOUT_MINOR: u16 = 0;
/// Bytes taken by the header and the memzone table; memzones start here.
pub const MEMSEG_HDR_SIZE: u64 = 16384;
/// Offset of the memzone table.
pub const MEMZONE_TABLE_OFF: u64 = 128;
/// Number of memzones one memseg can hold.
pub const MEMZONE_CAPACITY: u32 = ((MEMSEG_HDR_SIZE - MEMZONE_TABLE_OFF) / 64) as u32;
/// Memzone names are NUL-padded to this many bytes (at most 31 characters).
pub const NAME_LEN: usize = 32;
/// Smallest memseg: one 2 MiB hugepage.
pub const MEMSEG_MIN_SIZE: u64 = 2 << 20;
/// Smallest memzone alignment: a cache line.
pub const CACHE_LINE: u64 = 64;

/// Memseg flag: backed by a hugetlbfs file.
pub const MEMSEG_F_HUGETLB: u32 = 1 << 0;
/// All memseg flags this version knows; others are rejected.
pub const MEMSEG_F_KNOWN: u32 = MEMSEG_F_HUGETLB;

/// Offset of [`MemsegHeader::state`] (an atomic u32).
pub const STATE_OFF: u64 = 20;
/// Offset of [`MemsegHeader::zone_count`] (an atomic u32).
pub const ZONE_COUNT_OFF: u64 = 80;
/// Offset of [`MemsegHeader::alloc_off`].
pub const ALLOC_OFF_OFF: u64 = 96;

/// Lifecycle of a memseg, kept in [`MemsegHeader::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemsegState {
    /// The primary is still laying it out: secondaries must wait and retry.
    Initialising,
    /// Ready for secondaries.
    Ready,
    /// The primary is shutting down: do not attach.
    Closing,
}

impl MemsegState {
    /// The value stored in shared memory.
    pub const fn as_u32(self) -> u32 {
        match self {
            MemsegState::Initialising => 0x494e_4954, // "INIT"
            MemsegState::Ready => 0x5244_5921,        // "RDY!"
            MemsegState::Closing => 0x434c_4f53,      // "CLOS"
        }
    }

    /// Decodes a value read from shared memory.
    pub const fn from_u32(v: u32) -> Option<MemsegState> {
        match v {
            0x494e_4954 => Some(MemsegState::Initialising),
            0x5244_5921 => Some(MemsegState::Ready),
            0x434c_4f53 => Some(MemsegState::Closing),
            _ => None,
        }
    }
}

/// What a memzone holds; the low 8 bits of [`MemzoneEntry::flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemzoneKind {
    /// Raw bytes with no header of ours.
    Raw,
    /// A shm-ring ring.
    Ring,
    /// A shm-mempool pool.
    Mempool,
    /// A port's shared state.
    Port,
}

impl MemzoneKind {
    /// The value stored in the low byte of the entry flags.
    pub const fn as_u32(self) -> u32 {
        match self {
            MemzoneKind::Raw => 0,
            MemzoneKind::Ring => 1,
            MemzoneKind::Mempool => 2,
            MemzoneKind::Port => 3,
        }
    }

    /// Decodes the low byte of the entry flags.
    pub const fn from_u32(v: u32) -> Option<MemzoneKind> {
        match v {
            0 => Some(MemzoneKind::Raw),
            1 => Some(MemzoneKind::Ring),
            2 => Some(MemzoneKind::Mempool),
            3 => Some(MemzoneKind::Port),
            _ => None,
        }
    }
}

/// Mask of the kind byte in [`MemzoneEntry::flags`]; all other bits are reserved (zero).
pub const MEMZONE_F_KIND_MASK: u32 = 0xff;

/// The header at offset 0 of every memseg.
///
/// `state` and `zone_count` are accessed as atomics through [`crate::Region::atomic_u32`]
/// at [`STATE_OFF`] and [`ZONE_COUNT_OFF`]; every other field is written once by the
/// primary before the memseg becomes ready.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct MemsegHeader {
    /// [`MEMSEG_MAGIC`].
    pub magic: [u8; 8],
    /// [`MEMSEG_LAYOUT_MAJOR`].
    pub layout_major: u16,
    /// [`MEMSEG_LAYOUT_MINOR`].
    pub layout_minor: u16,
    /// [`MEMSEG_HDR_SIZE`].
    pub hdr_size: u32,
    /// `MEMSEG_F_*` bits.
    pub flags: u32,
    /// A [`MemsegState`] value (atomic).
    pub state: u32,
    /// Size of the whole memseg (a power of two), equal to the file size.
    pub size_bytes: u64,
    /// Pid of the primary that created it.
    pub creator_pid: u32,
    /// Index of this memseg among the primary's memsegs.
    pub memseg_id: u32,
    /// Run number of the prefix: bumped by every primary start.
    pub generation: u64,
    /// Memseg name, NUL-padded.
    pub name: [u8; NAME_LEN],
    /// Number of published memzone entries (atomic; release-stored after the entry).
    pub zone_count: u32,
    /// [`MEMZONE_CAPACITY`].
    pub zone_capacity: u32,
    /// First byte available to memzones ([`MEMSEG_HDR_SIZE`]).
    pub data_off: u64,
    /// End of the last memzone (the primary's bump cursor; informational for readers).
    pub alloc_off: u64,
    /// Page size of the backing store in bytes.
    pub page_size: u64,
    /// Zero.
    pub _reserved: [u8; 16],
}

/// One row of the memzone table.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct MemzoneEntry {
    /// Memzone name, NUL-padded (at most 31 bytes of UTF-8).
    pub name: [u8; NAME_LEN],
    /// Offset of the memzone from the memseg base.
    pub offset: u64,
    /// Length in bytes.
    pub len_bytes: u64,
    /// Alignment the zone was reserved with (power of two, at least [`CACHE_LINE`]).
    pub align: u64,
    /// Kind in the low byte ([`MemzoneKind`]); other bits reserved.
    pub flags: u32,
    /// Zero.
    pub _reserved: u32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<MemsegHeader>() == MEMZONE_TABLE_OFF as usize);
    assert!(size_of::<MemzoneEntry>() == 64);
    assert!(offset_of!(MemsegHeader, state) == STATE_OFF as usize);
    assert!(offset_of!(MemsegHeader, zone_count) == ZONE_COUNT_OFF as usize);
    assert!(offset_of!(MemsegHeader, size_bytes) == 24);
    assert!(offset_of!(MemsegHeader, generation) == 40);
    assert!(offset_of!(MemsegHeader, name) == 48);
    assert!(offset_of!(MemsegHeader, page_size) == 104);
    assert!(offset_of!(MemsegHeader, alloc_off) == ALLOC_OFF_OFF as usize);
    assert!(offset_of!(MemzoneEntry, offset) == 32);
    assert!(offset_of!(MemzoneEntry, flags) == 56);
    assert!(MEMZONE_TABLE_OFF + MEMZONE_CAPACITY as u64 * 64 <= MEMSEG_HDR_SIZE);
};

/// Encodes a name into a NUL-padded fixed array, or `None` if it is empty, too long or
/// contains a NUL.
pub fn encode_name(name: &str) -> Option<[u8; NAME_LEN]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= NAME_LEN || bytes.contains(&0) {
        return None;
    }
    let mut out = [0u8; NAME_LEN];
    out[..bytes.len()].copy_from_slice(bytes);
    Some(out)
}

/// Decodes a NUL-padded name read from shared memory: it must be UTF-8, non-empty,
/// NUL-terminated within the array, and NUL after the terminator.
pub fn decode_name(raw: &[u8; NAME_LEN]) -> Option<&str> {
    let end = raw.iter().position(|&b| b == 0)?;
    if end == 0 || raw[end..].iter().any(|&b| b != 0) {
        return None;
    }
    std::str::from_utf8(&raw[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_pinned() {
        // Mirrors the compile-time asserts so a failing pin also shows up as a named test.
        assert_eq!(std::mem::size_of::<MemsegHeader>(), 128);
        assert_eq!(std::mem::size_of::<MemzoneEntry>(), 64);
        assert_eq!(MEMZONE_CAPACITY, 254);
        assert_eq!(std::mem::offset_of!(MemsegHeader, data_off), 88);
        assert_eq!(std::mem::offset_of!(MemzoneEntry, len_bytes), 40);
    }

    #[test]
    fn names_round_trip_and_reject_bad_input() {
        let enc = encode_name("rx_ring0").unwrap();
        assert_eq!(decode_name(&enc), Some("rx_ring0"));
        assert!(encode_name("").is_none());
        assert!(encode_name(&"x".repeat(32)).is_none());
        assert!(encode_name("a\0b").is_none());
        assert!(decode_name(&[b'a'; 32]).is_none(), "unterminated");
        let mut junk = enc;
        junk[20] = b'z';
        assert!(decode_name(&junk).is_none(), "bytes after terminator");
        assert!(decode_name(&[0u8; 32]).is_none(), "empty");
    }

    #[test]
    fn state_and_kind_codes_round_trip() {
        for s in [
            MemsegState::Initialising,
            MemsegState::Ready,
            MemsegState::Closing,
        ] {
            assert_eq!(MemsegState::from_u32(s.as_u32()), Some(s));
        }
        assert_eq!(MemsegState::from_u32(0), None);
        for k in [
            MemzoneKind::Raw,
            MemzoneKind::Ring,
            MemzoneKind::Mempool,
            MemzoneKind::Port,
        ] {
            assert_eq!(MemzoneKind::from_u32(k.as_u32()), Some(k));
        }
        assert_eq!(MemzoneKind::from_u32(9), None);
    }
}
