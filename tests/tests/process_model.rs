//! The primary/secondary process model across real processes: attach and lookup, auto
//! proc-type, death detection both ways, stale-run recovery after `kill -9`, clean-up, and
//! primaries side by side.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::*;

fn info_json(prefix: &str) -> serde_json::Value {
    let (code, out, err) = run(
        "shmdp-secondary",
        &["--file-prefix", prefix, "info", "--json"],
    );
    assert_eq!(code, 0, "info failed: {err}");
    serde_json::from_str(&out).expect("info --json prints JSON")
}

#[test]
fn secondary_attaches_and_finds_memzones_in_every_memseg() {
    let prefix = unique_prefix("attach");
    let huge = require_hugepages();
    let mut args = vec![
        "-m",
        "4",
        "--memseg",
        "guest1=2",
        "--memzone",
        "hello=4k@guest1",
        "--memzone",
        "cfg=100",
    ];
    if !huge {
        args.push("--no-huge");
    }
    let primary = Proc::primary(&prefix, &args);
    let info = info_json(&prefix);
    assert_eq!(info["primary_pid"], primary.pid());
    assert_eq!(info["generation"], 1);
    let segs = info["memsegs"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0]["name"], "main");
    assert_eq!(segs[0]["size_bytes"], 4 << 20);
    assert_eq!(segs[1]["name"], "guest1");
    assert_eq!(
        segs[1]["size_bytes"],
        2 << 20,
        "rounded up to a power of two"
    );
    for s in segs {
        assert_eq!(s["hugetlb"], huge);
        let path = s["path"].as_str().unwrap();
        assert!(std::path::Path::new(path).exists());
        if huge {
            assert!(
                hugetlbfs_mounts()
                    .iter()
                    .any(|m| path.starts_with(m.to_str().unwrap())),
                "{path} on hugetlbfs"
            );
        }
    }
    let zones = |i: usize| -> Vec<String> {
        segs[i]["memzones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(zones(0), ["shmdp_run", "cfg"]);
    assert_eq!(zones(1), ["hello"]);
    let hello = &segs[1]["memzones"][0];
    assert_eq!(hello["len_bytes"], 4096);
    assert_eq!(hello["offset"].as_u64().unwrap() % 64, 0);

    // The text form says the same, and the primary logged the attach and the detach.
    let (code, out, _) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 0);
    assert!(out.contains("memzone hello"), "{out}");
    let mut primary = primary;
    assert!(
        primary.wait_stderr("secondary detached", Duration::from_secs(2)),
        "{:?}",
        primary.stderr()
    );
}

#[test]
fn auto_proc_type_becomes_primary_then_secondary() {
    let prefix = unique_prefix("auto");
    let first = Proc::primary(&prefix, &["--proc-type", "auto", "-m", "2", "--no-huge"]);
    let mut second = Proc::spawn(
        "shmdp-primary",
        &["--file-prefix", &prefix, "--proc-type", "auto"],
        None,
    );
    assert!(
        second.wait_stdout("attached as secondary", Duration::from_secs(5)),
        "{:?} {:?}",
        second.stdout(),
        second.stderr()
    );
    assert!(second.stdout().iter().any(|l| l.contains("memseg 0 main")));
    // The primary shuts down cleanly: the auto-secondary hears about it and exits 3.
    first.signal(Signal::SIGTERM);
    let st = second
        .wait_exit(Duration::from_secs(3))
        .expect("secondary exits when the primary stops");
    assert_eq!(st.code(), Some(3));
    assert!(
        second.stderr().iter().any(|l| l.contains("shut down")),
        "{:?}",
        second.stderr()
    );
}

