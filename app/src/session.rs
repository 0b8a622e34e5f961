//! Attaching to a primary from a command line, the way every shmdp program reports it:
//! attach or say why ([`Exit::Usage`]), catch SIGINT/SIGTERM, watch the primary, print what was
//! attached to, and `monitor` (stay attached until the primary goes away).
//!
//! Where it sits: over the `secondary` library's [`Secondary::attach`] and
//! [`PrimaryWatch`]; `shmdp-secondary` runs its commands through these, and
//! `shmdp-primary --proc-type secondary|auto` runs [`monitor`] when another primary holds
//! the prefix.

use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use secondary::{AttachInfo, PrimaryGone, PrimaryWatch, Secondary};

use crate::eal::EalArgs;
use crate::{CliError, CmdResult, Exit};

/// SIGINT and SIGTERM, to be polled.
///
/// # Errors
/// [`Exit::Usage`] if they cannot be caught.
pub fn signals() -> Result<Signals, CliError> {
    Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::usage(format!("cannot install signal handlers: {e}")))
}

/// A watch on the primary's end of `sec`'s control connection.
///
/// # Errors
/// [`Exit::Usage`] if there is none.
pub fn watch(sec: &Secondary) -> Result<PrimaryWatch, CliError> {
    sec.watch_primary()
        .map_err(|e| CliError::usage(format!("cannot watch the control connection: {e}")))
}

/// Attaches `program` to the primary of `eal`'s prefix.
///
/// # Errors
/// [`Exit::Usage`] with the attach error's line (no primary, dead, refused, ...).
pub fn attach(program: &str, eal: &EalArgs) -> Result<Secondary, CliError> {
    Secondary::attach(&eal.file_prefix, program).map_err(CliError::usage)
}

/// Prints what `info` describes: the primary, this slot, every memseg and memzone.
pub fn print_info(info: &AttachInfo) {
    println!(
        "attached to prefix {} (primary pid {}, generation {}) as secondary slot {}",
        info.prefix, info.primary_pid, info.generation, info.slot
    );
    for s in &info.memsegs {
        println!(
            "memseg {} {:<12} {:>6} MiB  {:<9}  mapped at {}  {}",
            s.id,
            s.name,
            s.size_bytes >> 20,
            if s.hugetlb { "hugetlbfs" } else { "shm" },
            s.mapped_at,
            s.path
        );
        for z in &s.memzones {
            println!(
                "  memzone {:<31} offset {:#010x} len {:>10} align {:>5} {:?}",
                z.name, z.offset, z.len_bytes, z.align, z.kind
            );
        }
    }
}

/// Attaches and stays attached until the primary goes away (exit 3) or SIGINT/SIGTERM
/// (exit 0). Used by `shmdp-secondary monitor` and by `shmdp-primary --proc-type
/// secondary|auto` when another primary is running.
pub fn monitor(program: &str, eal: &EalArgs, quiet_info: bool) -> CmdResult {
    let mut signals = signals()?;
    let sec = attach(program, eal)?;
    let watch = watch(&sec)?;
    let info = sec.info();
    if !quiet_info {
        print_info(&info);
    }
    println!(
        "{program}: attached as secondary: prefix {} slot {} primary pid {} memsegs {}",
        info.prefix,
        info.slot,
        info.primary_pid,
        info.memsegs.len()
    );
    loop {
        if signals.pending().next().is_some() {
            sec.detach();
            println!("{program}: detached");
            return Ok(Exit::Ok);
        }
        if let Some(gone) = watch.wait(Duration::from_millis(100)) {
            let how = match gone {
                PrimaryGone::Closing => "shut down",
                PrimaryGone::Died => "died",
            };
            eprintln!(
                "{program}: the primary (pid {}) {how}; detaching",
                sec.primary_pid()
            );
            return Ok(Exit::PrimaryGone);
        }
    }
}
