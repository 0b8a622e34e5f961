//! Command line of `shmdp-secondary`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use shm::eal::{EalArgs, ProcType};

use crate::{PrimaryGone, Secondary};

/// Exit code when the primary went away while we were attached.
pub const EXIT_PRIMARY_GONE: u8 = 3;

/// `shmdp-secondary`: attaches to a running primary by `--file-prefix`.
#[derive(Debug, Parser)]
#[command(name = "shmdp-secondary", version, about)]
pub struct SecondaryCli {
    /// Process options.
    #[command(flatten)]
    pub eal: EalArgs,
    /// Attach to an IVSHMEM export instead of a primary (what a guest does): `auto`,
    /// `auto:GROUP`, a PCI address or a segment file. `info`, `stats`, `fwd` and
    /// `mbuf-echo` then work on the exported objects (as `ivshmem --dev DEV ...`).
    #[arg(long = "ivshmem", value_name = "DEV")]
    pub ivshmem: Option<String>,
    /// What to do once attached.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the memsegs and memzones attached to, then detach.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stay attached until the primary goes away (exit 3) or a signal arrives (exit 0).
    Monitor,
    /// Enqueue COUNT sequence-numbered elements (producer_id << 48 | seq) into a ring.
    RingFill {
        /// Ring name.
        ring: String,
        /// Elements to enqueue.
        #[arg(long)]
        count: u64,
        /// Producer id stamped into the elements (0..32768).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..32768))]
        producer_id: u64,
        /// Elements per enqueue call.
        #[arg(long, default_value_t = 32)]
        burst: usize,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Dequeue COUNT elements and check every producer's sequence is complete and in order.
    RingDrain {
        /// Ring name.
        ring: String,
        /// Elements to dequeue.
        #[arg(long)]
        count: u64,
        /// Number of producers (ids 0..N).
        #[arg(long, default_value_t = 1)]
        producers: u64,
        /// Elements per dequeue call.
        #[arg(long, default_value_t = 32)]
        burst: usize,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Forward packets between ports (testpmd style) until SIGINT/SIGTERM or --idle-exit.
    Fwd {
        /// Mode: io (default), mac, macswap, rxonly, txonly, l2switch.
        #[arg(long = "fwd")]
        mode: Option<fwd::Mode>,
        /// Engine options.
        #[command(flatten)]
        args: crate::fwdcmd::FwdArgs,
    },
    /// Receive and print the first COUNT packets of a port's rx queue (like testpmd's
    /// verbose mode; the packets are consumed), then exit.
    Dump {
        /// Port id.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Rx queue.
        #[arg(long, default_value_t = 0)]
        queue: u16,
        /// Packets to print.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Work on an IVSHMEM export segment, as a guest does (no primary connection needed):
    /// inside a QEMU guest with --dev auto, on the host with the segment file.
    Ivshmem {
        /// `auto`, `auto:GROUP`, a PCI address (0000:00:10.0), or a path (resource2 or the
        /// segment file).
        #[arg(long, default_value = "auto")]
        dev: String,
        /// What to do.
        #[command(subcommand)]
        command: IvshmemCommand,
    },
    /// Print every port's and mempool's statistics (as the primary reports them).
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Allocate COUNT mbufs from each POOL and hold them until the primary goes away
    /// (exit 3) or SIGINT/SIGTERM (frees them, exit 0). A pool in an export segment
    /// (`NAME@GROUP`) is used without a cache slot.
    MbufHold {
        /// Pool names.
        #[arg(required = true)]
        pools: Vec<String>,
        /// Mbufs to hold.
        #[arg(long)]
        count: u32,
    },
    /// Send COUNT packets of SIZE bytes (sequence number + pattern) from POOL through RING.
    MbufSend(MbufRingArgs),
    /// Receive COUNT packets from RING, check each payload as `mbuf-send` wrote it, free them.
    MbufRecv(MbufRingArgs),
    /// Receive COUNT packets on ring RX and send each back on ring TX (as `ivshmem echo`
    /// does in a guest).
    MbufEcho {
        /// Pool the packets belong to.
        pool: String,
        /// Ring to receive from.
        rx: String,
        /// Ring to send on.
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Run OPS get/put operations of random bulk sizes on POOL's objects.
    PoolStress {
        /// Pool name.
        pool: String,
        /// Operations.
        #[arg(long)]
        ops: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check POOL's free list (run it when nothing else uses the pool): every object free
    /// once, none duplicated or out of range. Exit 1 if not.
    PoolAudit {
        /// Pool name.
        pool: String,
        /// Find every mbuf wherever it is (free list, rings, port in-flight records, held
        /// by a live process) and check each is in exactly one place; print a JSON summary.
        /// Exit 1 unless exact.
        #[arg(long)]
        exact: bool,
    },
    /// Mixed pool, ring and port work until killed, for the crash-point tests.
    CrashMix(crate::crashmix::MixArgs),
}

/// What `ivshmem` does.
#[derive(Debug, Subcommand)]
pub enum IvshmemCommand {
    /// Forward between the exported ports (`--ivshmem GROUP:port=...` on the primary), as
    /// `shmdp-secondary fwd` does on the host: same modes, options and report.
    Fwd {
        /// Mode: io (default), mac, macswap, rxonly, txonly, l2switch.
        #[arg(long = "fwd")]
        mode: Option<fwd::Mode>,
        /// Pin forwarding threads to these CPUs (as -l on the host), e.g. 0-1.
        #[arg(short = 'l', long = "lcores", value_name = "LIST")]
        lcores: Option<shm::eal::LcoreList>,
        /// Engine options.
        #[command(flatten)]
        args: crate::fwdcmd::FwdArgs,
    },
    /// Print the export group's metadata (objects, offsets, sizes).
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Receive COUNT packets on ring RX and send each back on ring TX.
    Echo {
        /// Pool the packets belong to.
        #[arg(long)]
        pool: String,
        /// Ring to receive from.
        #[arg(long)]
        rx: String,
        /// Ring to send on.
        #[arg(long)]
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the statistics of every pool in the segment.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Receive and print the first COUNT packets of ring RX (consumed and freed).
    Dump {
        /// Pool the packets belong to.
        #[arg(long)]
        pool: String,
        /// Ring to read.
        #[arg(long)]
        rx: String,
        /// Packets to print.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Overwrite the whole segment with random bytes ROUNDS times (a hostile guest, for
    /// robustness tests: the host must survive it). Does not read the metadata.
    Scribble {
        /// Passes over the segment.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Instead: for SECS seconds, keep rewriting the head index of every ring in the
        /// segment (exported rings and the pools' free rings), mostly as reservations
        /// that are never published (a hostile guest's ring attack).
        #[arg(long, value_name = "SECS")]
        indices: Option<f64>,
        /// With --indices: only the pools' free rings.
        #[arg(long, requires = "indices")]
        pools_only: bool,
        /// With --indices: also write wild tails now and then (impossible indices).
        #[arg(long, requires = "indices")]
        tails: bool,
    },
    /// Send COUNT numbered packets (as `mbuf-send` writes them) on ring TX.
    Gen {
        /// Pool to allocate from.
        #[arg(long)]
        pool: String,
        /// Ring to send on.
        #[arg(long)]
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Bytes per packet.
        #[arg(long, default_value_t = 64)]
        size: u64,
    },
}

/// Arguments of `mbuf-send` and `mbuf-recv`.
#[derive(Debug, clap::Args)]
pub struct MbufRingArgs {
    /// Pool name.
    pool: String,
    /// Ring name.
    ring: String,
    /// Packets.
    #[arg(long)]
    count: u64,
    /// Bytes per packet (8..; packets above the data room are chained).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    size: u64,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Bench mode: move packets in bursts of N (allocation, enqueue, dequeue), spinning
    /// instead of yielding while waiting, one-segment frames only; the receiver's rate then
    /// runs from its first packet. Default: one packet at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    burst: Option<u16>,
    /// Bench mode (also without --burst): write and check only the sequence number in the
    /// first 8 bytes of each frame (and its length), not the whole payload.
    #[arg(long)]
    seq_only: bool,
}

impl MbufRingArgs {
    /// The bench mode's options, if `--burst` or `--seq-only` was given.
    fn burst_opts(&self) -> Option<crate::pooltool::BurstOpts> {
        (self.burst.is_some() || self.seq_only).then(|| crate::pooltool::BurstOpts {
            burst: usize::from(self.burst.unwrap_or(1)),
            seq_only: self.seq_only,
        })
    }
}

/// Exit code when a pool operation or check failed.
pub const EXIT_POOL_FAILED: u8 = 1;

/// Exit code when a ring operation or check failed.
pub const EXIT_RING_FAILED: u8 = 1;

/// Runs `shmdp-secondary` with the process's arguments.
pub fn main() -> ExitCode {
    let cli: SecondaryCli = shm::eal::parse_args_or_exit("shmdp-secondary");
    init_logging();
    if cli.eal.proc_type == Some(ProcType::Primary) {
        eprintln!("shmdp-secondary: error: --proc-type primary: shmdp-secondary only attaches; run shmdp-primary to create shared memory");
        return ExitCode::from(2);
    }
    if let Some(dev) = &cli.ivshmem {
        return on_ivshmem(dev, cli.command, cli.eal.lcores.clone());
    }
    match cli.command {
        Command::Info { json } => info("shmdp-secondary", &cli.eal, json),
        Command::Monitor => monitor("shmdp-secondary", &cli.eal, true),
        Command::RingFill {
            ring,
            count,
            producer_id,
            burst,
            timeout,
        } => ring_cmd(&cli.eal, &ring, |r| {
            crate::ringtool::fill(r, producer_id, count, burst, Duration::from_secs(timeout)).map(
                |m| {
                    format!(
                        "filled {} elements into {ring} ({:.2} Mpps)",
                        m.count,
                        m.mpps()
                    )
                },
            )
        }),
        Command::Stats { json } => stats(&cli.eal, json),
        Command::Fwd { mode, args } => fwd_cmd(&cli.eal, mode, &args),
        Command::Ivshmem { dev, command } => ivshmem_cmd(&dev, command),
        Command::Dump {
            port,
            queue,
            count,
            timeout,
        } => dump_cmd(&cli.eal, port, queue, count, Duration::from_secs(timeout)),
        Command::MbufHold { pools, count } => mbuf_hold(&cli.eal, &pools, count),
        Command::MbufSend(a) => mbuf_ring_cmd(&cli.eal, &a.pool, &a.ring, |cache, r| {
            let t0 = std::time::Instant::now();
            let timeout = Duration::from_secs(a.timeout);
            if let Some(opts) = a.burst_opts() {
                return crate::pooltool::send_bursts(
                    cache,
                    r,
                    a.count,
                    a.size as usize,
                    opts,
                    timeout,
                )
                .map(|t| {
                    format!(
                        "sent {} packets of {} B from {} into {} in bursts of {} ({:.2} Mpps)",
                        t.packets,
                        a.size,
                        a.pool,
                        a.ring,
                        opts.burst,
                        t.mpps()
                    )
                });
            }
            crate::pooltool::send(cache, r, a.count, a.size as usize, timeout).map(|n| {
                format!(
                    "sent {n} packets of {} B from {} into {} ({:.2} Mpps)",
                    a.size,
                    a.pool,
                    a.ring,
                    n as f64 / t0.elapsed().as_secs_f64() / 1e6
                )
            })
        }),
        Command::MbufRecv(a) => mbuf_ring_cmd(&cli.eal, &a.pool, &a.ring, |cache, r| {
            let t0 = std::time::Instant::now();
            let timeout = Duration::from_secs(a.timeout);
            if let Some(opts) = a.burst_opts() {
                let what = if opts.seq_only {
                    "sequence"
                } else {
                    "payloads"
                };
                return crate::pooltool::receive_bursts(cache, r, a.count, a.size as usize, opts, timeout)
                    .map(|t| {
                        format!(
                            "received {} packets from {} in bursts of {}, {what} ok ({:.2} Mpps from the first packet)",
                            t.packets, a.ring, opts.burst, t.mpps()
                        )
                    });
            }
            crate::pooltool::receive(cache, r, a.count, a.size as usize, timeout).map(|n| {
                format!(
                    "received {n} packets from {}, payloads ok ({:.2} Mpps)",
                    a.ring,
                    n as f64 / t0.elapsed().as_secs_f64() / 1e6
                )
            })
        }),
        Command::MbufEcho {
            pool,
            rx,
            tx,
            count,
            timeout,
        } => pool_cmd(&cli.eal, &pool, |sec, p| {
            let ring = |name: &str| {
                sec.ring(name)
                    .map_err(|source| crate::pooltool::PoolToolError::Ring {
                        ring: name.to_string(),
                        source,
                    })
            };
            let (rx, tx) = (ring(&rx)?, ring(&tx)?);
            let cache = sec.allocator(&pool, p)?;
            let t0 = std::time::Instant::now();
            let n = crate::pooltool::echo(&cache, &rx, &tx, count, Duration::from_secs(timeout))?;
            Ok(format!(
                "echoed {n} packets from {} to {} ({:.3} Mpps)",
                rx.name(),
                tx.name(),
                n as f64 / t0.elapsed().as_secs_f64() / 1e6
            ))
        }),
        Command::PoolStress { pool, ops, seed } => pool_cmd(&cli.eal, &pool, |sec, p| {
            let cached = !sec.in_export(&pool);
            crate::pooltool::stress(p.mempool(), sec.owner_tag(), cached, ops, seed)
                .map(|n| format!("pool-stress: {n} operations on {pool}"))
        }),
        Command::CrashMix(a) => crate::crashmix::run(&cli.eal, &a),
        Command::PoolAudit { pool, exact: true } => pool_cmd(&cli.eal, &pool, |sec, p| {
            let input =
                crate::audit::gather(sec, p).map_err(crate::pooltool::PoolToolError::Check)?;
            let a = crate::audit::classify(&input);
            let line = serde_json::to_string(&a).expect("serialisable");
            if a.exact {
                Ok(line)
            } else {
                Err(crate::pooltool::PoolToolError::Check(format!(
                    "audit not exact: {line}"
                )))
            }
        }),
        Command::PoolAudit { pool, exact: false } => pool_cmd(&cli.eal, &pool, |_, p| {
            let a = p.mempool().audit();
            let line = serde_json::to_string(&a).expect("serialisable");
            if a.free == u64::from(p.mempool().count()) && a.duplicates == 0 && a.out_of_range == 0
            {
                Ok(format!("audit ok: {line}"))
            } else {
                Err(crate::pooltool::PoolToolError::Check(format!(
                    "audit failed: {line}"
                )))
            }
        }),
        Command::RingDrain {
            ring,
            count,
            producers,
            burst,
            timeout,
        } => ring_cmd(&cli.eal, &ring, |r| {
            crate::ringtool::drain(r, producers, count, burst, Duration::from_secs(timeout)).map(|m| {
                format!(
                    "drained {} elements from {ring}: {producers} producers, all in order ({:.2} Mpps)",
                    m.count,
                    m.mpps()
                )
            })
        }),
    }
}

fn ring_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&shm_ring::Ring<u64>) -> Result<String, crate::ringtool::RingToolError>,
) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ring = match sec.ring(name) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: error: ring {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = f(&ring);
    sec.detach();
    match result {
        Ok(line) => {
            println!("{program}: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(EXIT_RING_FAILED)
        }
    }
}

fn pool_cmd(
    eal: &EalArgs,
    name: &str,
    f: impl FnOnce(&Secondary, &shm_mempool::MbufPool) -> Result<String, crate::pooltool::PoolToolError>,
) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let pool = match sec.mbuf_pool(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{program}: error: mempool {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = f(&sec, &pool);
    drop(pool);
    sec.detach();
    match result {
        Ok(line) => {
            println!("{program}: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(EXIT_POOL_FAILED)
        }
    }
}

fn mbuf_ring_cmd(
    eal: &EalArgs,
    pool: &str,
    ring: &str,
    f: impl FnOnce(
        &shm_mempool::MbufCache,
        &shm_ring::Ring<u64>,
    ) -> Result<String, crate::pooltool::PoolToolError>,
) -> ExitCode {
    pool_cmd(eal, pool, |sec, p| {
        let r = sec
            .ring(ring)
            .map_err(|source| crate::pooltool::PoolToolError::Ring {
                ring: ring.to_string(),
                source,
            })?;
        let cache = sec.allocator(pool, p)?;
        f(&cache, &r)
    })
}

fn fwd_cmd(eal: &EalArgs, mode: Option<fwd::Mode>, args: &crate::fwdcmd::FwdArgs) -> ExitCode {
    let program = "shmdp-secondary";
    let lcores = eal
        .lcores
        .as_ref()
        .map(|l| l.0.iter().map(|&c| c as usize).collect())
        .unwrap_or_default();
    let resolved = match args.resolve(mode, lcores) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(2);
        }
    };
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = fwd_on(program, &sec, &resolved);
    sec.detach();
    code
}

/// The forwarding engine on every port of `dp`, allocating from the first port's pool:
/// the same code on the host (`fwd`) and in a guest (`ivshmem fwd`).
fn fwd_on(
    program: &str,
    dp: &impl crate::Dataplane,
    resolved: &crate::fwdcmd::Resolved,
) -> ExitCode {
    let ports = match dp.ports() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!(
                "{program}: error: {} has no ports; probe some on the primary with --vdev (e.g. --vdev net_ring0), or export one with --ivshmem GROUP:port=net_ring0",
                dp.describe()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(2);
        }
    };
    let pool = match dp.mbuf_pool(&ports[0].rx_pool_name()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::fwdcmd::run(
        program,
        &ports,
        &pool,
        dp.owner_tag(),
        &resolved.cfg,
        resolved.stats_json.as_ref(),
    )
}

fn dump_cmd(eal: &EalArgs, port_id: u16, queue: u16, count: u64, timeout: Duration) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = (|| -> Result<u64, String> {
        let ports = sec.ports().map_err(|e| e.to_string())?;
        let port = ports
            .iter()
            .find(|p| p.id() == port_id)
            .ok_or_else(|| format!("no port {port_id} ({} ports)", ports.len()))?;
        let pool = sec
            .mbuf_pool(&port.rx_pool_name())
            .map_err(|e| e.to_string())?;
        let cache = sec
            .allocator(&port.rx_pool_name(), &pool)
            .map_err(|e| e.to_string())?;
        let mut rx = port.rx_queue(queue, &cache).map_err(|e| e.to_string())?;
        let mut burst = Vec::with_capacity(32);
        let mut seen = 0u64;
        let mut last = std::time::Instant::now();
        while seen < count {
            let want = (count - seen).min(32) as usize;
            if rx.rx_burst(&mut burst, want) == 0 {
                if last.elapsed() > timeout || rx.exhausted() {
                    break;
                }
                std::thread::yield_now();
                continue;
            }
            last = std::time::Instant::now();
            for m in burst.drain(..) {
                println!(
                    "{}",
                    crate::pooltool::describe(&format!("port {port_id}/{queue}"), seen, &m)
                );
                seen += 1;
            }
        }
        Ok(seen)
    })();
    sec.detach();
    match result {
        Ok(n) => {
            println!("{program}: dumped {n} packets");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--ivshmem DEV COMMAND`: the commands that make sense on an export segment, mapped to
/// their `ivshmem` forms.
fn on_ivshmem(dev: &str, command: Command, lcores: Option<shm::eal::LcoreList>) -> ExitCode {
    let command = match command {
        Command::Info { json } => IvshmemCommand::Info { json },
        Command::Stats { json } => IvshmemCommand::Stats { json },
        Command::Fwd { mode, args } => IvshmemCommand::Fwd { mode, lcores, args },
        Command::MbufEcho {
            pool,
            rx,
            tx,
            count,
            timeout,
        } => IvshmemCommand::Echo {
            pool,
            rx,
            tx,
            count,
            timeout,
        },
        Command::Ivshmem { command, .. } => command,
        other => {
            let debug = format!("{other:?}");
            let variant = debug.split([' ', '(', '{']).next().unwrap_or_default();
            // RingFill -> ring-fill, as on the command line.
            let mut name = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('-');
                }
                name.push(c.to_ascii_lowercase());
            }
            eprintln!(
                "shmdp-secondary: error: --ivshmem: {name} needs a primary; on an export segment use info, stats, fwd, mbuf-echo or the ivshmem subcommands"
            );
            return ExitCode::from(2);
        }
    };
    ivshmem_cmd(dev, command)
}

fn ivshmem_cmd(dev: &str, command: IvshmemCommand) -> ExitCode {
    let program = "shmdp-secondary";
    if let IvshmemCommand::Scribble {
        seed,
        indices: Some(secs),
        pools_only,
        tails,
        ..
    } = command
    {
        let how_long = std::time::Duration::from_secs_f64(secs);
        return match crate::ivshmem::ExportSegment::open(dev)
            .and_then(|s| s.scribble_indices(how_long, pools_only, tails, seed))
        {
            Ok(n) => {
                println!("rewrote {n} ring indices in {dev}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{program}: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let IvshmemCommand::Scribble { rounds, seed, .. } = command {
        let path = if dev.starts_with("auto") {
            crate::ivshmem::find_devices().into_iter().next()
        } else {
            Some(std::path::PathBuf::from(dev))
        };
        let Some(path) = path else {
            eprintln!("{program}: error: no ivshmem device found");
            return ExitCode::from(2);
        };
        return match crate::ivshmem::scribble(&path, rounds, seed) {
            Ok(n) => {
                println!("scribbled {n} bytes over {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{program}: error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let seg = match crate::ivshmem::ExportSegment::open(dev) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let IvshmemCommand::Fwd { mode, lcores, args } = &command {
        let lcores = lcores
            .as_ref()
            .map(|l| l.0.iter().map(|&c| c as usize).collect())
            .unwrap_or_default();
        return match args.resolve(*mode, lcores) {
            Ok(resolved) => fwd_on(program, &seg, &resolved),
            Err(e) => {
                eprintln!("{program}: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = (|| -> Result<String, String> {
        match command {
            IvshmemCommand::Fwd { .. } => unreachable!("handled above"),
            IvshmemCommand::Info { json } => {
                let m = seg.meta();
                if json {
                    let entries: Vec<serde_json::Value> = m
                        .entries
                        .iter()
                        .map(|e| {
                            serde_json::json!({"name": e.name, "kind": e.kind.name(), "offset": e.offset,
                                "length": e.length, "elem_size": e.elem_size, "flags": e.flags})
                        })
                        .collect();
                    let v = serde_json::json!({"group": m.group, "segment_size": m.segment_size,
                        "path": seg.path().display().to_string(), "entries": entries});
                    return Ok(serde_json::to_string_pretty(&v).expect("serialisable"));
                }
                let mut out = format!(
                    "export group {} ({} bytes) at {}",
                    m.group,
                    m.segment_size,
                    seg.path().display()
                );
                for e in &m.entries {
                    out += &format!(
                        "\n  {:<8} {:<31} offset {:#010x} len {:>10} elem {}",
                        e.kind.name(),
                        e.name,
                        e.offset,
                        e.length,
                        e.elem_size
                    );
                }
                Ok(out)
            }
            IvshmemCommand::Echo {
                pool,
                rx,
                tx,
                count,
                timeout,
            } => {
                let pool = seg.mbuf_pool(&pool).map_err(|e| e.to_string())?;
                let cache = pool
                    .uncached(shm_mempool::OwnerTag::GUEST)
                    .map_err(|e| e.to_string())?;
                let (rx, tx) = (
                    seg.ring(&rx).map_err(|e| e.to_string())?,
                    seg.ring(&tx).map_err(|e| e.to_string())?,
                );
                let t0 = std::time::Instant::now();
                let n =
                    crate::pooltool::echo(&cache, &rx, &tx, count, Duration::from_secs(timeout))
                        .map_err(|e| e.to_string())?;
                Ok(format!(
                    "echoed {n} packets from {} to {} ({:.3} Mpps)",
                    rx.name(),
                    tx.name(),
                    n as f64 / t0.elapsed().as_secs_f64() / 1e6
                ))
            }
            IvshmemCommand::Scribble { .. } => unreachable!("handled above"),
            IvshmemCommand::Stats { json } => {
                let mut stats = Vec::new();
                for e in seg
                    .meta()
                    .entries
                    .iter()
                    .filter(|e| e.kind == ivshmem_meta::Kind::Mempool)
                {
                    stats.push(
                        seg.mbuf_pool(&e.name)
                            .map_err(|e| e.to_string())?
                            .mempool()
                            .stats(),
                    );
                }
                let ports: Vec<shm::stats::PortStats> = seg
                    .ports()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(pmds::Port::stats)
                    .collect();
                if json {
                    let all = AllStats {
                        ports,
                        pools: stats,
                    };
                    return Ok(serde_json::to_string_pretty(&all).expect("serialisable"));
                }
                crate::pooltool::print_port_stats(&ports);
                crate::pooltool::print_stats(&stats);
                Ok(String::new())
            }
            IvshmemCommand::Dump {
                pool,
                rx,
                count,
                timeout,
            } => {
                let pool = seg.mbuf_pool(&pool).map_err(|e| e.to_string())?;
                let cache = pool
                    .uncached(shm_mempool::OwnerTag::GUEST)
                    .map_err(|e| e.to_string())?;
                let ring = seg.ring(&rx).map_err(|e| e.to_string())?;
                let lines =
                    crate::pooltool::dump_ring(&cache, &ring, count, Duration::from_secs(timeout))
                        .map_err(|e| e.to_string())?;
                Ok(lines.join("\n"))
            }
            IvshmemCommand::Gen {
                pool,
                tx,
                count,
                size,
            } => {
                let pool = seg.mbuf_pool(&pool).map_err(|e| e.to_string())?;
                let cache = pool
                    .uncached(shm_mempool::OwnerTag::GUEST)
                    .map_err(|e| e.to_string())?;
                let tx = seg.ring(&tx).map_err(|e| e.to_string())?;
                let n = crate::pooltool::send(
                    &cache,
                    &tx,
                    count,
                    size as usize,
                    Duration::from_secs(30),
                )
                .map_err(|e| e.to_string())?;
                Ok(format!("sent {n} packets on {}", tx.name()))
            }
        }
    })();
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Everything `stats` prints.
#[derive(Debug, serde::Serialize)]
struct AllStats {
    ports: Vec<shm::stats::PortStats>,
    pools: Vec<shm::stats::PoolStats>,
}

fn stats(eal: &EalArgs, json: bool) -> ExitCode {
    let program = "shmdp-secondary";
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = sec.port_stats().and_then(|ports| {
        Ok(AllStats {
            ports,
            pools: sec.pool_stats()?,
        })
    });
    sec.detach();
    match result {
        Ok(stats) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&stats).expect("serialisable")
            );
            ExitCode::SUCCESS
        }
        Ok(stats) => {
            crate::pooltool::print_port_stats(&stats.ports);
            crate::pooltool::print_stats(&stats.pools);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: cannot get statistics from the primary: {e}");
            ExitCode::from(EXIT_POOL_FAILED)
        }
    }
}

fn mbuf_hold(eal: &EalArgs, names: &[String], count: u32) -> ExitCode {
    let program = "shmdp-secondary";
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: error: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut pools = Vec::with_capacity(names.len());
    for name in names {
        match sec.mbuf_pool(name) {
            Ok(p) => pools.push(p),
            Err(e) => {
                eprintln!("{program}: error: mempool {name}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let watch = match sec.watch_primary() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{program}: error: cannot watch the control connection: {e}");
            return ExitCode::from(2);
        }
    };
    let mut caches = Vec::with_capacity(pools.len());
    for (name, pool) in names.iter().zip(&pools) {
        match sec.allocator(name, pool) {
            Ok(c) => caches.push(c),
            Err(e) => {
                eprintln!("{program}: error: {e}");
                return ExitCode::from(EXIT_POOL_FAILED);
            }
        }
    }
    let mut held = Vec::with_capacity(count as usize * caches.len());
    for cache in &caches {
        let mut some = Vec::with_capacity(count as usize);
        if let Err(e) = cache.alloc_bulk(&mut some, count as usize) {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(EXIT_POOL_FAILED);
        }
        held.append(&mut some);
    }
    for (i, m) in held.iter_mut().enumerate() {
        m.append(8)
            .expect("a fresh mbuf has room")
            .copy_from_slice(&(i as u64).to_le_bytes());
    }
    println!(
        "{program}: holding {count} mbufs from {} (slot {}, pid {})",
        names.join(", "),
        sec.slot(),
        std::process::id()
    );
    loop {
        if signals.pending().next().is_some() {
            drop(held);
            drop(caches);
            sec.detach();
            println!("{program}: freed {count} mbufs and detached");
            return ExitCode::SUCCESS;
        }
        if watch.wait(Duration::from_millis(100)).is_some() {
            eprintln!("{program}: the primary went away; detaching");
            std::mem::forget(held);
            return ExitCode::from(EXIT_PRIMARY_GONE);
        }
    }
}

/// Sets up logging to stderr (`RUST_LOG` overrides the `info` default); shared by every
/// shmdp binary.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn attach_or_report(program: &str, eal: &EalArgs) -> Result<Secondary, ExitCode> {
    Secondary::attach(&eal.file_prefix, program).map_err(|e| {
        eprintln!("{program}: error: {e}");
        ExitCode::from(2)
    })
}

fn info(program: &str, eal: &EalArgs, json: bool) -> ExitCode {
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let info = sec.info();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("serialisable")
        );
    } else {
        print_info(&info);
    }
    sec.detach();
    ExitCode::SUCCESS
}

fn print_info(info: &crate::AttachInfo) {
    println!(
        "attached to prefix {} (primary pid {}, generation {}) as secondary slot {}",
        info.prefix, info.primary_pid, info.generation, info.slot
    );
    for s in &info.memsegs {
        println!(
            "memseg {} {:<12} {:>6} MiB  {:<9}  mapped at {}  {}",
            s.id,
            s.name,
            s.size_bytes >> 20,
            if s.hugetlb { "hugetlbfs" } else { "shm" },
            s.mapped_at,
            s.path
        );
        for z in &s.memzones {
            println!(
                "  memzone {:<31} offset {:#010x} len {:>10} align {:>5} {:?}",
                z.name, z.offset, z.len_bytes, z.align, z.kind
            );
        }
    }
}

/// Attaches and stays attached until the primary goes away (exit 3) or SIGINT/SIGTERM
/// (exit 0). Used by `shmdp-secondary monitor` and by `shmdp-primary --proc-type
/// secondary|auto` when another primary is running.
pub fn monitor(program: &str, eal: &EalArgs, quiet_info: bool) -> ExitCode {
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: error: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    let sec = match attach_or_report(program, eal) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let watch = match sec.watch_primary() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{program}: error: cannot watch the control connection: {e}");
            return ExitCode::from(2);
        }
    };
    let info = sec.info();
    if !quiet_info {
        print_info(&info);
    }
    println!(
        "{program}: attached as secondary: prefix {} slot {} primary pid {} memsegs {}",
        info.prefix,
        info.slot,
        info.primary_pid,
        info.memsegs.len()
    );
    loop {
        if signals.pending().next().is_some() {
            sec.detach();
            println!("{program}: detached");
            return ExitCode::SUCCESS;
        }
        if let Some(gone) = watch.wait(Duration::from_millis(100)) {
            let how = match gone {
                PrimaryGone::Closing => "shut down",
                PrimaryGone::Died => "died",
            };
            eprintln!(
                "{program}: the primary (pid {}) {how}; detaching",
                sec.primary_pid()
            );
            return ExitCode::from(EXIT_PRIMARY_GONE);
        }
    }
}
