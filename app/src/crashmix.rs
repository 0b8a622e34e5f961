//! `shmdp-secondary crash-mix`: mixed work that reaches every step of the ownership
//! protocols (issue 16), for the crash-point tests, which kill it at each named point in
//! turn (`SHMDP_CRASH_AT`) and then audit the pool exactly.
//!
//! One loop on the main thread, driven by an xorshift generator seeded with `--seed` (the
//! sequence of operations is the same for a seed; thread interleavings are not):
//! - single and bulk allocations and frees of mbufs, sizes from 1 to three caches' worth,
//!   so the cache hit, refill (`get_slow`), flush (`put_slow`) and bypass paths all run;
//! - tx then rx bursts on the queue 0 of every loopback ring port it can claim (a `net_ring`
//!   port without named rings: its tx and rx share one ring), in-flight records included;
//! - now and then dropping a port's queues and claiming them again (hand-over; the new
//!   claim recovers the in-flight record);
//!
//! and one thread per `--produce RING` (allocates, puts mbufs in transit, enqueues bursts)
//! and per `--consume RING` (dequeues bursts, adopts, frees): `--produce R --consume R`
//! moves mbufs between two threads of this process, `--produce R` here and `--consume R`
//! in another process moves them between processes. It runs until killed, or for `--ops`
//! loop iterations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pmds::{Driver, Port, RxQueue, TxQueue};
use shm_mempool::{Mbuf, MbufCache, MbufHandle, MbufPool, OwnerTag};
use shm_ring::Ring;

use crate::ringside::RingSide;
use crate::{CliError, CmdResult, Exit};

/// Options of `crash-mix`.
#[derive(Debug, Clone, clap::Args)]
pub struct MixArgs {
    /// Pool to allocate from (default: the first ring port's rx pool).
    #[arg(long)]
    pub pool: Option<String>,
    /// Seed of the operation sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A ring to enqueue mbufs into from a thread of its own (repeatable).
    #[arg(long, value_name = "RING")]
    pub produce: Vec<String>,
    /// A ring to dequeue and free mbufs from in a thread of its own (repeatable).
    #[arg(long, value_name = "RING")]
    pub consume: Vec<String>,
    /// Leave the ring ports alone.
    #[arg(long)]
    pub no_ports: bool,
    /// Which queues of each loopback port to use: both (tx then rx on the same ring,
    /// local entries), or only tx or only rx (another process does the other side).
    #[arg(long, value_enum, default_value_t = PortRole::Both)]
    pub port_role: PortRole,
    /// Stop after this many iterations of the main loop (default: run until killed).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Stop (cleanly, detaching) after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

/// The queues `crash-mix` claims on a loopback port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PortRole {
    /// Tx and rx queue 0.
    Both,
    /// Tx queue 0 only.
    Tx,
    /// Rx queue 0 only.
    Rx,
}

/// A deterministic xorshift64 generator.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `1..=max`.
    fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

/// Attaches and runs the mix (see the module docs).
///
/// # Errors
/// [`Exit::Usage`] when attaching fails,
/// [`Exit::Failed`] when the mix stops on an error.
pub fn run(eal: &crate::eal::EalArgs, args: &MixArgs) -> CmdResult {
    let sec = crate::session::attach("shmdp-secondary", eal)?;
    let t = mix(&sec, args).map_err(|e| CliError::failed(format!("crash-mix: {e}")))?;
    // The tests check every ring and port moved packets after a crash.
    println!(
        "crash-mix: {} iterations, produced {:?}, consumed {:?}, port rx {:?}",
        t.ops, t.produced, t.consumed, t.port_rx
    );
    sec.detach();
    Ok(Exit::Ok)
}

/// Loopback ring ports: `net_ring` ports whose tx and rx queue 0 share one ring.
fn loopback_ports(sec: &secondary::Secondary) -> Result<Vec<Port>, String> {
    Ok(sec
        .ports()
        .map_err(|e| shm::error_chain(&e))?
        .into_iter()
        .filter(|p| {
            p.driver() == Driver::Ring && !p.devargs().contains("rx_ring") && p.nb_rx_queues() > 0
        })
        .collect())
}

