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

fn export_primary(prefix: &str) -> Proc {
    let mut args = vec![
        "-m",
        "32",
        "--memseg",
        "vm1=8",
        "--ring",
        "vm1_rx=1024@vm1",
        "--ring",
        "vm1_tx=1024@vm1",
        "--mempool",
        "vm1_pool=2047:0@vm1",
        "--ivshmem",
        "vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    Proc::primary(prefix, &args)
}

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
    let _p = export_primary(&prefix);
    let args = qemu_args(&prefix);
    let mut recv = secondary(
        &prefix,
        &[
            "mbuf-recv",
            "vm1_pool",
            "vm1_tx",
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
            "vm1_pool",
            "vm1_rx",
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
        "received {COUNT} packets from vm1_tx, payloads ok"
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
    let _p = export_primary(&prefix);
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
