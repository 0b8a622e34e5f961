//! A vhost-user frontend's memory as this process maps it: the regions of the last
//! `SET_MEM_TABLE`, each a file (memfd or hugepage file) the frontend passed, mapped here
//! at whatever address the kernel gives. Guest physical addresses (descriptor buffers) and
//! the frontend's own virtual addresses (vring addresses) are translated through this
//! table; a span that is not wholly inside one region does not translate. Everything the
//! guest names is checked here before anything is touched.
//!
//! The frontend keeps its fds and may change the files after sharing them; a mapping
//! whose file shrank faults (SIGBUS) on the next touch. So a region is taken only when
//! its file cannot shrink or is guarded ([`check_file`]): a memfd sealed with
//! `F_SEAL_SHRINK` (QEMU's `memory-backend-memfd` seals with `F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_SEAL` unless `seal=off`), or a hugetlbfs file, which cannot be
//! sealed. Every mapping is registered with the SIGBUS guard ([`super::guard`]), so a
//! hugetlbfs file truncated (or a hole punched when the hugepage pool is empty) costs the
//! frontend its connection ([`GuestMemory::taken_away`]), not the process its life. Any
//! other file (an unsealed memfd, a tmpfs or disk file) is refused.

use crate::VhostError;
use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use super::guard::Quota;
pub use pmds_common_vhost_user::memfd::sealed_memfd;
use pmds_common_vhost_user::peer_mem::{PeerMapping, PeerSpan};

/// A span's offset or length as a host `usize` (`None` where it does not fit).
#[inline(always)]
fn host(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}
pub use pmds_common_vhost_user::proto::{RegionSpec, MAX_REGIONS};

struct Mapped {
    spec: RegionSpec,
    /// The region's bytes (`mmap_offset` into `map`).
    span: PeerSpan,
    /// The whole mapping under its SIGBUS guard; keeps `span` mapped.
    map: PeerMapping,
}

impl Mapped {
    /// The span `[gpa, gpa + len)` if it lies wholly inside this region (an address below
    /// the region wraps to an offset past its end).
    #[inline(always)]
    fn gpa(&self, gpa: u64, len: u64) -> Option<PeerSpan> {
        let off = gpa.wrapping_sub(self.spec.guest_phys_addr);
        self.span.sub(host(off)?, host(len)?)
    }

    /// As [`Mapped::gpa`] for the frontend's virtual address `uva`.
    #[inline(always)]
    fn uva(&self, uva: u64, len: u64) -> Option<PeerSpan> {
        let off = uva.wrapping_sub(self.spec.user_addr);
        self.span.sub(host(off)?, host(len)?)
    }
}

/// The mapped memory table. Translations hand out [`PeerSpan`]s valid while this value
/// lives; the data path holds it in an `Arc` beside its spans, so a new table never unmaps
/// memory it uses.
pub struct GuestMemory {
    regions: Vec<Mapped>,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.regions.iter().map(|r| r.spec))
            .finish()
    }
}

impl GuestMemory {
    /// Maps `files[i]` for `specs[i]`, guarded within a quota of its own (reserved for
    /// as long as the mappings live; the backend uses [`map_in`](Self::map_in) with its
    /// port's share).
    ///
    /// # Errors
    /// One line when the table is malformed (counts differ, empty or overflowing regions,
    /// overlaps in guest physical space) or a file cannot be mapped.
    pub fn map(specs: &[RegionSpec], files: Vec<File>) -> Result<GuestMemory, VhostError> {
        let quota = Quota::reserve(specs.len().clamp(1, MAX_REGIONS))
            .map_err(|e| crate::peer_err!("memory table: {e}"))?;
        Self::map_in(specs, files, &quota)
    }

    /// [`map`](Self::map), guarding every mapping within `quota` (the port's share of
    /// the SIGBUS guard).
    ///
    /// # Errors
    /// As [`map`](Self::map), and when `quota` has room for fewer mappings than `specs`.
    pub fn map_in(
        specs: &[RegionSpec],
        files: Vec<File>,
        quota: &Quota,
    ) -> Result<GuestMemory, VhostError> {
        if specs.len() != files.len() || specs.is_empty() || specs.len() > MAX_REGIONS {
            return Err(crate::peer_err!(
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
                return Err(crate::peer_err!("memory table: region {spec:?} overflows"));
            };
            if spec.size == 0 || usize::try_from(map_len).is_err() {
                return Err(crate::peer_err!(
                    "memory table: region {spec:?} has a bad size"
                ));
            }
            if regions.iter().any(|r| {
                spec.guest_phys_addr < r.spec.guest_phys_addr + r.spec.size
                    && r.spec.guest_phys_addr < end
            }) {
                return Err(crate::peer_err!(
                    "memory table: region {spec:?} overlaps another"
                ));
            }
            // A file shorter than the region would fault (SIGBUS) on first touch.
            let file_len = file
                .metadata()
                .map_err(|e| crate::peer_err!("memory table: region {spec:?}: {e}"))?
                .len();
            if file_len < map_len {
                return Err(crate::peer_err!(
                    "memory table: region {spec:?} needs {map_len} bytes of a {file_len}-byte file"
                ));
            }
            check_file(&file)
                .map_err(|e| crate::peer_err!("memory table: region {spec:?}: {e}"))?;
            // Mapped, guarded and later unmapped in whole pages of the file's page size
            // (2 MiB or 1 GiB on hugetlbfs): the kernel rounds a hugetlbfs mapping up,
            // and munmap of a length that is not a multiple of its page size fails, which
            // would leak the mapping (and its hugepages) on every memory table a frontend
            // sends. Bytes past `map_len` are never touched.
            let page = file
                .metadata()
                .map(|m| m.blksize())
                .unwrap_or(4096)
                .max(4096);
            let Some(whole) = map_len
                .checked_next_multiple_of(page)
                .and_then(|w| usize::try_from(w).ok())
            else {
                return Err(crate::peer_err!(
                    "memory table: region {spec:?} has a bad size"
                ));
            };
            let map = memmap2::MmapOptions::new()
                .len(whole)
                .map_raw(&file)
                .map_err(|e| crate::peer_err!("memory table: map region {spec:?}: {e}"))?;
            let guard = quota
                .register(map.as_mut_ptr() as usize, whole)
                .map_err(|e| crate::peer_err!("memory table: {e}"))?;
            let map = PeerMapping::new(map, guard);
            // `mmap_offset + size = map_len` bytes: inside the mapping.
            let Some(span) = map.span(spec.mmap_offset, spec.size) else {
                return Err(crate::peer_err!(
                    "memory table: region {spec:?} has a bad size"
                ));
            };
            regions.push(Mapped {
                spec: *spec,
                span,
                map,
            });
        }
        Ok(GuestMemory { regions })
    }

    /// A region's file was truncated (or its pages could not be allocated) after it was
    /// mapped: the guard replaced it with zeros. The frontend is to be dropped.
    pub fn taken_away(&self) -> bool {
        self.regions.iter().any(|r| r.map.hit())
    }

    /// The regions.
    pub fn regions(&self) -> impl Iterator<Item = RegionSpec> + '_ {
        self.regions.iter().map(|r| r.spec)
    }