#[test]
fn primary_notices_a_killed_secondary_within_a_second() {
    let prefix = unique_prefix("secdeath");
    let mut primary = Proc::primary(&prefix, &["-m", "2", "--no-huge"]);
    let mut sec = Proc::spawn(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "monitor"],
        None,
    );
    assert!(sec.wait_stdout("attached as secondary", Duration::from_secs(5)));
    assert!(primary.wait_stderr("secondary attached: slot 1", Duration::from_secs(2)));
    let t0 = Instant::now();
    sec.signal(Signal::SIGKILL);
    let pat = format!("secondary died: slot 1, pid {}", sec.pid());
    assert!(
        primary.wait_stderr(&pat, Duration::from_secs(1)),
        "{:?}",
        primary.stderr()
    );
    eprintln!("secondary death noticed in {:?}", t0.elapsed());
    // The slot is free again: the next secondary gets slot 1.
    let info = info_json(&prefix);
    assert_eq!(info["slot"], 1);
}

#[test]
fn secondary_notices_a_killed_primary_within_a_second() {
    let prefix = unique_prefix("primdeath");
    let primary = Proc::primary(&prefix, &["-m", "2", "--no-huge"]);
    let mut sec = Proc::spawn(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "monitor"],
        None,
    );
    assert!(sec.wait_stdout("attached as secondary", Duration::from_secs(5)));
    let t0 = Instant::now();
    primary.signal(Signal::SIGKILL);
    let st = sec
        .wait_exit(Duration::from_secs(1))
        .expect("secondary exits within a second");
    eprintln!("primary death noticed in {:?}", t0.elapsed());
    assert_eq!(st.code(), Some(3));
    assert!(
        sec.stderr()
            .iter()
            .any(|l| l.contains(&format!("the primary (pid {}) died", primary.pid()))),
        "{:?}",
        sec.stderr()
    );
}

#[test]
fn stale_run_after_kill_9_is_detected_and_cleaned_by_the_next_primary() {
    let prefix = unique_prefix("stale");
    let huge = require_hugepages();
    let mut args = vec!["-m", "2", "--memseg", "extra=2"];
    if !huge {
        args.push("--no-huge");
    }
    let mut first = Proc::primary(&prefix, &args);
    let free_before_kill = free_hugepages();
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(2)).expect("killed");
    let left = files_of(&prefix);
    assert!(
        left.iter().any(|p| p
            .to_string_lossy()
            .contains(&format!("shmdp.{prefix}.main"))),
        "kill -9 leaves the memseg: {left:?}"
    );

    // A secondary is told the primary is dead, clearly.
    let (code, _, err) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is dead") && err.contains(&first.pid().to_string()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The next primary removes the stale files and starts as generation 2.
    let mut second = Proc::primary(&prefix, &args);
    assert!(
        second.wait_stderr("removed the files of a crashed run", Duration::from_secs(1)),
        "{:?}",
        second.stderr()
    );
    assert!(second.stdout().iter().any(|l| l.contains("generation 2")));
    let info = info_json(&prefix);
    assert_eq!(info["generation"], 2);
    if huge {
        // The crashed run's hugepages were returned: the same number is in use as before.
        assert!(free_hugepages() + 2 >= free_before_kill, "hugepages leaked");
    }
    second.signal(Signal::SIGINT);
    assert_eq!(
        second.wait_exit(Duration::from_secs(5)).unwrap().code(),
        Some(0)
    );
    assert!(files_of(&prefix).is_empty(), "{:?}", files_of(&prefix));
}

#[test]
fn clean_shutdown_removes_every_file_including_hugepages() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let prefix = unique_prefix("clean");
        let huge = require_hugepages();
        let free0 = free_hugepages();
        let mut args = vec!["-m", "8", "--memseg", "g=4"];
        if !huge {
            args.push("--no-huge");
        }
        let mut p = Proc::primary(&prefix, &args);
        assert!(
            files_of(&prefix).len() >= 5,
            "dir, lock, socket, 2 links, 2 files: {:?}",
            files_of(&prefix)
        );
        p.signal(sig);
        let st = p
            .wait_exit(Duration::from_secs(5))
            .expect("exits on signal");
        assert_eq!(st.code(), Some(0), "{:?}", p.stderr());
        assert!(p
            .stdout()
            .iter()
            .any(|l| l.contains("removed 2 memseg files")));
        assert!(
            files_of(&prefix).is_empty(),
            "{sig:?} left {:?}",
            files_of(&prefix)
        );
        if huge {
            // Other tests run in parallel, so only check that ours (6 pages) came back.
            assert!(
                wait_until(Duration::from_secs(2), || free_hugepages() + 64 >= free0),
                "hugepages not returned"
            );
        }
    }
}

