//! Hostile vhost-user peers against a real primary.
//!
//! virtio-user (`net_virtio_user`, we are the frontend): a backend that accepts and never
//! answers (or never accepts) costs one error line and exit 2 within the message deadline,
//! and a SIGTERM during that wait stops the primary at once; a backend of another uid is refused before
//! anything is sent; the memory a backend gets is a sealed memfd of the port's own, not
//! the main memseg.
//!
//! vhost-user (`net_vhost`, we are the backend; the frontends here are written with plain
//! sockets): a frontend of another uid is refused (socket 0600, and SO_PEERCRED); an
//! unsealed memfd is refused; a sealed one cannot be shrunk; a hugetlbfs file truncated
//! while the primary polls the rings costs that frontend its connection (the SIGBUS
//! guard), not the primary its life; a frontend that stalls inside a message loses its
//! connection. In every case the other port's frontend is still served and the primary's
//! counters show the error. A frontend that keeps memory tables alive past its port's
//! share of the SIGBUS guard loses its connection (counted); another port's tables are
//! still mapped.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use tests::*;

const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const VERSION_1: u64 = 1 << 32;
/// Where our fake guest's memory starts in the frontend's own address space (any value).
const UVA: u64 = 0x7f00_0000_0000;

fn socket_path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{tag}.sock"));
    let _ = std::fs::remove_file(&p);
    p
}

fn primary_args<'a>(prefix: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--file-prefix", prefix, "--no-huge", "-m", "64"];
    a.extend_from_slice(extra);
    a
}

// ---- a minimal vhost-user wire for the fakes ---------------------------------------

fn send(sock: &UnixStream, req: u32, payload: &[u8], fds: &[RawFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut m = req.to_le_bytes().to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    let iov = [std::io::IoSlice::new(&m)];
    let rights = [ControlMessage::ScmRights(fds)];
    let c: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    // A peer that already closed: the reading side finds out.
    let _ = sendmsg::<()>(sock.as_raw_fd(), &iov, c, MsgFlags::empty(), None);
}

fn send_reply(sock: &UnixStream, req: u32, payload: &[u8]) {
    let mut m = req.to_le_bytes().to_vec();
    m.extend_from_slice(&(1u32 | 4).to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    (&*sock).write_all(&m).expect("reply");
}

/// One message: (request, payload, fds received); `None` when the peer closed.
fn recv(sock: &UnixStream) -> Option<(u32, Vec<u8>, Vec<RawFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut hdr = [0u8; 12];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut hdr)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .ok()?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(f) = c {
                fds.extend(f);
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return None;
    }
    (&*sock).read_exact(&mut hdr[n..]).ok()?;
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; size];
    (&*sock).read_exact(&mut payload).ok()?;
    Some((
        u32::from_le_bytes(hdr[..4].try_into().unwrap()),
        payload,
        fds,
    ))
}

/// A frontend asks for the features and waits for the answer (a round trip that shows
/// the backend still serves it). `None` when the connection is gone.
fn features(sock: &UnixStream) -> Option<u64> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    send(sock, GET_FEATURES, &[], &[]);
    let (req, p, _) = recv(sock)?;
    assert_eq!(req, GET_FEATURES);
    Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
}

/// True once the primary has closed `sock` (read returns EOF or an error) within `t`.
fn closed_within(sock: &UnixStream, t: Duration) -> bool {
    sock.set_read_timeout(Some(t)).unwrap();
    let mut b = [0u8; 64];
    let t0 = Instant::now();
    loop {
        match (&*sock).read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return t0.elapsed() < t,
        }
    }
}