    /// Guest physical span `[gpa, gpa + len)`, if it lies wholly inside one region.
    #[inline]
    pub fn gpa(&self, gpa: u64, len: u64) -> Option<PeerSpan> {
        self.regions.iter().find_map(|r| r.gpa(gpa, len))
    }

    /// As [`GuestMemory::gpa`], trying region `hint` first and leaving in it the region
    /// that held the span: a queue's buffers mostly sit in one region, and the data path
    /// translates every buffer (QEMU and our virtio-user send several regions).
    #[inline]
    pub fn gpa_hinted(&self, gpa: u64, len: u64, hint: &Cell<usize>) -> Option<PeerSpan> {
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

    /// The frontend's virtual span `[uva, uva + len)` (vring addresses), if it lies wholly
    /// inside one region.
    pub fn uva(&self, uva: u64, len: u64) -> Option<PeerSpan> {
        self.regions.iter().find_map(|r| r.uva(uva, len))
    }
}

/// Why a region's file is safe to map: it cannot shrink, or it lives on hugetlbfs (which
/// cannot be sealed) and the SIGBUS guard covers it.
///
/// # Errors
/// One line naming the file's kind and what to give instead.
pub fn check_file(file: &File) -> Result<(), VhostError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = fcntl(file, FcntlArg::F_GET_SEALS)
        .map(SealFlag::from_bits_truncate)
        .ok();
    if seals.is_some_and(|s| s.contains(SealFlag::F_SEAL_SHRINK)) {
        return Ok(());
    }
    let fs = nix::sys::statfs::fstatfs(file).map_err(|e| crate::peer_err!("fstatfs: {e}"))?;
    if fs.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC {
        return Ok(());
    }
    Err(VhostError::Peer(match seals {
        Some(_) => "the memory file can shrink (a memfd or tmpfs file without F_SEAL_SHRINK); give the frontend sealed memory (QEMU: memory-backend-memfd, sealed by default) or hugepages".into(),
        None => "the memory file is neither a sealed memfd nor on hugetlbfs; give the frontend sealed memory (QEMU: memory-backend-memfd) or hugepages".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn memfd(len: u64) -> File {
        sealed_memfd("shmdp-test", len).unwrap()
    }

    #[test]
    fn refuses_memory_that_can_shrink() {
        let r = RegionSpec {
            guest_phys_addr: 0,
            size: 0x1000,
            user_addr: 0,
            mmap_offset: 0,
        };
        let unsealed = File::from(memfd_create("shmdp-test", MFdFlags::MFD_ALLOW_SEALING).unwrap());
        unsealed.set_len(0x1000).unwrap();
        let e = GuestMemory::map(&[r], vec![unsealed]).unwrap_err();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        let unsealable = File::from(memfd_create("shmdp-test", MFdFlags::empty()).unwrap());
        unsealable.set_len(0x1000).unwrap();
        assert!(GuestMemory::map(&[r], vec![unsealable]).is_err());
        let m = GuestMemory::map(&[r], vec![memfd(0x1000)]).unwrap();
        assert!(!m.taken_away());
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
        let a = m.gpa(0x100000, 8).unwrap().addr();
        let b = m.uva(0x7100_0000, 8).unwrap().addr();
        assert_eq!(a, b, "the same byte by either name");
        // The hinted form agrees with the plain one whatever the hint says, and leaves the
        // region that held the span in it; an impossible hint is just a miss.
        for start in [0, 1, 7] {
            let hint = Cell::new(start);
            assert_eq!(m.gpa_hinted(0x100000, 8, &hint).map(|s| s.addr()), Some(a));
            assert_eq!(hint.get(), 1);
            assert_eq!(
                m.gpa_hinted(0x10, 8, &hint).map(|s| s.addr()),
                m.gpa(0x10, 8).map(|s| s.addr())
            );
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
                .to_string()
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
            .to_string()
            .contains("file"));
        let empty = RegionSpec { size: 0, ..r };
        assert!(GuestMemory::map(&[empty], vec![memfd(0x1000)]).is_err());
    }
}
