//! Hostile inputs that are files, and stop signals under traffic that never pauses:
//! - malformed pcapng files (the 40-byte file that once panicked the reader, a block that
//!   claims 4 GiB) are read up to the bad block, counted as one error, and the run ends
//!   normally;
//! - a capture truncated while a primary reads it ends the stream with an error instead of
//!   a SIGBUS (the reader no longer maps the file);
//! - `--fwd io --tx-first` over loopback rings (every round busy, for ever) stops on
//!   SIGINT and on SIGTERM within a bounded time, in a primary and in a secondary, and
//!   leaves no files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::*;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shmdp-hostile-{}-{name}", std::process::id()))
}

/// A pcapng section header (28 bytes, little endian, no options).
fn pcapng_shb() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(0x0a0d_0d0au32.to_le_bytes());
    f.extend(28u32.to_le_bytes());
    f.extend(0x1a2b_3c4du32.to_le_bytes());
    f.extend(1u16.to_le_bytes());
    f.extend(0u16.to_le_bytes());
    f.extend(u64::MAX.to_le_bytes());
    f.extend(28u32.to_le_bytes());
    f
}

/// A primary forwarding capture `inp` to pcap file `out` (io, until 1 s idle).
fn pcap_forwarder(prefix: &str, inp: &std::path::Path, out: &std::path::Path) -> Proc {
    let rx = format!("net_pcap0,rx_pcap={}", inp.display());
    let tx = format!("net_pcap1,tx_pcap={}", out.display());
    let args = [
        "-m",
        "64",
        "--no-huge",
        "--vdev",
        &rx,
        "--vdev",
        &tx,
        "--fwd",
        "io",
        "--idle-exit",
        "1",
    ];
    Proc::primary(prefix, &args)
}

/// Forwards `input` to a pcap file with a primary (io, until 1 s idle) and returns its
/// exit status, its stderr and the frames written.
fn forward_file(tag: &str, input: &[u8]) -> (std::process::ExitStatus, Vec<String>, usize) {
    let prefix = unique_prefix(tag);
    let inp = tmp(&format!("{tag}-in.pcapng"));
    let out = tmp(&format!("{tag}-out.pcap"));
    std::fs::write(&inp, input).unwrap();
    let mut p = pcap_forwarder(&prefix, &inp, &out);
    let st = p.wait_exit(Duration::from_secs(30)).expect("primary ended");
    let frames = read_pcap(&out).len();
    let _ = std::fs::remove_file(&inp);
    let _ = std::fs::remove_file(&out);
    assert!(files_of(&prefix).is_empty(), "left {:?}", files_of(&prefix));
    (st, p.stderr(), frames)
}

#[test]
fn malformed_pcapng_files_are_read_to_the_bad_block_and_counted() {
    // The attacker's 40 bytes: a section header and a 12-byte enhanced packet block (too
    // short to hold its own fields).
    let mut tiny = pcapng_shb();
    tiny.extend(6u32.to_le_bytes());
    tiny.extend(12u32.to_le_bytes());
    tiny.extend(12u32.to_le_bytes());
    assert_eq!(tiny.len(), 40);
    // A block that claims almost 4 GiB after one good packet.
    let mut huge = pcapng_shb();
    let mut epb = Vec::new();
    epb.extend(6u32.to_le_bytes());
    epb.extend(96u32.to_le_bytes());
    epb.extend([0u8; 12]);
    epb.extend(60u32.to_le_bytes());
    epb.extend(60u32.to_le_bytes());
    epb.extend([0x5au8; 60]);
    epb.extend(96u32.to_le_bytes());
    huge.extend(&epb);
    huge.extend(6u32.to_le_bytes());
    huge.extend(0xffff_fff0u32.to_le_bytes());
    huge.extend([0u8; 32]);
    for (tag, file, good) in [("tiny", tiny, 0), ("huge", huge, 1)] {
        let (st, err, frames) = forward_file(tag, &file);
        assert!(st.success(), "{tag}: {st:?} {err:?}");
        assert_eq!(frames, good, "{tag}: the packets before the bad block");
        assert!(
            err.iter().any(|l| l.contains("malformed record at byte")),
            "{tag}: the bad block is reported: {err:?}"
        );
    }
}

