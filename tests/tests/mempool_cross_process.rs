//! Mempools across real processes: two different binaries (the secondary CLI and the
//! `mbuf_sink` example) share one primary's pool through a ring; a secondary holding 1000
//! mbufs is killed with SIGKILL and the primary gets every one back; two processes run
//! 10^7 get/put operations on one pool and the audit finds every object exactly once.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tests::*;

fn primary(prefix: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-m", "64"];
    args.extend_from_slice(extra);
    if !require_hugepages() {
        args.push("--no-huge");
    }
    Proc::primary(prefix, &args)
}

/// The named pool's statistics, from `shmdp-secondary stats --json`.
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

#[test]
fn two_binaries_share_one_pool_through_a_ring() {
    let prefix = unique_prefix("mp2bin");
    let _p = primary(
        &prefix,
        &["--mempool", "mbufs=4095:64", "--ring", "xfer=512:sp_mc"],
    );
    let mut sink = Proc::spawn(
        "examples/mbuf_sink",
        &["--file-prefix", &prefix, "mbufs", "xfer", "3000", "3000"],
        None,
    );
    assert!(sink.wait_stdout("waiting for 3000 packets", Duration::from_secs(10)));
    // 3000-byte packets: two segments each, so chains cross the process boundary too.
    let mut send = secondary(
        &prefix,
        &[
            "mbuf-send",
            "mbufs",
            "xfer",
            "--count",
            "3000",
            "--size",
            "3000",
        ],
    );
    let (code, out, err) = finish(&mut send, 60);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("sent 3000 packets of 3000 B"), "{out}");
    let (code, out, err) = finish(&mut sink, 60);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("received 3000 packets, payloads ok"), "{out}");
    let s = pool_stats(&prefix, "mbufs");
    assert_eq!(s["available"], 4095, "{s}");
    assert_eq!(s["in_use"], 0, "{s}");
    for counter in ["bad_handle", "double_free", "corrupt_header", "get_fail"] {
        assert_eq!(s[counter], 0, "{counter}: {s}");
    }
    assert_eq!(s["caches"].as_array().map(Vec::len), Some(0), "{s}");
}

#[test]
fn sigkilled_secondary_holding_1000_mbufs_is_reclaimed() {
    let prefix = unique_prefix("mpkill");
    let mut p = primary(&prefix, &["--mempool", "mbufs=4096:256"]);
    let mut holder = secondary(&prefix, &["mbuf-hold", "mbufs", "--count", "1000"]);
    assert!(
        holder.wait_stdout("holding 1000 mbufs from mbufs", Duration::from_secs(10)),
        "{:?} {:?}",
        holder.stdout(),
        holder.stderr()
    );
    let s = pool_stats(&prefix, "mbufs");
    assert_eq!(s["in_use"], 1000, "{s}");
    assert_eq!(s["caches"].as_array().map(Vec::len), Some(1), "{s}");
    holder.signal(Signal::SIGKILL);
    assert!(
        p.wait_stderr("reclaimed 1000 mbufs", Duration::from_secs(5)),
        "{:?}",
        p.stderr()
    );
    let s = pool_stats(&prefix, "mbufs");
    assert_eq!(s["available"], 4096, "{s}");
    assert_eq!(s["in_use"], 0, "{s}");
    assert_eq!(s["reclaimed"], 1000, "{s}");
    assert_eq!(s["caches"].as_array().map(Vec::len), Some(0), "{s}");
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "pool-audit", "mbufs"],
    );
    assert_eq!(code, 0, "{out} {err}");
}

#[test]
fn two_processes_ten_million_operations_lose_nothing() {
    let prefix = unique_prefix("mpstress");
    let _p = primary(&prefix, &["--mempool", "objs=8191:256:64"]);
    let mut a = secondary(
        &prefix,
        &["pool-stress", "objs", "--ops", "5000000", "--seed", "7"],
    );
    let mut b = secondary(
        &prefix,
        &["pool-stress", "objs", "--ops", "5000000", "--seed", "11"],
    );
    for p in [&mut a, &mut b] {
        let (code, out, err) = finish(p, 120);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains("pool-stress: 5000000 operations"), "{out}");
    }
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "pool-audit", "objs"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("\"free\":8191") && out.contains("\"duplicates\":0"),
        "{out}"
    );
    let s = pool_stats(&prefix, "objs");
    assert_eq!(s["available"], 8191, "{s}");
    assert_eq!(s["bad_handle"], 0, "{s}");
    assert_eq!(s["put_fail"], 0, "{s}");
}

/// The bench mode of `mbuf-send` / `mbuf-recv` (`bench/xproc-vs-dpdk.sh`): bursts through
/// an SP/SC ring, sequence-only and whole-payload checks, a count that is not a multiple
/// of the burst; every buffer back in the pool at the end. Both counts are above the
/// ring's capacity, so the sender cannot finish (and leave, its last packets still queued)
/// before the receiver has attached: packets a sender leaves queued with no consumer are
/// dropped when the primary reclaims it (see the ring port's `SpTx::release`).
#[test]
fn burst_mode_send_and_recv_across_processes() {
    let prefix = unique_prefix("mpburst");
    let _p = primary(
        &prefix,
        &["--mempool", "mbufs=8191:512", "--ring", "xfer=1024:sp_sc"],
    );
    for (count, size, burst, seq_only) in
        [("100000", "64", "32", true), ("3001", "200", "7", false)]
    {
        let mut args = vec![
            "mbufs",
            "xfer",
            "--count",
            count,
            "--size",
            size,
            "--burst",
            burst,
            "--timeout",
            "20",
        ];
        if seq_only {
            args.push("--seq-only");
        }
        let mut recv = secondary(&prefix, &[&["mbuf-recv"], &args[..]].concat());
        let mut send = secondary(&prefix, &[&["mbuf-send"], &args[..]].concat());
        let (code, out, err) = finish(&mut send, 60);
        assert_eq!(code, 0, "{out} {err}");
        assert!(
            out.contains(&format!(
                "sent {count} packets of {size} B from mbufs into xfer in bursts of {burst}"
            )),
            "{out}"
        );
        let (code, out, err) = finish(&mut recv, 60);
        assert_eq!(code, 0, "{out} {err}");
        let what = if seq_only { "sequence" } else { "payloads" };
        assert!(
            out.contains(&format!(
                "received {count} packets from xfer in bursts of {burst}, {what} ok"
            )),
            "{out}"
        );
    }
    let s = pool_stats(&prefix, "mbufs");
    assert_eq!(s["available"], 8191, "{s}");
    for counter in ["bad_handle", "double_free", "corrupt_header"] {
        assert_eq!(s[counter], 0, "{counter}: {s}");
    }
}