fn connect(path: &Path) -> UnixStream {
    let t0 = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("{}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Negotiates, shares `fd` (`len` bytes) as guest memory and starts both vrings of one
/// queue pair inside it (so the primary's pollers read it).
fn set_up_guest(sock: &UnixStream, fd: RawFd, len: u64) {
    assert!(features(sock).is_some_and(|f| f & VERSION_1 != 0));
    send(sock, SET_FEATURES, &VERSION_1.to_le_bytes(), &[]);
    send(sock, SET_OWNER, &[], &[]);
    let mut t = 1u32.to_le_bytes().to_vec();
    t.extend_from_slice(&[0; 4]);
    for v in [0, len, UVA, 0] {
        t.extend_from_slice(&v.to_le_bytes());
    }
    send(sock, SET_MEM_TABLE, &t, &[fd]);
    for i in 0..2u32 {
        let state = |b: u32| [i.to_le_bytes(), b.to_le_bytes()].concat();
        send(sock, SET_VRING_NUM, &state(256), &[]);
        let at = UVA + u64::from(i) * 0x10000;
        let mut a = state(0);
        for v in [at, at + 0x2000, at + 0x1000, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        send(sock, SET_VRING_ADDR, &a, &[]);
        send(sock, SET_VRING_BASE, &state(0), &[]);
        // No fds: bit 8 of the index.
        send(
            sock,
            SET_VRING_CALL,
            &(0x100 | u64::from(i)).to_le_bytes(),
            &[],
        );
        send(
            sock,
            SET_VRING_KICK,
            &(0x100 | u64::from(i)).to_le_bytes(),
            &[],
        );
    }
}

fn unsealed_memfd(len: u64) -> std::fs::File {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let f = std::fs::File::from(memfd_create("hostile", MFdFlags::MFD_ALLOW_SEALING).unwrap());
    f.set_len(len).unwrap();
    f
}

fn sealed_memfd(len: u64) -> std::fs::File {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let f = unsealed_memfd(len);
    fcntl(
        &f,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    f
}

fn port_errors(prefix: &str, port: &str) -> u64 {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "stats", "--json"],
    );
    assert_eq!(code, 0, "stats: {out} {err}");
    let all: Value = serde_json::from_str(&out).expect("stats JSON");
    all["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {out}"))["errors"]
        .as_u64()
        .expect("errors")
}

/// A primary serving two vhost-user ports, forwarding between them (so both are polled).
struct TwoPorts {
    primary: Proc,
    prefix: String,
    bad: PathBuf,
    good: PathBuf,
}

fn two_ports(tag: &str) -> TwoPorts {
    let prefix = unique_prefix(tag);
    let bad = socket_path(&format!("{prefix}-bad"));
    let good = socket_path(&format!("{prefix}-good"));
    let v0 = format!("net_vhost0,iface={}", bad.display());
    let v1 = format!("net_vhost1,iface={}", good.display());
    let args = primary_args(&prefix, &["--vdev", &v0, "--vdev", &v1, "--fwd", "io"]);
    let mut primary = Proc::primary(&prefix, &args[2..]);
    assert!(primary.wait_stdout("forwarding:", Duration::from_secs(10)));
    TwoPorts {
        primary,
        prefix,
        bad,
        good,
    }
}

impl TwoPorts {
    /// The primary is alive, serves the good port's frontend, and counted `port`'s error.
    fn goes_on(&mut self, good: &UnixStream) {
        assert!(
            self.primary.try_status().is_none(),
            "{:?}",
            self.primary.stderr()
        );
        assert!(features(good).is_some(), "the other port is still served");
        assert!(port_errors(&self.prefix, "net_vhost0") >= 1);
        // The attacked port itself takes the next frontend.
        let again = connect(&self.bad);
        assert!(features(&again).is_some(), "the port serves a new frontend");
    }
}

// ---- virtio-user: silent and foreign backends --------------------------------------

/// Listens at `path`, accepts one connection, never answers; raises the flag on accept.
fn silent_backend(path: &Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let l = UnixListener::bind(path).unwrap();
    let accepted = Arc::new(AtomicBool::new(false));
    let a = accepted.clone();
    let t = std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            a.store(true, Ordering::Relaxed);
            // Hold the connection open until the primary closes it.
            let mut b = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            while matches!((&s).read(&mut b), Ok(n) if n > 0) {}
        }
    });
    (accepted, t)
}

