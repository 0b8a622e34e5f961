//! The forwarding command shared by `shmdp-secondary fwd` and `shmdp-primary --fwd`: the
//! options, the run with signal handling, the final table and the JSON report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use fwd::{FwdConfig, Mode};
use pmds::Port;
use shm_mempool::{MbufPool, OwnerTag};

/// Port ids given with `--portlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

fn parse_portlist(s: &str) -> Result<PortList, String> {
    fwd::parse_portlist(s).map(PortList)
}

/// Forwarding options (testpmd's names where it has one).
#[derive(Debug, Clone, clap::Args)]
pub struct FwdArgs {
    /// Ports to forward between, paired in order, e.g. 0,1 or 0-3 (default: all).
    #[arg(long, value_name = "LIST", value_parser = parse_portlist)]
    pub portlist: Option<PortList>,
    /// Packets per burst (1..=512).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub burst: u16,
    /// Print statistics every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_period: Option<u64>,
    /// Write the final statistics as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop after SECS seconds without a packet received (default: run until a signal).
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<f64>,
    /// txonly: frame length in bytes (64..=1518).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(64..=1518))]
    pub txpkts: u16,
    /// txonly: stop after N packets per port.
    #[arg(long, value_name = "N")]
    pub tx_count: Option<u64>,
    /// Send one burst on every output port first (loopback topologies need it).
    #[arg(long)]
    pub tx_first: bool,
    /// Stop after SECS seconds of forwarding.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

impl FwdArgs {
    /// The engine configuration for `mode` on `lcores`.
    pub fn config(&self, mode: Mode, lcores: Vec<usize>) -> FwdConfig {
        FwdConfig {
            mode,
            portlist: self.portlist.clone().map(|p| p.0).unwrap_or_default(),
            burst: usize::from(self.burst),
            lcores,
            stats_period: self.stats_period.map(Duration::from_secs),
            idle_exit: self.idle_exit.map(Duration::from_secs_f64),
            txpkt_len: usize::from(self.txpkts),
            tx_count: self.tx_count,
            tx_first: self.tx_first,
            duration: self.duration.map(Duration::from_secs_f64),
        }
    }
}

/// Runs the engine until SIGINT/SIGTERM (or the idle timeout or txonly budget), prints
/// the final table, writes the JSON report. Exit 0 when every packet is accounted for,
/// 1 otherwise (or when a queue could not be claimed).
pub fn run(
    program: &str,
    ports: &[Port],
    pool: &MbufPool,
    owner: OwnerTag,
    cfg: &FwdConfig,
    json: Option<&PathBuf>,
) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("{program}: error: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    }
    println!(
        "{program}: forwarding: mode {} ports {} burst {} lcores {}",
        cfg.mode.name(),
        ports
            .iter()
            .filter(|p| cfg.portlist.is_empty() || cfg.portlist.contains(&p.id()))
            .map(|p| format!("{}={}", p.id(), p.name()))
            .collect::<Vec<_>>()
            .join(","),
        cfg.burst,
        if cfg.lcores.is_empty() {
            "any".to_string()
        } else {
            format!("{:?}", cfg.lcores)
        }
    );
    let report = match fwd::run(ports, pool, owner, cfg, &stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("serialisable");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("{program}: error: --stats-json {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if report.balanced() {
        println!("{program}: done: every packet accounted for (rx = forwarded + dropped)");
        ExitCode::SUCCESS
    } else {
        eprintln!("{program}: error: packet accounting does not balance");
        ExitCode::from(1)
    }
}
