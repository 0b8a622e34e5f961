//! The process options every shmdp program takes, as plain data: what the libraries need
//! from them ([`EalOptions`]) and the CPU lists of `-l/--lcores` ([`LcoreList`]).
//!
//! Where it sits: named after DPDK's EAL options so that a DPDK user finds them where
//! expected. The command line that fills these (`--file-prefix`, `--proc-type`,
//! `-l/--lcores`, `--huge-dir`, `--no-huge`, `-m`) is the app crate's (`shmdp-app`); this
//! module parses no command line.

use std::path::PathBuf;
use std::str::FromStr;

use crate::runtime::FilePrefix;

/// The process options, as the libraries use them.
#[derive(Debug, Clone)]
pub struct EalOptions {
    /// Name of the process group: primary and secondaries with the same prefix share memory.
    pub file_prefix: FilePrefix,
    /// Cores to run polling threads on (`None`: any).
    pub lcores: Option<LcoreList>,
    /// hugetlbfs mount for memseg files (`None`: the first mount with enough free pages).
    pub huge_dir: Option<PathBuf>,
    /// Put memsegs in /dev/shm instead of hugepages.
    pub no_huge: bool,
    /// Size of the main memseg in MiB (rounded up to a power of two).
    pub memory_mib: u64,
}

impl EalOptions {
    /// The lcores as CPU numbers (empty: any CPU).
    pub fn lcore_ids(&self) -> Vec<usize> {
        self.lcores.as_ref().map(LcoreList::ids).unwrap_or_default()
    }
}

/// A validated list of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreList(pub Vec<u32>);

impl LcoreList {
    /// Checks every CPU of the list is one this process may run on.
    ///
    /// # Errors
    /// One line naming the first CPU that is not, and the online ones.
    pub fn check_online(&self) -> Result<(), String> {
        let online = online_cpus();
        match self.0.iter().find(|c| !online.contains(c)) {
            Some(bad) => Err(format!(
                "lcore {bad} is not an online CPU of this machine (online: {})",
                LcoreList(online)
            )),
            None => Ok(()),
        }
    }

    /// The CPU numbers, as the forwarding engine takes them.
    pub fn ids(&self) -> Vec<usize> {
        self.0.iter().map(|&c| c as usize).collect()
    }
}

impl FromStr for LcoreList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let bad = || format!("lcore list {s:?}: expected numbers and ranges like 0-1,3");
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<u32>().map_err(|_| bad())?,
                    b.trim().parse::<u32>().map_err(|_| bad())?,
                ),
                None => {
                    let v = part.trim().parse::<u32>().map_err(|_| bad())?;
                    (v, v)
                }
            };
            if a > b || b >= 1024 {
                return Err(bad());
            }
            for c in a..=b {
                if out.contains(&c) {
                    return Err(format!("lcore list {s:?} names CPU {c} twice"));
                }
                out.push(c);
            }
        }
        Ok(LcoreList(out))
    }
}

impl std::fmt::Display for LcoreList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                end += 1;
                i += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// CPUs this process may run on.
pub fn online_cpus() -> Vec<u32> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count() as u32)
            .filter(|&c| set.is_set(c as usize).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get() as u32)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcore_lists_parse_and_print() {
        assert_eq!("0-2,5".parse::<LcoreList>().unwrap().0, vec![0, 1, 2, 5]);
        assert_eq!(
            "0-2,5,6".parse::<LcoreList>().unwrap().to_string(),
            "0-2,5-6"
        );
        for bad in ["", "a", "3-1", "0,0", "1-", "99999"] {
            assert!(bad.parse::<LcoreList>().is_err(), "{bad:?}");
        }
        assert!(LcoreList(vec![1000]).check_online().is_err());
        assert!(LcoreList(vec![0]).check_online().is_ok());
        assert_eq!(LcoreList(vec![0, 2]).ids(), vec![0, 2]);
    }
}