#[test]
fn a_silent_virtio_user_backend_costs_one_line_and_exit_2() {
    let prefix = unique_prefix("vusilent");
    let path = socket_path(&prefix);
    let (accepted, t) = silent_backend(&path);
    let vdev = format!("net_virtio_user0,path={}", path.display());
    bin("shmdp-primary"); // built before the clock starts
    let t0 = Instant::now();
    let mut p = Proc::spawn(
        "shmdp-primary",
        &primary_args(&prefix, &["--vdev", &vdev]),
        Some(&prefix),
    );
    let st = p
        .wait_exit(Duration::from_secs(15))
        .expect("the primary gives up");
    let took = t0.elapsed();
    assert!(accepted.load(Ordering::Relaxed));
    assert_eq!(st.code(), Some(2), "{:?}", p.stderr());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let errors: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("did not answer") && errors[0].contains(&*path.to_string_lossy()),
        "{errors:?}"
    );
    assert!(files_of(&prefix).is_empty(), "{:?}", files_of(&prefix));
    println!("silent backend: exit 2 after {took:?}: {}", errors[0]);
    t.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigterm_while_a_virtio_user_backend_is_silent_stops_the_primary_at_once() {
    let prefix = unique_prefix("vusigterm");
    let path = socket_path(&prefix);
    let (accepted, t) = silent_backend(&path);
    let vdev = format!("net_virtio_user0,path={}", path.display());
    let mut p = Proc::spawn(
        "shmdp-primary",
        &primary_args(&prefix, &["--vdev", &vdev]),
        Some(&prefix),
    );
    assert!(wait_until(Duration::from_secs(10), || accepted.load(Ordering::Relaxed)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!files_of(&prefix).is_empty(), "the primary made its files");
    let t0 = Instant::now();
    p.signal(Signal::SIGTERM);
    let st = p
        .wait_exit(Duration::from_secs(3))
        .expect("SIGTERM is honoured");
    let took = t0.elapsed();
    assert!(st.success(), "{st:?} {:?}", p.stderr());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(files_of(&prefix).is_empty(), "{:?}", files_of(&prefix));
    println!("SIGTERM during the wait: stopped after {took:?}");
    t.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_virtio_user_backend_that_never_accepts_costs_one_line_and_exit_2() {
    let prefix = unique_prefix("vufull");
    let path = socket_path(&prefix);
    let _l = UnixListener::bind(&path).unwrap();
    // A listener that never accepts, its backlog full: a blocking connect would hang.
    let flag = AtomicBool::new(false);
    let never = || pmds::vhost::wire::Until::after(Duration::ZERO, &flag);
    let mut held = Vec::new();
    while let Ok(s) = pmds::vhost::wire::connect(&path, never()) {
        held.push(s);
    }
    let vdev = format!("net_virtio_user0,path={}", path.display());
    bin("shmdp-primary"); // built before the clock starts
    let t0 = Instant::now();
    let mut p = Proc::spawn(
        "shmdp-primary",
        &primary_args(&prefix, &["--vdev", &vdev]),
        Some(&prefix),
    );
    let st = p
        .wait_exit(Duration::from_secs(15))
        .expect("the primary gives up");
    assert_eq!(st.code(), Some(2), "{:?}", p.stderr());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let err = p.stderr().join("\n");
    assert!(err.contains("no vhost-user backend answers"), "{err}");
    assert!(files_of(&prefix).is_empty());
    let _ = std::fs::remove_file(&path);
}

/// Not a test of its own: the listener `a_virtio_user_backend_of_another_uid_is_refused`
/// runs as uid 65534 (this test binary, re-executed).
#[test]
#[ignore = "helper process, started by a_virtio_user_backend_of_another_uid_is_refused"]
fn helper_listen_as_another_user() {
    if let Ok(path) = std::env::var("SHMDP_TEST_CONNECT") {
        // The other role: a frontend of another user at a net_vhost socket.
        match UnixStream::connect(&path) {
            Err(e) => println!("connect refused: {e}"),
            Ok(s) => match features(&s) {
                Some(_) => println!("answered"),
                None => println!("closed without an answer"),
            },
        }
        return;
    }
    let Ok(path) = std::env::var("SHMDP_TEST_LISTEN") else {
        return;
    };
    let l = UnixListener::bind(&path).unwrap();
    println!("listening as uid {}", nix::unistd::geteuid());
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut total = 0;
    let mut b = [0u8; 4096];
    while let Ok(n @ 1..) = (&s).read(&mut b) {
        total += n;
    }
    println!("received {total} bytes");
}

/// This test binary's helper, run as uid 65534 with `var` = `path`.
fn as_nobody(var: &str, path: &Path) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "helper_listen_as_another_user",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env(var, path)
    .uid(65534)
    .gid(65534);
    Proc::spawn_command(cmd, "helper as uid 65534", None)
}

#[test]
fn a_vhost_user_frontend_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to start a frontend as uid 65534");
        return;
    }
    let mut t = two_ports("vhuid");
    let good = connect(&t.good);
    // The socket is 0600: another user cannot even connect.
    let mut h = as_nobody("SHMDP_TEST_CONNECT", &t.bad);
    assert!(
        h.wait_stdout("connect refused", Duration::from_secs(10)),
        "{:?}",
        h.stdout()
    );
    // Opened up by hand, the peer's uid is still checked.
    std::fs::set_permissions(&t.bad, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mut h = as_nobody("SHMDP_TEST_CONNECT", &t.bad);
    assert!(
        h.wait_stdout("closed without an answer", Duration::from_secs(10)),
        "{:?}",
        h.stdout()
    );
    assert!(t
        .primary
        .wait_stderr("runs as uid 65534", Duration::from_secs(2)));
    t.goes_on(&good);
}

