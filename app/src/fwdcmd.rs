//! The forwarding run shared by `shmdp-secondary fwd`, `shmdp-secondary ivshmem fwd` and
//! `shmdp-primary --fwd`: signal handling, the start line, the final table, the JSON
//! report and the exit code.
//!
//! Where it sits: over the `fwd` engine; the options it runs with are
//! [`crate::fwdargs`]'s.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use fwd::FwdConfig;
use pmds::Port;
use shm_mempool::{MbufPool, OwnerTag};

use crate::{CliError, CmdResult, Exit};

/// Runs the engine until SIGINT/SIGTERM (or the idle timeout or txonly budget), prints
/// the final table, writes the JSON report.
///
/// # Errors
/// [`Exit::Failed`] when the packets are not all accounted for, a queue could not be
/// claimed or the report not written; [`Exit::Usage`] without signal handlers.
pub fn run(
    program: &str,
    ports: &[Port],
    pool: &MbufPool,
    owner: OwnerTag,
    cfg: &FwdConfig,
    json: Option<&PathBuf>,
) -> CmdResult {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::usage(format!("cannot install signal handlers: {e}")))?;
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
    let report = fwd::run(ports, pool, owner, cfg, &stop)
        .map_err(|e| CliError::failed(shm::error_chain(&e)))?;
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("serialisable");
        std::fs::write(path, text + "\n")
            .map_err(|e| CliError::failed(format!("--stats-json {}: {e}", path.display())))?;
    }
    if report.balanced() {
        println!("{program}: done: every packet accounted for (rx = forwarded + dropped)");
        Ok(Exit::Ok)
    } else {
        Err(CliError::failed("packet accounting does not balance"))
    }
}
