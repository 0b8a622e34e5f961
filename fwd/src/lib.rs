//! `fwd`: a testpmd-style forwarding engine over shmdp ports, used by the primary
//! (`shmdp-primary --fwd`) and by secondaries (`shmdp-secondary fwd`) alike.
//!
//! Where it sits: above `pmds`. It pairs ports into streams (port 0 → 1 and 1 → 0, 2 → 3
//! and 3 → 2, ...; an odd last port forwards to itself), one stream per queue pair (rx
//! queue q of the input feeds tx queue q of the output, as testpmd with several queues;
//! the switch uses queue 0), spreads the streams over one
//! thread per lcore (each pinned, each with its own mbuf cache and its own queue claims),
//! and runs them until a stop flag, an idle timeout or a packet budget ends the run. Then
//! it drains what is in flight and frees every mbuf.
//!
//! Modes: `io` (forward as is), `mac` (source = the output port's MAC, destination = the
//! peer address 02:00:00:00:00:<port>), `macswap` (swap the two), `rxonly` (receive and
//! free), `txonly` (send generated UDP frames of `--txpkts` bytes, or raw
//! frames of one `--tx-ethertype`), `l2switch` (a learning,
//! VLAN-aware switch between all the ports, see [`switch`]).
//!
//! Accounting, per port and in total: every packet received on a port is forwarded or
//! dropped with a reason (`tx_full`: the output queue took fewer than offered; `filtered`:
//! the mode consumed it: rxonly, or a switch destination behind the input port), so
//! `rx_packets = forwarded + tx_full + filtered`
//! for every port. `tx_packets` counts what was sent on a port. Packets a driver could not
//! allocate an mbuf for are never received; they are `no_mbuf`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmds::{Port, PortError, RxQueue, TxQueue};
use shm_mempool::{Mbuf, MbufCache, MbufPool, OwnerTag};

/// Forwarding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    Io,
    /// Rewrite source and destination MAC.
    Mac,
    /// Swap source and destination MAC.
    MacSwap,
    /// Receive and free.
    RxOnly,
    /// Send generated frames.
    TxOnly,
    /// Learning L2 switch between all the ports (VLAN aware).
    L2Switch,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "io" => Mode::Io,
            "mac" => Mode::Mac,
            "macswap" => Mode::MacSwap,
            "rxonly" => Mode::RxOnly,
            "txonly" => Mode::TxOnly,
            "l2switch" => Mode::L2Switch,
            other => {
                return Err(format!(
                    "--fwd {other:?}: unknown mode (io, mac, macswap, rxonly, txonly, l2switch)"
                ))
            }
        })
    }
}

