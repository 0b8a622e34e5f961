//! A guest cannot make host tools resolve a name into its segment. The export segment's
//! memzone table is guest-writable: the guest adds entries named like the primary's ring
//! and pool in other memsegs (pointing at real objects in its own segment). Host
//! `ring-fill`/`ring-drain`, `pool-audit` and `stats` still find the primary's objects; an
//! export's objects are reached only as `NAME@GROUP`, and a table with duplicate names or
//! overlapping entries is refused with an error, not a first match.

use std::path::PathBuf;

use serde_json::Value;
use shm::layout::{encode_name, MemzoneEntry, MEMZONE_TABLE_OFF, ZONE_COUNT_OFF};
use shm::{Memseg, MemzoneKind};
use tests::*;

/// Adds an entry to `seg`'s memzone table as a guest would: a plain store into the table
/// and the count.
fn forge(seg: &Memseg, name: &str, offset: u64, len_bytes: u64, kind: MemzoneKind) {
    let count = seg.region().atomic_u32(ZONE_COUNT_OFF).unwrap();
    let i = count.load(std::sync::atomic::Ordering::Acquire);
    let entry = MemzoneEntry {
        name: encode_name(name).unwrap(),
        offset,
        len_bytes,
        align: 64,
        flags: kind.as_u32(),
        _reserved: 0,
    };
    seg.region()
        .write(MEMZONE_TABLE_OFF + u64::from(i) * 64, &entry)
        .unwrap();
    count.store(i + 1, std::sync::atomic::Ordering::Release);
}

fn sec(prefix: &str, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["--file-prefix", prefix];
    a.extend_from_slice(args);
    run("shmdp-secondary", &a)
}