#[test]
fn a_virtio_user_backend_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to start a listener as uid 65534");
        return;
    }
    let prefix = unique_prefix("vuuid");
    let dir = std::env::temp_dir().join(format!("{prefix}-dir"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let path = dir.join("backend.sock");
    let mut helper = as_nobody("SHMDP_TEST_LISTEN", &path);
    assert!(
        helper.wait_stdout("listening as uid 65534", Duration::from_secs(10)),
        "{:?} {:?}",
        helper.stdout(),
        helper.stderr()
    );
    let vdev = format!("net_virtio_user0,path={}", path.display());
    let mut p = Proc::spawn(
        "shmdp-primary",
        &primary_args(&prefix, &["--vdev", &vdev]),
        Some(&prefix),
    );
    let st = p
        .wait_exit(Duration::from_secs(10))
        .expect("refused at once");
    assert_eq!(st.code(), Some(2));
    let err = p.stderr().join("\n");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(files_of(&prefix).is_empty());
    assert!(
        helper.wait_stdout("received 0 bytes", Duration::from_secs(10)),
        "{:?}",
        helper.stdout()
    );
    println!("foreign backend: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_virtio_user_backend_gets_a_sealed_memseg_of_the_port_not_the_main_one() {
    let prefix = unique_prefix("vumem");
    let path = socket_path(&prefix);
    let l = UnixListener::bind(&path).unwrap();
    // A fake backend: answers GET_FEATURES (VERSION_1 only), keeps SET_MEM_TABLE's fd.
    let fake = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut table = None;
        while let Some((req, payload, fds)) = recv(&s) {
            match req {
                GET_FEATURES => send_reply(&s, req, &VERSION_1.to_le_bytes()),
                SET_MEM_TABLE => table = Some((payload, fds)),
                // The last message of the setup: the kick of vring 1.
                SET_VRING_KICK if payload[0] == 1 => break,
                _ => {}
            }
        }
        (s, table.expect("a memory table"))
    });
    let vdev = format!("net_virtio_user0,path={},queue_size=256", path.display());
    let _p = Proc::primary(&prefix, &primary_args(&prefix, &["--vdev", &vdev])[2..]);
    let (_s, (payload, fds)) = fake.join().unwrap();
    assert_eq!(fds.len(), 1, "one region, one fd");
    assert_eq!(u32::from_le_bytes(payload[..4].try_into().unwrap()), 1);
    let region_size = u64::from_le_bytes(payload[16..24].try_into().unwrap());
    let fd_path = format!("/proc/self/fd/{}", fds[0]);
    let link = std::fs::read_link(&fd_path).unwrap();
    let meta = std::fs::metadata(&fd_path).unwrap();
    println!(
        "memory table: {} ({} bytes, region {region_size})",
        link.display(),
        meta.len()
    );
    assert!(
        link.to_string_lossy()
            .starts_with("/memfd:shmdp-net_virtio_user0"),
        "{}",
        link.display()
    );
    assert_eq!(meta.len(), region_size, "the region is the whole file");
    // Two vrings of 256, 512 slots of 2 KiB and a header: about 1 MiB, not the 64 MiB
    // main memseg (-m 64).
    assert!(meta.len() < 4 << 20, "{}", meta.len());
    for f in files_of(&prefix) {
        if let Ok(m) = std::fs::metadata(&f) {
            assert_ne!(
                (m.dev(), m.ino()),
                (meta.dev(), meta.ino()),
                "shares {}",
                f.display()
            );
        }
    }
    // Sealed: the backend cannot shrink it under the primary.
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fd_path)
        .unwrap();
    let seals = SealFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GET_SEALS).unwrap());
    assert!(seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL));
    assert!(f.set_len(0).is_err(), "ftruncate refused");
    let _ = std::fs::remove_file(&path);
}

// ---- vhost-user: frontends that take memory away or stall ---------------------------

