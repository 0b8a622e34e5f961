//! Every bad input gives one line saying what is wrong and how to fix it, exit code 2, and
//! no files left behind.

use tests::*;

fn refused(program: &str, prefix: &str, args: &[&str], expect: &str) {
    let (code, out, err) = run(program, args);
    assert_eq!(
        code, 2,
        "{args:?}: exit code (stdout {out:?}, stderr {err:?})"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: exactly one line on stderr, got {lines:?}"
    );
    assert!(
        lines[0].contains(expect),
        "{args:?}: {:?} should mention {expect:?}",
        lines[0]
    );
    assert!(
        files_of(prefix).is_empty(),
        "{args:?} left {:?}",
        files_of(prefix)
    );
}

#[test]
fn primary_rejects_bad_options_with_one_line_and_no_files() {
    let p = unique_prefix("bad");
    let pp = p.as_str();
    let cases: &[(&[&str], &str)] = &[
        (&["--file-prefix", pp, "--bogus"], "--bogus"),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--huge-dir",
                "/dev/hugepages",
            ],
            "cannot be used with",
        ),
        (&["--file-prefix", "a/b"], "'/'"),
        (&["--file-prefix", ".."], "'.'"),
        (&["--file-prefix", ""], "1 to 32"),
        (&["--file-prefix", pp, "-m", "0"], "too little memory"),
        (&["--file-prefix", pp, "-m", "lots"], "in MiB"),
        (&["--file-prefix", pp, "-m", "1048576"], "/dev/shm has"),
        (
            &[
                "--file-prefix",
                pp,
                "-m",
                "2",
                "--no-huge",
                "--memzone",
                "big=8M",
            ],
            "raise -m",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--memzone",
                "z=1k@nowhere",
            ],
            "does not exist",
        ),
        (&["--file-prefix", pp, "--memseg", "x/y=2"], "memseg name"),
        (
            &[
                "--file-prefix",
                pp,
                "--memseg",
                "g=2",
                "--memseg",
                "g=4",
                "--no-huge",
            ],
            "given twice",
        ),
        (
            &["--file-prefix", pp, "--huge-dir", "/tmp"],
            "not a hugetlbfs mount",
        ),
        (&["--file-prefix", pp, "-l", "999"], "not an online CPU"),
        (
            &["--file-prefix", pp, "--proc-type", "sideways"],
            "sideways",
        ),
        (
            &["--file-prefix", pp, "--mempool", "mbufs"],
            "expected NAME=COUNT",
        ),
        (
            &["--file-prefix", pp, "--mempool", "m=0"],
            "COUNT \"0\" must be",
        ),
        (
            &["--file-prefix", pp, "--mempool", "m=64:600"],
            "CACHE \"600\" must be",
        ),
        (
            &["--file-prefix", pp, "--mempool", "m=64:0:70000"],
            "DATAROOM",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--mempool",
                "m=64@nowhere",
            ],
            "does not exist",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "-m",
                "2",
                "--mempool",
                "m=100000",
            ],
            "raise -m",
        ),
        (
            &["--file-prefix", pp, "--vdev", "net_bogus0"],
            "unknown driver",
        ),
        (
            &["--file-prefix", pp, "--vdev", "net_ring"],
            "instance number",
        ),
        (
            &["--file-prefix", pp, "--no-huge", "--vdev", "net_pcap0"],
            "rx_pcap=FILE",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--vdev",
                "net_pcap0,rx_pcap=/nonexistent.pcap",
            ],
            "No such file",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--vdev",
                "net_pcap0,rx_pcap=/etc/os-release",
            ],
            "not a pcap or pcapng file",
        ),
        (
            &["--file-prefix", pp, "--vdev", "net_ring0,queues=99"],
            "1..=16",
        ),
        (
            &["--file-prefix", pp, "--vdev", "net_ring0,iface=x"],
            "does not take",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--vdev",
                "net_ring0,rx_ring=nope",
            ],
            "--ring nope=1024",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--vdev",
                "net_ring0",
                "--vdev",
                "net_ring0",
            ],
            "given twice",
        ),
        (&["--file-prefix", pp, "--fwd", "io"], "add --vdev"),
        (
            &[
                "--file-prefix",
                pp,
                "--vdev",
                "net_ring0",
                "--fwd",
                "sideways",
            ],
            "unknown mode",
        ),
        (&["--file-prefix", pp, "--portlist", "x"], "--portlist"),
        (
            &["--file-prefix", pp, "--ivshmem", "vm1"],
            "GROUP:KIND=NAME",
        ),
        (
            &["--file-prefix", pp, "--ivshmem", "vm1:bogus=x"],
            "unknown kind",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--memseg",
                "vm1=16",
                "--ivshmem",
                "vm1:port=net_ring0",
            ],
            "port net_ring0 is not probed; add --vdev net_ring0",
        ),
        (
            &["--file-prefix", pp, "--ivshmem", "main:ring=r"],
            "cannot be exported",
        ),
        (
            &["--file-prefix", pp, "--ivshmem", "vm1:ring=r"],
            "--memseg vm1=16",
        ),
        (
            &[
                "--file-prefix",
                pp,
                "--no-huge",
                "--memseg",
                "vm1=4",
                "--ring",
                "r=64",
                "--ivshmem",
                "vm1:ring=r",
            ],
            "is not in memseg vm1",
        ),
    ];
    for (args, expect) in cases {
        refused("shmdp-primary", pp, args, expect);
    }
}

#[test]
fn secondary_without_a_primary_or_with_bad_options_fails_clearly() {
    let p = unique_prefix("nosec");
    refused(
        "shmdp-secondary",
        &p,
        &["--file-prefix", &p, "info"],
        "no primary is running",
    );
    refused(
        "shmdp-secondary",
        &p,
        &["--file-prefix", &p, "monitor"],
        "start one with",
    );
    refused(
        "shmdp-secondary",
        &p,
        &["--file-prefix", &p, "--proc-type", "primary", "info"],
        "only attaches",
    );
    refused(
        "shmdp-secondary",
        &p,
        &["--file-prefix", &p, "frobnicate"],
        "frobnicate",
    );
    refused(
        "shmdp-secondary",
        &p,
        &["--file-prefix", &p, "stats"],
        "no primary is running",
    );
    // The primary binary as a secondary, with nobody to attach to.
    refused(
        "shmdp-primary",
        &p,
        &["--file-prefix", &p, "--proc-type", "secondary"],
        "no primary is running",
    );
}

#[test]
fn a_second_primary_on_a_live_prefix_is_refused_and_touches_nothing() {
    let p = unique_prefix("twice");
    let first = Proc::primary(&p, &["-m", "2", "--no-huge"]);
    let before = files_of(&p);
    let (code, _, err) = run(
        "shmdp-primary",
        &["--file-prefix", &p, "--no-huge", "-m", "2"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("already running") && err.contains(&first.pid().to_string()),
        "{err}"
    );
    assert_eq!(
        files_of(&p),
        before,
        "the running primary's files are untouched"
    );
    let (code, _, _) = run("shmdp-secondary", &["--file-prefix", &p, "info"]);
    assert_eq!(code, 0, "the first primary still serves");
}