/// What a finished run moved.
#[derive(Debug, Default)]
struct Totals {
    ops: u64,
    produced: Vec<u64>,
    consumed: Vec<u64>,
    port_rx: Vec<u64>,
}

fn mix(sec: &secondary::Secondary, args: &MixArgs) -> Result<Totals, String> {
    let ports = if args.no_ports {
        Vec::new()
    } else {
        loopback_ports(sec)?
    };
    let pool_name = match (&args.pool, ports.first()) {
        (Some(p), _) => p.clone(),
        (None, Some(port)) => port.rx_pool_name(),
        (None, None) => return Err("no --pool and no ring port to take its pool from".into()),
    };
    let pool = sec
        .mbuf_pool(&pool_name)
        .map_err(|e| format!("{pool_name}: {e}"))?;
    let tag = sec.owner_tag();
    let stop = Arc::new(AtomicBool::new(false));
    // SIGINT/SIGTERM: stop cleanly (detach), as --ops and --duration do.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for (k, name) in args.produce.iter().enumerate() {
        let ring = sec.ring(name).map_err(|e| format!("{name}: {e}"))?;
        let (pool, stop, seed) = (pool.clone(), stop.clone(), args.seed);
        producers.push(std::thread::spawn(move || {
            producer(&pool, tag, &ring, Rng::new(seed, 100 + k as u64), &stop)
        }));
    }
    for (k, name) in args.consume.iter().enumerate() {
        let ring = sec.ring(name).map_err(|e| format!("{name}: {e}"))?;
        let (pool, stop, rng) = (
            pool.clone(),
            stop.clone(),
            Rng::new(args.seed, 200 + k as u64),
        );
        consumers.push(std::thread::spawn(move || {
            consumer(&pool, tag, &ring, rng, &stop)
        }));
    }
    println!(
        "crash-mix: running: pool {pool_name}, seed {}, {} ports, produce {:?}, consume {:?}",
        args.seed,
        ports.len(),
        args.produce,
        args.consume
    );
    let until = args
        .duration
        .map(|d| std::time::Instant::now() + std::time::Duration::from_secs_f64(d));
    let limit = Limit {
        ops: args.ops,
        until,
        stop: &stop,
    };
    let mut rng = Rng::new(args.seed, 0);
    let (mut ops, mut port_rx) = (0, vec![0; ports.len()]);
    // Each round has a cache of its own: dropping it (flush, slot freed) is a step too.
    while !limit.reached(ops) {
        let cache = pool.cache(tag).map_err(|e| e.to_string())?;
        let round = 200 + rng.next() % 5000;
        main_loop(
            &cache,
            &ports,
            args.port_role,
            &mut rng,
            &limit,
            round,
            &mut ops,
            &mut port_rx,
        );
    }
    stop.store(true, Ordering::Relaxed);
    let join = |t: std::thread::JoinHandle<u64>| t.join().unwrap_or(0);
    Ok(Totals {
        ops,
        produced: producers.into_iter().map(join).collect(),
        consumed: consumers.into_iter().map(join).collect(),
        port_rx,
    })
}

/// When the run ends.
struct Limit<'a> {
    ops: Option<u64>,
    until: Option<std::time::Instant>,
    stop: &'a AtomicBool,
}

impl Limit<'_> {
    fn reached(&self, ops: u64) -> bool {
        self.ops.is_some_and(|n| ops >= n)
            || self.stop.load(Ordering::Relaxed)
            || (ops.is_multiple_of(256)
                && self.until.is_some_and(|t| std::time::Instant::now() >= t))
    }
}

/// The claimed queues of one loopback port.
struct Queues<'c> {
    rx: Option<RxQueue<'c>>,
    tx: Option<TxQueue<'c>>,
}

