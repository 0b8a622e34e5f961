//! Golden files: the exact text each output format produces for two fixed groups (one
//! with a path that needs quoting). Regenerate with `GOLDEN_UPDATE=1 cargo test -p
//! qemu-cmdgen --test golden` after a deliberate change, and review the diff.

use std::path::PathBuf;

use qemu_cmdgen::{render, Export, Format};

fn exports() -> Vec<Export> {
    vec![
        Export {
            group: "vm1".into(),
            path: PathBuf::from("/dev/hugepages/shmdp.demo.vm1"),
            size: 16 << 20,
            slot: 0x10,
        },
        Export {
            group: "vm2".into(),
            path: PathBuf::from("/dev/shm/shmdp.demo dir/it's.vm2"),
            size: 4 << 20,
            slot: 0x11,
        },
    ]
}

fn check(format: Format, file: &str) {
    let got = render(&exports(), format);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(got, want, "{file} differs (GOLDEN_UPDATE=1 to regenerate)");
}

#[test]
fn shell() {
    check(Format::Shell, "shell.txt");
}

#[test]
fn json() {
    check(Format::Json, "json.txt");
}

#[test]
fn libvirt() {
    check(Format::Libvirt, "libvirt.xml");
}

/// Splits a QEMU option list the way QEMU does: `,` ends a value, `,,` is one comma.
fn qemu_split(opts: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = opts.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                out.last_mut().unwrap().push(',');
            }
            ',' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

#[test]
fn a_comma_in_a_group_or_path_never_becomes_another_option() {
    let e = Export {
        group: "vm1,share=off,mem-path=/etc/shadow".into(),
        path: PathBuf::from("/dev/shm/a,size=1,share=off"),
        size: 2 << 20,
        slot: 0x10,
    };
    let a = qemu_cmdgen::args(&[e]);
    let obj = qemu_split(&a[1]);
    let keys: Vec<&str> = obj.iter().map(|o| o.split('=').next().unwrap()).collect();
    assert_eq!(
        keys,
        ["memory-backend-file", "id", "mem-path", "size", "share"],
        "{}",
        a[1]
    );
    assert_eq!(obj[4], "share=on");
    let dev = qemu_split(&a[3]);
    assert_eq!(dev.len(), 3, "{}", a[3]);
}

/// A fake runtime directory: `<link>.seg` -> a 2 MiB file holding `block` as metadata.
fn fake_export(dir: &std::path::Path, link: &str, block: &[u8]) {
    let file = dir.join(format!("{link}.file"));
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(2 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, block, ivshmem_meta::META_OFFSET).unwrap();
    std::os::unix::fs::symlink(&file, dir.join(format!("{link}.seg"))).unwrap();
}

fn block(group: &str) -> Vec<u8> {
    let meta = ivshmem_meta::Meta {
        group: "placeholder".into(),
        segment_size: 2 << 20,
        entries: Vec::new(),
    };
    let mut b = ivshmem_meta::encode(&meta).unwrap();
    // Written raw, as a guest can: any bytes, with a checksum that matches.
    b[24..56].fill(0);
    b[24..24 + group.len()].copy_from_slice(group.as_bytes());
    b[60..64].fill(0);
    let sum = ivshmem_meta::fnv1a(&b);
    b[60..64].copy_from_slice(&sum.to_le_bytes());
    b.to_vec()
}

#[test]
fn what_is_printed_comes_from_the_primary_not_from_the_guest_written_metadata() {
    let dir = std::env::temp_dir().join(format!("shmdp-cmdgen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // vm1's guest renamed its group; vm2's wrote a comma list; a link named like an option
    // list (not a memseg name the primary makes) is skipped.
    fake_export(&dir, "vm1", &block("someone-else"));
    fake_export(&dir, "vm2", &block("vm2,share=off,mem-path=/etc/shadow"));
    fake_export(&dir, "vm3,share=off", &block("vm3"));
    let found = qemu_cmdgen::exports_in(&dir);
    let groups: Vec<&str> = found.iter().map(|(g, _, _)| g.as_str()).collect();
    assert_eq!(
        groups,
        ["vm1"],
        "vm2's metadata is refused, vm3's link skipped"
    );
    let (group, path, size) = found[0].clone();
    let out = render(
        &[Export {
            group,
            path,
            size,
            slot: 0x10,
        }],
        Format::Shell,
    );
    assert!(out.contains("id=shmdp-vm1,"), "{out}");
    assert!(
        !out.contains("someone-else") && !out.contains("share=off,"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
