//! The stop rules every polling loop shares ([`Pacer`]): `--duration`, `--idle-exit`, a
//! stop signal with a drain, flushing on the first idle round, and the activity times for
//! the report, with the clock read only every few rounds.
//!
//! Where it sits: in `fwd`, asked after every round by the polling loop (`poll.rs`) and
//! the switch ([`crate::switch`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Activity, FwdConfig};

/// What a polling loop does after a round.
pub(crate) enum Step {
    /// Packets moved: go on.
    Busy,
    /// Nothing moved: flush buffered output if `flush` (first idle round), then go on.
    Idle {
        /// Flush tx queues now.
        flush: bool,
    },
    /// Stop polling.
    Stop,
}

/// The stop rules every polling loop shares: `--duration`, `--idle-exit`, a stop signal
/// (after one more idle round, so what is in flight is drained) and activity times for
/// the report.
pub(crate) struct Pacer<'a> {
    cfg: &'a FwdConfig,
    activity: &'a Activity,
    t0: Instant,
    stop: &'a AtomicBool,
    started: Instant,
    last_rx: Instant,
    flushed: bool,
    draining_since: Option<Instant>,
    /// Rounds so far; the clock is read every [`CLOCK_EVERY`] of them (a clock read costs
    /// more than a whole round of an idle or short-burst loop).
    rounds: u32,
    /// The clock as last read.
    now: Instant,
    /// This thread has recorded its first packet in `activity`.
    first_seen: bool,
    /// Packets moved since `activity.last` was last brought up to date.
    unreported: bool,
}

/// How many rounds share one clock reading.
const CLOCK_EVERY: u32 = 64;

/// How long a busy loop keeps forwarding after a stop signal before it stops anyway (an
/// idle loop stops after 10 ms without traffic): what is in flight gets this long to land.
const STOP_GRACE: Duration = Duration::from_millis(100);

impl<'a> Pacer<'a> {
    pub(crate) fn new(
        cfg: &'a FwdConfig,
        activity: &'a Activity,
        t0: Instant,
        stop: &'a AtomicBool,
    ) -> Pacer<'a> {
        let now = Instant::now();
        Pacer {
            cfg,
            activity,
            t0,
            stop,
            started: now,
            last_rx: now,
            flushed: false,
            draining_since: None,
            rounds: 0,
            now,
            first_seen: false,
            unreported: false,
        }
    }

    /// Reads the clock every [`CLOCK_EVERY`] rounds (and publishes the activity seen since
    /// the last reading), else returns the last reading.
    fn clock(&mut self) -> (Instant, bool) {
        self.rounds = self.rounds.wrapping_add(1);
        let fresh = self.rounds.is_multiple_of(CLOCK_EVERY);
        if fresh {
            self.now = Instant::now();
            self.report_activity();
        }
        (self.now, fresh)
    }

    fn report_activity(&mut self) {
        if self.unreported {
            self.unreported = false;
            let ns = self.last_rx.duration_since(self.t0).as_nanos() as u64;
            self.activity.last.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Decides what to do after a round that moved `moved` packets; `ending` asks to stop
    /// once idle (a txonly budget reached, a peer thread finished).
    pub(crate) fn after_round(&mut self, moved: usize, ending: bool) -> Step {
        let (now, fresh) = self.clock();
        // Time limits only move when the clock does.
        let over = fresh
            && self
                .cfg
                .duration
                .is_some_and(|d| now.duration_since(self.started) > d);
        if moved > 0 {
            if !self.first_seen {
                // The first packet: read the clock now, for an exact start.
                self.first_seen = true;
                self.now = Instant::now();
                let ns = self.now.duration_since(self.t0).as_nanos() as u64;
                self.activity.first.fetch_min(ns, Ordering::Relaxed);
            }
            self.last_rx = self.now;
            self.unreported = true;
            self.flushed = false;
            if over || fresh && self.stop_overdue(now) {
                self.finish();
                return Step::Stop;
            }
            return Step::Busy;
        }
        let step = self.idle_step(now, fresh, over, ending);
        if matches!(step, Step::Stop) {
            self.finish();
        }
        step
    }

    fn idle_step(&mut self, now: Instant, fresh: bool, over: bool, ending: bool) -> Step {
        if over {
            return Step::Stop;
        }
        let flush = !std::mem::replace(&mut self.flushed, true);
        if ending && !flush {
            return Step::Stop;
        }
        if !fresh {
            std::hint::spin_loop();
            return Step::Idle { flush };
        }
        if self.stop.load(Ordering::Relaxed) {
            // Drain: keep polling briefly; one idle round after the signal is enough.
            let since = *self.draining_since.get_or_insert(now);
            if now.duration_since(since) > Duration::from_millis(10) {
                return Step::Stop;
            }
        }
        if self
            .cfg
            .idle_exit
            .is_some_and(|d| now.duration_since(self.last_rx) > d)
        {
            return Step::Stop;
        }
        std::hint::spin_loop();
        Step::Idle { flush }
    }

    /// A stop signal came more than [`STOP_GRACE`] ago, whatever the traffic: packets that
    /// circle for ever (io forwarding with `--tx-first` over loopback rings) never leave
    /// an idle round for the drain rule to see, and a signal must still end the run.
    fn stop_overdue(&mut self, now: Instant) -> bool {
        if !self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let since = *self.draining_since.get_or_insert(now);
        now.duration_since(since) > STOP_GRACE
    }

    /// The run ends: the last activity, to the nanosecond, goes into the report.
    fn finish(&mut self) {
        if self.unreported {
            self.last_rx = Instant::now();
        }
        self.report_activity();
    }
}
