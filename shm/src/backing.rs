//! Where memseg files live: a mounted hugetlbfs, or /dev/shm when no hugepages can be had.
//!
//! The primary asks [`choose_backing`] once at start with the total size it needs. With
//! `--huge-dir` the caller insists on that mount, so running short is an error; without it,
//! shmdp takes the first hugetlbfs mount with enough free pages and otherwise falls back
//! to /dev/shm with a one-line warning, as the design asks.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A backing store for memseg files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A hugetlbfs mount.
    Hugetlbfs {
        /// Mount point.
        dir: PathBuf,
        /// Page size of the mount in bytes.
        page_size: u64,
    },
    /// A tmpfs directory (normally /dev/shm): 4 KiB pages.
    Shm {
        /// Directory.
        dir: PathBuf,
    },
}

impl Backing {
    /// Directory the memseg files are created in.
    pub fn dir(&self) -> &Path {
        match self {
            Backing::Hugetlbfs { dir, .. } | Backing::Shm { dir } => dir,
        }
    }

    /// Page size of the store.
    pub fn page_size(&self) -> u64 {
        match self {
            Backing::Hugetlbfs { page_size, .. } => *page_size,
            Backing::Shm { .. } => 4096,
        }
    }

    /// True for hugetlbfs.
    pub fn is_hugetlbfs(&self) -> bool {
        matches!(self, Backing::Hugetlbfs { .. })
    }
}

/// A hugetlbfs mount found in /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugeMount {
    /// Mount point.
    pub dir: PathBuf,
    /// Page size in bytes (from `pagesize=` or the system default).
    pub page_size: u64,
}

/// Parses the text of /proc/mounts for hugetlbfs mounts.
pub fn parse_huge_mounts(mounts: &str, default_page_size: u64) -> Vec<HugeMount> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_dev, dir, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if fstype != "hugetlbfs" {
                return None;
            }
            let page_size = opts
                .split(',')
                .find_map(|o| o.strip_prefix("pagesize="))
                .and_then(parse_size)
                .unwrap_or(default_page_size);
            Some(HugeMount {
                dir: PathBuf::from(unescape_mount(dir)),
                page_size,
            })
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// Parses sizes such as `2M`, `1G`, `2048k`, `4096`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Default hugepage size from /proc/meminfo (`Hugepagesize:`), or 2 MiB.
pub fn default_huge_page_size() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(2 << 20)
}

