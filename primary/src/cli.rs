//! Command line of `shmdp-primary`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use shm::eal::{EalArgs, ProcType};
use shm::runtime::{Liveness, RuntimeDir};

use crate::{MemsegRequest, MemzoneRequest, Primary, PrimaryConfig, MAIN_MEMSEG};

/// `shmdp-primary`: creates a process group's shared memory and serves its secondaries
/// until SIGINT or SIGTERM, then removes every file it created.
#[derive(Debug, Parser)]
#[command(name = "shmdp-primary", version, about)]
pub struct PrimaryCli {
    /// Process options.
    #[command(flatten)]
    pub eal: EalArgs,
    /// Another memseg to create, size in MiB (repeatable), e.g. --memseg guest1=4.
    #[arg(long = "memseg", value_name = "NAME=MiB", value_parser = parse_memseg)]
    pub memsegs: Vec<MemsegRequest>,
    /// A memzone to reserve at start (repeatable), e.g. --memzone demo=4k@main.
    #[arg(long = "memzone", value_name = "NAME=SIZE[@MEMSEG]", value_parser = parse_memzone)]
    pub memzones: Vec<MemzoneRequest>,
}

fn parse_memseg(s: &str) -> Result<MemsegRequest, String> {
    let (name, mib) = s
        .split_once('=')
        .ok_or_else(|| format!("--memseg {s:?}: expected NAME=MiB, e.g. guest1=4"))?;
    shm::runtime::check_memseg_name(name)?;
    let mib: u64 = mib
        .parse()
        .ok()
        .filter(|m| (1..=1 << 20).contains(m))
        .ok_or_else(|| format!("--memseg {s:?}: size must be 1..1048576 MiB"))?;
    Ok(MemsegRequest {
        name: name.into(),
        size_bytes: mib << 20,
    })
}

fn parse_memzone(s: &str) -> Result<MemzoneRequest, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--memzone {s:?}: expected NAME=SIZE[@MEMSEG], e.g. demo=4k"))?;
    let (size, seg) = rest.split_once('@').unwrap_or((rest, MAIN_MEMSEG));
    if shm::layout::encode_name(name).is_none() {
        return Err(format!("--memzone {s:?}: name must be 1..31 bytes"));
    }
    let len_bytes = shm::backing::parse_size(size)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("--memzone {s:?}: size {size:?} is not a size like 4096, 4k or 2M")
        })?;
    Ok(MemzoneRequest {
        name: name.into(),
        len_bytes,
        memseg: seg.into(),
    })
}

/// Sets up logging to stderr (`RUST_LOG` overrides the `info` default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs `shmdp-primary` with the process's arguments.
pub fn main() -> ExitCode {
    let cli: PrimaryCli = shm::eal::parse_args_or_exit("shmdp-primary");
    init_logging();
    let as_secondary = match cli.eal.proc_type.unwrap_or(ProcType::Primary) {
        ProcType::Primary => false,
        ProcType::Secondary => true,
        ProcType::Auto => matches!(
            RuntimeDir::for_prefix(&cli.eal.file_prefix).probe(),
            Liveness::Alive { .. }
        ),
    };
    if as_secondary {
        return secondary::cli::monitor("shmdp-primary", &cli.eal, false);
    }
    run_primary(&cli)
}

fn run_primary(cli: &PrimaryCli) -> ExitCode {
    // Catch SIGINT/SIGTERM before creating anything, so no signal can leave files behind.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmdp-primary: error: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    let config = PrimaryConfig {
        eal: cli.eal.clone(),
        memsegs: cli.memsegs.clone(),
        memzones: cli.memzones.clone(),
    };
    let primary = match Primary::start(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shmdp-primary: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = primary.fallback_warning() {
        eprintln!("shmdp-primary: {w}");
    }
    let segs: Vec<String> = primary
        .memsegs()
        .iter()
        .map(|s| {
            format!(
                "{}={}MiB@{}",
                s.name(),
                s.size_bytes() >> 20,
                if s.is_hugetlb() { "hugetlbfs" } else { "shm" }
            )
        })
        .collect();
    println!(
        "shmdp-primary: ready: prefix {} pid {} generation {} memsegs {}",
        cli.eal.file_prefix,
        std::process::id(),
        primary.generation(),
        segs.join(",")
    );
    loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!("signal {sig}: shutting down");
            break;
        }
        if let Some(ctl) = primary.control() {
            // Events are already logged by the control server; draining keeps the queue short.
            let _ = ctl.next_event(Duration::from_millis(100));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let removed = primary.shutdown();
    println!("shmdp-primary: stopped: removed {removed} memseg files");
    ExitCode::SUCCESS
}
