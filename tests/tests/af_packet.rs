//! Live interfaces through AF_PACKET: inside a network namespace the test creates, a veth
//! pair carries frames a secondary sends on one end (txonly on `iface=vb`) to a port on the
//! other end (`iface=va`), which another secondary forwards into a pcap file; tshark and our
//! reader count every frame.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tests::*;

/// A network namespace with a veth pair `va`/`vb`, both up, IPv6 off (no kernel chatter);
/// deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", name]) {
            return None;
        }
        let ns = Netns(name.to_string());
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                name,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .status()
            .is_ok_and(|s| s.success())
            && ip(&[
                "-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb",
            ])
            && ip(&["-n", name, "link", "set", "va", "up"])
            && ip(&["-n", name, "link", "set", "vb", "up"]);
        ok.then_some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn frames_cross_a_veth_pair_in_a_netns_through_af_packet() {
    let prefix = unique_prefix("afp");
    let have_ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("iproute2 (ip)", have_ip, "apt-get install iproute2") {
        return;
    }
    let Some(ns) = Netns::create(&prefix) else {
        let _ = require("network namespaces", false, "run the tests as root");
        return;
    };
    let out = std::env::temp_dir().join(format!("{prefix}-out.pcap"));
    let tx = format!("net_pcap1,tx_pcap={}", out.display());
    let mut args = vec![
        "--file-prefix",
        &prefix,
        "-m",
        "64",
        "--vdev",
        "net_pcap0,iface=va",
        "--vdev",
        &tx,
        "--vdev",
        "net_pcap2,tx_iface=vb",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut primary = Proc::spawn_in_netns(&ns.0, "shmdp-primary", &args, Some(&prefix));
    assert!(
        primary.wait_stdout("ready:", Duration::from_secs(10)),
        "{:?}",
        primary.stderr()
    );
    let sec = |a: &[&str]| {
        let mut v = vec!["--file-prefix", prefix.as_str()];
        v.extend_from_slice(a);
        Proc::spawn_in_netns(&ns.0, "shmdp-secondary", &v, None)
    };
    let mut fwd = sec(&[
        "fwd",
        "--fwd",
        "io",
        "--portlist",
        "0,1",
        // Generous: under a loaded test run the generator can take seconds to start.
        "--idle-exit",
        "5",
    ]);
    assert!(fwd.wait_stdout("forwarding:", Duration::from_secs(10)));
    let mut gen = sec(&[
        "fwd",
        "--fwd",
        "txonly",
        "--portlist",
        "2",
        "--tx-count",
        "3000",
        "--txpkts",
        "200",
    ]);
    let st = gen
        .wait_exit(Duration::from_secs(60))
        .expect("txonly finished");
    assert!(st.success(), "{:?} {:?}", gen.stdout(), gen.stderr());
    let st = fwd
        .wait_exit(Duration::from_secs(60))
        .expect("fwd finished");
    assert!(st.success(), "{:?} {:?}", fwd.stdout(), fwd.stderr());
    // Every generated frame (UDP, 200 bytes) arrived through the veth pair (3000 frames fit
    // the 4096-frame receive ring, so a slow forwarder cannot lose any).
    let data = std::fs::read(&out).unwrap();
    let (mut fmt, mut pos) = pmds::pcap_file::open(&data).unwrap();
    let mut ours = 0;
    while let Some((r, next)) = pmds::pcap_file::next_record(&data, pos, &mut fmt).unwrap() {
        if r.data.len() == 200 && r.data[12..14] == [0x08, 0x00] && r.data[23] == 17 {
            ours += 1;
        }
        pos = next;
    }
    assert_eq!(ours, 3000, "frames received through AF_PACKET");
    primary.signal(Signal::SIGINT);
    primary.wait_exit(Duration::from_secs(10));
    let _ = std::fs::remove_file(out);
}
