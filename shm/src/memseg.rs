//! Memsegs (one shared-memory file each) and the memzones reserved inside them.
//!
//! The primary [`Memseg::create`]s a memseg file, lays out the header, [`Memseg::reserve`]s
//! named memzones and marks it [`MemsegState::Ready`]. A secondary (or, later, a guest
//! mapping an IVSHMEM BAR) [`Memseg::attach`]es to the same file at whatever address the
//! kernel picks, validates the header, and [`Memseg::lookup`]s memzones by name. Since all
//! references are offsets, the address does not matter.
//!
//! A memseg's header may have been scribbled over by anything that maps it; every value read
//! from it is checked, and a bad one is an [`Error::BadMemseg`], never a crash.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::layout::*;
use crate::{Error, Region, Result};

/// What the primary asks for when creating a memseg.
#[derive(Debug, Clone)]
pub struct MemsegSpec {
    /// Memseg name (also part of the file name): `[A-Za-z0-9_-]`, at most 31 bytes.
    pub name: String,
    /// Index among the primary's memsegs.
    pub id: u32,
    /// Size in bytes: a power of two and a multiple of the backing's page size.
    pub size_bytes: u64,
    /// Full path of the file to create (must not exist).
    pub path: PathBuf,
    /// Page size of the backing store.
    pub page_size: u64,
    /// True when the file is on hugetlbfs.
    pub hugetlb: bool,
    /// Pid recorded as creator.
    pub creator_pid: u32,
    /// Run number of the prefix.
    pub generation: u64,
}

/// A memzone found in (or reserved in) a memseg: a validated copy of its table entry plus
/// the region it lives in.
#[derive(Debug, Clone)]
pub struct Memzone {
    /// Name.
    pub name: String,
    /// Offset from the memseg base.
    pub offset: u64,
    /// Length in bytes.
    pub len_bytes: u64,
    /// Alignment.
    pub align: u64,
    /// What it holds.
    pub kind: MemzoneKind,
    region: Region,
}

impl Memzone {
    /// The memseg region this memzone lives in (objects inside address it by offset).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// A memzone described by another table than a memseg's (an IVSHMEM export's metadata
    /// block, which a guest reads instead of the memseg header): `offset`/`len_bytes` must
    /// lie inside `region` and be 64-byte aligned.
    ///
    /// # Errors
    /// [`Error::BadMemseg`] when the span is outside the region or misaligned.
    pub fn described(
        region: &Region,
        name: &str,
        offset: u64,
        len_bytes: u64,
        kind: MemzoneKind,
    ) -> Result<Memzone> {
        let inside = offset
            .checked_add(len_bytes)
            .is_some_and(|end| end <= region.len());
        if !inside || len_bytes == 0 || !offset.is_multiple_of(CACHE_LINE) {
            return Err(Error::BadMemseg(format!(
                "{name}: span {offset:#x}+{len_bytes:#x} is outside the mapping or misaligned"
            )));
        }
        Ok(Memzone {
            name: name.to_string(),
            offset,
            len_bytes,
            align: CACHE_LINE,
            kind,
            region: region.clone(),
        })
    }
}

/// Where the next memzone goes and what was reserved, as only the creating process knows
/// it: the creator resolves names from these records, never from the shared table.
#[derive(Debug)]
struct AllocState {
    zone_count: u32,
    cursor: u64,
    zones: Vec<Memzone>,
}

impl AllocState {
    fn fresh() -> AllocState {
        AllocState {
            zone_count: 0,
            cursor: MEMSEG_HDR_SIZE,
            zones: Vec::new(),
        }
    }
}

/// A mapped memseg.
#[derive(Debug)]
pub struct Memseg {
    region: Region,
    path: Option<PathBuf>,
    header: MemsegHeader,
    /// The creator's private allocation state (`None` in attachers, which cannot
    /// reserve). Kept here, not read back from the header, because any process that maps
    /// the memseg could rewrite the header's copies.
    reserve_lock: Option<Mutex<AllocState>>,
}

