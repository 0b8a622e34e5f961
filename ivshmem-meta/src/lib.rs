//! `ivshmem-meta`: the versioned, little-endian metadata block at a fixed place in an
//! IVSHMEM export segment that names every ring, pool, port and memzone exported to one
//! guest, with a validator that never trusts its input.
//!
//! Where it sits: the primary writes one block into each export segment (a memseg file that
//! QEMU maps as an `ivshmem-plain` device); a guest (or a host process mapping the same
//! file) reads it from BAR2 and finds the objects by name. The block is plain bytes encoded
//! and decoded field by field, so it means the same thing to any build on any address.
//!
//! Layout (all little-endian), at [`META_OFFSET`] from the start of the segment,
//! [`BLOCK_SIZE`] bytes:
//!
//! ```text
//! 0    8   magic "SHMDPIVM"
//! 8    2   layout major          10  2  layout minor
//! 12   4   block size (4096)
//! 16   8   segment size (the whole file / BAR2 length)
//! 24   32  group name, NUL padded
//! 56   4   entry count (at most MAX_ENTRIES)
//! 60   4   checksum: FNV-1a 32 over the whole block with this field zero
//! 64   64 x entry count: entries
//!        0  32  name, NUL padded         32  4  kind (1 ring, 2 mempool, 3 memzone, 4 port)
//!        36  4  flags (kind specific)    40  8  offset from the segment start
//!        48  8  length in bytes          56  4  element size (ring elements, pool objects)
//!        60  4  zero
//! ```
//!
//! [`decode`] checks everything: magic, version, sizes, names (non-empty, UTF-8, NUL
//! padded; the group name [`valid_group`]), kinds, every entry inside the segment and
//! past the block, no two entries overlapping or of one name, and the checksum. It never panics, whatever the bytes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// First bytes of the block.
pub const MAGIC: [u8; 8] = *b"SHMDPIVM";
/// Layout major version; readers refuse any other.
pub const LAYOUT_MAJOR: u16 = 1;
/// Layout minor version.
pub const LAYOUT_MINOR: u16 = 0;
/// Bytes of the block.
pub const BLOCK_SIZE: usize = 4096;
/// Where the block starts in the segment: right after the memseg header (the first
/// memzone of an export segment).
pub const META_OFFSET: u64 = 16384;
/// Bytes of the header before the entries.
pub const HEADER_SIZE: usize = 64;
/// Bytes per entry.
pub const ENTRY_SIZE: usize = 64;
/// Most entries in one block.
pub const MAX_ENTRIES: usize = (BLOCK_SIZE - HEADER_SIZE) / ENTRY_SIZE;
/// Bytes of a name field.
pub const NAME_LEN: usize = 32;

/// What an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A shm-ring ring.
    Ring = 1,
    /// A shm-mempool pool.
    Mempool = 2,
    /// A raw memzone.
    Memzone = 3,
    /// A pmds port.
    Port = 4,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Ring,
            2 => Kind::Mempool,
            3 => Kind::Memzone,
            4 => Kind::Port,
            _ => return None,
        })
    }

    /// Lower-case name (`ring`, `mempool`, `memzone`, `port`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::Mempool => "mempool",
            Kind::Memzone => "memzone",
            Kind::Port => "port",
        }
    }
}

/// One exported object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name (as the host knows it).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Kind-specific flags.
    pub flags: u32,
    /// Offset from the start of the segment.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Element size (ring elements, pool objects; 0 otherwise).
    pub elem_size: u32,
}

/// A decoded (or to-be-encoded) block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Export group name.
    pub group: String,
    /// Size of the whole segment.
    pub segment_size: u64,
    /// The objects.
    pub entries: Vec<Entry>,
}