fn claim<'c>(port: &Port, cache: &'c MbufCache, role: PortRole) -> Option<Queues<'c>> {
    // Either may be held by a live forwarder: then this port is left to it for now.
    let tx = match role {
        PortRole::Rx => None,
        _ => Some(port.tx_queue(0, cache).ok()?),
    };
    let rx = match role {
        PortRole::Tx => None,
        _ => Some(port.rx_queue(0, cache).ok()?),
    };
    Some(Queues { rx, tx })
}

/// Most mbufs the main loop holds at once.
const HOLD_MAX: usize = 1024;

/// Runs `round` iterations (or until `limit`), adding to `done` and to the packets
/// received on each port.
#[allow(clippy::too_many_arguments)]
fn main_loop(
    cache: &MbufCache,
    ports: &[Port],
    role: PortRole,
    rng: &mut Rng,
    limit: &Limit<'_>,
    round: u64,
    done: &mut u64,
    port_rx: &mut [u64],
) {
    let cache_size = (cache.pool().mempool().cache_size() as usize).max(8);
    let mut queues: Vec<Option<Queues<'_>>> = ports.iter().map(|p| claim(p, cache, role)).collect();
    let mut held: Vec<Mbuf<'_>> = Vec::with_capacity(HOLD_MAX + 4 * cache_size);
    let mut rx: Vec<Mbuf<'_>> = Vec::with_capacity(64);
    let mut burst: Vec<Mbuf<'_>> = Vec::with_capacity(64);
    let end = *done + round;
    while *done < end && !limit.reached(*done) {
        *done += 1;
        let x = rng.next();
        match x % 10 {
            0 | 1 => {
                if held.len() < HOLD_MAX {
                    if let Some(m) = cache.alloc() {
                        held.push(m);
                    }
                }
            }
            2 | 3 => {
                // Up to three caches' worth: refills, and bulk gets above the cache size.
                let n = rng.size(3 * cache_size);
                if held.len() + n <= held.capacity() {
                    let _ = cache.alloc_bulk(&mut held, n);
                }
            }
            4 => drop(held.pop()),
            5 => {
                // Frees of up to three caches' worth: the cache overflows and flushes.
                let n = rng.size(3 * cache_size).min(held.len());
                held.truncate(held.len() - n);
            }
            6..=8 => {
                if queues.is_empty() {
                    continue;
                }
                let p = (rng.next() % queues.len() as u64) as usize;
                let Some(q) = queues[p].as_mut() else {
                    queues[p] = claim(&ports[p], cache, role);
                    continue;
                };
                let k = rng.size(48);
                while burst.len() < k {
                    match held.pop().or_else(|| cache.alloc()) {
                        Some(m) => burst.push(m),
                        None => break,
                    }
                }
                if let Some(tx) = q.tx.as_mut() {
                    tx.tx_burst(&mut burst);
                }
                // What did not fit stays ours.
                held.append(&mut burst);
                if let Some(r) = q.rx.as_mut() {
                    port_rx[p] += r.rx_burst(&mut rx, rng.size(64)) as u64;
                }
                if rng.next() & 1 == 0 && held.len() + rx.len() <= held.capacity() {
                    held.append(&mut rx);
                } else {
                    rx.clear();
                }
            }
            _ => {
                // Hand-over: give a port's queues up and claim them again.
                if !queues.is_empty() {
                    let p = (rng.next() % queues.len() as u64) as usize;
                    queues[p] = None;
                    queues[p] = claim(&ports[p], cache, role);
                }
            }
        }
    }
}