impl Memseg {
    /// Creates the memseg file, maps it and writes a fresh header in the
    /// [`MemsegState::Initialising`] state. Call [`Memseg::mark_ready`] once the initial
    /// memzones are reserved. On any error the file is removed again.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be created, sized or mapped (for example no free
    /// hugepages: [`Error::NoMemory`]).
    pub fn create(spec: &MemsegSpec) -> Result<Memseg> {
        let name = encode_name(&spec.name).ok_or_else(|| {
            Error::Config(format!("memseg name {:?} must be 1..31 bytes", spec.name))
        })?;
        if !spec.size_bytes.is_power_of_two()
            || spec.size_bytes < MEMSEG_MIN_SIZE
            || !spec.size_bytes.is_multiple_of(spec.page_size)
        {
            return Err(Error::Config(format!(
                "memseg size {} is not a power of two of at least {} and a multiple of the page size {}",
                spec.size_bytes, MEMSEG_MIN_SIZE, spec.page_size
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spec.path)
            .map_err(|e| Error::io(format!("create {}", spec.path.display()), e))?;
        let guard = RemoveOnError(Some(spec.path.clone()));
        let region = size_and_map(&file, spec)?;
        let header = MemsegHeader {
            magic: MEMSEG_MAGIC,
            layout_major: MEMSEG_LAYOUT_MAJOR,
            layout_minor: MEMSEG_LAYOUT_MINOR,
            hdr_size: MEMSEG_HDR_SIZE as u32,
            flags: if spec.hugetlb { MEMSEG_F_HUGETLB } else { 0 },
            state: MemsegState::Initialising.as_u32(),
            size_bytes: spec.size_bytes,
            creator_pid: spec.creator_pid,
            memseg_id: spec.id,
            generation: spec.generation,
            name,
            zone_count: 0,
            zone_capacity: MEMZONE_CAPACITY,
            data_off: MEMSEG_HDR_SIZE,
            alloc_off: MEMSEG_HDR_SIZE,
            page_size: spec.page_size,
            _reserved: [0; 16],
        };
        region
            .write(0, &header)
            .expect("header fits: size >= 2 MiB");
        guard.disarm();
        Ok(Memseg {
            region,
            path: Some(spec.path.clone()),
            header,
            reserve_lock: Some(Mutex::new(AllocState::fresh())),
        })
    }

    /// Maps an existing memseg file and validates its header. The mapping address is
    /// whatever the kernel picks.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped; [`Error::BadMemseg`] if it is
    /// truncated, not a memseg, of another layout version, or inconsistent;
    /// [`Error::NotReady`] if its primary is still initialising or already closing.
    pub fn attach(path: &Path) -> Result<Memseg> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open memseg {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if len < MEMSEG_HDR_SIZE {
            return Err(Error::BadMemseg(format!(
                "{} is truncated ({len} bytes, a memseg has at least {MEMSEG_HDR_SIZE})",
                path.display()
            )));
        }
        if len > 1 << 40 {
            return Err(Error::BadMemseg(format!(
                "{} is {len} bytes, larger than any memseg",
                path.display()
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?;
        let mut seg = Memseg::from_region(Region::from_mmap(map)).map_err(|e| match e {
            Error::BadMemseg(why) => Error::BadMemseg(format!("{}: {why}", path.display())),
            other => other,
        })?;
        seg.path = Some(path.to_path_buf());
        Ok(seg)
    }

    /// Validates the header of a memseg already mapped as `region` (a file mapping, an
    /// IVSHMEM BAR, or a heap region in tests).
    ///
    /// # Errors
    /// As [`Memseg::attach`].
    pub fn from_region(region: Region) -> Result<Memseg> {
        let header = validate_header(&region)?;
        match MemsegState::from_u32(header.state) {
            Some(MemsegState::Ready) => {}
            Some(s) => return Err(Error::NotReady(s)),
            None => {
                return Err(Error::BadMemseg(format!(
                    "unknown state word {:#x}",
                    header.state
                )))
            }
        }
        Ok(Memseg {
            region,
            path: None,
            header,
            reserve_lock: None,
        })
    }

    /// Lays out a fresh memseg in a heap region (tests, loom, Miri): like `create` without a
    /// file.
    pub fn create_in_region(region: Region, name: &str, generation: u64) -> Result<Memseg> {
        let size = region.len();
        let header = MemsegHeader {
            magic: MEMSEG_MAGIC,
            layout_major: MEMSEG_LAYOUT_MAJOR,
            layout_minor: MEMSEG_LAYOUT_MINOR,
            hdr_size: MEMSEG_HDR_SIZE as u32,
            flags: 0,
            state: MemsegState::Initialising.as_u32(),
            size_bytes: size,
            creator_pid: std::process::id(),
            memseg_id: 0,
            generation,
            name: encode_name(name)
                .ok_or_else(|| Error::Config(format!("bad memseg name {name:?}")))?,
            zone_count: 0,
            zone_capacity: MEMZONE_CAPACITY,
            data_off: MEMSEG_HDR_SIZE,
            alloc_off: MEMSEG_HDR_SIZE,
            page_size: 4096,
            _reserved: [0; 16],
        };
        if size < MEMSEG_HDR_SIZE * 2 {
            return Err(Error::Config(format!(
                "region of {size} bytes is too small"
            )));
        }
        region.write(0, &header).expect("checked size");
        Ok(Memseg {
            region,
            path: None,
            header,
            reserve_lock: Some(Mutex::new(AllocState::fresh())),
        })
    }

    /// The region this memseg is mapped as.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Path of the backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The header as validated at create/attach time.
    pub fn header(&self) -> &MemsegHeader {
        &self.header
    }

    /// Memseg name.
    pub fn name(&self) -> &str {
        decode_name(&self.header.name).unwrap_or("?")
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.header.size_bytes
    }

    /// True when backed by hugetlbfs.
    pub fn is_hugetlb(&self) -> bool {
        self.header.flags & MEMSEG_F_HUGETLB != 0
    }

    /// Current state word, decoded (`None` if garbage).
    pub fn state(&self) -> Option<MemsegState> {
        // Acquire: pairs with the Release in `set_state` (S1), so a reader that sees Ready
        // also sees the header and zones written before it.
        let v = self.state_word().load(Ordering::Acquire);
        MemsegState::from_u32(v)
    }

    /// Publishes that the memseg is ready for secondaries.
    pub fn mark_ready(&self) {
        self.set_state(MemsegState::Ready);
    }

    /// Sets the state word (primary only).
    pub fn set_state(&self, state: MemsegState) {
        // S1 Release: everything written before (header, zones) is visible to a reader that
        // loads the new state with Acquire (`state`).
        self.state_word().store(state.as_u32(), Ordering::Release);
    }

    fn state_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.region.atomic_u32(STATE_OFF).expect("header validated")
    }

    /// Reserves a named memzone of `len_bytes` aligned to `align` (a power of two, at
    /// least 64). Only the process that created the memseg may reserve. The memory is
    /// zero-filled.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad name, length or alignment, or if not the creator;
    /// [`Error::Exists`] if the name is taken; [`Error::NoSpace`] if it does not fit or
    /// the table is full.
    pub fn reserve(
        &self,
        name: &str,
        len_bytes: u64,
        align: u64,
        kind: MemzoneKind,
    ) -> Result<Memzone> {
        let lock = self.reserve_lock.as_ref().ok_or_else(|| {
            Error::Config("only the primary that created a memseg reserves memzones".into())
        })?;
        let mut alloc = lock.lock().unwrap_or_else(|p| p.into_inner());
        let enc = encode_name(name).ok_or_else(|| {
            Error::Config(format!(
                "memzone name {name:?} must be 1..31 bytes without NUL"
            ))
        })?;
        if len_bytes == 0 {
            return Err(Error::Config(format!("memzone {name}: length is zero")));
        }
        let align = align.max(CACHE_LINE);
        if !align.is_power_of_two() {
            return Err(Error::Config(format!(
                "memzone {name}: alignment {align} is not a power of two"
            )));
        }
        // Against this process's own records: the shared table may have been rewritten
        // by anything that maps the memseg (a guest, for an export segment).
        if alloc.zones.iter().any(|z| z.name == name) {
            return Err(Error::Exists(name.to_string()));
        }
        let count_word = self.region.atomic_u32(ZONE_COUNT_OFF).expect("in header");
        // The count and cursor come from this process's own state, never from the
        // header, which any mapper can overwrite.
        let count = alloc.zone_count;
        if count >= MEMZONE_CAPACITY {
            return Err(Error::NoSpace(format!(
                "memzone table of {} is full ({MEMZONE_CAPACITY} entries)",
                self.name()
            )));
        }
        let cursor = alloc.cursor;
        let off = cursor
            .checked_next_multiple_of(align)
            .filter(|o| o.checked_add(len_bytes).is_some_and(|e| e <= self.size_bytes()))
            .ok_or_else(|| {
                // The main memseg is sized by -m; the others by --memseg NAME=MiB.
                let grow = if self.name() == "main" {
                    "raise -m".to_string()
                } else {
                    format!("grow it (--memseg {}=MiB)", self.name())
                };
                Error::NoSpace(format!(
                    "memzone {name} ({len_bytes} bytes) does not fit in memseg {} ({} of {} bytes used); {grow}",
                    self.name(),
                    cursor,
                    self.size_bytes()
                ))
            })?;
        let entry = MemzoneEntry {
            name: enc,
            offset: off,
            len_bytes,
            align,
            flags: kind.as_u32(),
            _reserved: 0,
        };
        self.region
            .fill(off, len_bytes, 0)
            .expect("checked against size");
        self.region
            .write(MEMZONE_TABLE_OFF + u64::from(count) * 64, &entry)
            .expect("table in header");
        self.region
            .write(ALLOC_OFF_OFF, &(off + len_bytes))
            .expect("alloc_off in header");
        // Z1 Release: publishes the entry (and zeroed zone) written above; pairs with the
        // Acquire load in `zone_entries` (Z1).
        count_word.store(count + 1, Ordering::Release);
        alloc.zone_count = count + 1;
        alloc.cursor = off + len_bytes;
        let zone = Memzone {
            name: name.to_string(),
            offset: off,
            len_bytes,
            align,
            kind,
            region: self.region.clone(),
        };
        alloc.zones.push(zone.clone());
        Ok(zone)
    }

    /// Finds a memzone by name: in the creating process from its own records, elsewhere
    /// in the validated table (exactly one entry of that name, or an error).
    ///
    /// # Errors
    /// [`Error::NotFound`] if absent; [`Error::BadMemseg`] if the table is corrupt (a bad
    /// entry, a duplicate name, overlapping entries).
    pub fn lookup(&self, name: &str) -> Result<Memzone> {
        self.memzones()?
            .into_iter()
            .find(|z| z.name == name)
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// All memzones. The creating process answers from its own records; any other reads
    /// the shared table and validates every entry and the table as a whole (no duplicate
    /// names, no overlapping spans): one bad entry makes it an error.
    ///
    /// # Errors
    /// [`Error::BadMemseg`] naming the first problem.
    pub fn memzones(&self) -> Result<Vec<Memzone>> {
        if let Some(lock) = &self.reserve_lock {
            return Ok(lock.lock().unwrap_or_else(|p| p.into_inner()).zones.clone());
        }
        let zones = self.table_zones()?;
        check_directory(&zones)?;
        Ok(zones)
    }

    /// The shared table's entries, each validated on its own.
    fn table_zones(&self) -> Result<Vec<Memzone>> {
        // Z1 Acquire: pairs with the Release in `reserve`; entries below `count` are fully
        // written.
        let count = self
            .region
            .atomic_u32(ZONE_COUNT_OFF)
            .expect("in header")
            .load(Ordering::Acquire);
        if count > MEMZONE_CAPACITY {
            return Err(Error::BadMemseg(format!(
                "memzone count {count} exceeds the table's {MEMZONE_CAPACITY}"
            )));
        }
        (0..count).map(|i| self.zone_entry(i)).collect()
    }

    fn zone_entry(&self, i: u32) -> Result<Memzone> {
        let e: MemzoneEntry = self
            .region
            .read_copy(MEMZONE_TABLE_OFF + u64::from(i) * 64)
            .expect("table inside header");
        let bad = |why: String| Error::BadMemseg(format!("memzone entry {i}: {why}"));
        let name = decode_name(&e.name)
            .ok_or_else(|| bad("name is not a terminated UTF-8 string".into()))?;
        let end = e.offset.checked_add(e.len_bytes);
        if e.offset < MEMSEG_HDR_SIZE
            || end.is_none_or(|end| end > self.size_bytes())
            || e.len_bytes == 0
        {
            return Err(bad(format!(
                "{name}: span {:#x}+{:#x} is outside the memseg",
                e.offset, e.len_bytes
            )));
        }
        if !e.align.is_power_of_two() || e.align < CACHE_LINE || !e.offset.is_multiple_of(e.align) {
            return Err(bad(format!("{name}: bad alignment {}", e.align)));
        }
        if e.flags & !MEMZONE_F_KIND_MASK != 0 || e._reserved != 0 {
            return Err(bad(format!("{name}: unknown flags {:#x}", e.flags)));
        }
        let kind = MemzoneKind::from_u32(e.flags & MEMZONE_F_KIND_MASK)
            .ok_or_else(|| bad(format!("{name}: unknown kind {}", e.flags & 0xff)))?;
        Ok(Memzone {
            name: name.to_string(),
            offset: e.offset,
            len_bytes: e.len_bytes,
            align: e.align,
            kind,
            region: self.region.clone(),
        })
    }
}

/// Refuses a directory with two entries of one name or two spans that overlap (whoever
/// wrote the table, a name must resolve to exactly one object, and objects never share
/// bytes).
fn check_directory(zones: &[Memzone]) -> Result<()> {
    let mut by_name: Vec<&Memzone> = zones.iter().collect();
    by_name.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = by_name.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::BadMemseg(format!(
            "memzone table: two entries are named {}",
            w[0].name
        )));
    }
    let mut by_off: Vec<&Memzone> = zones.iter().collect();
    by_off.sort_unstable_by_key(|z| z.offset);
    // Entries were checked to end inside the memseg, so the sums cannot overflow.
    if let Some(w) = by_off
        .windows(2)
        .find(|w| w[0].offset + w[0].len_bytes > w[1].offset)
    {
        return Err(Error::BadMemseg(format!(
            "memzone table: {} and {} overlap",
            w[0].name, w[1].name
        )));
    }
    Ok(())
}

/// Checks every header field that does not change after creation.
fn validate_header(region: &Region) -> Result<MemsegHeader> {
    if region.len() < MEMSEG_HDR_SIZE {
        return Err(Error::BadMemseg(format!(
            "truncated: {} bytes, a memseg has at least {MEMSEG_HDR_SIZE}",
            region.len()
        )));
    }
    let h: MemsegHeader = region.read_copy(0).expect("length checked");
    let bad = |why: String| Err(Error::BadMemseg(why));
    if h.magic != MEMSEG_MAGIC {
        return bad("not a shmdp memseg (bad magic)".into());
    }
    if h.layout_major != MEMSEG_LAYOUT_MAJOR {
        return Err(Error::Version {
            found: h.layout_major,
            expected: MEMSEG_LAYOUT_MAJOR,
        });
    }
    if u64::from(h.hdr_size) != MEMSEG_HDR_SIZE || h.data_off != MEMSEG_HDR_SIZE {
        return bad(format!(
            "header size {} is not {MEMSEG_HDR_SIZE}",
            h.hdr_size
        ));
    }
    if h.size_bytes != region.len() {
        return bad(format!(
            "header says {} bytes but {} are mapped (truncated or resized file)",
            h.size_bytes,
            region.len()
        ));
    }
    if h.flags & !MEMSEG_F_KNOWN != 0 {
        return bad(format!("unknown flags {:#x}", h.flags));
    }
    if h.zone_capacity != MEMZONE_CAPACITY {
        return bad(format!(
            "memzone capacity {} is not {MEMZONE_CAPACITY}",
            h.zone_capacity
        ));
    }
    if decode_name(&h.name).is_none() {
        return bad("memseg name is not a terminated UTF-8 string".into());
    }
    Ok(h)
}

/// Sizes the fresh file (ftruncate + fallocate, so that running out of hugepages or tmpfs
/// space is an error now rather than a SIGBUS later) and maps it shared.
fn size_and_map(file: &File, spec: &MemsegSpec) -> Result<Region> {
    file.set_len(spec.size_bytes)
        .map_err(|e| Error::io(format!("size {}", spec.path.display()), e))?;
    match nix::fcntl::posix_fallocate(file, 0, spec.size_bytes as i64) {
        Ok(()) => {}
        Err(nix::errno::Errno::EOPNOTSUPP) => {}
        Err(e @ (nix::errno::Errno::ENOSPC | nix::errno::Errno::ENOMEM)) => {
            return Err(Error::NoMemory(format!(
                "cannot allocate {} MiB for {}: {e}; free memory or raise /proc/sys/vm/nr_hugepages",
                spec.size_bytes >> 20,
                spec.path.display()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                format!("allocate {}", spec.path.display()),
                std::io::Error::from(e),
            ))
        }
    }
    let map = memmap2::MmapOptions::new()
        .len(spec.size_bytes as usize)
        .map_raw(file)
        .map_err(|e| Error::io(format!("mmap {}", spec.path.display()), e))?;
    Ok(Region::from_mmap(map))
}

/// Removes a half-made file unless disarmed: error paths leave nothing behind.
struct RemoveOnError(Option<PathBuf>);

impl RemoveOnError {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_seg() -> Memseg {
        let seg = Memseg::create_in_region(Region::heap(1 << 20), "test", 1).unwrap();
        seg.mark_ready();
        seg
    }

    #[test]
    fn reserve_then_lookup_from_a_second_view() {
        let seg = ready_seg();
        let a = seg.reserve("alpha", 1000, 64, MemzoneKind::Raw).unwrap();
        let b = seg.reserve("beta", 10, 4096, MemzoneKind::Ring).unwrap();
        assert_eq!(a.offset, MEMSEG_HDR_SIZE);
        assert_eq!(b.offset % 4096, 0);
        assert!(b.offset >= a.offset + 1000);
        // A second, read-only view (what a secondary gets) sees the same zones.
        let view = Memseg::from_region(seg.region().clone()).unwrap();
        let found = view.lookup("beta").unwrap();
        assert_eq!(
            (found.offset, found.len_bytes, found.kind),
            (b.offset, 10, MemzoneKind::Ring)
        );
        assert!(matches!(view.lookup("gamma"), Err(Error::NotFound(_))));
        assert!(
            view.reserve("x", 1, 64, MemzoneKind::Raw).is_err(),
            "attacher cannot reserve"
        );
    }

    #[test]
    fn reserve_rejects_bad_requests() {
        let seg = ready_seg();
        seg.reserve("a", 64, 64, MemzoneKind::Raw).unwrap();
        assert!(matches!(
            seg.reserve("a", 64, 64, MemzoneKind::Raw),
            Err(Error::Exists(_))
        ));
        assert!(seg.reserve("", 64, 64, MemzoneKind::Raw).is_err());
        assert!(seg.reserve("b", 0, 64, MemzoneKind::Raw).is_err());
        assert!(seg.reserve("c", 64, 96, MemzoneKind::Raw).is_err());
        assert!(matches!(
            seg.reserve("d", 1 << 20, 64, MemzoneKind::Raw),
            Err(Error::NoSpace(_))
        ));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "quadratic in the table size: minutes under Miri; the accesses are covered by the other tests"
    )]
    fn memzone_table_full_is_an_error() {
        let seg = ready_seg();
        for i in 0..MEMZONE_CAPACITY {
            seg.reserve(&format!("z{i}"), 64, 64, MemzoneKind::Raw)
                .unwrap();
        }
        assert!(matches!(
            seg.reserve("more", 64, 64, MemzoneKind::Raw),
            Err(Error::NoSpace(_))
        ));
    }

    #[test]
    fn initialising_and_closing_memsegs_are_refused() {
        let seg = Memseg::create_in_region(Region::heap(1 << 20), "t", 1).unwrap();
        assert!(matches!(
            Memseg::from_region(seg.region().clone()),
            Err(Error::NotReady(MemsegState::Initialising))
        ));
        seg.set_state(MemsegState::Closing);
        let e = Memseg::from_region(seg.region().clone()).unwrap_err();
        assert!(e.is_retryable() || matches!(e, Error::NotReady(MemsegState::Closing)));
    }

    #[test]
    fn corrupt_zone_entries_are_rejected_not_trusted() {
        let creator = ready_seg();
        creator.reserve("ok", 128, 64, MemzoneKind::Raw).unwrap();
        // Another process's view reads the shared table.
        let seg = Memseg::from_region(creator.region().clone()).unwrap();
        let r = seg.region();
        let base = MEMZONE_TABLE_OFF;
        // Span past the end.
        r.write(base + 32, &(u64::MAX - 8)).unwrap();
        assert!(matches!(seg.lookup("ok"), Err(Error::BadMemseg(_))));
        // The creator answers from its own records, whatever the table says.
        assert_eq!(creator.lookup("ok").unwrap().offset, MEMSEG_HDR_SIZE);
        r.write(base + 32, &MEMSEG_HDR_SIZE).unwrap();
        assert!(seg.lookup("ok").is_ok());
        // Inside the header.
        r.write(base + 32, &64u64).unwrap();
        assert!(seg.lookup("ok").is_err());
        r.write(base + 32, &MEMSEG_HDR_SIZE).unwrap();
        // Unknown kind.
        r.write(base + 56, &77u32).unwrap();
        assert!(seg.lookup("ok").is_err());
        r.write(base + 56, &0u32).unwrap();
        // Count beyond capacity.
        r.atomic_u32(ZONE_COUNT_OFF)
            .unwrap()
            .store(9999, Ordering::Relaxed);
        assert!(matches!(seg.memzones(), Err(Error::BadMemseg(_))));
    }

    /// Writes table entry `i` (and the count, if it grows) as a hostile mapper would.
    fn forge(seg: &Memseg, i: u32, name: &str, offset: u64, len_bytes: u64) {
        let entry = MemzoneEntry {
            name: encode_name(name).unwrap(),
            offset,
            len_bytes,
            align: 64,
            flags: MemzoneKind::Ring.as_u32(),
            _reserved: 0,
        };
        seg.region()
            .write(MEMZONE_TABLE_OFF + u64::from(i) * 64, &entry)
            .unwrap();
        let count = seg.region().atomic_u32(ZONE_COUNT_OFF).unwrap();
        count.fetch_max(i + 1, Ordering::Release);
    }

    #[test]
    fn duplicate_names_and_overlapping_entries_make_the_table_an_error() {
        let creator = ready_seg();
        let a = creator.reserve("a", 4096, 64, MemzoneKind::Ring).unwrap();
        creator.reserve("b", 4096, 64, MemzoneKind::Ring).unwrap();
        let view = Memseg::from_region(creator.region().clone()).unwrap();
        assert!(view.lookup("a").is_ok());
        // A second "a" elsewhere: neither is chosen, for any name.
        forge(&view, 2, "a", a.offset + 8192, 4096);
        let e = view.lookup("b").unwrap_err();
        assert!(
            matches!(&e, Error::BadMemseg(m) if m.contains("two entries are named a")),
            "{e}"
        );
        // A new name over a's bytes.
        forge(&view, 2, "c", a.offset + 64, 64);
        let e = view.memzones().unwrap_err();
        assert!(
            matches!(&e, Error::BadMemseg(m) if m.contains("overlap")),
            "{e}"
        );
        // Disjoint and unique again: fine.
        forge(&view, 2, "c", a.offset + 8192, 64);
        assert_eq!(view.lookup("c").unwrap().offset, a.offset + 8192);
        // The creator still knows only what it reserved.
        assert!(matches!(creator.lookup("c"), Err(Error::NotFound(_))));
    }

    #[test]
    fn reserve_refuses_a_duplicate_whatever_the_shared_table_says() {
        let seg = ready_seg();
        seg.reserve("a", 128, 64, MemzoneKind::Raw).unwrap();
        // Another mapper empties the table: "a" still exists for the creator.
        seg.region()
            .atomic_u32(ZONE_COUNT_OFF)
            .unwrap()
            .store(0, Ordering::Relaxed);
        assert!(matches!(
            seg.reserve("a", 128, 64, MemzoneKind::Raw),
            Err(Error::Exists(_))
        ));
    }

    #[test]
    fn garbage_headers_never_validate_and_never_panic() {
        let seg = ready_seg();
        let good: MemsegHeader = seg.region().read_copy(0).unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..if cfg!(miri) { 20 } else { 2000 } {
            let r = Region::heap(1 << 20);
            r.write(0, &good).unwrap();
            // Flip 1..8 random bytes of the header and table (or all of it every 10th round).
            if round % 10 == 0 {
                for off in (0..MEMSEG_HDR_SIZE).step_by(8) {
                    r.write(off, &next()).unwrap();
                }
            } else {
                for _ in 0..1 + next() % 8 {
                    let off = next() % MEMSEG_HDR_SIZE;
                    r.write(off, &(next() as u8)).unwrap();
                }
            }
            if let Ok(s) = Memseg::from_region(r) {
                let _ = s.memzones();
                let _ = s.lookup("x");
            }
        }
        // Specific fields.
        for (off, val) in [(0u64, 0u64), (8, 2), (12, 1), (24, 4096)] {
            let r = Region::heap(1 << 20);
            r.write(0, &good).unwrap();
            r.write(off, &(val as u16)).unwrap();
            if off == 24 {
                r.write(off, &val).unwrap();
            }
            assert!(Memseg::from_region(r).is_err(), "field at {off}");
        }
    }

    #[test]
    fn a_scribbled_cursor_or_count_cannot_make_the_primary_overlap_zones() {
        let seg = ready_seg();
        let a = seg.reserve("a", 4096, 64, MemzoneKind::Raw).unwrap();
        // Another mapper rewinds the header's cursor into the header and the count to 0.
        seg.region().write(ALLOC_OFF_OFF, &0u64).unwrap();
        seg.region()
            .atomic_u32(ZONE_COUNT_OFF)
            .unwrap()
            .store(0, Ordering::Relaxed);
        let b = seg.reserve("b", 64, 64, MemzoneKind::Raw).unwrap();
        assert!(
            b.offset >= a.offset + 4096,
            "b at {:#x} overlaps a",
            b.offset
        );
        assert_eq!(
            seg.region()
                .atomic_u32(ZONE_COUNT_OFF)
                .unwrap()
                .load(Ordering::Relaxed),
            2,
            "the published count is the primary's, not the scribbled one"
        );
    }

    #[test]
    fn version_mismatch_is_a_clear_error() {
        let seg = ready_seg();
        seg.region().write(8, &(MEMSEG_LAYOUT_MAJOR + 1)).unwrap();
        let e = Memseg::from_region(seg.region().clone()).unwrap_err();
        assert!(matches!(e, Error::Version { .. }));
        assert!(e.to_string().contains("layout version"));
    }
}