impl Mode {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Io => "io",
            Mode::Mac => "mac",
            Mode::MacSwap => "macswap",
            Mode::RxOnly => "rxonly",
            Mode::TxOnly => "txonly",
            Mode::L2Switch => "l2switch",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FwdConfig {
    /// Mode.
    pub mode: Mode,
    /// Port ids to use, paired in this order (empty: every port, by id).
    pub portlist: Vec<u16>,
    /// Packets per burst (1..=512).
    pub burst: usize,
    /// CPUs to run forwarding threads on (one thread each; empty: one unpinned thread).
    pub lcores: Vec<usize>,
    /// Print statistics this often.
    pub stats_period: Option<Duration>,
    /// Stop once nothing has been received for this long (after at least one packet, or
    /// from the start if nothing ever comes).
    pub idle_exit: Option<Duration>,
    /// txonly: frame length in bytes (64..=1518).
    pub txpkt_len: usize,
    /// txonly: stop after this many packets per port.
    pub tx_count: Option<u64>,
    /// txonly: send raw frames of this EtherType (e.g. 0x88b5, IEEE 802's local
    /// experimental type) instead of UDP/IPv4 frames; see [`raw_frame`].
    pub tx_ethertype: Option<u16>,
    /// Send one burst of generated frames on every output port before forwarding
    /// (testpmd's `--tx-first`: gives loopback topologies something to move).
    pub tx_first: bool,
    /// txonly: offer again what a port could not take (a lossless generator: the run
    /// ends after `tx_count` packets really sent), instead of counting it as dropped.
    /// Forwarding modes: offer what the output did not take again for up to
    /// [`TX_RETRY_FOR`] before dropping it (testpmd's burst tx retry; for a slow peer
    /// such as a guest refilling its receive ring).
    pub tx_retry: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

impl Default for FwdConfig {
    fn default() -> Self {
        FwdConfig {
            mode: Mode::Io,
            portlist: Vec::new(),
            burst: 32,
            lcores: Vec::new(),
            stats_period: None,
            idle_exit: None,
            txpkt_len: 64,
            tx_count: None,
            tx_ethertype: None,
            tx_first: false,
            tx_retry: false,
            duration: None,
        }
    }
}

/// Parses a port list like `0,1` or `0-3`.
///
/// # Errors
/// One line saying what is wrong.
pub fn parse_portlist(s: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let bad = || format!("--portlist {s:?}: expected port ids like 0,1 or 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum FwdError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// A port or queue could not be used.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// One direction of forwarding: from port index `rx` (into the engine's port list) to
/// port index `tx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Input port (index in the run's port list), if the mode receives.
    pub rx: Option<usize>,
    /// Output port, if the mode sends.
    pub tx: Option<usize>,
    /// The queue used on both (testpmd: rx queue q of the input feeds tx queue q of the
    /// output).
    pub queue: u16,
}

/// The streams a mode makes of `n` ports (testpmd's paired topology).
pub fn streams(mode: Mode, n: usize) -> Vec<Stream> {
    (0..n)
        .map(|i| match mode {
            Mode::RxOnly => Stream {
                rx: Some(i),
                tx: None,
                queue: 0,
            },
            Mode::TxOnly => Stream {
                rx: None,
                tx: Some(i),
                queue: 0,
            },
            // The switch decides the output per packet; every port's tx queue is used.
            Mode::L2Switch => Stream {
                rx: Some(i),
                tx: None,
                queue: 0,
            },
            _ => {
                let peer = if i % 2 == 0 { i + 1 } else { i - 1 };
                Stream {
                    rx: Some(i),
                    tx: Some(if peer < n { peer } else { i }),
                    queue: 0,
                }
            }
        })
        .collect()
}

/// One stream per queue: `stream` (queue 0) repeated for queues `0..n`, where `n` is the
/// fewest queues its input has for receiving and its output for sending (`rx_queues(i)`,
/// `tx_queues(i)` of port `i`); none when a port has no queue of the kind it needs.
pub fn per_queue(
    stream: Stream,
    rx_queues: impl Fn(usize) -> u16,
    tx_queues: impl Fn(usize) -> u16,
) -> impl Iterator<Item = Stream> {
    let n = stream
        .rx
        .map_or(u16::MAX, &rx_queues)
        .min(stream.tx.map_or(u16::MAX, &tx_queues));
    let n = if n == u16::MAX { 0 } else { n };
    (0..n).map(move |queue| Stream { queue, ..stream })
}

/// Per-port counters, shared by the forwarding threads (the threads polling a port's
/// queues add to the same counters; the io/mac loop adds what it counted privately every
/// [`PUBLISH_EVERY`] rounds). All their operations are Relaxed: they publish no data,
/// only numbers that reports read after the threads joined (join orders them) or, while
/// running, as approximate progress. Bytes are the ports' own counts (drivers count them
/// where they touch the data; the ring driver, as DPDK's, counts packets only).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_full: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) no_mbuf: AtomicU64,
}

/// One port's figures at the end of (or during) a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortReport {
    /// Port id.
    pub id: u16,
    /// Port name.
    pub name: String,
    /// Packets received on this port.
    pub rx_packets: u64,
    /// Packets sent on this port.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received here and sent on (some port).
    pub forwarded: u64,
    /// Received here and dropped (`tx_full + filtered`).
    pub rx_dropped: u64,
    /// Offered to this port's tx queue and not taken.
    pub tx_dropped: u64,
    /// Driver errors (malformed input, refused handles).
    pub errors: u64,
    /// Drop reasons of packets received here.
    pub drops: DropReasons,
}

/// Why packets were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropReasons {
    /// The driver had no mbuf (never received).
    pub no_mbuf: u64,
    /// The output queue was full.
    pub tx_full: u64,
    /// The mode consumed the packet (rxonly).
    pub filtered: u64,
}