#[test]
fn a_shadowing_entry_in_an_export_segment_never_wins_a_host_lookup() {
    let prefix = unique_prefix("hostnames");
    // The export's memseg comes first, so a first-match lookup would find the guest's entry.
    let _p = export_primary(
        &prefix,
        &[
            "--memseg",
            "other=4",
            "--ring",
            "r1=64@other",
            "--mempool",
            "hp=1023:0@other",
        ],
    );
    let file: PathBuf =
        std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).expect("segment link");
    let guest = Memseg::attach(&file).expect("map the export segment");
    let rx = guest.lookup("vm1_rx").unwrap();
    let pool = guest.lookup("vm1_pool").unwrap();
    // The guest names its own ring and pool like the primary's.
    forge(&guest, "r1", rx.offset, rx.len_bytes, MemzoneKind::Ring);
    forge(
        &guest,
        "hp",
        pool.offset,
        pool.len_bytes,
        MemzoneKind::Mempool,
    );

    let (code, out, err) = sec(&prefix, &["ring-fill", "r1", "--count", "5"]);
    assert_eq!(code, 0, "{out} {err}");
    // Nothing arrived in the guest's ring (prod.tail at +256 of the ring).
    let tail: u32 = guest.region().read_copy(rx.offset + 256).unwrap();
    assert_eq!(tail, 0, "the host wrote into the guest's ring");
    let (code, out, err) = sec(&prefix, &["ring-drain", "r1", "--count", "5"]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = sec(&prefix, &["pool-audit", "hp"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("\"free\":1023"), "the primary's pool: {out}");
    let (code, out, err) = sec(&prefix, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let hp: Vec<&Value> = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "hp")
        .collect();
    assert_eq!(hp.len(), 1, "{v}");
    assert_eq!(hp[0]["count"], 1023, "{v}");

    // The export's objects: only by NAME@GROUP, and a plain name says so.
    let (code, _, err) = sec(
        &prefix,
        &["ring-drain", "vm1_rx", "--count", "1", "--timeout", "1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("vm1_rx@vm1"), "{err}");
    // The forged entries overlap the guest's real ones: the whole table is refused.
    let (code, _, err) = sec(
        &prefix,
        &["ring-fill", "vm1_rx@vm1", "--count", "1", "--timeout", "1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("overlap"), "{err}");
    // (The primary is unaffected and still answers.)
    let (code, _, err) = sec(&prefix, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn duplicate_names_in_an_export_table_are_refused_not_first_matched() {
    let prefix = unique_prefix("dupnames");
    let _p = export_primary(&prefix, &[]);
    let file: PathBuf =
        std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).expect("segment link");
    let guest = Memseg::attach(&file).unwrap();
    let (code, out, err) = sec(
        &prefix,
        &["ring-fill", "vm1_rx@vm1", "--count", "3", "--timeout", "5"],
    );
    assert_eq!(code, 0, "{out} {err}");
    // A second vm1_rx, disjoint from everything, in the guest's free space.
    let last = guest
        .memzones()
        .unwrap()
        .iter()
        .map(|z| z.offset + z.len_bytes)
        .max()
        .unwrap();
    forge(
        &guest,
        "vm1_rx",
        last.next_multiple_of(4096),
        4096,
        MemzoneKind::Ring,
    );
    let (code, _, err) = sec(
        &prefix,
        &["ring-drain", "vm1_rx@vm1", "--count", "3", "--timeout", "1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("two entries are named vm1_rx"), "{err}");
}

#[test]
fn the_primary_refuses_one_name_in_two_of_its_memsegs() {
    let prefix = unique_prefix("twonames");
    let mut args = vec![
        "--file-prefix",
        prefix.as_str(),
        "-m",
        "32",
        "--memseg",
        "other=4",
        "--ring",
        "x=64",
        "--ring",
        "x=64@other",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let (code, _, err) = run("shmdp-primary", &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("x is created in memsegs main and other"),
        "{err}"
    );
    assert!(
        files_of(&prefix).is_empty(),
        "left files: {:?}",
        files_of(&prefix)
    );
}

/// The metadata block with its group name replaced by `group` (raw bytes, checksum
/// matching), as a guest can write it.
fn meta_with_group(seg: &Memseg, group: &str) -> [u8; ivshmem_meta::BLOCK_SIZE] {
    let mut b = [0u8; ivshmem_meta::BLOCK_SIZE];
    seg.region()
        .read_bytes(ivshmem_meta::META_OFFSET, &mut b)
        .unwrap();
    b[24..56].fill(0);
    b[24..24 + group.len()].copy_from_slice(group.as_bytes());
    b[60..64].fill(0);
    let sum = ivshmem_meta::fnv1a(&b);
    b[60..64].copy_from_slice(&sum.to_le_bytes());
    b
}

#[test]
fn a_guest_written_group_name_never_reaches_qemu_cmdgen_output() {
    let prefix = unique_prefix("hostcmdgen");
    let _p = export_primary(&prefix, &[]);
    let file: PathBuf =
        std::fs::read_link(runtime_dir(&prefix).join("vm1.seg")).expect("segment link");
    let guest = Memseg::attach(&file).unwrap();
    let (code, want, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert_eq!(code, 0, "{err}");
    assert!(want.contains("id=shmdp-vm1,"), "{want}");
    // A renamed group: the output is what the primary configured, unchanged.
    let b = meta_with_group(&guest, "other");
    guest.region().write(ivshmem_meta::META_OFFSET, &b).unwrap();
    let (code, out, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert_eq!((code, &out), (0, &want), "{err}");
    // A group name holding QEMU options: refused as metadata; no option injected.
    let b = meta_with_group(&guest, "x,share=off,mem-path=/etc/shadow");
    guest.region().write(ivshmem_meta::META_OFFSET, &b).unwrap();
    let (_, out, err) = run("shmdp-qemu-cmdgen", &["--file-prefix", &prefix]);
    assert!(
        !out.contains("share=off") && !out.contains("shadow"),
        "{out} {err}"
    );
}

#[test]
fn a_port_without_guest_pool_cannot_open_a_guests_rings() {
    // Trusted ring handles over rings the guest writes would trust the guest: only a
    // guest-facing port (guest_pool=, bounded handles, copies) may open them.
    let prefix = unique_prefix("trustring");
    let mut args = vec!["--file-prefix", prefix.as_str()];
    args.extend(export_args());
    args.extend(["--vdev", "net_ring5,rx_ring=vm1_tx@vm1,tx_ring=vm1_rx@vm1"]);
    let (code, _, err) = run("shmdp-primary", &args);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("which the guest can write"), "{err}");
    assert!(
        files_of(&prefix).is_empty(),
        "left files: {:?}",
        files_of(&prefix)
    );
}
