//! Running the engine: choosing the ports, making streams per queue, waiting for links,
//! spreading the streams over one (pinned) thread per lcore, printing statistics while it
//! runs, and joining the threads into the [`Report`].
//!
//! Where it sits: `fwd`'s entry point ([`run`]); each thread runs the polling loop
//! (`poll.rs`) or the switch ([`crate::switch`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmds::Port;
use shm_mempool::{MbufCache, MbufPool, OwnerTag};

use crate::poll::poll;
use crate::report::{report, Polled};
use crate::{per_queue, streams, switch};
use crate::{Activity, Counters, FwdConfig, FwdError, Mode, Report, Stream};

/// How long a forwarding mode with `tx_retry` keeps offering a burst's rest.
pub const TX_RETRY_FOR: Duration = Duration::from_millis(20);

/// How long [`run`] waits for every port's link before it starts (testpmd waits 9 s).
pub const LINK_WAIT: Duration = Duration::from_secs(10);

/// How long [`run`] lets a link that came up during its wait settle.
pub const LINK_SETTLE: Duration = Duration::from_millis(500);

/// Runs the engine on `ports` (all opened in this process) until `stop` is set, the idle
/// timeout passes, or txonly has sent its budget; returns the figures. Mbufs come from
/// `pool`'s caches, claimed with `owner`.
///
/// # Errors
/// [`FwdError`] when the configuration is bad or a queue cannot be claimed.
pub fn run(
    ports: &[Port],
    pool: &MbufPool,
    owner: OwnerTag,
    cfg: &FwdConfig,
    stop: &AtomicBool,
) -> Result<Report, FwdError> {
    if !(1..=pmds::ethdev::MAX_BURST).contains(&cfg.burst) {
        return Err(FwdError::Config(format!(
            "--burst {} must be 1..={}",
            cfg.burst,
            pmds::ethdev::MAX_BURST
        )));
    }
    let chosen: Vec<Port> = if cfg.portlist.is_empty() {
        ports.to_vec()
    } else {
        cfg.portlist
            .iter()
            .map(|id| {
                ports
                    .iter()
                    .find(|p| p.id() == *id)
                    .cloned()
                    .ok_or_else(|| {
                        FwdError::Config(format!(
                            "--portlist: no port {id} (ports: {})",
                            ports
                                .iter()
                                .map(|p| p.id().to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    if chosen.is_empty() {
        return Err(FwdError::Config(
            "no ports to forward between; probe some with --vdev".into(),
        ));
    }
    let all = streams(cfg.mode, chosen.len());
    // One stream per queue pair (as testpmd with --rxq/--txq), spread over the lcores;
    // a port without the queue a stream needs serves none. The switch polls queue 0.
    let usable: Vec<Stream> = all
        .into_iter()
        .flat_map(|s| {
            per_queue(
                s,
                |i| chosen[i].nb_rx_queues(),
                |i| chosen[i].nb_tx_queues(),
            )
        })
        .filter(|s| cfg.mode != Mode::L2Switch || s.queue == 0)
        .collect();
    let counters: Vec<Counters> = chosen.iter().map(|_| Counters::default()).collect();
    // The queues the run claims, whose statistics are its figures.
    let mut polled: Vec<Polled> = chosen.iter().map(|_| Polled::default()).collect();
    for s in &usable {
        if let Some(r) = s.rx {
            polled[r].rx.push(s.queue);
        }
        if let Some(t) = s.tx {
            polled[t].tx.push(s.queue);
        }
    }
    if cfg.mode == Mode::L2Switch {
        // The switch sends on queue 0 of every port.
        for (p, port) in polled.iter_mut().zip(&chosen) {
            if port.nb_tx_queues() > 0 {
                p.tx = vec![0];
            }
        }
    }
    for p in &mut polled {
        p.rx.sort_unstable();
        p.rx.dedup();
        p.tx.sort_unstable();
        p.tx.dedup();
    }
    let base: Vec<pmds::PortStats> = chosen.iter().map(Port::stats).collect();
    // The switch sends to any port, so one thread polls them all (tx queues have one
    // poller each).
    let threads = if cfg.mode == Mode::L2Switch {
        1
    } else {
        cfg.lcores.len().max(1)
    };
    // As testpmd's link check: give ports whose peer is still connecting (vhost-user)
    // time to come up, so a txonly run does not count its first packets as drops.
    let link_wait = Instant::now();
    let was_down = !chosen.iter().all(Port::link_up);
    while !stop.load(Ordering::Relaxed)
        && !chosen.iter().all(Port::link_up)
        && link_wait.elapsed() < LINK_WAIT
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    if was_down {
        // A link that just came up is a driver finishing its start: a virtio driver
        // (DPDK's among them) flushes its receive queue right after it starts the
        // device, which would discard what we send in that moment.
        std::thread::sleep(LINK_SETTLE);
    }
    for p in chosen.iter().filter(|p| !p.link_up()) {
        tracing::warn!(
            "port {} ({}): link down; forwarding anyway",
            p.id(),
            p.name()
        );
    }
    let t0 = Instant::now();
    let activity = Activity {
        first: AtomicU64::new(u64::MAX),
        last: AtomicU64::new(0),
    };
    let done = AtomicBool::new(false);
    let mut first_error: Option<FwdError> = None;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let mine: Vec<Stream> = usable
                .iter()
                .enumerate()
                .filter(|(i, _)| i % threads == t)
                .map(|(_, s)| *s)
                .collect();
            let (chosen, counters, done, activity) = (&chosen, &counters, &done, &activity);
            let lcore = cfg.lcores.get(t).copied();
            handles.push(s.spawn(move || {
                if let Some(cpu) = lcore {
                    pin(cpu);
                }
                let r = lcore_loop(
                    chosen,
                    pool,
                    owner,
                    cfg,
                    &mine,
                    (counters, activity, t0),
                    stop,
                    done,
                );
                done.store(true, Ordering::Relaxed);
                r
            }));
        }
        if let Some(period) = cfg.stats_period {
            let mut next = Instant::now() + period;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if Instant::now() >= next {
                    next += period;
                    print!(
                        "{}",
                        report(cfg.mode, &chosen, &polled, &counters, &base, &activity).table()
                    );
                }
            }
        }
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error
                        .get_or_insert(FwdError::Config("a forwarding thread panicked".into()));
                }
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(report(
        cfg.mode, &chosen, &polled, &counters, &base, &activity,
    ))
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[allow(clippy::too_many_arguments)]
fn lcore_loop(
    ports: &[Port],
    pool: &MbufPool,
    owner: OwnerTag,
    cfg: &FwdConfig,
    streams: &[Stream],
    shared: (&[Counters], &Activity, Instant),
    stop: &AtomicBool,
    done: &AtomicBool,
) -> Result<(), FwdError> {
    if streams.is_empty() {
        return Ok(());
    }
    let cache: MbufCache = pool
        .cache(owner)
        .map_err(|e| FwdError::Config(e.to_string()))?;
    let result = if cfg.mode == Mode::L2Switch {
        switch::poll(ports, &cache, cfg, streams, shared, stop)
    } else {
        poll(ports, &cache, cfg, streams, shared, stop, done)
    };
    drop(cache);
    result
}
