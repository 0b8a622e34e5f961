//! Attaching to a primary from a command line, the way every shmdp program reports it:
//! attach or say why (exit 2), catch SIGINT/SIGTERM, watch the primary, print what was
//! attached to, and `monitor` (stay attached until the primary goes away).
//!
//! Where it sits: over the `secondary` library's [`Secondary::attach`] and
//! [`PrimaryWatch`]; `shmdp-secondary` runs its commands through these, and
//! `shmdp-primary --proc-type secondary|auto` runs [`monitor`] when another primary holds
//! the prefix.

use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use secondary::{AttachInfo, PrimaryGone, PrimaryWatch, Secondary};

use crate::eal::EalArgs;
use crate::Exit;

/// SIGINT and SIGTERM, to be polled; exit 2 (said on stderr) if they cannot be caught.
pub fn signals_or_report(program: &str) -> Result<Signals, ExitCode> {
    Signals::new([SIGINT, SIGTERM]).map_err(|e| {
        eprintln!("{program}: error: cannot install signal handlers: {e}");
        Exit::Usage.into()
    })
}

/// A watch on the primary's end of the control connection; exit 2 (said on stderr) if
/// there is none.
pub fn watch_or_report(program: &str, sec: &Secondary) -> Result<PrimaryWatch, ExitCode> {
    sec.watch_primary().map_err(|e| {
        eprintln!("{program}: error: cannot watch the control connection: {e}");
        Exit::Usage.into()
    })
}

/// Attaches to the primary of `eal`'s prefix; exit 2 (said on stderr) if that fails.
pub fn attach_or_report(program: &str, eal: &EalArgs) -> Result<Secondary, ExitCode> {
    Secondary::attach(&eal.file_prefix, program).map_err(|e| {
        eprintln!("{program}: error: {e}");
        Exit::Usage.into()
    })
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
pub fn monitor(program: &str, eal: &EalArgs, quiet_info: bool) -> ExitCode {
    let mut signals = match signals_or_report(program) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let watch = match watch_or_report(program, &sec) {
        Ok(w) => w,
        Err(code) => return code,
    };
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
            return ExitCode::SUCCESS;
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
            return Exit::PrimaryGone.into();
        }
    }
}
