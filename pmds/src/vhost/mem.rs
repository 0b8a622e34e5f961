//! A vhost-user frontend's memory as this process maps it: the regions of the last
//! `SET_MEM_TABLE`, each a file (memfd or hugepage file) the frontend passed, mapped here
//! at whatever address the kernel gives. Guest physical addresses (descriptor buffers) and
//! the frontend's own virtual addresses (vring addresses) are translated through this
//! table; a span that is not wholly inside one region does not translate. Everything the
//! guest names is checked here before anything is touched.

use std::cell::Cell;
use std::fs::File;

/// One region of the frontend's memory table, as the message gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    /// Guest physical address of the first byte.
    pub guest_phys_addr: u64,
    /// Bytes.
    pub size: u64,
    /// The frontend's virtual address of the first byte.
    pub user_addr: u64,
    /// Offset of the first byte in the file.
    pub mmap_offset: u64,
}

struct Mapped {
    spec: RegionSpec,
    /// Keeps the mapping alive; `base` points `mmap_offset` bytes into it.
    _map: memmap2::MmapRaw,
    base: *mut u8,
}

impl Mapped {
    /// Host pointer to `[gpa, gpa + len)` if it lies wholly inside this region.
    #[inline(always)]
    fn gpa(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let off = gpa.wrapping_sub(self.spec.guest_phys_addr);
        if gpa >= self.spec.guest_phys_addr && off <= self.spec.size && len <= self.spec.size - off
        {
            // SAFETY: `off + len <= size`: inside the mapped region.
            return Some(unsafe { self.base.add(off as usize) });
        }
        None
    }
}

/// Most regions a table may hold (QEMU sends at most 8 without the mem-slots feature).
pub const MAX_REGIONS: usize = 64;

/// The mapped memory table. Translations hand out raw pointers valid while this value
/// lives; the data path holds it in an `Arc` so a new table never unmaps memory it uses.
pub struct GuestMemory {
    regions: Vec<Mapped>,
}

// SAFETY: the raw pointers target shared mappings owned by `_map`; all access through them
// is by the data path under the rules in `vring.rs` (volatile reads of guest data, which
// the guest may change at any time), so moving the table between threads is sound.
unsafe impl Send for GuestMemory {}
// SAFETY: as for Send: `&GuestMemory` only translates addresses.
unsafe impl Sync for GuestMemory {}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.regions.iter().map(|r| r.spec))
            .finish()
    }
}

impl GuestMemory {
    /// Maps `files[i]` for `specs[i]`.
    ///
    /// # Errors
    /// One line when the table is malformed (counts differ, empty or overflowing regions,
    /// overlaps in guest physical space) or a file cannot be mapped.
    pub fn map(specs: &[RegionSpec], files: Vec<File>) -> Result<GuestMemory, String> {
        if specs.len() != files.len() || specs.is_empty() || specs.len() > MAX_REGIONS {
            return Err(format!(
                "memory table: {} regions with {} files (1..={MAX_REGIONS} expected)",
                specs.len(),
                files.len()
            ));
        }
        let mut regions: Vec<Mapped> = Vec::with_capacity(specs.len());
        for (spec, file) in specs.iter().zip(files) {
            let end = spec.guest_phys_addr.checked_add(spec.size);
            let map_len = spec.mmap_offset.checked_add(spec.size);
            let uend = spec.user_addr.checked_add(spec.size);
            let (Some(end), Some(map_len), Some(_)) = (end, map_len, uend) else {
                return Err(format!("memory table: region {spec:?} overflows"));
            };
            if spec.size == 0 || usize::try_from(map_len).is_err() {
                return Err(format!("memory table: region {spec:?} has a bad size"));
            }
            if regions.iter().any(|r| {
                spec.guest_phys_addr < r.spec.guest_phys_addr + r.spec.size
                    && r.spec.guest_phys_addr < end
            }) {
                return Err(format!("memory table: region {spec:?} overlaps another"));
            }
            // A file shorter than the region would fault (SIGBUS) on first touch.
            let file_len = file
                .metadata()
                .map_err(|e| format!("memory table: region {spec:?}: {e}"))?
                .len();
            if file_len < map_len {
                return Err(format!(
                    "memory table: region {spec:?} needs {map_len} bytes of a {file_len}-byte file"
                ));
            }
            let map = memmap2::MmapOptions::new()
                .len(map_len as usize)
                .map_raw(&file)
                .map_err(|e| format!("memory table: map region {spec:?}: {e}"))?;
            // SAFETY: `mmap_offset < map_len` = the mapping's length (size > 0).
            let base = unsafe { map.as_mut_ptr().add(spec.mmap_offset as usize) };
            regions.push(Mapped {
                spec: *spec,
                _map: map,
                base,
            });
        }
        Ok(GuestMemory { regions })
    }

