//! Commands that attach to a primary, do one thing and detach: the wrappers that look up
//! a ring or pool and report the result as an exit code, `info`, `stats`, `mbuf-hold`, and
//! `monitor` (which `shmdp-primary` also runs).
//!
//! Where it sits: in [`crate::cli`]; the tools they run are `crate::ringtool`,
//! `crate::pooltool` and `crate::audit`.

use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use shmdp_app::eal::EalArgs;

use super::{EXIT_POOL_FAILED, EXIT_PRIMARY_GONE, EXIT_RING_FAILED};
use crate::{PrimaryGone, PrimaryWatch, Secondary};

pub(super) fn ring_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&shm_ring::Ring<u64>) -> Result<String, crate::ringtool::RingToolError>,
) -> ExitCode {
    on_object(
        eal,
        ("ring", name),
        Secondary::ring,
        |_, ring| f(ring),
        EXIT_RING_FAILED,
    )
}

pub(super) fn pool_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&Secondary, &shm_mempool::MbufPool) -> Result<String, crate::pooltool::PoolToolError>,
) -> ExitCode {
    on_object(
        eal,
        ("mempool", name),
        Secondary::mbuf_pool,
        f,
        EXIT_POOL_FAILED,
    )
}

/// Attaches, finds the object `name` (a `kind`, for messages) with `find`, runs `f` on it,
/// drops it and detaches; prints `f`'s line (exit 0) or its error (exit `failed`). Exit 2
/// when attaching or finding fails.
fn on_object<T, E: std::fmt::Display, F: std::fmt::Display>(
    eal: &EalArgs,
    (kind, name): (&str, &str),
    find: impl FnOnce(&Secondary, &str) -> Result<T, E>,
    f: impl FnOnce(&Secondary, &T) -> Result<String, F>,
    failed: u8,
) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let object = match find(&sec, name) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{program}: error: {kind} {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = f(&sec, &object);
    drop(object);
    sec.detach();
    match result {
        Ok(line) => {
            println!("{program}: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(failed)
        }
    }
}

pub(super) fn mbuf_ring_cmd(
    eal: &EalArgs,
    pool: &str,
    ring: &str,
    f: impl FnOnce(
        &shm_mempool::MbufCache,
        &shm_ring::Ring<u64>,
    ) -> Result<String, crate::pooltool::PoolToolError>,
) -> ExitCode {
    pool_cmd(eal, pool, |sec, p| {
        let r = sec
            .ring(ring)
            .map_err(|source| crate::pooltool::PoolToolError::Ring {
                ring: ring.to_string(),
                source,
            })?;
        let cache = sec.allocator(pool, p)?;
        f(&cache, &r)
    })
}

/// Everything `stats` prints.
#[derive(Debug, serde::Serialize)]
pub(super) struct AllStats {
    pub(super) ports: Vec<shm::stats::PortStats>,
    pub(super) pools: Vec<shm::stats::PoolStats>,
}

pub(super) fn stats(eal: &EalArgs, json: bool) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = sec.port_stats().and_then(|ports| {
        Ok(AllStats {
            ports,
            pools: sec.pool_stats()?,
        })
    });
    sec.detach();
    match result {
        Ok(stats) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&stats).expect("serialisable")
            );
            ExitCode::SUCCESS
        }
        Ok(stats) => {
            crate::pooltool::print_port_stats(&stats.ports);
            crate::pooltool::print_stats(&stats.pools);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: cannot get statistics from the primary: {e}");
            ExitCode::from(EXIT_POOL_FAILED)
        }
    }
}

pub(super) fn mbuf_hold(eal: &EalArgs, names: &[String], count: u32) -> ExitCode {
    let program = "shmdp-secondary";
    let mut signals = match signals_or_report(program) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut pools = Vec::with_capacity(names.len());
    for name in names {
        match sec.mbuf_pool(name) {
            Ok(p) => pools.push(p),
            Err(e) => {
                eprintln!("{program}: error: mempool {name}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let watch = match watch_or_report(program, &sec) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let mut caches = Vec::with_capacity(pools.len());
    for (name, pool) in names.iter().zip(&pools) {
        match sec.allocator(name, pool) {
            Ok(c) => caches.push(c),
            Err(e) => {
                eprintln!("{program}: error: {e}");
                return ExitCode::from(EXIT_POOL_FAILED);
            }
        }
    }
    let mut held = Vec::with_capacity(count as usize * caches.len());
    for cache in &caches {
        let mut some = Vec::with_capacity(count as usize);
        if let Err(e) = cache.alloc_bulk(&mut some, count as usize) {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(EXIT_POOL_FAILED);
        }
        held.append(&mut some);
    }
    for (i, m) in held.iter_mut().enumerate() {
        m.append(8)
            .expect("a fresh mbuf has room")
            .copy_from_slice(&(i as u64).to_le_bytes());
    }
    println!(
        "{program}: holding {count} mbufs from {} (slot {}, pid {})",
        names.join(", "),
        sec.slot(),
        std::process::id()
    );
    loop {
        if signals.pending().next().is_some() {
            drop(held);
            drop(caches);
            sec.detach();
            println!("{program}: freed {count} mbufs and detached");
            return ExitCode::SUCCESS;
        }
        if watch.wait(Duration::from_millis(100)).is_some() {
            eprintln!("{program}: the primary went away; detaching");
            std::mem::forget(held);
            return ExitCode::from(EXIT_PRIMARY_GONE);
        }
    }
}

/// SIGINT and SIGTERM, to be polled; exit 2 (said on stderr) if they cannot be caught.
fn signals_or_report(program: &str) -> Result<Signals, ExitCode> {
    Signals::new([SIGINT, SIGTERM]).map_err(|e| {
        eprintln!("{program}: error: cannot install signal handlers: {e}");
        ExitCode::from(2)
    })
}

/// A watch on the primary's end of the control connection; exit 2 (said on stderr) if
/// there is none.
fn watch_or_report(program: &str, sec: &Secondary) -> Result<PrimaryWatch, ExitCode> {
    sec.watch_primary().map_err(|e| {
        eprintln!("{program}: error: cannot watch the control connection: {e}");
        ExitCode::from(2)
    })
}

pub(super) fn attach_or_report(program: &str, eal: &EalArgs) -> Result<Secondary, ExitCode> {
    Secondary::attach(&eal.file_prefix, program).map_err(|e| {
        eprintln!("{program}: error: {e}");
        ExitCode::from(2)
    })
}

pub(super) fn info(program: &str, eal: &EalArgs, json: bool) -> ExitCode {
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let info = sec.info();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("serialisable")
        );
    } else {
        print_info(&info);
    }
    sec.detach();
    ExitCode::SUCCESS
}

fn print_info(info: &crate::AttachInfo) {
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
            return ExitCode::from(EXIT_PRIMARY_GONE);
        }
    }
}
