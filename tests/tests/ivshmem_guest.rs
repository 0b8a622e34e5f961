//! IVSHMEM proven in a real guest (QEMU, TCG): the primary exports a group, the arguments
//! `shmdp-qemu-cmdgen --format json` prints start QEMU verbatim, and inside the guest
//! `shmdp-secondary ivshmem --dev auto` finds the device (1af4:1110), maps BAR2, validates
//! the metadata and echoes 10^5 numbered packets that host secondaries send and check; the
//! pool is full at the end. A second boot sees a corrupt metadata block refused clearly.

use std::time::Duration;

use serde_json::Value;
use tests::vm::{release_bin, VmLab};
use tests::*;

const COUNT: &str = "100000";

fn lab() -> Option<&'static VmLab> {
    match VmLab::get() {
        Ok(l) => Some(l),
        Err(e) => {
            let _ = require("the VM lab", false, &e);
            None
        }
    }
}

fn qemu_args(prefix: &str) -> Vec<String> {
    let (code, out, err) = run(
        "shmdp-qemu-cmdgen",
        &["--file-prefix", prefix, "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_guest_echoes_1e5_packets_through_its_ivshmem_segment() {
    let Some(lab) = lab() else { return };
    let guest_bin = release_bin("secondary", "shmdp-secondary");
    let script = format!(
        "shmdp-secondary ivshmem --dev auto info && shmdp-secondary ivshmem --dev auto echo --pool vm1_pool --rx vm1_rx --tx vm1_tx --count {COUNT} --timeout 120\n"
    );
    let initrd = lab.initramfs("echo", &[&guest_bin], &script).unwrap();
    let prefix = unique_prefix("vmecho");
    let _p = export_primary(&prefix, &[]);
    let args = qemu_args(&prefix);
    let mut recv = secondary(
        &prefix,
        &[
            "mbuf-recv",
            "vm1_pool@vm1",
            "vm1_tx@vm1",
            "--count",
            COUNT,
            "--timeout",
            "180",
        ],
    );
    let mut send = secondary(
        &prefix,
        &[
            "mbuf-send",
            "vm1_pool@vm1",
            "vm1_rx@vm1",
            "--count",
            COUNT,
            "--timeout",
            "180",
        ],
    );
    let boot = lab.boot(&initrd, &args, Duration::from_secs(240)).unwrap();
    println!("guest serial:\n{}", boot.serial);
    assert!(boot.passed, "guest failed:\n{}", boot.serial);
    assert!(boot.serial.contains("export group vm1"), "{}", boot.serial);
    let echoed = boot
        .serial
        .lines()
        .find(|l| l.contains("echoed"))
        .unwrap_or_default()
        .to_string();
    for p in [&mut send, &mut recv] {
        let (code, out, err) = finish(p, 60);
        assert_eq!(code, 0, "{out} {err}");
    }
    assert!(recv.stdout().join("\n").contains(&format!(
        "received {COUNT} packets from vm1_tx@vm1, payloads ok"
    )));
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pools"][0]["available"], 2047, "{v}");
    println!(
        "VM: qemu start to poweroff {:.1} s; guest: {echoed}",
        boot.seconds
    );
}

#[test]
fn a_guest_refuses_a_segment_with_corrupt_metadata() {
    let Some(lab) = lab() else { return };
    let guest_bin = release_bin("secondary", "shmdp-secondary");
    let script = "out=$(shmdp-secondary ivshmem --dev auto info 2>&1); code=$?; echo \"$out\"; [ $code -eq 2 ] && echo \"$out\" | grep -q 'checksum'\n";
    let initrd = lab.initramfs("badmeta", &[&guest_bin], script).unwrap();
    let prefix = unique_prefix("vmbad");
    let _p = export_primary(&prefix, &[]);
    let args = qemu_args(&prefix);
    let file = std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).unwrap();
    let seg = shm::Memseg::attach(&file).unwrap();
    let at = ivshmem_meta::META_OFFSET + 64 + 2;
    let b: u8 = seg.region().read_copy(at).unwrap();
    seg.region().write(at, &(b ^ 0x20)).unwrap();
    let boot = lab.boot(&initrd, &args, Duration::from_secs(120)).unwrap();
    assert!(
        boot.passed,
        "guest did not refuse clearly:\n{}",
        boot.serial
    );
}

#[test]
fn two_guests_each_see_only_their_own_group() {
    let Some(lab) = lab() else { return };
    let guest_bin = release_bin("secondary", "shmdp-secondary");
    let prefix = unique_prefix("vmtwo");
    let mut args = vec!["-m", "32"];
    for g in ["vm1", "vm2"] {
        args.extend(["--memseg", if g == "vm1" { "vm1=4" } else { "vm2=4" }]);
    }
    args.extend([
        "--ring",
        "a_rx=256@vm1",
        "--ring",
        "b_rx=256@vm2",
        "--mempool",
        "a_pool=511:0@vm1",
        "--mempool",
        "b_pool=511:0@vm2",
        "--ivshmem",
        "vm1:ring=a_rx,pool=a_pool",
        "--ivshmem",
        "vm2:ring=b_rx,pool=b_pool",
    ]);
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let _p = Proc::primary(&prefix, &args);
    let mut boots = Vec::new();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (group, mine, theirs) in [("vm1", "a_rx", "b_rx"), ("vm2", "b_rx", "a_rx")] {
            let (code, out, err) = run(
                "shmdp-qemu-cmdgen",
                &[
                    "--file-prefix",
                    &prefix,
                    "--group",
                    group,
                    "--format",
                    "json",
                ],
            );
            assert_eq!(code, 0, "{err}");
            let qargs: Vec<String> = serde_json::from_str::<Value>(&out)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            // One ivshmem device, its own group, its own ring, not the other's.
            let script = format!(
                "n=$(grep -l 0x1110 /sys/bus/pci/devices/*/device | wc -l); [ $n -eq 1 ] || exit 1\nout=$(shmdp-secondary ivshmem --dev auto info) || exit 1\necho \"$out\"\necho \"$out\" | grep -q 'export group {group} ' && echo \"$out\" | grep -q ' {mine} ' && ! echo \"$out\" | grep -q ' {theirs} '\n"
            );
            let initrd = lab.initramfs(group, &[&guest_bin], &script).unwrap();
            handles.push(
                s.spawn(move || lab.boot(&initrd, &qargs, Duration::from_secs(120)).unwrap()),
            );
        }
        for h in handles {
            boots.push(h.join().unwrap());
        }
    });
    for b in &boots {
        assert!(b.passed, "guest failed:\n{}", b.serial);
    }
}