/// Why a block was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// Fewer bytes than a block.
    Short(usize),
    /// Not a metadata block.
    BadMagic,
    /// Another layout version.
    Version(u16),
    /// A size field is wrong.
    Size(&'static str),
    /// A name is empty, too long, not UTF-8 or not NUL padded.
    BadName(&'static str, usize),
    /// Too many entries.
    TooMany(usize),
    /// An unknown kind.
    BadKind(usize, u32),
    /// An entry outside the segment or over the header or block.
    OutOfBounds(usize),
    /// Two entries overlap.
    Overlap(usize, usize),
    /// Two entries have one name.
    Duplicate(usize, usize),
    /// The checksum does not match.
    Checksum {
        /// In the block.
        stored: u32,
        /// Computed.
        computed: u32,
    },
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Short(n) => write!(f, "{n} bytes is shorter than a metadata block ({BLOCK_SIZE})"),
            MetaError::BadMagic => write!(f, "no shmdp export metadata here (bad magic): is this an shmdp IVSHMEM device?"),
            MetaError::Version(v) => write!(
                f,
                "metadata layout version {v}; this build reads {LAYOUT_MAJOR}: use the same shmdp release on host and guest"
            ),
            MetaError::Size(what) => write!(f, "metadata {what} is wrong"),
            MetaError::BadName(what, i) => write!(f, "metadata {what} name {i} is not a valid name"),
            MetaError::TooMany(n) => write!(f, "metadata claims {n} entries (at most {MAX_ENTRIES})"),
            MetaError::BadKind(i, k) => write!(f, "metadata entry {i} has unknown kind {k}"),
            MetaError::OutOfBounds(i) => write!(f, "metadata entry {i} lies outside the segment"),
            MetaError::Overlap(a, b) => write!(f, "metadata entries {a} and {b} overlap"),
            MetaError::Duplicate(a, b) => write!(f, "metadata entries {a} and {b} have one name"),
            MetaError::Checksum { stored, computed } => write!(
                f,
                "metadata checksum {stored:#010x} does not match its contents ({computed:#010x}): the block is corrupt"
            ),
        }
    }
}

impl std::error::Error for MetaError {}

/// FNV-1a, 32 bits.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A valid group name: 1 to 31 bytes of `[A-Za-z0-9_-]`, the primary's memseg names (so
/// it can be printed into a QEMU option or a shell line as it is).
pub fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() < NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn put_name(out: &mut [u8], name: &str) -> Result<(), MetaError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.as_bytes().contains(&0) {
        return Err(MetaError::BadName("a", 0));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}

