//! IVSHMEM export segments without a VM: the primary exports a group, `shmdp-qemu-cmdgen`
//! prints the QEMU arguments for its file, and a host process that maps the same file the
//! way a guest maps BAR2 (`shmdp-secondary ivshmem --dev FILE`) echoes 10^5 numbered packets
//! that a normal secondary sends and checks. A corrupted metadata block is refused clearly.

use std::path::PathBuf;

use serde_json::Value;
use tests::*;

fn segment(prefix: &str) -> PathBuf {
    std::fs::read_link(runtime_dir(prefix).join("vm1.seg")).expect("segment link")
}

#[test]
fn cmdgen_prints_the_devices_and_refuses_clearly() {
    let prefix = unique_prefix("cmdgen");
    let (code, _, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert_eq!(code, 2);
    assert!(err.contains("no primary is running"), "{err}");
    let _p = export_primary(&prefix, &[]);
    let file = segment(&prefix);
    let (code, out, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "-object memory-backend-file,id=shmdp-vm1,mem-path={},size=8388608,share=on -device ivshmem-plain,memdev=shmdp-vm1,addr=0x10",
            file.display()
        )
    );
    let (code, out, _) = run(
        "shmdp-qemu-cmdgen",
        &["--file-prefix", &prefix, "--format", "json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(4));
    let (code, _, err) = run(
        "shmdp-qemu-cmdgen",
        &["--file-prefix", &prefix, "--group", "vm9"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("\"vm9\" is not exported") && err.contains("vm1"),
        "{err}"
    );
}

#[test]
fn a_host_process_mapping_the_segment_echoes_1e5_packets() {
    let prefix = unique_prefix("ivecho");
    let _p = export_primary(&prefix, &[]);
    let file = segment(&prefix).display().to_string();
    let (code, out, err) = run(
        "shmdp-secondary",
        &["ivshmem", "--dev", &file, "info", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["group"], "vm1");
    assert_eq!(info["entries"].as_array().map(Vec::len), Some(3));
    let mut guest = Proc::spawn(
        "shmdp-secondary",
        &[
            "ivshmem", "--dev", &file, "echo", "--pool", "vm1_pool", "--rx", "vm1_rx", "--tx",
            "vm1_tx", "--count", "100000",
        ],
        None,
    );
    let mut recv = secondary(
        &prefix,
        &[
            "mbuf-recv",
            "vm1_pool@vm1",
            "vm1_tx@vm1",
            "--count",
            "100000",
        ],
    );
    let mut send = secondary(
        &prefix,
        &[
            "mbuf-send",
            "vm1_pool@vm1",
            "vm1_rx@vm1",
            "--count",
            "100000",
        ],
    );
    for p in [&mut send, &mut guest, &mut recv] {
        let (code, out, err) = finish(p, 120);
        assert_eq!(code, 0, "{out} {err}");
    }
    assert!(recv
        .stdout()
        .join("\n")
        .contains("received 100000 packets from vm1_tx@vm1, payloads ok"));
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pools"][0]["available"], 2047, "{v}");
}

#[test]
fn a_segment_with_corrupt_metadata_is_refused() {
    let prefix = unique_prefix("ivbad");
    let _p = export_primary(&prefix, &[]);
    let file = segment(&prefix);
    // Map it as any process of the group can (hugetlbfs has no write(2)) and flip a byte
    // inside the first entry's name: the checksum no longer matches.
    let seg = shm::Memseg::attach(&file).unwrap();
    let at = ivshmem_meta::META_OFFSET + 64 + 2;
    let b: u8 = seg.region().read_copy(at).unwrap();
    seg.region().write(at, &(b ^ 0x20)).unwrap();
    let (code, out, err) = run(
        "shmdp-secondary",
        &["ivshmem", "--dev", &file.display().to_string(), "info"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("checksum") && err.contains("corrupt"), "{err}");
    // qemu-cmdgen no longer sees an export there.
    let (code, _, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert_eq!(code, 2);
    assert!(err.contains("exports no group"), "{err}");
}

#[test]
fn guest_side_gen_dump_and_stats_work_on_the_segment_alone() {
    let prefix = unique_prefix("ivtools");
    let _p = export_primary(&prefix, &[]);
    let file = segment(&prefix).display().to_string();
    let iv = |args: &[&str]| {
        let mut a = vec!["ivshmem", "--dev", file.as_str()];
        a.extend_from_slice(args);
        run("shmdp-secondary", &a)
    };
    let (code, out, err) = iv(&[
        "gen", "--pool", "vm1_pool", "--tx", "vm1_rx", "--count", "5", "--size", "60",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = iv(&[
        "dump", "--pool", "vm1_pool", "--rx", "vm1_rx", "--count", "5",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ring vm1_rx #"))
        .collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].contains("length=60"), "{out}");
    let (code, out, err) = iv(&["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pools"][0]["name"], "vm1_pool");
    assert_eq!(v["pools"][0]["available"], 2047, "{v}");
    assert_eq!(v["ports"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn export_groups_can_come_from_the_toml_config() {
    let prefix = unique_prefix("ivtoml");
    let cfg = std::env::temp_dir().join(format!("{prefix}.toml"));
    std::fs::write(
        &cfg,
        "[[ivshmem]]\ngroup = \"vm1\"\nring = [\"vm1_rx\", \"vm1_tx\"]\npool = [\"vm1_pool\"]\nport = [\"net_ring0\"]\n",
    )
    .unwrap();
    let c = cfg.display().to_string();
    let mut args = vec![
        "-m",
        "32",
        "--memseg",
        "vm1=16",
        "--vdev",
        "net_ring0,nb_desc=256",
        "--ring",
        "vm1_rx=1024@vm1",
        "--ring",
        "vm1_tx=1024@vm1",
        "--mempool",
        "vm1_pool=2047:0@vm1",
        "--config",
        &c,
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let _p = Proc::primary(&prefix, &args);
    let (code, out, err) = run(
        "shmdp-secondary",
        &[
            "ivshmem",
            "--dev",
            &segment(&prefix).display().to_string(),
            "info",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    // Three named objects, the port, and the port's two rings and pool.
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(7), "{v}");
    assert_eq!(v["entries"][3]["kind"], "port", "{v}");
    // A bad group in the file is one clear line at start.
    std::fs::write(&cfg, "[[ivshmem]]\ngroup = \"vm9\"\nring = [\"x\"]\n").unwrap();
    let p2 = unique_prefix("ivtoml2");
    let (code, _, err) = run(
        "shmdp-primary",
        &["--file-prefix", &p2, "--no-huge", "--config", &c],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no memseg named vm9"), "{err}");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn a_guest_facing_port_copies_packets_across_the_boundary() {
    let prefix = unique_prefix("ivport");
    let input = std::env::temp_dir().join(format!("{prefix}-in.pcap"));
    let output = std::env::temp_dir().join(format!("{prefix}-out.pcap"));
    let frames: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            (0..(60 + i as usize % 1400))
                .map(|b| (b as u32 ^ i) as u8)
                .collect()
        })
        .collect();
    write_pcap(&input, &frames);
    let pcap = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let mut args = vec![
        "-m",
        "64",
        // Rings that hold every frame: the host forwarder reads the pcap faster than the
        // "guest" echoes, and io forwarding drops what does not fit (as testpmd's).
        "--memseg",
        "vm1=32",
        "--ring",
        "vm1_rx=4096@vm1",
        "--ring",
        "vm1_tx=4096@vm1",
        "--mempool",
        "vm1_pool=4095:0@vm1",
        "--ivshmem",
        "vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool",
        "--vdev",
        &pcap,
        "--vdev",
        "net_ring1,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let _p = Proc::primary(&prefix, &args);
    let file = segment(&prefix).display().to_string();
    // The "guest" echoes whatever the host port sends it.
    let mut guest = Proc::spawn(
        "shmdp-secondary",
        &[
            "ivshmem", "--dev", &file, "echo", "--pool", "vm1_pool", "--rx", "vm1_rx", "--tx",
            "vm1_tx", "--count", "2000",
        ],
        None,
    );
    let mut fwd = secondary(
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
    let (code, out, err) = finish(&mut guest, 60);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = finish(&mut fwd, 60);
    assert_eq!(code, 0, "{out} {err}");
    let back = read_pcap(&output);
    assert_eq!(
        back, frames,
        "every frame went to the guest and back, in order"
    );
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    for p in v["pools"].as_array().unwrap() {
        assert_eq!(p["available"], p["count"], "{p}");
    }
    assert_eq!(v["ports"][1]["errors"], 0, "{v}");
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}

#[test]
fn an_exported_port_is_a_port_in_the_guest_and_fwd_runs_there() {
    let prefix = unique_prefix("ivxport");
    let input = std::env::temp_dir().join(format!("{prefix}-in.pcap"));
    let output = std::env::temp_dir().join(format!("{prefix}-out.pcap"));
    // Fewer frames than the port's rings hold: the host forwarder drops nothing even
    // when the guest is slow to start.
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            (0..(60 + i as usize % 1000))
                .map(|b| (b as u32 ^ i) as u8)
                .collect()
        })
        .collect();
    write_pcap(&input, &frames);
    let pcap = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    // Only the port is named: the export makes its rings and the guest's pool.
    let mut args = vec![
        "-m",
        "64",
        "--memseg",
        "vm1=16",
        "--ivshmem",
        "vm1:port=net_ring1",
        "--vdev",
        &pcap,
        "--vdev",
        "net_ring1",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let _p = Proc::primary(&prefix, &args);
    let file = segment(&prefix).display().to_string();
    let (code, out, err) = run(
        "shmdp-secondary",
        &["ivshmem", "--dev", &file, "info", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<(&str, &str)> = info["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("port", "net_ring1"),
            ("ring", "net_ring1_g2h0"),
            ("ring", "net_ring1_h2g0"),
            ("mempool", "net_ring1_pool")
        ]
    );
    // The "guest" forwards on its end of the port with the ordinary engine (macswap on
    // one port: back where it came from); the host forwards pcap <-> port 1.
    // (`--ivshmem DEV fwd` is `ivshmem --dev DEV fwd`: the host command, on the segment.)
    let mut guest = Proc::spawn(
        "shmdp-secondary",
        &[
            "--ivshmem",
            &file,
            "fwd",
            "--fwd",
            "macswap",
            "--idle-exit",
            "3",
        ],
        None,
    );
    let mut host = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "io",
            "--portlist",
            "0,1",
            "--idle-exit",
            "3",
        ],
    );
    let (code, hout, err) = finish(&mut host, 60);
    assert_eq!(code, 0, "{hout} {err}");
    let (code, gout, err) = finish(&mut guest, 60);
    assert_eq!(code, 0, "{gout} {err}");
    assert!(gout.contains("mode macswap ports 1=net_ring1"), "{gout}");
    assert!(gout.contains("every packet accounted for"), "{gout}");
    let back = read_pcap(&output);
    assert_eq!(back.len(), frames.len(), "every frame came back");
    for (got, sent) in back.iter().zip(&frames) {
        assert_eq!(&got[..6], &sent[6..12], "macswap swapped the addresses");
        assert_eq!(&got[6..12], &sent[..6]);
        assert_eq!(&got[12..], &sent[12..], "payload intact");
    }
    // Host and guest each account for their own end; every buffer is home.
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["ports"].as_array().map(Vec::len),
        Some(2),
        "host sees host ports only"
    );
    assert_eq!(v["ports"][1]["tx_packets"], 1000, "{v}");
    assert_eq!(v["ports"][1]["rx_packets"], 1000, "{v}");
    for p in v["pools"].as_array().unwrap() {
        assert_eq!(p["available"], p["count"], "{p}");
    }
    let (code, out, err) = run(
        "shmdp-secondary",
        &["ivshmem", "--dev", &file, "stats", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["ports"][0]["name"], "net_ring1");
    let (code, _, err) = run(
        "shmdp-secondary",
        &["--ivshmem", &file, "ring-fill", "x", "--count", "1"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("ring-fill needs a primary"), "{err}");
    assert_eq!(g["ports"][0]["rx_packets"], 1000, "{g}");
    assert_eq!(g["ports"][0]["tx_packets"], 1000, "{g}");
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}

#[test]
fn exporting_a_port_refuses_what_cannot_be_exported() {
    let prefix = unique_prefix("ivxbad");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--memseg", "vm1=16", "--ivshmem", "vm1:port=net_ring1"],
            "port net_ring1 is not probed; add --vdev net_ring1",
        ),
        (
            &[
                "--memseg",
                "vm1=16",
                "--ivshmem",
                "vm1:port=net_pcap0",
                "--vdev",
                "net_pcap0,rx_pcap=/dev/null",
            ],
            "only net_ring ports can be exported",
        ),
        (
            &[
                "--memseg",
                "vm1=2",
                "--ivshmem",
                "vm1:port=net_ring0",
                "--vdev",
                "net_ring0",
            ],
            "grow it (--memseg vm1=MiB)",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--file-prefix", &prefix, "-m", "64", "--no-huge"];
        args.extend_from_slice(extra);
        let (code, _, err) = run("shmdp-primary", &args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!runtime_dir(&prefix).exists(), "nothing left behind");
    }
}
