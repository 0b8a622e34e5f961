//! `shmdp-primary`: creates a process group's shared memory (memsegs, memzones, rings,
//! pools, ports, IVSHMEM exports) and serves its secondaries until SIGINT or SIGTERM, then
//! removes every file it created; with `--fwd` it forwards between its ports itself.
//!
//! Where it sits: a binary of `shmdp-app`, sibling of `shmdp-secondary`, over the
//! `primary` library ([`primary::Primary::start`]). Files: the command line (`args.rs`)
//! and the run (here). With `--proc-type secondary|auto` and a live primary on the prefix
//! it attaches instead, as `shmdp-secondary monitor` does.

mod args;

use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use primary::{Primary, PrimaryConfig};
use shm::runtime::{Liveness, RuntimeDir};
use shmdp_app::eal::ProcType;
use shmdp_app::{CliError, CmdResult, Exit};

use args::PrimaryCli;

/// The program's name, as its messages start.
const PROGRAM: &str = "shmdp-primary";

fn main() -> ExitCode {
    let cli: PrimaryCli = shmdp_app::eal::parse_args_or_exit(PROGRAM);
    shmdp_app::init_logging();
    let as_secondary = match cli.eal.proc_type.unwrap_or(ProcType::Primary) {
        ProcType::Primary => false,
        ProcType::Secondary => true,
        ProcType::Auto => matches!(
            RuntimeDir::for_prefix(&cli.eal.file_prefix).probe(),
            Liveness::Alive { .. }
        ),
    };
    let result = if as_secondary {
        shmdp_app::session::monitor(PROGRAM, &cli.eal, false)
    } else {
        run_primary(&cli)
    };
    shmdp_app::finish(PROGRAM, result)
}

/// Starts the primary `cli` describes, reports it, and serves (or forwards) until a
/// signal; then removes every file of the run.
fn run_primary(cli: &PrimaryCli) -> CmdResult {
    let no_signals =
        |e: std::io::Error| CliError::usage(format!("cannot install signal handlers: {e}"));
    // Catch SIGINT/SIGTERM before creating anything, so no signal can leave files behind.
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(no_signals)?;
    // The same signals raise the flag that waits on vhost-user peers watch (a port
    // connecting to a silent backend at start gives up within 50 ms).
    let stop = pmds::vhost::wire::process_stop();
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(no_signals)?;
    }
    let resolved = cli.fwd_args.resolve(cli.fwd, cli.eal.lcore_ids())?;
    let forwarding = cli.fwd.is_some() || resolved.file_has_fwd;
    // Typed from the start: `--ivshmem` parsed by clap, `[[ivshmem]]` tables by serde.
    let mut exports = cli.exports.clone();
    if let Some(file) = &resolved.config {
        exports.extend(file.exports()?);
    }
    if forwarding && cli.vdevs.is_empty() {
        return Err(CliError::usage("--fwd needs ports to forward between; add --vdev, e.g. --vdev net_ring0 --vdev net_ring1"));
    }
    let config = PrimaryConfig {
        eal: cli.eal.options(),
        memsegs: cli.memsegs.clone(),
        memzones: cli.memzones.clone(),
        rings: cli.rings.clone(),
        mempools: cli.mempools.clone(),
        vdevs: cli.vdevs.clone(),
        nb_desc: cli.nb_desc,
        exports,
        group: cli.group.clone(),
    };
    let primary = match Primary::start(&config) {
        Ok(p) => p,
        // Relaxed: set by the signal handler; this is the only reader after start failed.
        Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
            // Everything created was removed when the half-started primary was dropped.
            println!("{PROGRAM}: stopped by a signal while starting; removed its files");
            return Ok(Exit::Ok);
        }
        Err(e) => return Err(CliError::usage(e)),
    };
    report_ready(cli, &primary);
    for (name, count) in &cli.fills {
        // An error drops `primary`, which removes the run's files.
        let ring = primary
            .ring(name)
            .map_err(|e| CliError::usage(format!("--fill-ring {name}: {e}")))?;
        let count = *count;
        std::thread::spawn(move || {
            match shmdp_app::ringtool::fill(&ring, 0, count, 32, Duration::from_secs(3600)) {
                Ok(m) => tracing::info!("filled {} elements into {}", m.count, ring.name()),
                // Logged once; the primary keeps running (a peer may have scribbled on it).
                Err(e) => tracing::error!("fill stopped: {e}"),
            }
        });
    }
    let result = if forwarding {
        let ports = primary.ports();
        let pool = ports
            .first()
            .and_then(|p| primary.mbuf_pool(&p.rx_pool_name()))
            .ok_or_else(|| CliError::usage("--fwd needs ports; add --vdev"))?;
        shmdp_app::fwdcmd::run(
            PROGRAM,
            &ports,
            &pool,
            shm_mempool::OwnerTag::PRIMARY,
            &resolved.cfg,
            resolved.stats_json.as_ref(),
        )
    } else {
        serve(&primary, &mut signals);
        Ok(Exit::Ok)
    };
    let removed = primary.shutdown();
    println!("{PROGRAM}: stopped: removed {removed} memseg files");
    result
}

/// Prints the fallback warning, the `ready` line the tests and scripts wait for, and one
/// line per port.
fn report_ready(cli: &PrimaryCli, primary: &Primary) {
    if let Some(w) = primary.fallback_warning() {
        eprintln!("{PROGRAM}: {w}");
    }
    let segs: Vec<String> = primary
        .memsegs()
        .iter()
        .map(|s| {
            format!(
                "{}={}MiB@{}",
                s.name(),
                s.size_bytes() >> 20,
                if s.is_hugetlb() { "hugetlbfs" } else { "shm" }
            )
        })
        .collect();
    println!(
        "{PROGRAM}: ready: prefix {} pid {} generation {} memsegs {}",
        cli.eal.file_prefix,
        std::process::id(),
        primary.generation(),
        segs.join(",")
    );
    for p in primary.ports() {
        println!(
            "{PROGRAM}: port {} {}: {} rx / {} tx queues, MAC {}",
            p.id(),
            p.devargs(),
            p.nb_rx_queues(),
            p.nb_tx_queues(),
            p.mac()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
    }
}

/// Serves the secondaries until SIGINT or SIGTERM.
fn serve(primary: &Primary, signals: &mut Signals) {
    loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!("signal {sig}: shutting down");
            return;
        }
        if let Some(ctl) = primary.control() {
            // Events are already logged by the control server; draining keeps the queue short.
            let _ = ctl.next_event(Duration::from_millis(100));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