#[test]
fn two_primaries_with_different_prefixes_run_side_by_side() {
    let (a, b) = (unique_prefix("sideA"), unique_prefix("sideB"));
    let pa = Proc::primary(&a, &["-m", "2", "--no-huge", "--memzone", "only_a=64"]);
    let pb = Proc::primary(&b, &["-m", "2", "--no-huge", "--memzone", "only_b=64"]);
    let (ia, ib) = (info_json(&a), info_json(&b));
    assert_eq!(ia["primary_pid"], pa.pid());
    assert_eq!(ib["primary_pid"], pb.pid());
    let names = |i: &serde_json::Value| i["memsegs"][0]["memzones"].to_string();
    assert!(names(&ia).contains("only_a") && !names(&ia).contains("only_b"));
    assert!(names(&ib).contains("only_b") && !names(&ib).contains("only_a"));
}

#[test]
fn a_secondary_refuses_a_memseg_that_is_not_ours_or_truncated() {
    use std::os::unix::fs::FileExt;
    let prefix = unique_prefix("garbage");
    let _p = Proc::primary(&prefix, &["-m", "2", "--no-huge", "--memseg", "victim=2"]);
    let path = format!("/dev/shm/shmdp.{prefix}.victim");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut saved = [0u8; 128];
    f.read_exact_at(&mut saved, 0).unwrap();

    f.write_all_at(b"NOTASEGM", 0).unwrap();
    let (code, _, err) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not a shmdp memseg") && err.contains("victim"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    f.write_all_at(&saved, 0).unwrap();
    f.write_all_at(&99u16.to_le_bytes(), 8).unwrap();
    let (code, _, err) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 2);
    assert!(err.contains("layout version 99"), "{err}");

    f.write_all_at(&saved, 0).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(100).unwrap();
    let (code, _, err) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 2);
    assert!(err.contains("truncated"), "{err}");

    // Random garbage over the whole header and table: still one clean error, never a crash.
    f.set_len(len).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..16384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    f.write_all_at(&junk, 0).unwrap();
    let (code, _, err) = run("shmdp-secondary", &["--file-prefix", &prefix, "info"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    f.write_all_at(&saved, 0).unwrap();
    f.write_all_at(&[0u8; 16384 - 128], 128).unwrap();
}

#[test]
fn falls_back_to_dev_shm_with_one_warning_when_hugepages_run_short() {
    if !require_hugepages() {
        return;
    }
    // Ask for a main memseg larger than all free hugepages together (a power of two, so
    // it is exactly that size), but small enough for /dev/shm.
    let free_mib = free_hugepages() * 2;
    let mib = (free_mib + 1).next_power_of_two();
    if mib > 8192 {
        eprintln!("SKIP: {free_mib} MiB of free hugepages; a larger-than-that /dev/shm memseg is too big for a test");
        return;
    }
    let prefix = unique_prefix("fallback");
    let mut p = Proc::primary(&prefix, &["-m", &mib.to_string()]);
    let warnings: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", p.stderr());
    assert!(
        warnings[0].contains("too few free hugepages") && warnings[0].contains("/dev/shm"),
        "{warnings:?}"
    );
    assert!(
        p.stdout()
            .iter()
            .any(|l| l.contains(&format!("main={mib}MiB@shm"))),
        "{:?}",
        p.stdout()
    );
    assert!(std::path::Path::new(&format!("/dev/shm/shmdp.{prefix}.main")).exists());
    p.signal(Signal::SIGTERM);
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert!(files_of(&prefix).is_empty());
}
