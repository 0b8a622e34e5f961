//! The VM lab: boots real QEMU guests (TCG) with a Debian kernel and a busybox initramfs
//! holding shmdp binaries and a test script, and reads the result from the serial console.
//!
//! - [`VmLab::get`] prepares, once per test binary and cached in `target/vmlab` across runs:
//!   the Debian kernel package is downloaded (not installed) and its bzImage unpacked to
//!   the uncompressed `vmlinux`, which QEMU boots directly through PVH (5 s to a shell
//!   under TCG instead of 10+ with the bzImage).
//! - [`VmLab::initramfs`] builds a gzip cpio: busybox, `/init`, the given programs with
//!   the shared libraries they link (from `ldd`), and `/test.sh`.
//! - [`VmLab::boot`] runs `qemu-system-x86_64` with extra arguments (e.g. what
//!   `shmdp-qemu-cmdgen` printed), bounded by a timeout; the guest's `/init` runs
//!   `/test.sh`, prints `SHMDP-VM-RESULT PASS|FAIL` and powers off.
//!
//! Needs qemu-system-x86 (10.x from bookworm-backports), busybox-static and cpio, which
//! `scripts/setup.sh` installs; a missing piece is an error naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Kernel modules the lab keeps from the Debian kernel package, in load order (virtio-net
/// for vhost-user guests).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// A prepared lab.
#[derive(Debug)]
pub struct VmLab {
    /// Cache directory.
    pub dir: PathBuf,
    /// The uncompressed guest kernel.
    pub vmlinux: PathBuf,
}

/// What a boot produced.
#[derive(Debug)]
pub struct Boot {
    /// Everything the guest printed on its serial console.
    pub serial: String,
    /// True when the test script passed.
    pub passed: bool,
    /// Seconds from QEMU's start to its exit.
    pub seconds: f64,
}

fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace's `target/` directory (next to the test executable's profile dir).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

impl VmLab {
    /// The lab, prepared once per process.
    ///
    /// # Errors
    /// What is missing (QEMU, busybox, the kernel download) and how to get it.
    pub fn get() -> Result<&'static VmLab, String> {
        static LAB: OnceLock<Result<VmLab, String>> = OnceLock::new();
        LAB.get_or_init(VmLab::prepare)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn prepare() -> Result<VmLab, String> {
        for (tool, pkg) in [
            ("qemu-system-x86_64", "qemu-system-x86 (bookworm-backports)"),
            ("cpio", "cpio"),
        ] {
            sh(&format!("command -v {tool}"))
                .map_err(|_| format!("{tool} not found: install {pkg} (scripts/setup.sh does)"))?;
        }
        if !Path::new("/bin/busybox").exists() {
            return Err(
                "/bin/busybox not found: install busybox-static (scripts/setup.sh does)".into(),
            );
        }
        let dir = target_dir().join("vmlab");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let vmlinux = dir.join("vmlinux");
        let modules = dir.join("modules");
        if !vmlinux.exists() || !modules.join("virtio_net.ko").exists() {
            // The versioned image package the metapackage points at; downloaded, not installed.
            let pkg = sh("apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'")?;
            let pkg = pkg.trim();
            if pkg.is_empty() {
                return Err(
                    "cannot resolve linux-image-amd64 to a kernel package (apt-get update?)".into(),
                );
            }
            let d = dir.display();
            sh(&format!(
                "cd {d} && rm -rf kpkg *.deb && apt-get download -q {pkg} >/dev/null 2>&1 && dpkg-deb -x {pkg}_*.deb kpkg && rm -f {pkg}_*.deb"
            ))?;
            // The guest modules the tests load (uncompressed .ko in Debian's 6.1 kernels).
            std::fs::create_dir_all(&modules).map_err(|e| e.to_string())?;
            for m in GUEST_MODULES {
                sh(&format!(
                    "f=$(find {d}/kpkg/lib/modules -name '{m}.ko*' | head -1) && [ -n \"$f\" ] && cp \"$f\" {}/{m}.ko",
                    modules.display()
                ))
                .map_err(|e| format!("kernel module {m}: {e}"))?;
            }
            let vmlinuz = sh(&format!("ls {d}/kpkg/boot/vmlinuz-* | head -1"))?;
            // The bzImage carries an xz-compressed vmlinux: find the xz magic and unpack it.
            sh(&format!(
                "/usr/bin/python3 - {} {} <<'PY'\nimport lzma, sys\ndata = open(sys.argv[1], 'rb').read()\ni = data.find(b'\\xfd7zXZ\\x00')\nd = lzma.LZMADecompressor()\nopen(sys.argv[2] + '.tmp', 'wb').write(d.decompress(data[i:]))\nPY\nmv {}.tmp {}",
                vmlinuz.trim(),
                vmlinux.display(),
                vmlinux.display(),
                vmlinux.display()
            ))?;
            let _ = std::fs::remove_dir_all(dir.join("kpkg"));
        }
        Ok(VmLab { dir, vmlinux })
    }

