//! Commands that attach to a primary, do one thing and detach: the wrappers that look up
//! a ring or pool and report the result as an exit code, `info`, `stats`, `mbuf-hold`, and
//! `monitor` (which `shmdp-primary` also runs).
//!
//! Where it sits: in [`crate::cli`]; the tools they run are `shmdp_app::ringtool`,
//! `shmdp_app::pooltool` and `shmdp_app::audit`.

use std::process::ExitCode;
use std::time::Duration;

use secondary::Secondary;
use shmdp_app::eal::EalArgs;
use shmdp_app::session::{attach_or_report, print_info, signals_or_report, watch_or_report};

use crate::{EXIT_POOL_FAILED, EXIT_PRIMARY_GONE, EXIT_RING_FAILED};

pub(super) fn ring_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&shm_ring::Ring<u64>) -> Result<String, shmdp_app::ringtool::RingToolError>,
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
    f: impl FnOnce(
        &Secondary,
        &shm_mempool::MbufPool,
    ) -> Result<String, shmdp_app::pooltool::PoolToolError>,
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
    ) -> Result<String, shmdp_app::pooltool::PoolToolError>,
) -> ExitCode {
    pool_cmd(eal, pool, |sec, p| {
        let r = sec
            .ring(ring)
            .map_err(|source| shmdp_app::pooltool::PoolToolError::Ring {
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
            shmdp_app::pooltool::print_port_stats(&stats.ports);
            shmdp_app::pooltool::print_stats(&stats.pools);
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
