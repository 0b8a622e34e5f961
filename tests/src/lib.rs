//! Harness for shmdp's cross-process tests: spawns the real `shmdp-primary` and
//! `shmdp-secondary` binaries with unique `--file-prefix`es, captures their output line by
//! line, waits with timeouts, and kills and cleans up whatever a failing test leaves behind.
//!
//! Facilities (hugepages, QEMU and its guest images, DPDK's testpmd and libdpdk, tshark)
//! are checked with [`require`]: where one is truly absent a test skips with a loud
//! one-line reason, except under `CI=true`, where `.ci/run` was supposed to install it and
//! its absence fails. [`crash`] builds and runs the crash-point programs; [`vm`] boots
//! QEMU guests (IVSHMEM, vhost-user) for the guest-facing tests.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod crash;
pub mod vm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of a workspace binary (`shmdp-primary`, `shmdp-secondary`, or an example as
/// `examples/NAME`), brought up to date once per test process: `cargo test -p tests` does
/// not rebuild other packages' binaries, and a stale one would test old code.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    {
        BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--bins",
                "--examples",
                "-q",
                "-p",
                "shmdp-app",
                "-p",
                "qemu-cmdgen",
            ]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build of the binaries failed");
        });
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A prefix no other test (or run) uses: `t-<tag>-<pid>-<n>`.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Says whether a facility is present. Absent: under `CI=true` the test fails (CI must
/// provide it); elsewhere it prints a loud skip line and returns false.
pub fn require(facility: &str, present: bool, how_to_fix: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{facility} is missing under CI=true: {how_to_fix}");
    }
    eprintln!("SKIP: {facility} is not available here ({how_to_fix})");
    false
}

/// Hugetlbfs mounts of this machine with their free page counts.
pub fn hugetlbfs_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "hugetlbfs").then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// Free 2 MiB hugepages right now.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// True when hugepage-backed memsegs can be made (a mount and at least 16 free pages);
/// see [`require`].
pub fn require_hugepages() -> bool {
    require(
        "hugepages",
        !hugetlbfs_mounts().is_empty() && free_hugepages() >= 16,
        "echo 512 > /proc/sys/vm/nr_hugepages and mount -t hugetlbfs none /dev/hugepages",
    )
}

/// The runtime directory of a prefix (as root).
pub fn runtime_dir(prefix: &str) -> PathBuf {
    let base = std::env::var_os("SHMDP_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/shmdp"));
    base.join(prefix)
}