/// A run's figures.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Mode.
    pub mode: String,
    /// Seconds from the first packet moved to the last (idle time before and after is
    /// not counted).
    pub seconds: f64,
    /// Per port.
    pub ports: Vec<PortReport>,
    /// Sums over the ports.
    pub total: PortReport,
}

impl Report {
    /// True when every packet is accounted for, per port and in total.
    pub fn balanced(&self) -> bool {
        self.ports
            .iter()
            .chain(std::iter::once(&self.total))
            .all(|p| p.rx_packets == p.forwarded + p.rx_dropped)
    }

    /// A testpmd-like table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for p in self.ports.iter().chain(std::iter::once(&self.total)) {
            let title = if p.name == "total" {
                "Accumulated forward statistics for all ports".to_string()
            } else {
                format!("Forward statistics for port {} ({})", p.id, p.name)
            };
            s += &format!("  ---------------------- {title} ----------------------\n");
            s += &format!(
                "  RX-packets: {:<14} RX-dropped: {:<14} RX-total: {}\n",
                p.rx_packets, p.rx_dropped, p.rx_packets
            );
            s += &format!(
                "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}\n",
                p.tx_packets,
                p.tx_dropped,
                p.tx_packets + p.tx_dropped
            );
            s += &format!(
                "  forwarded: {}  drops: no_mbuf {} tx_full {} filtered {}  errors: {}\n",
                p.forwarded, p.drops.no_mbuf, p.drops.tx_full, p.drops.filtered, p.errors
            );
        }
        let moved = self.total.rx_packets.max(self.total.tx_packets);
        s += &format!(
            "  {moved} packets in {:.3} s ({:.2} Mpps)\n",
            self.seconds,
            moved as f64 / self.seconds.max(1e-9) / 1e6
        );
        s
    }
}

/// First and last time (ns since the run's start) any thread moved packets.
#[derive(Debug)]
pub(crate) struct Activity {
    pub(crate) first: AtomicU64,
    pub(crate) last: AtomicU64,
}

impl Activity {
    fn seconds(&self) -> f64 {
        let (f, l) = (
            self.first.load(Ordering::Relaxed),
            self.last.load(Ordering::Relaxed),
        );
        if l > f {
            (l - f) as f64 / 1e9
        } else {
            0.0
        }
    }
}

fn report(
    mode: Mode,
    ports: &[Port],
    counters: &[Counters],
    base: &[pmds::PortStats],
    activity: &Activity,
) -> Report {
    let mut out = Report {
        mode: mode.name().to_string(),
        seconds: activity.seconds(),
        ..Report::default()
    };
    let mut total = PortReport {
        name: "total".into(),
        ..PortReport::default()
    };
    for ((port, c), b) in ports.iter().zip(counters).zip(base) {
        let st = port.stats();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = PortReport {
            id: port.id(),
            name: port.name().to_string(),
            rx_packets: g(&c.rx_packets),
            tx_packets: g(&c.tx_packets),
            rx_bytes: st.rx_bytes.saturating_sub(b.rx_bytes),
            tx_bytes: st.tx_bytes.saturating_sub(b.tx_bytes),
            forwarded: g(&c.forwarded),
            rx_dropped: g(&c.tx_full) + g(&c.filtered),
            tx_dropped: g(&c.tx_dropped),
            errors: st.errors.saturating_sub(b.errors),
            drops: DropReasons {
                no_mbuf: g(&c.no_mbuf) + st.rx_dropped.saturating_sub(b.rx_dropped),
                tx_full: g(&c.tx_full),
                filtered: g(&c.filtered),
            },
        };
        total.rx_packets += p.rx_packets;
        total.tx_packets += p.tx_packets;
        total.rx_bytes += p.rx_bytes;
        total.tx_bytes += p.tx_bytes;
        total.forwarded += p.forwarded;
        total.rx_dropped += p.rx_dropped;
        total.tx_dropped += p.tx_dropped;
        total.errors += p.errors;
        total.drops.no_mbuf += p.drops.no_mbuf;
        total.drops.tx_full += p.drops.tx_full;
        total.drops.filtered += p.drops.filtered;
        out.ports.push(p);
    }
    out.total = total;
    out
}