/// Free (and not reserved) hugepages of `page_size` bytes, from sysfs.
pub fn free_huge_pages(page_size: u64) -> u64 {
    let base = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page_size / 1024);
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(format!("{base}/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    read("free_hugepages").saturating_sub(read("resv_hugepages"))
}

/// Bytes available to an unprivileged writer in the filesystem holding `dir`.
pub fn fs_available(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// All hugetlbfs mounts of this system.
pub fn huge_mounts() -> Vec<HugeMount> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    parse_huge_mounts(&text, default_huge_page_size())
}

/// Where to put `total_bytes` of memsegs, whose sizes are `seg_sizes` (each a power of two).
///
/// Returns the backing and, when falling back to /dev/shm, the warning to print.
///
/// # Errors
/// [`Error::Hugepages`] if `--huge-dir` was given and is not a hugetlbfs mount or has too few
/// free pages; [`Error::NoMemory`] if neither hugepages nor /dev/shm can hold the memsegs.
pub fn choose_backing(
    huge_dir: Option<&Path>,
    no_huge: bool,
    seg_sizes: &[u64],
) -> Result<(Backing, Option<String>)> {
    let shm_dir = PathBuf::from("/dev/shm");
    let total: u64 = seg_sizes.iter().sum();
    let shm = |why: Option<String>| -> Result<(Backing, Option<String>)> {
        let avail = fs_available(&shm_dir).unwrap_or(0);
        if avail < total {
            return Err(Error::NoMemory(format!(
                "need {} MiB of shared memory but /dev/shm has {} MiB free{}; free some or reserve hugepages (echo N > /proc/sys/vm/nr_hugepages)",
                total >> 20,
                avail >> 20,
                why.as_deref().map(|w| format!(" and {w}")).unwrap_or_default()
            )));
        }
        Ok((
            Backing::Shm {
                dir: shm_dir.clone(),
            },
            why,
        ))
    };
    if no_huge {
        return shm(None).map(|(b, _)| (b, None));
    }
    let mounts = huge_mounts();
    if let Some(dir) = huge_dir {
        let canon = dir
            .canonicalize()
            .map_err(|e| Error::Hugepages(format!("--huge-dir {}: {e}", dir.display())))?;
        let m = mounts
            .iter()
            .find(|m| m.dir == canon)
            .ok_or_else(|| {
                Error::Hugepages(format!(
                    "--huge-dir {} is not a hugetlbfs mount (mount one with: mount -t hugetlbfs none {})",
                    dir.display(),
                    dir.display()
                ))
            })?;
        let need = pages_needed(seg_sizes, m.page_size);
        let free = free_huge_pages(m.page_size);
        if free < need {
            return Err(Error::Hugepages(format!(
                "--huge-dir {}: need {need} free {} KiB hugepages, {free} free (raise /proc/sys/vm/nr_hugepages or use --no-huge)",
                dir.display(),
                m.page_size >> 10
            )));
        }
        return Ok((
            Backing::Hugetlbfs {
                dir: canon,
                page_size: m.page_size,
            },
            None,
        ));
    }
    if mounts.is_empty() {
        return shm(Some("no hugetlbfs is mounted".into())).map(|(b, w)| (b, w.map(warn)));
    }
    for m in &mounts {
        if pages_needed(seg_sizes, m.page_size) <= free_huge_pages(m.page_size) {
            return Ok((
                Backing::Hugetlbfs {
                    dir: m.dir.clone(),
                    page_size: m.page_size,
                },
                None,
            ));
        }
    }
    let why = format!(
        "too few free hugepages for {} MiB (raise /proc/sys/vm/nr_hugepages)",
        total >> 20
    );
    shm(Some(why)).map(|(b, w)| (b, w.map(warn)))
}

fn warn(why: String) -> String {
    format!("warning: {why}; using /dev/shm (not hugepage-backed, slower)")
}

fn pages_needed(seg_sizes: &[u64], page_size: u64) -> u64 {
    seg_sizes.iter().map(|s| s.div_ceil(page_size)).sum()
}

/// Rounds a requested memseg size up to a power of two of at least
/// [`crate::layout::MEMSEG_MIN_SIZE`] and of the page size (QEMU's ivshmem needs a power of
/// two; hugetlbfs needs whole pages).
pub fn memseg_size(requested: u64, page_size: u64) -> Option<u64> {
    requested
        .max(crate::layout::MEMSEG_MIN_SIZE)
        .max(page_size)
        .checked_next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hugetlbfs_mounts() {
        let text = "proc /proc proc rw 0 0\nnone /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\nhugetlbfs /mnt/huge\\0401G hugetlbfs rw,pagesize=1024M 0 0\nnodev /x hugetlbfs rw 0 0\n";
        let m = parse_huge_mounts(text, 2 << 20);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].dir, PathBuf::from("/dev/hugepages"));
        assert_eq!(m[0].page_size, 2 << 20);
        assert_eq!(m[1].dir, PathBuf::from("/mnt/huge 1G"));
        assert_eq!(m[1].page_size, 1 << 30);
        assert_eq!(m[2].page_size, 2 << 20);
    }

    #[test]
    fn sizes_round_to_powers_of_two() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("2048k"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(memseg_size(1, 4096), Some(2 << 20));
        assert_eq!(memseg_size(3 << 20, 2 << 20), Some(4 << 20));
        assert_eq!(memseg_size(64 << 20, 2 << 20), Some(64 << 20));
        assert_eq!(memseg_size(1, 1 << 30), Some(1 << 30));
        assert_eq!(memseg_size(u64::MAX, 4096), None);
    }
}
