//! Rings survive a producer process killed (or stopped) between its head CAS and its tail
//! publication: real secondaries built with crash points fill one MP/MC ring while this
//! test drains it; one of them dies (kill -9) or stops (SIGSTOP) at a named step of its
//! Nth enqueue. The survivors' elements all arrive once, in order; the dead one's arrive
//! as a gap-free prefix (its last reservation whole if it had copied, absent if not);
//! the ring stays usable, and the primary's `repair_dead` frees what is left.
//!
//! The secondaries are built once with `--features shm/crash-points` into
//! `target/crash` (next to the test's own target directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shm::Memseg;
use shm_ring::{OpState, Ring};
use tests::*;

const PER: u64 = 300_000;

/// `shmdp-secondary` with crash points compiled in.
fn crash_secondary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> -> target/crash
            let target = exe
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .unwrap();
            let dir = target.join("crash");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "--release", "-q", "--features", "shm/crash-points"])
                .args(["--bins", "-p", "shmdp-app", "--target-dir"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "crash-points build failed");
            dir.join("release/shmdp-secondary")
        })
        .clone()
}

fn filler(prefix: &str, id: u64, crash: Option<(&str, &str)>) -> Proc {
    let mut cmd = Command::new(crash_secondary());
    cmd.args(["--file-prefix", prefix, "ring-fill", "rr", "--count"])
        .arg(PER.to_string())
        .args(["--producer-id", &id.to_string(), "--timeout", "60"]);
    if let Some((at, how)) = crash {
        cmd.env("SHMDP_CRASH_AT", at).env("SHMDP_CRASH_HOW", how);
    }
    Proc::spawn_command(cmd, "shmdp-secondary", None)
}

/// Drains `ring` in a thread, checking each producer's sequence is gap-free and in order;
/// `seen[id]` is the next expected sequence of producer `id`.
struct Drain {
    seen: Arc<[AtomicU64; 3]>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Drain {
    fn start(ring: Ring<u64>) -> Drain {
        let seen: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut c = ring.mc_consumer().map_err(|e| e.to_string())?;
            let mut buf = [0u64; 64];
            loop {
                let n = c.dequeue_burst(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    if st.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::yield_now();
                }
                for &v in &buf[..n] {
                    let (id, seq) = ((v >> 48) as usize, v & ((1 << 48) - 1));
                    let e = s.get(id).ok_or(format!("unknown producer in {v:#x}"))?;
                    let want = e.load(Ordering::Relaxed);
                    if seq != want {
                        return Err(format!("producer {id}: got {seq}, expected {want}"));
                    }
                    e.store(want + 1, Ordering::Relaxed);
                }
            }
        });
        Drain {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self, id: usize) -> u64 {
        self.seen[id].load(Ordering::Relaxed)
    }

    fn finish(mut self) -> [u64; 3] {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.thread.take().unwrap().join().unwrap();
        assert_eq!(r, Ok(()));
        [self.seen(0), self.seen(1), self.seen(2)]
    }
}

fn setup(tag: &str) -> (String, Proc, Ring<u64>) {
    let prefix = unique_prefix(tag);
    let primary = Proc::primary(
        &prefix,
        &["-m", "4", "--no-huge", "--ring", "rr=1024:mp_mc"],
    );
    let seg = Memseg::attach(Path::new(&format!("/dev/shm/shmdp.{prefix}.main"))).unwrap();
    let ring = Ring::<u64>::lookup(&seg, "rr").unwrap();
    (prefix, primary, ring)
}

#[test]
fn a_producer_killed_between_head_cas_and_publication_loses_the_ring_nothing() {
    for point in ["ring.mp_after_head_cas", "ring.mp_after_copy"] {
        let (prefix, _primary, ring) = setup("ringkill");
        let drain = Drain::start(Ring::<u64>::lookup(&attach(&prefix), "rr").unwrap());
        let at = format!("{point}:500");
        let mut victim = filler(&prefix, 2, Some((&at, "kill")));
        let mut live: Vec<Proc> = (0..2).map(|id| filler(&prefix, id, None)).collect();
        let st = victim
            .wait_exit(Duration::from_secs(60))
            .expect("victim dies");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9), "{point}: {:?}", victim.stderr());
        for p in &mut live {
            let (code, out, err) = finish(p, 120);
            assert_eq!(code, 0, "{point}: a survivor failed: {out} {err}");
        }
        // What the dead process's record says, then the primary's reclaim.
        let views = ring.record_of(victim.pid(), 0);
        assert_eq!(views.len(), 1, "{point}: {views:?}");
        // After its copy a producer is still BUSY until it publishes: dead there, its
        // range reads as not taken effect (Reserving) and is voided like an untouched one.
        assert!(
            matches!(views[0].state, OpState::Reserving | OpState::Voided),
            "{point}: {views:?}"
        );
        let rep = ring.repair_dead(victim.pid(), 0);
        assert_eq!((rep.records, rep.left_pending), (1, 0), "{point}: {rep:?}");
        assert!(rep.returned.is_empty());
        assert!(wait_until(Duration::from_secs(10), || ring.count() == 0));
        let seen = drain.finish();
        assert_eq!(&seen[..2], &[PER, PER], "{point}: survivors complete");
        assert!(
            seen[2] > 0 && seen[2] < PER,
            "{point}: dead one's prefix {}",
            seen[2]
        );
        eprintln!(
            "{point}: dead producer delivered a prefix of {} elements; {} repairs",
            seen[2],
            ring.repairs()
        );
        // The ring is whole: a full round trip through every slot still works.
        let mut p = filler(&prefix, 0, None);
        let d = Drain::start(ring);
        assert_eq!(finish(&mut p, 60).0, 0);
        assert!(wait_until(Duration::from_secs(10), || d.seen(0) == PER));
        d.finish();
    }
}

fn attach(prefix: &str) -> Memseg {
    Memseg::attach(Path::new(&format!("/dev/shm/shmdp.{prefix}.main"))).unwrap()
}

fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('T')))
        .unwrap_or(false)
}

#[test]
fn a_producer_stopped_after_its_head_cas_holds_nobody_in_an_error_and_resumes_cleanly() {
    let (prefix, _primary, ring) = setup("ringstop");
    let drain = Drain::start(Ring::<u64>::lookup(&attach(&prefix), "rr").unwrap());
    let mut victim = filler(&prefix, 2, Some(("ring.mp_after_head_cas:500", "stop")));
    let mut live: Vec<Proc> = (0..2).map(|id| filler(&prefix, id, None)).collect();
    assert!(wait_until(Duration::from_secs(30), || stopped(
        victim.pid()
    )));
    let t = Instant::now();
    let before = drain.seen(0) + drain.seen(1);
    std::thread::sleep(Duration::from_secs(2));
    let during = drain.seen(0) + drain.seen(1) - before;
    eprintln!(
        "during a 2 s stop of a producer holding the tail: {during} survivor elements drained \
         ({:.0}/s)",
        during as f64 / t.elapsed().as_secs_f64()
    );
    victim.signal(Signal::SIGCONT);
    for p in live.iter_mut().chain(std::iter::once(&mut victim)) {
        let (code, out, err) = finish(p, 120);
        assert_eq!(code, 0, "{out} {err}");
    }
    assert!(wait_until(Duration::from_secs(10), || drain.seen(0) == PER
        && drain.seen(1) == PER
        && drain.seen(2) == PER));
    assert_eq!(drain.finish(), [PER; 3]);
    assert_eq!(ring.count(), 0);
}
