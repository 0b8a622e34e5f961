//! Rings across real processes: the primary creates (and fills) a ring that a secondary
//! drains; several secondaries push 10^7 sequence-numbered elements through one ring; and
//! garbage written into a live ring's indices from another mapping is reported, not
//! obeyed, while every process survives.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use tests::*;

#[test]
fn secondary_drains_what_the_primary_fills() {
    let prefix = unique_prefix("ringfill");
    let huge = require_hugepages();
    let mut args = vec![
        "-m",
        "4",
        "--ring",
        "xp=1024:sp_sc",
        "--fill-ring",
        "xp=100000",
    ];
    if !huge {
        args.push("--no-huge");
    }
    let mut primary = Proc::primary(&prefix, &args);
    let mut d = secondary(&prefix, &["ring-drain", "xp", "--count", "100000"]);
    let (code, out, err) = finish(&mut d, 60);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("drained 100000 elements from xp: 1 producers, all in order"),
        "{out}"
    );
    assert!(primary.wait_stderr("filled 100000 elements into xp", Duration::from_secs(5)));
    // The ring is empty again and the roles were released: another round works.
    let info = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "info", "--json"],
    );
    assert!(info.1.contains("\"kind\": \"ring\""), "{}", info.1);
}

#[test]
fn ten_million_elements_from_two_producer_processes_arrive_complete_and_in_order() {
    let prefix = unique_prefix("ringstress");
    let per = 5_000_000u64;
    let _primary = Proc::primary(
        &prefix,
        &["-m", "4", "--no-huge", "--ring", "stress=4096:mp_sc"],
    );
    let mut drain = secondary(
        &prefix,
        &[
            "ring-drain",
            "stress",
            "--count",
            &(2 * per).to_string(),
            "--producers",
            "2",
        ],
    );
    let mut fills: Vec<Proc> = (0..2)
        .map(|id| {
            secondary(
                &prefix,
                &[
                    "ring-fill",
                    "stress",
                    "--count",
                    &per.to_string(),
                    "--producer-id",
                    &id.to_string(),
                ],
            )
        })
        .collect();
    for f in &mut fills {
        let (code, out, err) = finish(f, 300);
        assert_eq!(code, 0, "{out} {err}");
    }
    let (code, out, err) = finish(&mut drain, 300);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("drained 10000000 elements from stress: 2 producers, all in order"),
        "{out}"
    );
    eprintln!("{out}");
}

#[test]
fn garbage_in_a_live_rings_indices_is_reported_and_every_process_survives() {
    let prefix = unique_prefix("ringcorrupt");
    let mut primary = Proc::primary(
        &prefix,
        &[
            "-m",
            "2",
            "--no-huge",
            "--ring",
            "victim=64:mp_mc",
            "--ring",
            "bystander=64:sp_sc",
            "--fill-ring",
            "victim=1000000000",
        ],
    );
    // Where is the ring? Ask a secondary, as any process could.
    let (code, out, _) = run(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "info", "--json"],
    );
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let zone = info["memsegs"][0]["memzones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "victim")
        .unwrap()
        .clone();
    let off = zone["offset"].as_u64().unwrap();

    // A consumer is draining while we scribble on the producer's and consumer's indices
    // (ring layout: prod head/tail at +128, cons head/tail at +256) through our own
    // mapping of the memseg file.
    let mut drain = secondary(
        &prefix,
        &[
            "ring-drain",
            "victim",
            "--count",
            "1000000000",
            "--timeout",
            "5",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmdp.{prefix}.main"))
        .unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        file.write_all_at(&x.to_le_bytes(), off + 128).unwrap();
        file.write_all_at(&x.rotate_left(17).to_le_bytes(), off + 256)
            .unwrap();
    }
    let (code, out, err) = finish(&mut drain, 30);
    assert_eq!(
        code, 1,
        "the drainer reports the ring's failure: {out} {err}"
    );
    assert!(
        err.contains("ring indices are corrupt")
            || err.contains("out of order")
            || err.contains("expected sequence")
            || err.contains("stalled"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The primary survived, and the other ring in the same memseg still works.
    assert!(
        primary.try_status().is_none(),
        "primary died: {:?}",
        primary.stderr()
    );
    let mut f = secondary(&prefix, &["ring-fill", "bystander", "--count", "50"]);
    let mut d = secondary(&prefix, &["ring-drain", "bystander", "--count", "50"]);
    assert_eq!(finish(&mut f, 10).0, 0);
    assert_eq!(finish(&mut d, 10).0, 0);
    primary.signal(Signal::SIGTERM);
    let st = primary
        .wait_exit(Duration::from_secs(5))
        .expect("primary stops");
    assert_eq!(st.code(), Some(0), "{:?}", primary.stderr());
}
