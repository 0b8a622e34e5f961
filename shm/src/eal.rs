//! Process options shared by every shmdp program, named after DPDK's EAL options so that a
//! DPDK user finds them where expected: `--file-prefix`, `--proc-type`, `-l/--lcores`,
//! `--huge-dir`, `--no-huge`, `-m`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::runtime::FilePrefix;

/// Role of a process in a prefix's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcType {
    /// Owns shared memory: creates memsegs, memzones, rings, pools and ports.
    Primary,
    /// Attaches to a running primary's shared memory.
    Secondary,
    /// Primary if no live primary holds the prefix's lock, secondary otherwise.
    Auto,
}

/// The options every shmdp binary accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct EalArgs {
    /// Name of the process group: primary and secondaries with the same prefix share memory.
    #[arg(long, default_value = "shmdp", value_parser = parse_prefix)]
    pub file_prefix: FilePrefix,
    /// Role of this process (default: the binary's own role).
    #[arg(long, value_enum)]
    pub proc_type: Option<ProcType>,
    /// Cores to run polling threads on, e.g. `0-1` or `0,2`.
    #[arg(short = 'l', long = "lcores", value_parser = parse_lcores)]
    pub lcores: Option<LcoreList>,
    /// hugetlbfs mount for memseg files (default: the first mount with enough free pages).
    #[arg(long, conflicts_with = "no_huge")]
    pub huge_dir: Option<PathBuf>,
    /// Put memsegs in /dev/shm instead of hugepages.
    #[arg(long)]
    pub no_huge: bool,
    /// Size of the main memseg in MiB (rounded up to a power of two).
    #[arg(short = 'm', long = "memory", value_name = "MiB", default_value_t = 64, value_parser = parse_memory)]
    pub memory_mib: u64,
}

fn parse_prefix(s: &str) -> Result<FilePrefix, String> {
    s.parse()
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("-m {s:?}: give the memory size in MiB, e.g. -m 64"))?;
    if v == 0 {
        return Err("-m 0: too little memory; give at least 1 MiB".into());
    }
    if v > 1 << 20 {
        return Err(format!(
            "-m {v}: more than 1 TiB of memory is not supported"
        ));
    }
    Ok(v)
}

/// A validated list of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreList(pub Vec<u32>);

fn parse_lcores(s: &str) -> Result<LcoreList, String> {
    let list: LcoreList = s.parse()?;
    let online = online_cpus();
    if let Some(bad) = list.0.iter().find(|c| !online.contains(c)) {
        return Err(format!(
            "lcore {bad} is not an online CPU of this machine (online: {})",
            LcoreList(online)
        ));
    }
    Ok(list)
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

/// Parses a program's command line with clap, turning any usage error into one line on
/// stderr and exit code 2 (help and version still print in full and exit 0).
pub fn parse_args_or_exit<T: clap::Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(v) => v,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("{program}: error: {first} (see {program} --help)");
            std::process::exit(2);
        }
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
        assert!(parse_lcores("1000").is_err());
        assert!(parse_lcores("0").is_ok());
    }

    #[test]
    fn memory_sizes_are_checked() {
        assert_eq!(parse_memory("64"), Ok(64));
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("lots").is_err());
    }
}
