//! vhost-user with real peers. Our backend (`net_vhost`) against DPDK's `dpdk-testpmd`
//! virtio-user PMD (`--vdev net_virtio_user0,path=SOCK`); our frontend (`net_virtio_user`)
//! against testpmd's vhost PMD (`--vdev net_vhost0,iface=SOCK`); and ours against ours in
//! two processes. Each direction moves 3·10^5 frames (or all a testpmd txonly run queued)
//! with exact counts on both sides.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::*;

/// testpmd with a virtio-user port on `sock`, fed the interactive `commands` (one per
/// line; `sleep N` lines pause); returns its output.
fn testpmd(tag: &str, sock: &str, extra_vdev: &str, commands: &[&str]) -> Option<String> {
    testpmd_with(
        tag,
        &format!("net_virtio_user0,path={sock},queues=1{extra_vdev}"),
        commands,
    )
}

/// testpmd with `vdev`, fed `commands` as [`testpmd`] does.
fn testpmd_with(tag: &str, vdev: &str, commands: &[&str]) -> Option<String> {
    let have = Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !require(
        "dpdk-testpmd",
        have,
        "apt-get install dpdk (scripts/setup.sh does it)",
    ) || !require_hugepages()
    {
        return None;
    }
    let mut script = String::new();
    for c in commands {
        match c.strip_prefix("sleep ") {
            Some(secs) => script += &format!("sleep {secs}; "),
            None => script += &format!("echo '{c}'; "),
        }
    }
    let prefix = unique_prefix(tag);
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "({script}) | timeout 120 dpdk-testpmd -l 0-1 --no-pci -m 256 --file-prefix {prefix} --single-file-segments --vdev {vdev} -- -i --no-flush-rx --total-num-mbufs=16384 2>&1"
        ))
        .output()
        .expect("run testpmd");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `NAME: number` after `after` in `text`.