fn get_name(raw: &[u8], what: &'static str, i: usize) -> Result<String, MetaError> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or(MetaError::BadName(what, i))?;
    if end == 0 || raw[end..].iter().any(|&b| b != 0) {
        return Err(MetaError::BadName(what, i));
    }
    String::from_utf8(raw[..end].to_vec()).map_err(|_| MetaError::BadName(what, i))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Encodes `meta` into a block.
///
/// # Errors
/// The same checks as [`decode`] (a block that would not decode is never written).
pub fn encode(meta: &Meta) -> Result<[u8; BLOCK_SIZE], MetaError> {
    if meta.entries.len() > MAX_ENTRIES {
        return Err(MetaError::TooMany(meta.entries.len()));
    }
    let mut b = [0u8; BLOCK_SIZE];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&LAYOUT_MAJOR.to_le_bytes());
    b[10..12].copy_from_slice(&LAYOUT_MINOR.to_le_bytes());
    b[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    b[16..24].copy_from_slice(&meta.segment_size.to_le_bytes());
    if !valid_group(&meta.group) {
        return Err(MetaError::BadName("group", 0));
    }
    put_name(&mut b[24..56], &meta.group).map_err(|_| MetaError::BadName("group", 0))?;
    b[56..60].copy_from_slice(&(meta.entries.len() as u32).to_le_bytes());
    for (i, e) in meta.entries.iter().enumerate() {
        let o = HEADER_SIZE + i * ENTRY_SIZE;
        put_name(&mut b[o..o + NAME_LEN], &e.name).map_err(|_| MetaError::BadName("entry", i))?;
        b[o + 32..o + 36].copy_from_slice(&(e.kind as u32).to_le_bytes());
        b[o + 36..o + 40].copy_from_slice(&e.flags.to_le_bytes());
        b[o + 40..o + 48].copy_from_slice(&e.offset.to_le_bytes());
        b[o + 48..o + 56].copy_from_slice(&e.length.to_le_bytes());
        b[o + 56..o + 60].copy_from_slice(&e.elem_size.to_le_bytes());
    }
    let sum = fnv1a(&b);
    b[60..64].copy_from_slice(&sum.to_le_bytes());
    decode(&b)?;
    Ok(b)
}

/// Decodes and validates a block (`bytes` may be longer; the block is its first
/// [`BLOCK_SIZE`] bytes).
///
/// # Errors
/// [`MetaError`] naming the first problem found.
pub fn decode(bytes: &[u8]) -> Result<Meta, MetaError> {
    let b = bytes
        .get(..BLOCK_SIZE)
        .ok_or(MetaError::Short(bytes.len()))?;
    if b[0..8] != MAGIC {
        return Err(MetaError::BadMagic);
    }
    let major = u16_at(b, 8);
    if major != LAYOUT_MAJOR {
        return Err(MetaError::Version(major));
    }
    if u32_at(b, 12) as usize != BLOCK_SIZE {
        return Err(MetaError::Size("block size"));
    }
    let stored = u32_at(b, 60);
    let mut zeroed = [0u8; BLOCK_SIZE];
    zeroed.copy_from_slice(b);
    zeroed[60..64].fill(0);
    let computed = fnv1a(&zeroed);
    if stored != computed {
        return Err(MetaError::Checksum { stored, computed });
    }
    let segment_size = u64_at(b, 16);
    let first_free = META_OFFSET + BLOCK_SIZE as u64;
    if !segment_size.is_power_of_two() || segment_size < first_free {
        return Err(MetaError::Size("segment size"));
    }
    let group = get_name(&b[24..56], "group", 0)?;
    if !valid_group(&group) {
        return Err(MetaError::BadName("group", 0));
    }
    let n = u32_at(b, 56) as usize;
    if n > MAX_ENTRIES {
        return Err(MetaError::TooMany(n));
    }
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let o = HEADER_SIZE + i * ENTRY_SIZE;
        let e = &b[o..o + ENTRY_SIZE];
        let name = get_name(&e[0..NAME_LEN], "entry", i)?;
        let kind_raw = u32_at(e, 32);
        let kind = Kind::from_u32(kind_raw).ok_or(MetaError::BadKind(i, kind_raw))?;
        let offset = u64_at(e, 40);
        let length = u64_at(e, 48);
        let end = offset
            .checked_add(length)
            .ok_or(MetaError::OutOfBounds(i))?;
        if length == 0 || offset < first_free || end > segment_size {
            return Err(MetaError::OutOfBounds(i));
        }
        entries.push(Entry {
            name,
            kind,
            flags: u32_at(e, 36),
            offset,
            length,
            elem_size: u32_at(e, 56),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| entries[i].offset);
    for w in order.windows(2) {
        let (a, c) = (&entries[w[0]], &entries[w[1]]);
        if a.offset + a.length > c.offset {
            return Err(MetaError::Overlap(w[0].min(w[1]), w[0].max(w[1])));
        }
    }
    // A name finds exactly one entry (whatever its kind).
    order.sort_by(|&i, &j| entries[i].name.cmp(&entries[j].name));
    if let Some(w) = order
        .windows(2)
        .find(|w| entries[w[0]].name == entries[w[1]].name)
    {
        return Err(MetaError::Duplicate(w[0].min(w[1]), w[0].max(w[1])));
    }
    Ok(Meta {
        group,
        segment_size,
        entries,
    })
}

impl Meta {
    /// The entry named `name` of kind `kind`.
    pub fn find(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == kind && e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            group: "guest1".into(),
            segment_size: 4 << 20,
            entries: vec![
                Entry {
                    name: "vm1_rx".into(),
                    kind: Kind::Ring,
                    flags: 0,
                    offset: 20480,
                    length: 8576,
                    elem_size: 8,
                },
                Entry {
                    name: "vm1_pool".into(),
                    kind: Kind::Mempool,
                    flags: 1,
                    offset: 32768,
                    length: 1 << 20,
                    elem_size: 2304,
                },
            ],
        }
    }

    #[test]
    fn layout_is_pinned() {
        let b = encode(&sample()).unwrap();
        assert_eq!(&b[0..8], b"SHMDPIVM");
        assert_eq!(u16_at(&b, 8), 1);
        assert_eq!(u32_at(&b, 12), 4096);
        assert_eq!(u64_at(&b, 16), 4 << 20);
        assert_eq!(&b[24..30], b"guest1");
        assert_eq!(u32_at(&b, 56), 2);
        assert_eq!(&b[64..70], b"vm1_rx");
        assert_eq!(u32_at(&b, 64 + 32), 1);
        assert_eq!(u64_at(&b, 64 + 40), 20480);
        assert_eq!(u64_at(&b, 128 + 48), 1 << 20);
        assert_eq!(u32_at(&b, 128 + 56), 2304);
        assert_eq!(MAX_ENTRIES, 63);
        assert_eq!(decode(&b).unwrap(), sample());
        assert_eq!(
            decode(&b)
                .unwrap()
                .find(Kind::Mempool, "vm1_pool")
                .unwrap()
                .flags,
            1
        );
    }

    #[test]
    fn every_kind_of_damage_is_refused() {
        let good = encode(&sample()).unwrap();
        let resum = |b: &mut [u8; BLOCK_SIZE]| {
            b[60..64].fill(0);
            let s = fnv1a(b);
            b[60..64].copy_from_slice(&s.to_le_bytes());
        };
        let case = |f: &dyn Fn(&mut [u8; BLOCK_SIZE]), fix: bool| {
            let mut b = good;
            f(&mut b);
            if fix {
                resum(&mut b);
            }
            decode(&b).unwrap_err()
        };
        assert_eq!(decode(&good[..100]), Err(MetaError::Short(100)));
        assert_eq!(case(&|b| b[0] = b'X', false), MetaError::BadMagic);
        assert_eq!(case(&|b| b[8] = 7, true), MetaError::Version(7));
        assert!(matches!(
            case(&|b| b[70] ^= 1, false),
            MetaError::Checksum { .. }
        ));
        assert_eq!(case(&|b| b[16] = 3, true), MetaError::Size("segment size"));
        assert_eq!(
            case(&|b| b[24..56].fill(0), true),
            MetaError::BadName("group", 0)
        );
        assert_eq!(
            case(&|b| b[64 + 31] = b'x', true),
            MetaError::BadName("entry", 0)
        );
        assert_eq!(case(&|b| b[56] = 64, true), MetaError::TooMany(64));
        assert_eq!(case(&|b| b[64 + 32] = 9, true), MetaError::BadKind(0, 9));
        assert_eq!(
            case(
                &|b| b[64 + 40..64 + 48].copy_from_slice(&(4u64 << 20).to_le_bytes()),
                true
            ),
            MetaError::OutOfBounds(0)
        );
        assert_eq!(
            case(
                &|b| b[64 + 40..64 + 48].copy_from_slice(&100u64.to_le_bytes()),
                true
            ),
            MetaError::OutOfBounds(0),
            "over the header and the block"
        );
        assert_eq!(
            case(
                &|b| b[64 + 48..64 + 56].copy_from_slice(&u64::MAX.to_le_bytes()),
                true
            ),
            MetaError::OutOfBounds(0)
        );
        assert_eq!(
            case(
                &|b| b[64 + 48..64 + 56].copy_from_slice(&20000u64.to_le_bytes()),
                true
            ),
            MetaError::Overlap(0, 1)
        );
        let mut m = sample();
        m.entries[0].name = "x".repeat(40);
        assert!(encode(&m).is_err());
    }

    #[test]
    fn group_names_that_could_become_qemu_options_are_refused() {
        for bad in [
            "vm1,share=off",
            "vm 1",
            "vm1'",
            "a=b",
            "vm/1",
            "",
            "\u{e9}t\u{e9}",
        ] {
            assert!(!valid_group(bad), "{bad:?}");
            let mut m = sample();
            m.group = bad.into();
            assert!(encode(&m).is_err(), "{bad:?}");
        }
        assert!(valid_group("vm-1_A"));
        // Written by someone else: decode refuses it too.
        let mut b = encode(&sample()).unwrap();
        b[24..56].fill(0);
        b[24..37].copy_from_slice(b"g,share=off,x");
        b[60..64].fill(0);
        let sum = fnv1a(&b);
        b[60..64].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(decode(&b), Err(MetaError::BadName("group", 0)));
    }

    #[test]
    fn two_entries_of_one_name_are_refused() {
        let mut m = sample();
        let mut twin = m.entries[0].clone();
        twin.name = m.entries[1].name.clone();
        twin.offset = m.entries.iter().map(|e| e.offset + e.length).max().unwrap();
        twin.length = 64;
        m.entries.push(twin);
        let n = m.entries.len() - 1;
        assert_eq!(encode(&m).err(), Some(MetaError::Duplicate(1, n)));
        // Written by someone else: entry 0 renamed like entry 1.
        let mut b = encode(&sample()).unwrap();
        let second: [u8; NAME_LEN] = b[128..128 + NAME_LEN].try_into().unwrap();
        b[64..64 + NAME_LEN].copy_from_slice(&second);
        b[60..64].fill(0);
        let sum = fnv1a(&b);
        b[60..64].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(decode(&b), Err(MetaError::Duplicate(0, 1)));
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let good = encode(&sample()).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rounds = if cfg!(miri) { 50 } else { 5_000 };
        for _ in 0..rounds {
            let mut b = good;
            for _ in 0..(next() % 8 + 1) {
                let at = (next() % BLOCK_SIZE as u64) as usize;
                b[at] = next() as u8;
            }
            // With and without a matching checksum, so the checks behind it run too.
            let _ = decode(&b);
            b[60..64].fill(0);
            let s = fnv1a(&b);
            b[60..64].copy_from_slice(&s.to_le_bytes());
            let _ = decode(&b);
            let len = (next() % (BLOCK_SIZE as u64 + 10)) as usize;
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode(&noise);
        }
    }
}
