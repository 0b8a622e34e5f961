//! Commands on a primary's ports: `fwd` (the forwarding engine on every port, shared with
//! `ivshmem fwd`) and `dump` (print what a port's rx queue receives).
//!
//! Where it sits: in `shmdp-secondary`, dispatched from `main.rs`; the engine is `fwd`,
//! run through `shmdp_app::fwdcmd`.

use std::time::Duration;

use shmdp_app::eal::EalArgs;
use shmdp_app::fwdargs::{FwdArgs, Resolved};
use shmdp_app::session::attach;
use shmdp_app::{CliError, CmdResult, Exit};

use crate::PROGRAM;

/// `fwd`: resolves the options, attaches and forwards between the primary's ports.
pub(crate) fn fwd_cmd(eal: &EalArgs, mode: Option<fwd::Mode>, args: &FwdArgs) -> CmdResult {
    let resolved = args.resolve(mode, eal.lcore_ids())?;
    let sec = attach(PROGRAM, eal)?;
    let result = fwd_on(&sec, &resolved);
    sec.detach();
    result
}

/// The forwarding engine on every port of `dp`, allocating from the first port's pool:
/// the same code on the host (`fwd`) and in a guest (`ivshmem fwd`).
pub(crate) fn fwd_on(dp: &impl secondary::Dataplane, resolved: &Resolved) -> CmdResult {
    let ports = dp.ports().map_err(CliError::usage)?;
    if ports.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no ports; probe some on the primary with --vdev (e.g. --vdev net_ring0), or export one with --ivshmem GROUP:port=net_ring0",
            dp.describe()
        )));
    }
    let pool = dp
        .mbuf_pool(&ports[0].rx_pool_name())
        .map_err(CliError::usage)?;
    shmdp_app::fwdcmd::run(
        PROGRAM,
        &ports,
        &pool,
        dp.owner_tag(),
        &resolved.cfg,
        resolved.stats_json.as_ref(),
    )
}

/// `dump`: prints the first `count` packets port `port_id`'s rx queue `queue` receives.
pub(crate) fn dump_cmd(
    eal: &EalArgs,
    port_id: u16,
    queue: u16,
    count: u64,
    timeout: Duration,
) -> CmdResult {
    let sec = attach(PROGRAM, eal)?;
    let result = (|| -> Result<u64, String> {
        let ports = sec.ports().map_err(|e| shm::error_chain(&e))?;
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
        let mut rx = port
            .rx_queue(queue, &cache)
            .map_err(|e| shm::error_chain(&e))?;
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
                    shmdp_app::pooltool::describe(&format!("port {port_id}/{queue}"), seen, &m)
                );
                seen += 1;
            }
        }
        Ok(seen)
    })();
    sec.detach();
    let n = result.map_err(CliError::failed)?;
    println!("{PROGRAM}: dumped {n} packets");
    Ok(Exit::Ok)
}