#[test]
fn an_unsealed_memfd_is_refused_and_a_sealed_one_cannot_shrink() {
    let mut t = two_ports("vhseal");
    let good = connect(&t.good);
    let mem = sealed_memfd(2 << 20);
    set_up_guest(&good, mem.as_raw_fd(), 2 << 20);
    assert!(features(&good).is_some(), "sealed memory is accepted");
    assert!(
        mem.set_len(4096).is_err(),
        "the kernel refuses to shrink it"
    );
    let bad = connect(&t.bad);
    let mem = unsealed_memfd(2 << 20);
    set_up_guest(&bad, mem.as_raw_fd(), 2 << 20);
    assert!(closed_within(&bad, Duration::from_secs(5)), "refused");
    // Shrinking what was refused harms nobody.
    mem.set_len(0).unwrap();
    assert!(
        t.primary
            .wait_stderr("F_SEAL_SHRINK", Duration::from_secs(5)),
        "{:?}",
        t.primary.stderr()
    );
    t.goes_on(&good);
}

#[test]
fn a_frontend_that_truncates_its_hugetlbfs_memory_loses_only_its_connection() {
    let Some(mount) = hugetlbfs_mounts().into_iter().next() else {
        require("hugetlbfs", false, "mount -t hugetlbfs none /dev/hugepages");
        return;
    };
    if !require_hugepages() {
        return;
    }
    let mut t = two_ports("vhtrunc");
    let good = connect(&t.good);
    let gmem = sealed_memfd(2 << 20);
    set_up_guest(&good, gmem.as_raw_fd(), 2 << 20);
    let file = mount.join(format!("{}-guest", t.prefix));
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    mem.set_len(2 << 20).unwrap();
    let bad = connect(&t.bad);
    set_up_guest(&bad, mem.as_raw_fd(), 2 << 20);
    assert!(
        features(&bad).is_some(),
        "hugetlbfs memory is accepted (guarded)"
    );
    // The pollers read both rings now; take the memory away under them.
    std::thread::sleep(Duration::from_millis(300));
    mem.set_len(0).unwrap();
    assert!(
        closed_within(&bad, Duration::from_secs(5)),
        "dropped: {:?}",
        t.primary.stderr()
    );
    assert!(t
        .primary
        .wait_stderr("truncated its memory", Duration::from_secs(2)));
    t.goes_on(&good);
    println!(
        "truncated hugetlbfs memory: {}",
        t.primary
            .stderr()
            .iter()
            .find(|l| l.contains("truncated"))
            .unwrap()
    );
}

#[test]
fn a_frontend_that_stalls_inside_a_message_loses_only_its_connection() {
    let mut t = two_ports("vhstall");
    let good = connect(&t.good);
    let gmem = sealed_memfd(2 << 20);
    set_up_guest(&good, gmem.as_raw_fd(), 2 << 20);
    let bad = connect(&t.bad);
    assert!(features(&bad).is_some());
    // Half a header, then nothing.
    (&bad).write_all(&SET_FEATURES.to_le_bytes()[..]).unwrap();
    (&bad).write_all(&[1, 0]).unwrap();
    let t0 = Instant::now();
    // Meanwhile the other port is served as ever.
    assert!(features(&good).is_some());
    assert!(closed_within(&bad, Duration::from_secs(8)), "dropped");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "after the deadline, not before: {took:?}"
    );
    assert!(t
        .primary
        .wait_stderr("did not answer", Duration::from_secs(2)));
    t.goes_on(&good);
    println!("stalled frontend dropped after {took:?}");
}