    /// The regions.
    pub fn regions(&self) -> impl Iterator<Item = RegionSpec> + '_ {
        self.regions.iter().map(|r| r.spec)
    }

    /// Host pointer to guest physical span `[gpa, gpa + len)`, if it lies wholly inside
    /// one region.
    #[inline]
    pub fn gpa(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        self.regions.iter().find_map(|r| r.gpa(gpa, len))
    }

    /// As [`GuestMemory::gpa`], trying region `hint` first and leaving in it the region
    /// that held the span: a queue's buffers mostly sit in one region, and the data path
    /// translates every buffer (QEMU and our virtio-user send several regions).
    #[inline]
    pub fn gpa_hinted(&self, gpa: u64, len: u64, hint: &Cell<usize>) -> Option<*mut u8> {
        if let Some(p) = self.regions.get(hint.get()).and_then(|r| r.gpa(gpa, len)) {
            return Some(p);
        }
        let (i, p) = self
            .regions
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.gpa(gpa, len).map(|p| (i, p)))?;
        hint.set(i);
        Some(p)
    }

    /// Host pointer to the frontend's virtual span `[uva, uva + len)` (vring addresses),
    /// if it lies wholly inside one region.
    pub fn uva(&self, uva: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let off = uva.wrapping_sub(r.spec.user_addr);
            if uva >= r.spec.user_addr && off <= r.spec.size && len <= r.spec.size - off {
                // SAFETY: `off + len <= size`: inside the mapped region.
                return Some(unsafe { r.base.add(off as usize) });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: u64) -> File {
        let f = tempfile_in_shm(len);
        f.set_len(len).unwrap();
        f
    }

    fn tempfile_in_shm(_len: u64) -> File {
        let path = std::env::temp_dir().join(format!(
            "shmdp-vhost-mem-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(path).unwrap();
        f
    }

    #[test]
    fn translates_only_spans_inside_one_region() {
        let specs = [
            RegionSpec {
                guest_phys_addr: 0,
                size: 0x10000,
                user_addr: 0x7000_0000,
                mmap_offset: 0,
            },
            RegionSpec {
                guest_phys_addr: 0x100000,
                size: 0x10000,
                user_addr: 0x7100_0000,
                mmap_offset: 0x1000,
            },
        ];
        let m = GuestMemory::map(&specs, vec![memfd(0x10000), memfd(0x11000)]).unwrap();
        assert!(m.gpa(0, 0x10000).is_some());
        assert!(m.gpa(0xfff0, 0x10).is_some());
        assert!(m.gpa(0xfff0, 0x11).is_none(), "crosses the end");
        assert!(m.gpa(0x10000, 1).is_none(), "hole");
        assert!(m.gpa(0x100000, 0x10000).is_some());
        assert!(m.gpa(u64::MAX, 2).is_none());
        assert!(m.gpa(0x100001, u64::MAX).is_none());
        assert!(m.uva(0x7100_0000, 8).is_some());
        assert!(m.uva(0x6fff_ffff, 8).is_none());
        let a = m.gpa(0x100000, 8).unwrap();
        let b = m.uva(0x7100_0000, 8).unwrap();
        assert_eq!(a, b, "the same byte by either name");
        // The hinted form agrees with the plain one whatever the hint says, and leaves the
        // region that held the span in it; an impossible hint is just a miss.
        for start in [0, 1, 7] {
            let hint = Cell::new(start);
            assert_eq!(m.gpa_hinted(0x100000, 8, &hint), Some(a));
            assert_eq!(hint.get(), 1);
            assert_eq!(m.gpa_hinted(0x10, 8, &hint), m.gpa(0x10, 8));
            assert_eq!(hint.get(), 0);
            assert!(m.gpa_hinted(0x10000, 1, &hint).is_none(), "hole");
            assert!(
                m.gpa_hinted(0xfff0, 0x11, &hint).is_none(),
                "crosses the end"
            );
            assert_eq!(hint.get(), 0, "a miss leaves the hint");
        }
    }

    #[test]
    fn refuses_malformed_tables() {
        let r = RegionSpec {
            guest_phys_addr: 0,
            size: 0x1000,
            user_addr: 0,
            mmap_offset: 0,
        };
        assert!(GuestMemory::map(&[r], vec![]).is_err());
        assert!(
            GuestMemory::map(&[r, r], vec![memfd(0x1000), memfd(0x1000)])
                .unwrap_err()
                .contains("overlaps")
        );
        let huge = RegionSpec {
            size: u64::MAX,
            ..r
        };
        assert!(GuestMemory::map(&[huge], vec![memfd(0x1000)]).is_err());
        let beyond = RegionSpec { size: 0x2000, ..r };
        assert!(GuestMemory::map(&[beyond], vec![memfd(0x1000)])
            .unwrap_err()
            .contains("file"));
        let empty = RegionSpec { size: 0, ..r };
        assert!(GuestMemory::map(&[empty], vec![memfd(0x1000)]).is_err());
    }
}