    /// Builds (or reuses, when the same inputs built it before) an initramfs named `name`
    /// with `programs` in `/bin` (and the libraries they link) and `script` as `/test.sh`.
    ///
    /// # Errors
    /// When a program or tool is missing.
    pub fn initramfs(
        &self,
        name: &str,
        programs: &[&Path],
        script: &str,
    ) -> Result<PathBuf, String> {
        self.initramfs_with_modules(name, programs, script, &[])
    }

    /// As [`VmLab::initramfs`], with kernel `modules` (from [`GUEST_MODULES`], loaded in
    /// that order by `/init` before the script).
    ///
    /// # Errors
    /// As [`VmLab::initramfs`], or a module the lab does not keep.
    pub fn initramfs_with_modules(
        &self,
        name: &str,
        programs: &[&Path],
        script: &str,
        modules: &[&str],
    ) -> Result<PathBuf, String> {
        let root = self.dir.join(format!("root-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        for d in [
            "bin", "sbin", "proc", "sys", "dev", "tmp", "lib", "lib64", "usr/lib",
        ] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.join("lib/modules")).map_err(|e| e.to_string())?;
        let mut load = String::new();
        for m in modules {
            if !GUEST_MODULES.contains(m) {
                return Err(format!("kernel module {m} is not kept by the lab"));
            }
            std::fs::copy(
                self.dir.join("modules").join(format!("{m}.ko")),
                root.join(format!("lib/modules/{m}.ko")),
            )
            .map_err(|e| format!("module {m}: {e}"))?;
            load += &format!("insmod /lib/modules/{m}.ko\n");
        }
        let init = format!("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n{load}echo SHMDP-VM-START\nif sh /test.sh; then echo 'SHMDP-VM-RESULT PASS'; else echo 'SHMDP-VM-RESULT FAIL'; fi\npoweroff -f\n");
        std::fs::write(root.join("init"), init).map_err(|e| e.to_string())?;
        std::fs::write(root.join("test.sh"), script).map_err(|e| e.to_string())?;
        for p in programs {
            let dst = root
                .join("bin")
                .join(p.file_name().ok_or("program without a name")?);
            std::fs::copy(p, &dst).map_err(|e| format!("{}: {e}", p.display()))?;
            // Debug info only makes the image bigger and the boot slower.
            let _ = sh(&format!("strip --strip-debug {}", dst.display()));
            let libs = sh(&format!(
                "ldd {} | awk '{{for (i = 1; i <= NF; i++) if ($i ~ /^\\//) print $i}}'",
                p.display()
            ))?;
            for lib in libs.lines() {
                let to = root.join(lib.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().expect("lib dir"))
                    .map_err(|e| e.to_string())?;
                std::fs::copy(lib, &to).map_err(|e| format!("{lib}: {e}"))?;
            }
        }
        let out = self.dir.join(format!("initramfs-{name}.cpio.gz"));
        sh(&format!(
            "chmod +x {r}/init && cd {r} && find . | cpio -o -H newc --quiet | gzip -1 > {o}",
            r = root.display(),
            o = out.display()
        ))?;
        let _ = std::fs::remove_dir_all(&root);
        Ok(out)
    }

    /// Boots a guest with `initrd` and `qemu_args` (besides the lab's own) and waits for it
    /// to power off, at most `timeout`.
    ///
    /// # Errors
    /// When QEMU cannot be started.
    pub fn boot(
        &self,
        initrd: &Path,
        qemu_args: &[String],
        timeout: Duration,
    ) -> Result<Boot, String> {
        let t0 = Instant::now();
        let out = Command::new("timeout")
            .args(["--foreground", "-k", "5", &timeout.as_secs().to_string()])
            .arg("qemu-system-x86_64")
            .args([
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                "512",
                "-smp",
                "1",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&self.vmlinux)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .args(qemu_args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
        let serial = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok(Boot {
            passed: serial.contains("SHMDP-VM-RESULT PASS"),
            serial,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// A release build of a workspace binary (the guest runs it under TCG, where a debug build
/// would be many times slower), built once per test binary.
pub fn release_bin(_package: &str, name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            // Every binary a guest may run, whichever was asked for first.
            .args(["build", "--release", "--bins", "-p", "shmdp-app"])
            .status()
            .expect("run cargo build --release");
        assert!(st.success(), "cargo build --release failed");
    });
    path
}