#[test]
fn sigterm_stops_a_primary_whose_frontend_stalls() {
    let mut t = two_ports("vhstallterm");
    let bad = connect(&t.bad);
    (&bad).write_all(&[1, 0, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    t.primary.signal(Signal::SIGTERM);
    let st = t.primary.wait_exit(Duration::from_secs(5)).expect("stops");
    assert!(st.success(), "{:?}", t.primary.stderr());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(files_of(&t.prefix).is_empty());
    assert!(!t.bad.exists() && !t.good.exists(), "sockets removed");
}

#[test]
fn a_vhost_iface_path_that_is_not_our_socket_is_never_removed() {
    // A regular file, and a symlink to one, where `iface=` points: the primary refuses
    // with one line (exit 2) and both stay as they were (before, the path was unlinked
    // whatever it was).
    let victim = std::env::temp_dir().join(format!("vh-victim-{}", std::process::id()));
    std::fs::write(&victim, b"precious").unwrap();
    let link = std::env::temp_dir().join(format!("vh-link-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for path in [&victim, &link] {
        let prefix = unique_prefix("vhnot");
        let vdev = format!("net_vhost0,iface={}", path.display());
        let (code, _, err) = run("shmdp-primary", &primary_args(&prefix, &["--vdev", &vdev]));
        assert_eq!(code, 2, "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("not a socket of ours"), "{lines:?}");
        assert!(files_of(&prefix).is_empty(), "left {:?}", files_of(&prefix));
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&victim);
}

// ---- vhost-user: a frontend that fills the SIGBUS guard -----------------------------

/// `n` sealed one-page memfds and the SET_MEM_TABLE payload naming them (guest-physical
/// page `first + i` for region `i`).
fn table(n: usize, first: u64) -> (Vec<std::fs::File>, Vec<u8>) {
    let files: Vec<_> = (0..n).map(|_| sealed_memfd(4096)).collect();
    let mut t = (n as u32).to_le_bytes().to_vec();
    t.extend_from_slice(&[0; 4]);
    for i in 0..n as u64 {
        let gpa = (first + i) * 4096;
        for v in [gpa, 4096, UVA + gpa, 0] {
            t.extend_from_slice(&v.to_le_bytes());
        }
    }
    (files, t)
}

fn send_table(sock: &UnixStream, n: usize, first: u64) {
    let (files, t) = table(n, first);
    let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    send(sock, SET_MEM_TABLE, &t, &fds);
}

/// The device's current memory table (by address), once it differs from `old`.
fn new_table(
    dev: &pmds::vhost::VhostDevice,
    old: Option<usize>,
) -> Option<Arc<pmds::vhost::mem::GuestMemory>> {
    let mut got = None;
    wait_until(Duration::from_secs(5), || {
        got = dev.snapshot().mem.clone();
        got.as_ref().map(|m| Arc::as_ptr(m) as usize) != old && got.is_some()
    });
    got
}

#[test]
fn a_frontend_keeping_tables_past_its_share_of_the_sigbus_guard_loses_only_its_connection() {
    use pmds::vhost::backend::{GUARD_SHARE, TABLE_REGIONS};
    use pmds::vhost::VhostDevice;
    // In this process, so that the test can hold a table alive as a lagging poller would.
    let (bad, good) = (socket_path("vhquota-bad"), socket_path("vhquota-good"));
    let dev = VhostDevice::start(&bad, 1, false).unwrap();
    let other = VhostDevice::start(&good, 1, false).unwrap();
    let sock = connect(&bad);
    assert!(features(&sock).is_some());
    // Full tables, each kept alive (a poller that never lets go): the share holds two.
    let mut held = Vec::new();
    let mut last = None;
    for k in 0..GUARD_SHARE / TABLE_REGIONS {
        send_table(&sock, TABLE_REGIONS, (k * TABLE_REGIONS) as u64);
        let t = new_table(&dev, last).expect("a table within the share is mapped");
        last = Some(Arc::as_ptr(&t) as usize);
        held.push(t);
    }
    assert!(features(&sock).is_some(), "served within its share");
    let before = dev.protocol_errors.load(Ordering::Relaxed);
    let t0 = Instant::now();
    send_table(&sock, TABLE_REGIONS, 1000);
    assert!(closed_within(&sock, Duration::from_secs(5)), "dropped");
    let took = t0.elapsed();
    assert_eq!(
        dev.protocol_errors.load(Ordering::Relaxed),
        before + 1,
        "counted"
    );
    // The other port maps a full table meanwhile, twice over.
    let g = connect(&good);
    assert!(features(&g).is_some());
    let mut last = None;
    for k in 0..4 {
        send_table(&g, TABLE_REGIONS, (k * TABLE_REGIONS) as u64);
        let t = new_table(&other, last).expect("the other port's table is mapped");
        last = Some(Arc::as_ptr(&t) as usize);
    }
    assert!(features(&g).is_some(), "the other port is served");
    assert_eq!(other.protocol_errors.load(Ordering::Relaxed), 0);
    // Once the old tables go, the attacked port takes a new frontend and its table.
    drop(held);
    let again = connect(&bad);
    assert!(features(&again).is_some());
    send_table(&again, TABLE_REGIONS, 0);
    assert!(new_table(&dev, None).is_some());
    assert!(features(&again).is_some(), "served again");
    println!("a table past the share refused and the connection dropped after {took:?}");
    pmds::vhost::backend::stop(&dev);
    pmds::vhost::backend::stop(&other);
}