#[test]
fn a_capture_truncated_while_it_is_read_ends_the_stream_without_sigbus() {
    // 2·10^6 frames of 64 bytes (160 MB): a debug forwarder needs around a second for it,
    // so the cut lands while the primary is still reading.
    let prefix = unique_prefix("trunc");
    let inp = tmp("trunc-in.pcap");
    let out = tmp("trunc-out.pcap");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&inp).unwrap());
        w.write_all(&pmds::pcap_file::file_header()).unwrap();
        let mut rec = [0u8; 16 + 64];
        rec[8..12].copy_from_slice(&64u32.to_le_bytes());
        rec[12..16].copy_from_slice(&64u32.to_le_bytes());
        for _ in 0..2_000_000u32 {
            w.write_all(&rec).unwrap();
        }
    }
    let mut p = pcap_forwarder(&prefix, &inp, &out);
    // Cut inside a record, far past anything read yet.
    let cut = 24 + 80 * 1_000_000 + 37;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&inp)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let st = p.wait_exit(Duration::from_secs(60)).expect("primary ended");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), None, "killed by a signal: {st:?}");
    assert!(st.success(), "{st:?} {:?}", p.stderr());
    let frames = read_pcap(&out).len();
    let _ = std::fs::remove_file(&inp);
    let _ = std::fs::remove_file(&out);
    eprintln!("{frames} frames forwarded before the end of the file");
    // Everything up to the cut (if the reader got there before it, the whole file).
    assert!(frames == 1_000_000 || frames == 2_000_000, "{frames}");
    if frames == 1_000_000 {
        assert!(
            p.stderr().iter().any(|l| l.contains("truncated at byte")),
            "{:?}",
            p.stderr()
        );
    }
    assert!(files_of(&prefix).is_empty(), "left {:?}", files_of(&prefix));
}

/// Sends `sig` to `p` and returns how long it took to exit.
fn stop_with(p: &mut Proc, sig: Signal) -> Duration {
    let t = Instant::now();
    p.signal(sig);
    let st = p
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{sig:?} ignored for 10 s: {:?}", p.stderr()));
    assert!(st.success(), "{sig:?}: {st:?} {:?}", p.stderr());
    t.elapsed()
}

#[test]
fn circling_traffic_stops_on_sigint_and_sigterm() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // In the primary.
        let prefix = unique_prefix("circle");
        let mut p = Proc::primary(
            &prefix,
            &[
                "-m",
                "64",
                "--no-huge",
                "--vdev",
                "net_ring0",
                "--vdev",
                "net_ring1",
                "--fwd",
                "io",
                "--tx-first",
            ],
        );
        assert!(p.wait_stdout("forwarding", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        let took = stop_with(&mut p, sig);
        assert!(took < Duration::from_secs(5), "{sig:?}: {took:?}");
        assert!(files_of(&prefix).is_empty(), "left {:?}", files_of(&prefix));

        // In a secondary forwarding the primary's ring ports.
        let prefix = unique_prefix("circle2");
        let mut p = Proc::primary(
            &prefix,
            &[
                "-m",
                "64",
                "--no-huge",
                "--vdev",
                "net_ring0",
                "--vdev",
                "net_ring1",
            ],
        );
        let mut s = secondary(&prefix, &["fwd", "--fwd", "io", "--tx-first"]);
        assert!(s.wait_stdout("forwarding:", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        let took = stop_with(&mut s, sig);
        assert!(took < Duration::from_secs(5), "secondary {sig:?}: {took:?}");
        let took = stop_with(&mut p, sig);
        assert!(took < Duration::from_secs(5), "primary {sig:?}: {took:?}");
        assert!(files_of(&prefix).is_empty(), "left {:?}", files_of(&prefix));
    }
}
