//! Commands that attach to a primary, do one thing and detach: the wrappers that look up
//! a ring or pool, run a tool on it and print its line, `info`, `stats` and `mbuf-hold`.
//!
//! Where it sits: in `shmdp-secondary`, dispatched from `main.rs`; attaching and
//! `monitor` are `shmdp_app::session`, the tools `shmdp_app::ringtool`,
//! `shmdp_app::pooltool` and `shmdp_app::audit`.

use std::time::Duration;

use secondary::Secondary;
use shmdp_app::eal::EalArgs;
use shmdp_app::pooltool::PoolToolError;
use shmdp_app::ringtool::RingToolError;
use shmdp_app::session::{attach, print_info, signals, watch};
use shmdp_app::{CliError, CmdResult, Exit};

use crate::PROGRAM;

/// Runs `f` on the ring `name`, as [`on_object`] does.
pub(crate) fn ring_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&shm_ring::Ring<u64>) -> Result<String, RingToolError>,
) -> CmdResult {
    on_object(eal, ("ring", name), Secondary::ring, |_, ring| f(ring))
}

/// Runs `f` on the mbuf pool `name`, as [`on_object`] does.
pub(crate) fn pool_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&Secondary, &shm_mempool::MbufPool) -> Result<String, PoolToolError>,
) -> CmdResult {
    on_object(eal, ("mempool", name), Secondary::mbuf_pool, f)
}

/// Attaches, finds the object `name` (a `kind`, for messages) with `find`, runs `f` on it,
/// drops it and detaches; prints `f`'s line.
///
/// # Errors
/// [`Exit::Usage`] when attaching or finding fails, [`Exit::Failed`] with `f`'s error.
fn on_object<T, E: std::fmt::Display, F: std::fmt::Display>(
    eal: &EalArgs,
    (kind, name): (&str, &str),
    find: impl FnOnce(&Secondary, &str) -> Result<T, E>,
    f: impl FnOnce(&Secondary, &T) -> Result<String, F>,
) -> CmdResult {
    let sec = attach(PROGRAM, eal)?;
    let object = find(&sec, name).map_err(|e| CliError::usage(format!("{kind} {name}: {e}")))?;
    let result = f(&sec, &object);
    drop(object);
    sec.detach();
    let line = result.map_err(CliError::failed)?;
    println!("{PROGRAM}: {line}");
    Ok(Exit::Ok)
}

/// Runs `f` on an allocator of pool `pool` and the ring `ring` (`mbuf-send`, `mbuf-recv`).
pub(crate) fn mbuf_ring_cmd(
    eal: &EalArgs,
    pool: &str,
    ring: &str,
    f: impl FnOnce(&shm_mempool::MbufCache, &shm_ring::Ring<u64>) -> Result<String, PoolToolError>,
) -> CmdResult {
    pool_cmd(eal, pool, |sec, p| {
        let r = sec.ring(ring).map_err(|source| PoolToolError::Ring {
            ring: ring.to_string(),
            source,
        })?;
        let cache = sec.allocator(pool, p)?;
        f(&cache, &r)
    })
}

/// Everything `stats` prints.
#[derive(Debug, serde::Serialize)]
pub(crate) struct AllStats {
    pub(crate) ports: Vec<shm::stats::PortStats>,
    pub(crate) pools: Vec<shm::stats::PoolStats>,
}

/// `stats [--json]`: every port's and pool's statistics, as the primary reports them.
pub(crate) fn stats(eal: &EalArgs, json: bool) -> CmdResult {
    let sec = attach(PROGRAM, eal)?;
    let result = sec.port_stats().and_then(|ports| {
        Ok(AllStats {
            ports,
            pools: sec.pool_stats()?,
        })
    });
    sec.detach();
    let stats = result
        .map_err(|e| CliError::failed(format!("cannot get statistics from the primary: {e}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("serialisable")
        );
    } else {
        shmdp_app::pooltool::print_port_stats(&stats.ports);
        shmdp_app::pooltool::print_stats(&stats.pools);
    }
    Ok(Exit::Ok)
}

/// `mbuf-hold`: holds `count` mbufs of each pool until a signal (frees them) or the
/// primary goes away ([`Exit::PrimaryGone`]).
pub(crate) fn mbuf_hold(eal: &EalArgs, names: &[String], count: u32) -> CmdResult {
    let mut signals = signals()?;
    let sec = attach(PROGRAM, eal)?;
    let mut pools = Vec::with_capacity(names.len());
    for name in names {
        let pool = sec
            .mbuf_pool(name)
            .map_err(|e| CliError::usage(format!("mempool {name}: {e}")))?;
        pools.push(pool);
    }
    let watch = watch(&sec)?;
    let mut caches = Vec::with_capacity(pools.len());
    for (name, pool) in names.iter().zip(&pools) {
        caches.push(sec.allocator(name, pool).map_err(CliError::failed)?);
    }
    let mut held = Vec::with_capacity(count as usize * caches.len());
    for cache in &caches {
        let mut some = Vec::with_capacity(count as usize);
        cache
            .alloc_bulk(&mut some, count as usize)
            .map_err(CliError::failed)?;
        held.append(&mut some);
    }
    for (i, m) in held.iter_mut().enumerate() {
        m.append(8)
            .expect("a fresh mbuf has room")
            .copy_from_slice(&(i as u64).to_le_bytes());
    }
    println!(
        "{PROGRAM}: holding {count} mbufs from {} (slot {}, pid {})",
        names.join(", "),
        sec.slot(),
        std::process::id()
    );
    loop {
        if signals.pending().next().is_some() {
            drop(held);
            drop(caches);
            sec.detach();
            println!("{PROGRAM}: freed {count} mbufs and detached");
            return Ok(Exit::Ok);
        }
        if watch.wait(Duration::from_millis(100)).is_some() {
            eprintln!("{PROGRAM}: the primary went away; detaching");
            std::mem::forget(held);
            return Ok(Exit::PrimaryGone);
        }
    }
}

/// `info [--json]`: what this secondary attached to.
pub(crate) fn info(eal: &EalArgs, json: bool) -> CmdResult {
    let sec = attach(PROGRAM, eal)?;
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
    Ok(Exit::Ok)
}