/// The peer MAC address testpmd uses for port `id` in mac mode.
pub fn peer_mac(id: u16) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, id as u8]
}

/// A UDP/IPv4 frame of `len` bytes (at least 64) from `src` to `dst`, as txonly sends.
pub fn txonly_frame(src: [u8; 6], dst: [u8; 6], len: usize) -> Vec<u8> {
    let len = len.clamp(64, 1518);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// A frame of `len` bytes (at least 64) from `src` to `dst` with EtherType `ethertype`
/// and no protocol above it: the payload is the ASCII tag `shmdp` and zeros. With a local
/// experimental type (0x88b5, 0x88b6) no host or guest network stack acts on it.
pub fn raw_frame(src: [u8; 6], dst: [u8; 6], ethertype: u16, len: usize) -> Vec<u8> {
    let len = len.clamp(64, 1518);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[14..19].copy_from_slice(b"shmdp");
    f
}

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
                        report(cfg.mode, &chosen, &counters, &base, &activity).table()
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
    Ok(report(cfg.mode, &chosen, &counters, &base, &activity))
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Queues one thread polls, by (port, queue).
struct Lanes<'c> {
    rx: BTreeMap<(usize, u16), RxQueue<'c>>,
    tx: BTreeMap<(usize, u16), TxQueue<'c>>,
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

#[allow(clippy::too_many_arguments)]
fn poll(
    ports: &[Port],
    cache: &MbufCache,
    cfg: &FwdConfig,
    streams: &[Stream],
    (counters, activity, t0): (&[Counters], &Activity, Instant),
    stop: &AtomicBool,
    done: &AtomicBool,
) -> Result<(), FwdError> {
    let mut lanes = Lanes {
        rx: BTreeMap::new(),
        tx: BTreeMap::new(),
    };
    for s in streams {
        if let Some(i) = s.rx {
            lanes
                .rx
                .insert((i, s.queue), ports[i].rx_queue(s.queue, cache)?);
        }
        if let Some(i) = s.tx {
            if let std::collections::btree_map::Entry::Vacant(e) = lanes.tx.entry((i, s.queue)) {
                e.insert(ports[i].tx_queue(s.queue, cache)?);
            }
        }
    }
    let templates: Vec<Vec<u8>> = ports
        .iter()
        .map(|p| match cfg.tx_ethertype {
            Some(t) => raw_frame(p.mac(), peer_mac(p.id()), t, cfg.txpkt_len),
            None => txonly_frame(p.mac(), peer_mac(p.id()), cfg.txpkt_len),
        })
        .collect();
    let mut buf: Vec<Mbuf<'_>> = Vec::with_capacity(cfg.burst);
    // This thread's counts, added to the shared counters every PUBLISH_EVERY rounds and
    // at the end (an atomic add per counter per burst would cost more than the burst).
    let mut mine: Vec<Local> = vec![Local::default(); counters.len()];
    if cfg.tx_first {
        for (&(t, _), q) in lanes.tx.iter_mut() {
            for _ in 0..cfg.burst {
                match cache.alloc_from(&templates[t]) {
                    Ok(m) => buf.push(m),
                    Err(_) => break,
                }
            }
            mine[t].tx_packets += q.tx_burst(&mut buf) as u64;
            buf.clear();
        }
    }
    // The queues of each stream, looked up once.
    let mut rx_of: Vec<Option<RxQueue<'_>>> = Vec::with_capacity(streams.len());
    let mut tx_key: Vec<Option<(usize, u16)>> = Vec::with_capacity(streams.len());
    for s in streams {
        rx_of.push(s.rx.and_then(|r| lanes.rx.remove(&(r, s.queue))));
        tx_key.push(s.tx.map(|t| (t, s.queue)));
    }
    let mut pacer = Pacer::new(cfg, activity, t0, stop);
    // io without retries moves ring-port handles directly where it can (`forward_to`).
    let io_direct = cfg.mode == Mode::Io && !cfg.tx_retry;
    let mut sent_by_stream = vec![0u64; streams.len()];
    let mut rounds = 0u32;
    loop {
        let mut moved = 0usize;
        for (k, s) in streams.iter().enumerate() {
            match (rx_of[k].as_mut(), tx_key[k]) {
                (Some(q), tx) => {
                    let r = s.rx.unwrap_or_default();
                    if let (Some(key), true) = (tx, io_direct) {
                        // io between ring ports of this process: handles move ring to
                        // ring, no mbuf made (what testpmd's io over net_ring does).
                        let txq = lanes.tx.get_mut(&key).expect("claimed above");
                        if let Some((n, sent)) = q.forward_to(txq, cfg.burst, &mut buf) {
                            let left = (n - sent) as u64;
                            moved += n;
                            mine[r].rx_packets += n as u64;
                            mine[r].forwarded += sent as u64;
                            mine[r].tx_full += left;
                            mine[key.0].tx_packets += sent as u64;
                            mine[key.0].tx_dropped += left;
                            buf.clear();
                            continue;
                        }
                    }
                    let n = q.rx_burst(&mut buf, cfg.burst);
                    if n == 0 {
                        continue;
                    }
                    moved += n;
                    mine[r].rx_packets += n as u64;
                    match tx {
                        None => {
                            mine[r].filtered += n as u64;
                            buf.clear();
                        }
                        Some(key) => {
                            let t = key.0;
                            rewrite(cfg.mode, &mut buf, &ports[t]);
                            let txq = lanes.tx.get_mut(&key).expect("claimed above");
                            let mut sent = txq.tx_burst(&mut buf);
                            if cfg.tx_retry && !buf.is_empty() {
                                // Opt-in: the clock is read only when a burst did not fit.
                                let until = Instant::now() + TX_RETRY_FOR;
                                while !buf.is_empty() && Instant::now() < until {
                                    std::hint::spin_loop();
                                    sent += txq.tx_burst(&mut buf);
                                }
                            }
                            let left = buf.len() as u64;
                            mine[r].forwarded += sent as u64;
                            mine[r].tx_full += left;
                            mine[t].tx_packets += sent as u64;
                            mine[t].tx_dropped += left;
                            buf.clear();
                        }
                    }
                }
                (None, Some(key)) => {
                    let t = key.0;
                    if cfg.tx_count.is_some_and(|limit| sent_by_stream[k] >= limit)
                        || stop.load(Ordering::Relaxed)
                    {
                        continue;
                    }
                    let want = cfg.tx_count.map_or(cfg.burst, |l| {
                        (l - sent_by_stream[k]).min(cfg.burst as u64) as usize
                    });
                    for _ in 0..want {
                        match cache.alloc_from(&templates[t]) {
                            Ok(m) => buf.push(m),
                            Err(_) => {
                                mine[t].no_mbuf += 1;
                                break;
                            }
                        }
                    }
                    let offered = buf.len();
                    let sent = lanes
                        .tx
                        .get_mut(&key)
                        .expect("claimed above")
                        .tx_burst(&mut buf);
                    moved += sent;
                    mine[t].tx_packets += sent as u64;
                    if cfg.tx_retry {
                        // Not sent is not generated: the same frames are offered again.
                        sent_by_stream[k] += sent as u64;
                    } else {
                        sent_by_stream[k] += offered as u64;
                        mine[t].tx_dropped += buf.len() as u64;
                    }
                    buf.clear();
                }
                (None, None) => {}
            }
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(PUBLISH_EVERY) {
            publish(&mut mine, counters);
        }
        let txonly_done = cfg.mode == Mode::TxOnly
            && cfg
                .tx_count
                .is_some_and(|l| sent_by_stream.iter().all(|&s| s >= l));
        // A finished peer thread ends an idle-bounded run too. With --duration the run
        // lasts that long even once txonly has sent its budget (the ports stay served:
        // a vhost-user peer may still be taking the last packets).
        let ending = txonly_done && cfg.duration.is_none()
            || done.load(Ordering::Relaxed) && cfg.idle_exit.is_some();
        match pacer.after_round(moved, ending) {
            Step::Busy => {}
            Step::Idle { flush } => {
                for q in lanes.tx.values_mut() {
                    if flush {
                        q.flush();
                    } else {
                        // Guest-facing ports: land what a slow guest held up.
                        q.idle();
                    }
                }
            }
            Step::Stop => break,
        }
    }
    for q in lanes.tx.values_mut() {
        q.flush();
    }
    publish(&mut mine, counters);
    Ok(())
}

/// Rounds between two additions of a thread's private counts to the shared counters.
const PUBLISH_EVERY: u32 = 64;

/// One thread's counts for one port since they were last published.
#[derive(Debug, Default, Clone, Copy)]
struct Local {
    rx_packets: u64,
    forwarded: u64,
    tx_packets: u64,
    tx_full: u64,
    tx_dropped: u64,
    filtered: u64,
    no_mbuf: u64,
}

/// Adds a thread's counts to the shared counters and starts them again.
fn publish(mine: &mut [Local], shared: &[Counters]) {
    for (m, c) in mine.iter_mut().zip(shared) {
        for (n, to) in [
            (m.rx_packets, &c.rx_packets),
            (m.forwarded, &c.forwarded),
            (m.tx_packets, &c.tx_packets),
            (m.tx_full, &c.tx_full),
            (m.tx_dropped, &c.tx_dropped),
            (m.filtered, &c.filtered),
            (m.no_mbuf, &c.no_mbuf),
        ] {
            if n > 0 {
                // Relaxed: a number (see `Counters`).
                to.fetch_add(n, Ordering::Relaxed);
            }
        }
        *m = Local::default();
    }
}

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

/// Applies the mode's header rewrite to a burst about to go out on `out`.
fn rewrite(mode: Mode, burst: &mut [Mbuf<'_>], out: &Port) {
    match mode {
        Mode::Mac => {
            let (src, dst) = (out.mac(), peer_mac(out.id()));
            for m in burst {
                if let Some(d) = m.data_mut().filter(|d| d.len() >= 12) {
                    d[0..6].copy_from_slice(&dst);
                    d[6..12].copy_from_slice(&src);
                }
            }
        }
        Mode::MacSwap => {
            for m in burst {
                if let Some(d) = m.data_mut().filter(|d| d.len() >= 12) {
                    let (a, b) = d.split_at_mut(6);
                    a.swap_with_slice(&mut b[..6]);
                }
            }
        }
        _ => {}
    }
}

pub mod switch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_portlists_and_streams() {
        assert_eq!("macswap".parse::<Mode>(), Ok(Mode::MacSwap));
        assert!("bogus"
            .parse::<Mode>()
            .unwrap_err()
            .contains("unknown mode"));
        assert_eq!(parse_portlist("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_portlist("0-3"), Ok(vec![0, 1, 2, 3]));
        assert!(parse_portlist("x").is_err() && parse_portlist("3-1").is_err());
        let s = streams(Mode::Io, 3);
        assert_eq!(
            s.iter().map(|s| (s.rx, s.tx)).collect::<Vec<_>>(),
            vec![(Some(0), Some(1)), (Some(1), Some(0)), (Some(2), Some(2))]
        );
        assert!(streams(Mode::RxOnly, 2).iter().all(|s| s.tx.is_none()));
        assert!(streams(Mode::TxOnly, 2).iter().all(|s| s.rx.is_none()));
    }

    #[test]
    fn txonly_frames_are_valid_ipv4_udp() {
        let f = txonly_frame([2, 0, 0, 0, 0, 1], peer_mac(0), 100);
        assert_eq!(f.len(), 100);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        // The IPv4 header checksums to 0xffff.
        let mut sum: u32 = f[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(txonly_frame([0; 6], [0; 6], 10).len(), 64);
    }

    #[test]
    fn raw_frames_carry_the_asked_ethertype_and_length() {
        let f = raw_frame([2, 0, 0, 0, 0, 1], peer_mac(0), 0x88b5, 128);
        assert_eq!(f.len(), 128);
        assert_eq!(&f[0..6], &peer_mac(0));
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
        assert_eq!(&f[14..19], b"shmdp");
        assert_eq!(raw_frame([0; 6], [0; 6], 0x88b5, 10).len(), 64);
    }
}
