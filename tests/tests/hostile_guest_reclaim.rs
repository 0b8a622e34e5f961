//! A guest wrecking its own pool's free ring cannot stall the primary's reclaim of a dead
//! secondary. A secondary holds buffers of the export group's pool (`vm1_pool@vm1`,
//! guest-writable) and of a host pool, and is killed while a "guest" (a thread mapping the
//! segment file as a guest maps BAR2) keeps rewriting the export pool's free ring head as
//! a reservation it never publishes. The trusted reclaim would push through the
//! multi-producer and wait out its 10 s stall timeout there; the primary
//! reclaims guest-writable pools through the bounded guest-facing path instead: the host
//! pool's buffers are all home within a second, and `info` keeps answering meanwhile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use shm::Memseg;
use shm_mempool::layout::PoolInfo;
use shm_ring::layout::PROD_OFF;
use tests::*;

/// Within a ring side: the head at 0, the tail one 128-byte pair of lines later.
const TAIL: u64 = 128;

/// The "guest": until `stop`, keeps the producer head of `pool`'s free ring in the export
/// segment `file` a few entries past its tail (a reservation never published), with
/// plain stores as a guest's would be. Counts its writes in `writes`.
fn hold_up_free_ring(file: &std::path::Path, pool: &str, stop: &AtomicBool, writes: &AtomicU64) {
    let seg = Memseg::attach(file).expect("map the export segment");
    let zone = seg.lookup(pool).expect("the guest pool");
    let info: PoolInfo = seg.region().read_copy(zone.offset).expect("pool info");
    let head = zone.offset + info.ring_off + PROD_OFF;
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let tail: u32 = seg.region().read_copy(head + TAIL).unwrap_or(0);
        k = k.wrapping_add(1);
        if seg
            .region()
            .write(head, &tail.wrapping_add(1 + k % 8))
            .is_ok()
        {
            writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn pool_stats(prefix: &str, pool: &str) -> Value {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "stats", "--json"],
    );
    assert_eq!(code, 0, "stats: {out} {err}");
    let all: Value = serde_json::from_str(&out).expect("stats JSON");
    all["pools"]
        .as_array()
        .expect("a list of pools")
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {out}"))
        .clone()
}

/// How long one `shmdp-secondary info` takes to answer.
fn info_time(prefix: &str) -> Duration {
    let t0 = Instant::now();
    let (code, out, err) = run("shmdp-secondary", &["--file-prefix", prefix, "info"]);
    assert_eq!(code, 0, "info: {out} {err}");
    t0.elapsed()
}

#[test]
fn a_guest_wrecking_its_free_ring_does_not_stall_the_reclaim_of_a_dead_secondary() {
    let prefix = unique_prefix("hostreclaim");
    let mut p = export_primary(&prefix, &["--mempool", "host=4096:256"]);
    let file: PathBuf =
        std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).expect("segment link");
    let mut holder = secondary(
        &prefix,
        &["mbuf-hold", "vm1_pool@vm1", "host", "--count", "500"],
    );
    assert!(
        holder.wait_stdout("holding 500 mbufs", Duration::from_secs(10)),
        "{:?} {:?}",
        holder.stdout(),
        holder.stderr()
    );
    let s = pool_stats(&prefix, "host");
    assert_eq!(s["in_use"], 500, "{s}");
    // No cache slot in the guest-writable pool: the primary never flushes one there.
    let g = pool_stats(&prefix, "vm1_pool");
    assert_eq!(g["caches"].as_array().map(Vec::len), Some(0), "{g}");

    let (stop, writes) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|sc| {
        sc.spawn(|| hold_up_free_ring(&file, "vm1_pool", &stop, &writes));
        while writes.load(Ordering::Relaxed) < 1000 {
            std::thread::yield_now();
        }
        // The guest stops whatever the checks say, so the scope can end.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kill_and_time_reclaim(&prefix, &mut holder)
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = checked {
            std::panic::resume_unwind(e);
        }
    });
    eprintln!(
        "the guest rewrote the free ring head {} times",
        writes.into_inner()
    );
    check_after(&prefix, &mut p);
}

/// Kills `holder` and checks the primary has its host-pool buffers home within a second,
/// `info` answering quickly meanwhile.
fn kill_and_time_reclaim(prefix: &str, holder: &mut Proc) {
    let t0 = Instant::now();
    holder.signal(Signal::SIGKILL);
    // `info` keeps answering while the primary reclaims.
    let mut slowest = Duration::ZERO;
    let home = wait_until(Duration::from_secs(3), || {
        slowest = slowest.max(info_time(prefix));
        pool_stats(prefix, "host")["available"] == 4096
    });
    let took = t0.elapsed();
    eprintln!("host pool home {took:?} after the kill; slowest info {slowest:?}");
    assert!(home, "host pool not home: {}", pool_stats(prefix, "host"));
    assert!(
        took < Duration::from_secs(1),
        "reclaim took {took:?} (the guest stalled it)"
    );
    assert!(slowest < Duration::from_secs(1), "info took {slowest:?}");
}

/// After the reclaim: the host pool whole, the guest pool's reclaim logged, the primary up.
fn check_after(prefix: &str, p: &mut Proc) {
    let s = pool_stats(prefix, "host");
    assert_eq!(s["in_use"], 0, "{s}");
    assert_eq!(s["reclaimed"], 500, "{s}");
    assert_eq!(s["caches"].as_array().map(Vec::len), Some(0), "{s}");
    // The guest pool: every buffer the dead secondary held is free again (on the free ring
    // or, where the guest's wrecked ring refused it, counted as lost).
    assert!(
        wait_until(Duration::from_secs(2), || p
            .stderr()
            .iter()
            .any(|l| l.contains("guest-writable pool vm1_pool"))),
        "{:?}",
        p.stderr()
    );
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "pool-audit", "host"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(p.try_status().is_none(), "primary died: {:?}", p.stderr());
}