/// Every file on the machine that belongs to `prefix`: its runtime directory and its memseg
/// files in every hugetlbfs mount and /dev/shm.
pub fn files_of(prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let rt = runtime_dir(prefix);
    if rt.exists() {
        out.push(rt.clone());
        if let Ok(rd) = std::fs::read_dir(&rt) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    let pat = format!("shmdp.{prefix}.");
    let mut dirs = hugetlbfs_mounts();
    dirs.push(PathBuf::from("/dev/shm"));
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            out.extend(
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&pat))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Removes whatever [`files_of`] finds (clean-up after a test that killed a primary).
pub fn remove_files_of(prefix: &str) {
    for p in files_of(prefix) {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A spawned shmdp process whose stdout and stderr are captured line by line. Dropping it
/// kills the process (SIGTERM, then SIGKILL) and removes the files of its prefix.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    prefix: Option<String>,
    status: Option<ExitStatus>,
    /// Output streams not yet at end of file (their reader threads still reading).
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proc {
    /// Spawns `bin(program)` with `args`. `prefix`, if given, is cleaned up on drop.
    pub fn spawn(program: &str, args: &[&str], prefix: Option<&str>) -> Proc {
        let mut cmd = Command::new(bin(program));
        cmd.args(args);
        Proc::spawn_command(cmd, program, prefix)
    }

    /// Spawns `bin(program)` with `args` inside network namespace `netns` (through
    /// `ip netns exec`, which execs the program: the pid is the program's).
    pub fn spawn_in_netns(netns: &str, program: &str, args: &[&str], prefix: Option<&str>) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(bin(program))
            .args(args);
        Proc::spawn_command(cmd, program, prefix)
    }

    /// Spawns a prepared command with captured output.
    pub fn spawn_command(mut cmd: Command, program: &str, prefix: Option<&str>) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        for (stream, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                out.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ] {
            let open = open.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Proc {
            child,
            out,
            err,
            prefix: prefix.map(str::to_string),
            status: None,
            open,
        }
    }

    /// Starts a primary on `prefix` with extra arguments and waits for its ready line.
    ///
    /// # Panics
    /// If it does not become ready within 10 s.
    pub fn primary(prefix: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["--file-prefix", prefix];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn("shmdp-primary", &args, Some(prefix));
        assert!(
            p.wait_stdout("shmdp-primary: ready", Duration::from_secs(10)),
            "primary did not start: stdout {:?} stderr {:?} status {:?}",
            p.stdout(),
            p.stderr(),
            p.try_status()
        );
        p
    }

    /// Pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Lines printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    /// Waits until a stdout line contains `pat`.
    pub fn wait_stdout(&mut self, pat: &str, timeout: Duration) -> bool {
        let out = self.out.clone();
        wait_until(timeout, || {
            out.lock().unwrap().iter().any(|l| l.contains(pat))
        })
    }

    /// Waits until a stderr line contains `pat`.
    pub fn wait_stderr(&mut self, pat: &str, timeout: Duration) -> bool {
        let err = self.err.clone();
        wait_until(timeout, || {
            err.lock().unwrap().iter().any(|l| l.contains(pat))
        })
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// The exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit, then for its output to drain.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.try_status() {
                // Let the reader threads pick up the last lines: until both streams end
                // (a loaded machine may not have run them yet), or 2 s (a child of the
                // process may hold them open).
                let until = Instant::now() + Duration::from_secs(2);
                while self.open.load(std::sync::atomic::Ordering::SeqCst) != 0
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.signal(Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(p) = &self.prefix {
            remove_files_of(p);
        }
    }
}

/// Starts a primary on `prefix` that exports group `vm1` (its own 8 MiB memseg) holding
/// rings `vm1_rx`, `vm1_tx` and a 2047-mbuf cacheless pool `vm1_pool`, plus `extra`
/// arguments; the IVSHMEM tests' common setup.
pub fn export_primary(prefix: &str, extra: &[&str]) -> Proc {
    let mut args = export_args();
    args.extend_from_slice(extra);
    Proc::primary(prefix, &args)
}

/// The primary arguments of [`export_primary`] (without `--file-prefix`), for tests that
/// run the primary themselves; `--no-huge` is added when hugepages are missing.
pub fn export_args() -> Vec<&'static str> {
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
    args
}

/// Starts `shmdp-secondary --file-prefix PREFIX ARGS...`.
pub fn secondary(prefix: &str, args: &[&str]) -> Proc {
    let mut a = vec!["--file-prefix", prefix];
    a.extend_from_slice(args);
    Proc::spawn("shmdp-secondary", &a, None)
}

/// Waits up to `secs` for `p` to exit and returns (exit code, stdout, stderr).
///
/// # Panics
/// If it does not exit in time (with what it printed).
pub fn finish(p: &mut Proc, secs: u64) -> (i32, String, String) {
    let st = p
        .wait_exit(Duration::from_secs(secs))
        .unwrap_or_else(|| panic!("did not finish: {:?} {:?}", p.stdout(), p.stderr()));
    (
        st.code().unwrap_or(-1),
        p.stdout().join("\n"),
        p.stderr().join("\n"),
    )
}

/// Runs a program to completion (10 s at most) and returns (exit code, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let mut p = Proc::spawn(program, args, None);
    let st = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{program} {args:?} did not exit within 10 s"));
    (
        st.code().unwrap_or(-1),
        p.stdout().join("\n"),
        p.stderr().join("\n"),
    )
}

/// Writes `frames` to a new pcap file at `path`.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("create pcap");
    let mut w = pmds::pcap_file::PcapWriter::new(file).expect("pcap header");
    for f in frames {
        w.write(0, f.len(), [&f[..]]).expect("pcap record");
    }
}

/// The frames of the pcap file at `path` (none if it is missing or not a capture yet;
/// reading stops at the first damaged record).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_default();
    let Ok((mut fmt, mut pos)) = pmds::pcap_file::open(&data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(Some((r, next))) = pmds::pcap_file::next_record(&data, pos, &mut fmt) {
        out.push(r.data.to_vec());
        pos = next;
    }
    out
}