fn figure(text: &str, after: &str, name: &str) -> u64 {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in:\n{text}"));
    let rest = &text[from..];
    let at = rest
        .find(name)
        .unwrap_or_else(|| panic!("no {name:?} in:\n{rest}"));
    rest[at + name.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {name:?}"))
}

fn sock_path(tag: &str) -> String {
    std::env::temp_dir()
        .join(format!("{}.sock", unique_prefix(tag)))
        .display()
        .to_string()
}

/// The scenarios run one after the other: each has two busy-polling processes, and this
/// machine has two CPUs.
#[test]
fn vhost_user_with_real_peers() {
    our_txonly_reaches_testpmd_exactly();
    testpmd_txonly_reaches_us_exactly_and_macswap_answers();
    our_virtio_user_against_testpmd_vhost();
    our_virtio_user_against_our_vhost();
    our_backend_reconnects_in_client_mode();
}

fn our_backend_reconnects_in_client_mode() {
    // testpmd's virtio-user listens (server=1); our backend connects, and connects again
    // when a second testpmd listens after the first quit.
    let sock = sock_path("vhcl");
    let ours = format!("net_vhost0,iface={sock},client=1");
    let mut p = primary_on("vhcl", &ours, "rxonly", "20", &[]);
    let vdev = format!("net_virtio_user0,path={sock},queues=1,server=1");
    let mut sent = 0;
    for round in 0..2 {
        let Some(out) = testpmd_with(
            &format!("tpcl{round}"),
            &vdev,
            &[
                "sleep 2",
                "set fwd txonly",
                "start",
                "sleep 2",
                "stop",
                "sleep 0.5",
                "quit",
            ],
        ) else {
            return;
        };
        let n = figure(&out, "Forward statistics for port 0", "TX-packets:");
        assert!(n > 0, "round {round}: testpmd sent nothing:\n{out}");
        sent += n;
        let _ = std::fs::remove_file(&sock);
    }
    let got = report(&mut p);
    assert_eq!(
        figure(&got, "Forward statistics for port 0", "RX-packets:"),
        sent,
        "both connections' frames, exactly: {got}"
    );
}

/// A primary forwarding `mode` on one port `vdev` for at most `secs`, with `extra` options.
fn primary_on(tag: &str, vdev: &str, mode: &str, secs: &str, extra: &[&str]) -> Proc {
    let prefix = unique_prefix(tag);
    let mut args = vec![
        "--no-huge",
        "-m",
        "64",
        "--vdev",
        vdev,
        "--fwd",
        mode,
        "--duration",
        secs,
    ];
    args.extend_from_slice(extra);
    Proc::primary(&prefix, &args)
}

/// The primary's final report, once it has exited successfully.
fn report(p: &mut Proc) -> String {
    let st = p.wait_exit(Duration::from_secs(60)).expect("primary ends");
    assert!(st.success(), "{:?} {:?}", p.stdout(), p.stderr());
    p.stdout().join("\n")
}

/// Frames per counted direction: enough to show exact accounting over many ring wraps,
/// few enough that a debug build on a loaded two-core machine moves them in the phases'
/// time (the tests count frames; speed is the bench's business).
const FRAMES: u64 = 300_000;
const COUNTED: &[&str] = &["--tx-count", "300000", "--tx-retry"];

fn our_virtio_user_against_testpmd_vhost() {
    // testpmd's vhost PMD listens; our virtio-user connects to it.
    let sock = sock_path("vutp");
    let vdev = format!("net_vhost0,iface={sock},queues=1");
    let ours = format!("net_virtio_user0,path={sock}");
    let s2 = ours.clone();
    let tx = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let mut p = primary_on("vutx", &s2, "txonly", "8", COUNTED);
        report(&mut p)
    });
    let Some(out) = testpmd_with(
        "tpv",
        &vdev,
        &[
            "set fwd rxonly",
            "start",
            "sleep 10",
            "stop",
            "sleep 0.3",
            "quit",
        ],
    ) else {
        return;
    };
    let sent = tx.join().unwrap();
    assert!(sent.contains("TX-packets: 300000 "), "{sent}");
    assert_eq!(
        figure(&out, "Forward statistics for port 0", "RX-packets:"),
        FRAMES,
        "{out}"
    );
    // The other way: testpmd's txonly into our rxonly.
    let sock = sock_path("vutp2");
    let vdev = format!("net_vhost0,iface={sock},queues=1");
    let ours = format!("net_virtio_user0,path={sock}");
    let rx = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let mut p = primary_on("vurx", &ours, "rxonly", "11", &[]);
        report(&mut p)
    });
    // As above: long enough for FRAMES frames with debug binaries.
    let Some(out) = testpmd_with(
        "tpv2",
        &vdev,
        &[
            "set fwd txonly",
            "start",
            "sleep 9",
            "stop",
            "sleep 0.5",
            "show port stats all",
            "sleep 4",
            "quit",
        ],
    ) else {
        return;
    };
    let got = rx.join().unwrap();
    let sent = figure(&out, "Forward statistics for port 0", "TX-packets:");
    assert!(sent >= FRAMES, "testpmd sent only {sent}:\n{out}");
    assert_eq!(
        figure(&got, "Forward statistics for port 0", "RX-packets:"),
        sent,
        "{got}"
    );
}

fn our_virtio_user_against_our_vhost() {
    for (backend_mode, frontend_mode) in [("rxonly", "txonly"), ("txonly", "rxonly")] {
        let sock = sock_path("vuvh");
        let backend = format!("net_vhost0,iface={sock}");
        let frontend = format!("net_virtio_user0,path={sock}");
        let extra_b: &[&str] = if backend_mode == "txonly" {
            COUNTED
        } else {
            &[]
        };
        let extra_f: &[&str] = if frontend_mode == "txonly" {
            COUNTED
        } else {
            &[]
        };
        let mut b = primary_on("vhb", &backend, backend_mode, "12", extra_b);
        assert!(b.wait_stdout("forwarding:", Duration::from_secs(10)));
        let mut f = primary_on("vuf", &frontend, frontend_mode, "10", extra_f);
        let (rb, rf) = (report(&mut b), report(&mut f));
        let (sender, receiver) = if backend_mode == "txonly" {
            (&rb, &rf)
        } else {
            (&rf, &rb)
        };
        assert!(sender.contains("TX-packets: 300000 "), "{sender}");
        assert_eq!(
            figure(receiver, "Forward statistics for port 0", "RX-packets:"),
            FRAMES,
            "{backend_mode} -> {frontend_mode}: {receiver}"
        );
    }
}

