//! The command line of the process options every shmdp program accepts, named after DPDK's
//! EAL options so that a DPDK user finds them where expected: `--file-prefix`,
//! `--proc-type`, `-l/--lcores`, `--huge-dir`, `--no-huge`, `-m`; and the clap front end
//! every program parses its arguments through ([`parse_args_or_exit`]).
//!
//! Where it sits: the values end up as [`shm::eal::EalOptions`], the plain data the
//! libraries take ([`EalArgs::options`]).

use std::path::PathBuf;

use shm::eal::{EalOptions, LcoreList};
use shm::runtime::FilePrefix;

use crate::exit::Exit;

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

impl EalArgs {
    /// The options as the libraries take them.
    pub fn options(&self) -> EalOptions {
        EalOptions {
            file_prefix: self.file_prefix.clone(),
            lcores: self.lcores.clone(),
            huge_dir: self.huge_dir.clone(),
            no_huge: self.no_huge,
            memory_mib: self.memory_mib,
        }
    }

    /// The lcores as CPU numbers (empty: any CPU).
    pub fn lcore_ids(&self) -> Vec<usize> {
        self.lcores.as_ref().map(LcoreList::ids).unwrap_or_default()
    }
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

/// An lcore list whose CPUs are all online (`-l`, and `ivshmem fwd -l`).
pub(crate) fn parse_lcores(s: &str) -> Result<LcoreList, String> {
    let list: LcoreList = s.parse()?;
    list.check_online()?;
    Ok(list)
}

/// Parses a program's command line with clap, turning any usage error into one line on
/// stderr and exit code 2 ([`Exit::Usage`]); help and version still print in full and
/// exit 0.
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
                let exit = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    Exit::Usage
                } else {
                    Exit::Ok
                };
                std::process::exit(exit.code().into());
            }
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("{program}: error: {first} (see {program} --help)");
            std::process::exit(Exit::Usage.code().into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcores_must_be_online() {
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