/// Runs `step` until `stop` with a cache of `pool`'s, taken anew every 100 to 2100 steps
/// (dropping the old one, which flushes it and frees its slot, is a step of the protocols
/// too). `step` returns how many mbufs it moved (after 0 the thread yields), or `None` to
/// end; returns the sum. Ends too when no cache slot is free.
fn with_rotating_cache(
    pool: &MbufPool,
    tag: OwnerTag,
    rng: &mut Rng,
    stop: &AtomicBool,
    mut step: impl FnMut(&MbufCache, &mut Rng) -> Option<u64>,
) -> u64 {
    let mut total = 0u64;
    let mut left = 0u64;
    let mut cache = None;
    while !stop.load(Ordering::Relaxed) {
        if left == 0 {
            drop(cache.take());
            left = 100 + rng.next() % 2000;
        }
        left -= 1;
        if cache.is_none() {
            cache = pool.cache(tag).ok();
        }
        let Some(cache) = cache.as_ref() else {
            return total;
        };
        let Some(moved) = step(cache, rng) else {
            return total;
        };
        total += moved;
        if moved == 0 {
            std::thread::yield_now();
        }
    }
    total
}

/// Returns how many mbufs it enqueued.
fn producer(
    pool: &MbufPool,
    tag: OwnerTag,
    ring: &Ring<u64>,
    mut rng: Rng,
    stop: &AtomicBool,
) -> u64 {
    if ring.mode().single_producer && ring.mode().single_consumer {
        return local_producer(pool, tag, ring, rng, stop);
    }
    let mut side = RingSide::producer(ring).ok();
    let mut handles = Vec::with_capacity(64);
    with_rotating_cache(pool, tag, &mut rng, stop, |cache, rng| {
        let k = rng.size(48);
        while handles.len() < k {
            let Some(m) = cache.alloc() else { break };
            handles.push(m.into_transit().expect("a fresh mbuf is not shared").0);
        }
        let pushed = side.as_mut()?.put_burst(&handles).unwrap_or(0);
        handles.drain(..pushed);
        // What did not fit is still ours, in transit: take it back and free it.
        for h in handles.drain(..) {
            drop(cache.adopt(MbufHandle(h)));
        }
        Some(pushed as u64)
    })
}

/// Returns how many mbufs it dequeued.
fn consumer(
    pool: &MbufPool,
    tag: OwnerTag,
    ring: &Ring<u64>,
    mut rng: Rng,
    stop: &AtomicBool,
) -> u64 {
    if ring.mode().single_producer && ring.mode().single_consumer {
        return local_consumer(pool, tag, ring, rng, stop);
    }
    let mut side = RingSide::consumer(ring).ok();
    let mut handles = [0u64; 64];
    with_rotating_cache(pool, tag, &mut rng, stop, |cache, _| {
        let got = side.as_mut()?.take_burst(&mut handles).unwrap_or(0);
        for &h in &handles[..got] {
            // Refused handles (stale entries after a crash) are counted by the pool.
            drop(cache.adopt(MbufHandle(h)));
        }
        Some(got as u64)
    })
}

/// [`producer`] on an SP/SC ring: through `pmds::MbufSender`, the crash-exact hand-off.
fn local_producer(
    pool: &MbufPool,
    tag: OwnerTag,
    ring: &Ring<u64>,
    mut rng: Rng,
    stop: &AtomicBool,
) -> u64 {
    let Ok(mut tx) = pmds::MbufSender::new(ring, tag) else {
        return 0;
    };
    with_rotating_cache(pool, tag, &mut rng, stop, |cache, rng| {
        let k = rng.size(48);
        let mut pkts = Vec::with_capacity(64);
        while pkts.len() < k {
            let Some(m) = cache.alloc() else { break };
            pkts.push(m);
        }
        let sent = tx.send(cache, &mut pkts);
        // What did not fit is freed.
        drop(pkts);
        Some(sent as u64)
    })
}

/// [`consumer`] on an SP/SC ring: through `pmds::MbufReceiver`.
fn local_consumer(
    pool: &MbufPool,
    tag: OwnerTag,
    ring: &Ring<u64>,
    mut rng: Rng,
    stop: &AtomicBool,
) -> u64 {
    let Ok(mut rx) = pmds::MbufReceiver::new(ring) else {
        return 0;
    };
    with_rotating_cache(pool, tag, &mut rng, stop, |cache, _| {
        let mut got = Vec::with_capacity(64);
        let (n, _refused) = rx.recv(cache, &mut got, 64);
        drop(got);
        Some(n as u64)
    })
}
