//! No MP/MC ring is bricked by a live but stopped process (issue 16, item 3): a mixer
//! stopped (SIGSTOP, `SHMDP_CRASH_HOW=stop`) between its head CAS and its tail publication
//! on the mbuf pool's free ring, as a producer (a cache flush) or a consumer (a refill),
//! while two other mixers keep allocating and freeing mbufs for 3 s; then SIGCONT. The
//! others must keep moving mbufs meanwhile (their iterations are printed next to those of
//! a run with nobody stopped), the stopped one must finish cleanly after it resumes, and
//! `pool-audit mbufs --exact` must then be exact.
//!
//! The crash-point build (`--features shm/crash-points`, in `target/crash`) is shared with
//! `crash_points.rs`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::crash::spawn;
use tests::{require_hugepages, unique_prefix, wait_until, Proc};

fn primary(prefix: &str) -> Proc {
    let mut args = vec![
        "--file-prefix",
        prefix,
        "-m",
        "32",
        "--mempool",
        "mbufs=2047:32",
    ];
    if !require_hugepages() {
        args.push("--no-huge");
    }
    let mut p = spawn("shmdp-primary", &args, &[], Some(prefix));
    assert!(
        p.wait_stdout("shmdp-primary: ready", Duration::from_secs(10)),
        "primary did not start: {:?} {:?}",
        p.stdout(),
        p.stderr()
    );
    p
}

/// A mixer doing only mbuf allocations and frees (no ports, no rings of its own).
fn mixer(prefix: &str, seed: u64, secs: &str, env: &[(&str, &str)]) -> Proc {
    let seed = seed.to_string();
    let args = [
        "--file-prefix",
        prefix,
        "crash-mix",
        "--seed",
        &seed,
        "--no-ports",
        "--pool",
        "mbufs",
        "--duration",
        secs,
    ];
    spawn("shmdp-secondary", &args, env, None)
}

/// Waits for a mixer's clean end; returns its main-loop iterations.
fn iterations(m: &mut Proc, what: &str) -> u64 {
    let st = m.wait_exit(Duration::from_secs(30));
    let out = m.stdout().join("\n");
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "{what}: {out} {:?}",
        m.stderr()
    );
    out.lines()
        .find(|l| l.contains(" iterations,"))
        .and_then(|l| l.split("crash-mix: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no totals in {out}"))
}

fn audit_exact(prefix: &str) -> (bool, String) {
    let mut p = spawn(
        "shmdp-secondary",
        &["--file-prefix", prefix, "pool-audit", "mbufs", "--exact"],
        &[],
        None,
    );
    let st = p
        .wait_exit(Duration::from_secs(20))
        .expect("pool-audit ends");
    let all = format!("{}\n{}", p.stdout().join("\n"), p.stderr().join("\n"));
    let exact = all
        .find('{')
        .and_then(|i| serde_json::from_str::<serde_json::Value>(all[i..].lines().next()?).ok())
        .is_some_and(|j| j["exact"] == true);
    (st.code() == Some(0) && exact, all)
}

/// Everything works on: a last run moves mbufs and leaves the pool exact.
fn works_on_exactly(prefix: &str, point: &str) {
    let mut last = mixer(prefix, 31, "1", &[]);
    assert!(iterations(&mut last, "after") > 0);
    let (exact, all) = audit_exact(prefix);
    assert!(exact, "{point}: not exact at the end: {all}");
}

/// True once `pid` is in the stopped state (`T` in `/proc/PID/stat`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st == "T")
    })
}

fn survivors_work_while_a_peer_is_stopped_at(point: &str) {
    let prefix = unique_prefix("stopped");
    let _primary = primary(&prefix);
    // The reference: two mixers for 3 s with nobody stopped.
    let t = Instant::now();
    let mut refs = [mixer(&prefix, 11, "3", &[]), mixer(&prefix, 12, "3", &[])];
    let reference: Vec<u64> = refs
        .iter_mut()
        .map(|m| iterations(m, "reference"))
        .collect();
    let ref_secs = t.elapsed().as_secs_f64();
    // The victim stops inside its 40th operation on the free ring of that kind.
    let at = format!("{point}:40");
    let env = [("SHMDP_CRASH_AT", at.as_str()), ("SHMDP_CRASH_HOW", "stop")];
    let mut victim = mixer(&prefix, 7, "2", &env);
    assert!(
        wait_until(Duration::from_secs(20), || is_stopped(victim.pid())),
        "{point}: the victim never stopped: {:?} {:?}",
        victim.stdout(),
        victim.stderr()
    );
    let t = Instant::now();
    let mut others = [mixer(&prefix, 21, "3", &[]), mixer(&prefix, 22, "3", &[])];
    let during: Vec<u64> = others
        .iter_mut()
        .map(|m| iterations(m, "survivor"))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        is_stopped(victim.pid()),
        "{point}: the victim still stopped"
    );
    eprintln!(
        "{point}: with a peer stopped inside a free-ring operation, two mixers ran {during:?} \
         iterations in {secs:.1} s; with nobody stopped {reference:?} in {ref_secs:.1} s"
    );
    for (d, r) in during.iter().zip(&reference) {
        assert!(
            *d * 10 >= *r,
            "{point}: survivors crawled: {during:?} against {reference:?}"
        );
    }
    // It resumes: its operation finishes (or, voided, retries), its run ends cleanly.
    victim.signal(Signal::SIGCONT);
    iterations(&mut victim, "the resumed victim");
    let (exact, all) = audit_exact(&prefix);
    let mut st = spawn(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats"],
        &[],
        None,
    );
    st.wait_exit(Duration::from_secs(20));
    eprintln!("{point}: stats after the resume: {:?}", st.stdout());
    assert!(exact, "{point}: not exact after the resume: {all}");
    works_on_exactly(&prefix, point);
}