#[test]
fn a_guest_scribbling_over_its_segment_cannot_hurt_the_host() {
    let Some(lab) = lab() else { return };
    let guest_bin = release_bin("secondary", "shmdp-secondary");
    let prefix = unique_prefix("vmscrib");
    let mut args = vec![
        "-m",
        "32",
        "--memseg",
        "vm1=4",
        "--ring",
        "vm1_rx=256@vm1",
        "--ring",
        "vm1_tx=256@vm1",
        "--mempool",
        "vm1_pool=511:0@vm1",
        "--ivshmem",
        "vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool",
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
        "--vdev",
        "net_ring4,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut p = Proc::primary(&prefix, &args);
    // The guest fills BAR2 (all of its segment) with random bytes, over and over.
    let script = "shmdp-secondary ivshmem --dev auto scribble --rounds 3\n";
    let initrd = lab.initramfs("scribble", &[&guest_bin], script).unwrap();
    let (code, out, err) = run(
        "shmdp-qemu-cmdgen",
        &["--file-prefix", &prefix, "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let qargs: Vec<String> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    // Host traffic on other memory keeps flowing while the guest scribbles.
    let mut sink = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "rxonly",
            "--portlist",
            "3",
            "--idle-exit",
            "3",
        ],
    );
    // A host forwarder polls the guest-facing port while the guest scribbles over its rings.
    let json = std::env::temp_dir().join(format!("{prefix}-guestport.json"));
    let json_s = json.display().to_string();
    let mut guest_rx = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "rxonly",
            "--portlist",
            "4",
            "--duration",
            "25",
            "--stats-json",
            &json_s,
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
            "3",
        ],
    );
    let mut src = secondary(
        &prefix,
        &[
            "fwd",
            "--fwd",
            "txonly",
            "--portlist",
            "2",
            "--tx-count",
            "200000",
        ],
    );
    let boot = lab.boot(&initrd, &qargs, Duration::from_secs(120)).unwrap();
    assert!(boot.passed, "guest failed:\n{}", boot.serial);
    for q in [&mut src, &mut mid, &mut sink, &mut guest_rx] {
        let (code, out, err) = finish(q, 120);
        assert_eq!(code, 0, "{out} {err}");
    }
    // What the guest wrote was refused and counted, not obeyed.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let errors = report["ports"][0]["errors"].as_u64().unwrap();
    println!("guest-facing port: {errors} errors counted while the guest scribbled");
    assert!(errors > 0, "{report}");
    let _ = std::fs::remove_file(json);
    // The primary is alive, answers, and reports the ruined export without crashing.
    assert!(p.try_status().is_none(), "primary died: {:?}", p.stderr());
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0, "{out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["ports"][3]["rx_packets"], v["ports"][1]["tx_packets"],
        "{v}"
    );
    // Its own pool (main memseg) is whole again; the export is refused by a new reader.
    let file = std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).unwrap();
    let (code, _, err) = run(
        "shmdp-secondary",
        &["ivshmem", "--dev", &file.display().to_string(), "info"],
    );
    assert_eq!(code, 2, "{err}");
    let main_pool = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mbuf_pool")
        .unwrap()
        .clone();
    assert_eq!(main_pool["available"], 8191, "{main_pool}");
}

