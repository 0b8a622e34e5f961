//! `shmdp-secondary`: attaches to a running primary by `--file-prefix` (or to an IVSHMEM
//! export segment, as a guest does) and runs one command.
//!
//! Where it sits: a binary of `shmdp-app`, sibling of `shmdp-primary`; what the two share
//! (EAL options, attaching and `monitor`, forwarding, the ring and pool tools, the exit
//! codes) is the `shmdp_app` library. Files: the clap definitions (`args.rs`); the commands
//! that attach to a primary, run and detach (`session.rs`); forwarding and dumping on ports
//! (`ports.rs`); the `ivshmem` commands on an export segment (`export.rs`). The dispatch
//! from subcommand to tool is [`run`].

mod args;
mod export;
mod ports;
mod session;

use std::process::ExitCode;
use std::time::Duration;

use shmdp_app::eal::ProcType;
use shmdp_app::session::monitor;
use shmdp_app::{CliError, CmdResult};

use args::{Command, IvshmemCommand, SecondaryCli};
use export::{ivshmem_cmd, on_ivshmem};
use ports::{dump_cmd, fwd_cmd};
use session::{info, mbuf_hold, mbuf_ring_cmd, pool_cmd, ring_cmd, stats};

/// The program's name, as its messages start.
pub(crate) const PROGRAM: &str = "shmdp-secondary";

fn main() -> ExitCode {
    let cli: SecondaryCli = shmdp_app::eal::parse_args_or_exit(PROGRAM);
    shmdp_app::init_logging();
    shmdp_app::finish(PROGRAM, run(cli))
}

/// Runs the command `cli` names.
fn run(cli: SecondaryCli) -> CmdResult {
    if cli.eal.proc_type == Some(ProcType::Primary) {
        return Err(CliError::usage("--proc-type primary: shmdp-secondary only attaches; run shmdp-primary to create shared memory"));
    }
    if let Some(dev) = &cli.ivshmem {
        return on_ivshmem(dev, cli.command, cli.eal.lcores.clone());
    }
    match cli.command {
        Command::Info { json } => info(&cli.eal, json),
        Command::Monitor => monitor(PROGRAM, &cli.eal, true),
        Command::RingFill {
            ring,
            count,
            producer_id,
            burst,
            timeout,
        } => ring_cmd(&cli.eal, &ring, |r| {
            shmdp_app::ringtool::fill(r, producer_id, count, burst, Duration::from_secs(timeout))
                .map(|m| {
                    format!(
                        "filled {} elements into {ring} ({:.2} Mpps)",
                        m.count,
                        m.mpps()
                    )
                })
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
                return shmdp_app::pooltool::send_bursts(
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
            shmdp_app::pooltool::send(cache, r, a.count, a.size as usize, timeout).map(|n| {
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
                return shmdp_app::pooltool::receive_bursts(cache, r, a.count, a.size as usize, opts, timeout)
                    .map(|t| {
                        format!(
                            "received {} packets from {} in bursts of {}, {what} ok ({:.2} Mpps from the first packet)",
                            t.packets, a.ring, opts.burst, t.mpps()
                        )
                    });
            }
            shmdp_app::pooltool::receive(cache, r, a.count, a.size as usize, timeout).map(|n| {
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
                    .map_err(|source| shmdp_app::pooltool::PoolToolError::Ring {
                        ring: name.to_string(),
                        source,
                    })
            };
            let (rx, tx) = (ring(&rx)?, ring(&tx)?);
            let cache = sec.allocator(&pool, p)?;
            echo_line(&cache, &rx, &tx, count, timeout)
        }),
        Command::PoolStress { pool, ops, seed } => pool_cmd(&cli.eal, &pool, |sec, p| {
            let cached = !sec.in_export(&pool);
            shmdp_app::pooltool::stress(p.mempool(), sec.owner_tag(), cached, ops, seed)
                .map(|n| format!("pool-stress: {n} operations on {pool}"))
        }),
        Command::CrashMix(a) => shmdp_app::crashmix::run(&cli.eal, &a),
        Command::PoolAudit { pool, exact: true } => pool_cmd(&cli.eal, &pool, |sec, p| {
            let input = shmdp_app::audit::gather(sec, p)
                .map_err(shmdp_app::pooltool::PoolToolError::Check)?;
            let a = shmdp_app::audit::classify(&input);
            let line = serde_json::to_string(&a).expect("serialisable");
            if a.exact {
                Ok(line)
            } else {
                Err(shmdp_app::pooltool::PoolToolError::Check(format!(
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
                Err(shmdp_app::pooltool::PoolToolError::Check(format!(
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
            shmdp_app::ringtool::drain(r, producers, count, burst, Duration::from_secs(timeout)).map(|m| {
                format!(
                    "drained {} elements from {ring}: {producers} producers, all in order ({:.2} Mpps)",
                    m.count,
                    m.mpps()
                )
            })
        }),
    }
}

/// Echoes `count` packets from `rx` to `tx` (`mbuf-echo`, `ivshmem echo`; `timeout`
/// seconds without a packet end it) and says how many at what rate.
fn echo_line(
    cache: &shm_mempool::MbufCache,
    rx: &shm_ring::Ring<u64>,
    tx: &shm_ring::Ring<u64>,
    count: u64,
    timeout: u64,
) -> Result<String, shmdp_app::pooltool::PoolToolError> {
    let t0 = std::time::Instant::now();
    let n = shmdp_app::pooltool::echo(cache, rx, tx, count, Duration::from_secs(timeout))?;
    Ok(format!(
        "echoed {n} packets from {} to {} ({:.3} Mpps)",
        rx.name(),
        tx.name(),
        n as f64 / t0.elapsed().as_secs_f64() / 1e6
    ))
}
