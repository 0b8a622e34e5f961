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