/// Frames through the exported port in `a_guest_forwards_on_an_exported_port`.
const PORT_FRAMES: usize = 1000;

#[test]
fn a_guest_forwards_on_an_exported_port() {
    let Some(lab) = lab() else { return };
    let guest_bin = release_bin("secondary", "shmdp-secondary");
    // In the guest: the exported port is an ordinary port, and the same forwarding engine
    // as on the host runs on it (macswap: each frame back where it came from).
    let script = format!(
        "out=$(shmdp-secondary ivshmem --dev auto fwd --fwd macswap --idle-exit 3 2>&1); code=$?; echo \"$out\"; [ $code -eq 0 ] && echo \"$out\" | grep -q 'RX-packets: {PORT_FRAMES} '\n"
    );
    let initrd = lab.initramfs("portfwd", &[&guest_bin], &script).unwrap();
    let prefix = unique_prefix("vmport");
    let input = std::env::temp_dir().join(format!("{prefix}-in.pcap"));
    let output = std::env::temp_dir().join(format!("{prefix}-out.pcap"));
    let frames: Vec<Vec<u8>> = (0..PORT_FRAMES as u32)
        .map(|i| {
            (0..(60 + i as usize % 1400))
                .map(|b| (b as u32 ^ i.wrapping_mul(7)) as u8)
                .collect()
        })
        .collect();
    write_pcap(&input, &frames);
    let pcap = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    // The primary forwards between the pcap port and the exported port itself.
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
        "--fwd",
        "io",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let _p = Proc::primary(&prefix, &args);
    let qemu = qemu_args(&prefix);
    let boot = lab.boot(&initrd, &qemu, Duration::from_secs(240)).unwrap();
    println!("guest serial:\n{}", boot.serial);
    assert!(boot.passed, "guest failed:\n{}", boot.serial);
    let mut back = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            back = read_pcap(&output);
            back.len() == PORT_FRAMES
        }),
        "{} of {PORT_FRAMES} frames came back",
        back.len()
    );
    for (got, sent) in back.iter().zip(&frames) {
        assert_eq!(&got[..6], &sent[6..12], "the guest swapped the addresses");
        assert_eq!(&got[6..12], &sent[..6]);
        assert_eq!(&got[12..], &sent[12..], "payload intact");
    }
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats", "--json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ports"][1]["errors"], 0, "{v}");
    for p in v["pools"].as_array().unwrap() {
        assert_eq!(p["available"], p["count"], "every buffer home: {p}");
    }
    println!("VM: qemu start to poweroff {:.1} s", boot.seconds);
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}
