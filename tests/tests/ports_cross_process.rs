//! Ports across real processes: a pcap file forwarded by a secondary into another pcap file,
//! byte for byte (checked with tshark and with our reader); 10^6 packets through ring ports
//! by three secondaries with exact accounting; a second poller of a queue refused; a
//! forwarder killed mid-stream replaced by another, with the pool full at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use pmds::pcap_file::{self, PcapWriter};
use serde_json::Value;
use tests::*;

fn primary(prefix: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-m", "64"];
    args.extend_from_slice(extra);
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut p = Proc::primary(prefix, &args);
    assert!(
        p.wait_stdout("ready:", Duration::from_secs(10)),
        "{:?}",
        p.stderr()
    );
    p
}

fn tmp(prefix: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{name}"))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("stats json")).expect("valid json")
}

fn port(report: &Value, id: u64) -> &Value {
    report["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no port {id} in {report}"))
}

fn pool_available(prefix: &str) -> u64 {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "stats", "--json"],
    );
    assert_eq!(code, 0, "{out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["pools"][0]["available"].as_u64().unwrap()
}

fn records(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let (mut fmt, mut pos) = pcap_file::open(&data).unwrap();
    let mut out = Vec::new();
    while let Some((r, next)) = pcap_file::next_record(&data, pos, &mut fmt).unwrap() {
        out.push(r.data.to_vec());
        pos = next;
    }
    out
}

#[test]
fn pcap_in_secondary_forwards_pcap_out_byte_identical() {
    let prefix = unique_prefix("pcapfw");
    let have_tshark = std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let tshark_ok = require(
        "tshark",
        have_tshark,
        "apt-get install tshark (scripts/setup.sh does)",
    );
    let input = tmp(&prefix, "in.pcap");
    let output = tmp(&prefix, "out.pcap");
    // 3000 frames of 60..1514 bytes plus some 4000-byte ones (chained across mbufs).
    let frames: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            let len = if i % 100 == 7 {
                4000
            } else {
                60 + (i * 53) as usize % 1455
            };
            (0..len)
                .map(|b| (b as u32 ^ i.wrapping_mul(2654435761)) as u8)
                .collect()
        })
        .collect();
    let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(i as u64 * 1_000, f.len(), [&f[..]]).unwrap();
    }
    drop(w);
    let rx = format!("net_pcap0,rx_pcap={}", input.display());
    let tx = format!("net_pcap1,tx_pcap={}", output.display());
    let mut p = primary(&prefix, &["--vdev", &rx, "--vdev", &tx]);
    let stats = tmp(&prefix, "fwd.json");
    let stats_s = stats.display().to_string();
    let mut f = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--idle-exit",
            "0.5",
            "--stats-json",
            &stats_s,
        ],
    );
    let (code, out, err) = finish(&mut f, 60);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("every packet accounted for"), "{out}");
    let r = json(&stats);
    assert_eq!(port(&r, 0)["rx_packets"], 3000, "{r}");
    assert_eq!(port(&r, 0)["forwarded"], 3000, "{r}");
    assert_eq!(port(&r, 1)["tx_packets"], 3000, "{r}");
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(port(&r, 1)["tx_bytes"], bytes, "{r}");
    assert_eq!(
        records(&output),
        frames,
        "output pcap differs from the input"
    );
    if tshark_ok {
        let out = std::process::Command::new("tshark")
            .args([
                "-r",
                &output.display().to_string(),
                "-T",
                "fields",
                "-e",
                "frame.len",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark failed: {out:?}");
        let lens: Vec<usize> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(lens, frames.iter().map(Vec::len).collect::<Vec<_>>());
    }
    assert_eq!(pool_available(&prefix), 8191, "the pool is full again");
    p.signal(Signal::SIGINT);
    p.wait_exit(Duration::from_secs(10));
    for f in [&input, &output, &stats] {
        let _ = std::fs::remove_file(f);
    }
}

/// Ports: 0 rx from ring `in`, 1 tx to ring `out`, 2 tx to ring `in`, 3 rx from `out`.
fn ring_chain(prefix: &str) -> Proc {
    primary(
        prefix,
        &[
            "--ring",
            "in=1024",
            "--ring",
            "out=1024",
            "--vdev",
            "net_ring0,rx_ring=in",
            "--vdev",
            "net_ring1,tx_ring=out",
            "--vdev",
            "net_ring2,tx_ring=in",
            "--vdev",
            "net_ring3,rx_ring=out",
        ],
    )
}

#[test]
fn a_million_packets_through_ring_ports_are_all_accounted_for() {
    let prefix = unique_prefix("ring1m");
    let _p = ring_chain(&prefix);
    let j = |n: &str| tmp(&prefix, n).display().to_string();
    let (ja, jb, jc) = (j("a.json"), j("b.json"), j("c.json"));
    let mut sink = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "rxonly",
            "--portlist",
            "3",
            "--idle-exit",
            "2",
            "--stats-json",
            &jc,
        ],
    );
    let mut mid = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--portlist",
            "0,1",
            "--idle-exit",
            "2",
            "--stats-json",
            &jb,
        ],
    );
    assert!(sink.wait_stdout("forwarding:", Duration::from_secs(10)));
    assert!(mid.wait_stdout("forwarding:", Duration::from_secs(10)));
    let mut src = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "txonly",
            "--portlist",
            "2",
            "--tx-count",
            "1000000",
            "--stats-json",
            &ja,
        ],
    );
    for p in [&mut src, &mut mid, &mut sink] {
        let (code, out, err) = finish(p, 300);
        assert_eq!(code, 0, "{out} {err}");
    }
    let (a, b, c) = (
        json(j("a.json").as_ref()),
        json(j("b.json").as_ref()),
        json(j("c.json").as_ref()),
    );
    let sent = port(&a, 2)["tx_packets"].as_u64().unwrap();
    let refused = port(&a, 2)["tx_dropped"].as_u64().unwrap();
    assert_eq!(sent + refused, 1_000_000, "{a}");
    assert_eq!(port(&b, 0)["rx_packets"].as_u64().unwrap(), sent, "{b}");
    let forwarded = port(&b, 0)["forwarded"].as_u64().unwrap();
    assert_eq!(
        forwarded + port(&b, 0)["drops"]["tx_full"].as_u64().unwrap(),
        sent,
        "{b}"
    );
    assert_eq!(
        port(&c, 3)["rx_packets"].as_u64().unwrap(),
        forwarded,
        "{c}"
    );
    assert!(sent > 0 && forwarded > 0);
    assert_eq!(pool_available(&prefix), 8191, "the pool is full again");
}