#[test]
fn survivors_work_while_a_producer_is_stopped_inside_a_free_ring_enqueue() {
    survivors_work_while_a_peer_is_stopped_at("ring.mp_after_head_cas");
}

/// A refill stopped inside the free ring holds its consumer tail: the refills behind it
/// give the rest of their cache array as room and adopt its range after `VOID_AFTER`;
/// until then flushes that find the ring short of room keep what it refuses cached.
#[test]
fn survivors_work_while_a_consumer_is_stopped_inside_a_free_ring_dequeue() {
    survivors_work_while_a_peer_is_stopped_at("ring.mc_after_head_cas");
}

/// A refill that adopts the range of a stopped refill is killed in the middle of the
/// adoption (its record says it is adopting, the VOIDED CAS not done; or done, its count
/// not yet settled): the primary reclaims it, the survivors (one of them adopts the range
/// again, or publishes it for the dead adopter) keep moving mbufs, the stopped one resumes,
/// and the pool is exact: the adopted mbufs are counted once, by whoever holds them.
fn adopter_killed_at(point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let prefix = unique_prefix("adopt");
    let mut primary = primary(&prefix);
    let at = "ring.mc_after_head_cas:40";
    let env = [("SHMDP_CRASH_AT", at), ("SHMDP_CRASH_HOW", "stop")];
    let mut victim = mixer(&prefix, 7, "2", &env);
    assert!(
        wait_until(Duration::from_secs(20), || is_stopped(victim.pid())),
        "the victim never stopped: {:?} {:?}",
        victim.stdout(),
        victim.stderr()
    );
    let mut adopter = mixer(&prefix, 8, "4", &[("SHMDP_CRASH_AT", point)]);
    let st = adopter.wait_exit(Duration::from_secs(20));
    assert_eq!(
        st.and_then(|s| s.signal()),
        Some(Signal::SIGKILL as i32),
        "{point}: the adopter was not killed there: {:?} {:?}",
        adopter.stdout(),
        adopter.stderr()
    );
    let pid = adopter.pid();
    assert!(
        primary.wait_stderr(
            &format!("pid {pid} (connection closed without goodbye)"),
            Duration::from_secs(10)
        ),
        "{point}: the primary never reclaimed the adopter"
    );
    let mut others = [mixer(&prefix, 21, "2", &[]), mixer(&prefix, 22, "2", &[])];
    for m in &mut others {
        assert!(
            iterations(m, "survivor") > 0,
            "{point}: a survivor did nothing"
        );
    }
    victim.signal(Signal::SIGCONT);
    iterations(&mut victim, "the resumed victim");
    let (exact, all) = audit_exact(&prefix);
    assert!(exact, "{point}: not exact after the adopter's death: {all}");
    // An mbuf counted twice is allocated twice, and the second free of it is refused
    // (the pool heals, the audit is exact again): the counters tell.
    let mut st = spawn(
        "shmdp-secondary",
        &["--file-prefix", &prefix, "stats"],
        &[],
        None,
    );
    st.wait_exit(Duration::from_secs(20));
    let stats = st.stdout().join("\n");
    for bad in ["double_free", "bad_handle", "put_fail", "corrupt_header"] {
        assert!(
            stats.contains(&format!("{bad} 0 ")) || stats.contains(&format!("{bad} 0\n")),
            "{point}: {bad} counted: {stats}"
        );
    }
    works_on_exactly(&prefix, point);
}

#[test]
fn an_adopter_killed_before_its_voided_cas_counts_nothing_twice() {
    adopter_killed_at("ring.adopt_recorded");
}

#[test]
fn an_adopter_killed_after_its_voided_cas_loses_nothing() {
    adopter_killed_at("ring.adopt_voided");
}
