//! A guest rewriting the indices of its own rings cannot freeze the host lcore that serves
//! it. One host forwarding thread serves a loopback pair of ring ports (0 <-> 1, the
//! measured ports) and a guest-facing port (2, exported to group vm1) whose traffic goes
//! round through a "guest" process. Then a scribbler (`shmdp-secondary ivshmem --dev FILE
//! scribble --indices SECS`, mapping the segment file as a guest maps BAR2) keeps
//! rewriting the heads and tails of the port's g2h/h2g rings and of the guest pool's free
//! ring, mostly as reservations that are never published. The measured ports keep at least a third of the rate they
//! had just before, the primary survives, and the guest port counts the damage.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::*;

fn stats(prefix: &str) -> Value {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "stats", "--json"],
    );
    assert_eq!(code, 0, "stats: {err}");
    serde_json::from_str(&out).unwrap()
}

fn port_rx(prefix: &str, port: usize) -> u64 {
    stats(prefix)["ports"][port]["rx_packets"].as_u64().unwrap()
}

/// Packets per second port `port` receives, over `secs`.
fn rate(prefix: &str, port: usize, secs: f64) -> f64 {
    let (a, t) = (port_rx(prefix, port), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    (port_rx(prefix, port) - a) as f64 / t.elapsed().as_secs_f64()
}

#[test]
fn a_guest_rewriting_its_ring_indices_does_not_slow_the_other_ports_on_its_lcore() {
    let prefix = unique_prefix("hostrings");
    let mut args = vec![
        "-m",
        "64",
        "--memseg",
        "vm1=16",
        "--ivshmem",
        "vm1:port=net_ring2",
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_ring1",
        "--vdev",
        "net_ring2",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut p = Proc::primary(&prefix, &args);
    let file: PathBuf =
        std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).expect("segment link");
    let file_s = file.display().to_string();
    // The guest: macswap on its end of port 2, so what the host sends comes back.
    let guest = Proc::spawn(
        "shmdp-secondary",
        &["--ivshmem", &file_s, "fwd", "--fwd", "macswap"],
        None,
    );
    // One host lcore: 0 <-> 1 on loopback rings, 2 -> 2 through the guest.
    let mut fwd = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--portlist",
            "0,1,2",
            "--tx-first",
            "--duration",
            "30",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || port_rx(&prefix, 0) > 100_000),
        "the loopback pair does not forward: {:?}",
        fwd.stderr()
    );
    let before = rate(&prefix, 0, 1.0);
    let guest_rate = rate(&prefix, 2, 0.5);
    eprintln!("guest port: {guest_rate:.0} packets/s before");
    assert!(before > 10_000.0, "{before} packets/s before");

    // The scribbler: a process mapping the segment file as a guest maps BAR2, rewriting
    // ring indices with plain stores. First the free ring only (the guest's echo goes
    // on, so the host keeps taking and giving buffers there), then every ring, with
    // impossible tails now and then.
    for (phase, extra) in [
        ("the free ring", "--pools-only"),
        ("every ring, tails too", "--tails"),
    ] {
        let mut a = vec!["ivshmem", "--dev", &file_s, "scribble", "--indices", "3"];
        a.push(extra);
        let mut scribbler = Proc::spawn("shmdp-secondary", &a, None);
        std::thread::sleep(Duration::from_millis(300));
        let during = rate(&prefix, 0, 2.0);
        let (code, out, err) = finish(&mut scribbler, 30);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains("rewrote"), "{out}");
        eprintln!(
            "port 0: {before:.0} packets/s before, {during:.0} while the guest scribbles on {phase}"
        );
        assert!(
            during * 3.0 >= before,
            "the lcore lost its other ports ({phase}): {before:.0} -> {during:.0} packets/s"
        );
    }
    // The host survived and counted what the guest did to its port.
    assert!(p.try_status().is_none(), "primary died: {:?}", p.stderr());
    assert!(
        fwd.try_status().is_none(),
        "forwarder died: {:?}",
        fwd.stderr()
    );
    let v = stats(&prefix);
    let g = &v["ports"][2];
    assert!(
        g["errors"].as_u64().unwrap() > 0,
        "corruption not counted: {g}"
    );
    // (Stopping a --tx-first loopback forwarder by signal is another issue's part: the
    // processes are killed when dropped.)
    drop(fwd);
    drop(guest);
}