fn our_txonly_reaches_testpmd_exactly() {
    let sock = sock_path("vhtx");
    let prefix = unique_prefix("vhtx");
    let vdev = format!("net_vhost0,iface={sock}");
    // Lossless: what testpmd's ring cannot take now is offered again; the primary stays
    // up (--duration) while testpmd drains its ring.
    let mut primary = Proc::primary(
        &prefix,
        &[
            "--no-huge",
            "-m",
            "64",
            "--vdev",
            &vdev,
            "--fwd",
            "txonly",
            "--tx-count",
            "300000",
            "--tx-retry",
            "--duration",
            "10",
        ],
    );
    let Some(out) = testpmd(
        "tpr",
        &sock,
        "",
        &[
            "set fwd rxonly",
            "start",
            "sleep 8",
            "stop",
            "sleep 0.3",
            "quit",
        ],
    ) else {
        return;
    };
    let st = primary
        .wait_exit(Duration::from_secs(30))
        .expect("primary ends");
    assert!(st.success(), "{:?}", primary.stderr());
    let ours = primary.stdout().join("\n");
    assert!(ours.contains("TX-packets: 300000 "), "{ours}");
    assert_eq!(
        figure(&out, "Forward statistics for port 0", "RX-packets:"),
        FRAMES,
        "{out}"
    );
    assert!(
        !std::path::Path::new(&sock).exists(),
        "socket removed at stop"
    );
}

fn testpmd_txonly_reaches_us_exactly_and_macswap_answers() {
    let sock = sock_path("vhrx");
    let prefix = unique_prefix("vhrx");
    let vdev = format!("net_vhost0,iface={sock}");
    let mut primary = Proc::primary(
        &prefix,
        &[
            "--no-huge",
            "-m",
            "64",
            "--vdev",
            &vdev,
            "--fwd",
            "rxonly",
            "--duration",
            "12",
        ],
    );
    assert!(primary.wait_stdout("forwarding:", Duration::from_secs(10)));
    // Long enough for FRAMES frames with debug binaries on a busy machine (the test counts
    // frames; speed is the bench's business).
    let Some(out) = testpmd(
        "tpt",
        &sock,
        "",
        &[
            "set fwd txonly",
            "start",
            "sleep 6",
            "stop",
            "sleep 0.5",
            "quit",
        ],
    ) else {
        return;
    };
    let sent = figure(&out, "Forward statistics for port 0", "TX-packets:");
    assert!(sent >= FRAMES, "testpmd sent only {sent}:\n{out}");
    let st = primary
        .wait_exit(Duration::from_secs(30))
        .expect("primary ends");
    assert!(st.success(), "{:?}", primary.stderr());
    let ours = primary.stdout().join("\n");
    assert_eq!(
        figure(&ours, "Forward statistics for port 0", "RX-packets:"),
        sent,
        "every frame testpmd queued arrived: {ours}"
    );

    // A round trip: testpmd sends 4 bursts, our macswap sends them back.
    let prefix = unique_prefix("vhms");
    let mut primary = Proc::primary(
        &prefix,
        &["--no-huge", "-m", "64", "--vdev", &vdev, "--fwd", "macswap"],
    );
    assert!(primary.wait_stdout("forwarding:", Duration::from_secs(10)));
    let Some(out) = testpmd(
        "tpm",
        &sock,
        "",
        &[
            "set fwd rxonly",
            "start tx_first 4",
            "sleep 2",
            "stop",
            "sleep 0.3",
            "quit",
        ],
    ) else {
        return;
    };
    assert_eq!(
        figure(&out, "Forward statistics for port 0", "RX-packets:"),
        128,
        "{out}"
    );
    primary.signal(nix::sys::signal::Signal::SIGINT);
    let st = primary
        .wait_exit(Duration::from_secs(10))
        .expect("primary ends");
    assert!(st.success());
    let ours = primary.stdout().join("\n");
    assert!(ours.contains("every packet accounted for"), "{ours}");
}