#[test]
fn a_queue_has_one_poller_and_a_killed_forwarder_is_replaced() {
    let prefix = unique_prefix("claims");
    let mut p = ring_chain(&prefix);
    let mut mid = secondary(&prefix, &["fwd", "--fwd", "io", "--portlist", "0,1"]);
    assert!(mid.wait_stdout("forwarding:", Duration::from_secs(10)));
    // A second forwarder on the same queues is refused, clearly.
    let mut dup = secondary(&prefix, &["fwd", "--fwd", "io", "--portlist", "0,1"]);
    let (code, _out, err) = finish(&mut dup, 20);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is polled by pid"), "{err}");
    // Traffic, then the forwarder dies mid-stream.
    let mut src = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "txonly",
            "--portlist",
            "2",
            "--tx-count",
            "300000",
        ],
    );
    let mut sink = secondary(&prefix, &["fwd", "--fwd", "rxonly", "--portlist", "3"]);
    std::thread::sleep(Duration::from_millis(300));
    mid.signal(Signal::SIGKILL);
    let _ = mid.wait_exit(Duration::from_secs(5));
    let (code, out, err) = finish(&mut src, 120);
    assert_eq!(code, 0, "{out} {err}");
    // A new forwarder takes the dead one's queues over and drains the rest.
    let mut mid2 = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--portlist",
            "0,1",
            "--idle-exit",
            "1",
        ],
    );
    let (code, out, err) = finish(&mut mid2, 120);
    assert_eq!(code, 0, "{out} {err}");
    sink.signal(Signal::SIGINT);
    let (code, out, err) = finish(&mut sink, 30);
    assert_eq!(code, 0, "{out} {err}");
    // What the killed forwarder held comes back: its cache, the mbufs tagged with its
    // slot, and the bursts it had in flight between rings (listed in the queues'
    // in-flight records, freed by the next poller). Still open: a kill between an mbuf's
    // "free" mark and its cache entry (a few instructions) loses that one buffer.
    assert!(
        wait_until(Duration::from_secs(5), || pool_available(&prefix) >= 8190),
        "pool not full: {} ({:?})",
        pool_available(&prefix),
        p.stderr()
    );
    p.signal(Signal::SIGINT);
    p.wait_exit(Duration::from_secs(10));
}

#[test]
fn dump_prints_the_first_packets_of_a_queue() {
    let prefix = unique_prefix("dump");
    let input = tmp(&prefix, "dump.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
    for i in 0..5u8 {
        let mut f = vec![
            2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x81, 0, 0, 7, 0x08, 0,
        ];
        f.extend([i; 46]);
        w.write(0, f.len(), [&f[..]]).unwrap();
    }
    drop(w);
    let rx = format!("net_pcap0,rx_pcap={}", input.display());
    let mut p = primary(&prefix, &["--vdev", &rx]);
    let (code, out, err) = run(
        "shmdp-secondary",
        &[
            "--file-prefix",
            &prefix,
            "dump",
            "--port",
            "0",
            "--count",
            "3",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("port 0/0 #"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[2]
            .contains("src=02:00:00:00:00:0a dst=02:00:00:00:00:0b vlan=7 type=0x0800 length=64"),
        "{out}"
    );
    assert!(
        lines[2].ends_with("data=02020202020202020202020202020202"),
        "{out}"
    );
    p.signal(Signal::SIGINT);
    p.wait_exit(Duration::from_secs(10));
    let _ = std::fs::remove_file(input);
}
