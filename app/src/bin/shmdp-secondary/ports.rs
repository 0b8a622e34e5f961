//! Commands on a primary's ports: `fwd` (the forwarding engine on every port, shared with
//! `ivshmem fwd`) and `dump` (print what a port's rx queue receives).
//!
//! Where it sits: in [`crate::cli`]; the engine is `fwd`, run through `shmdp_app::fwdcmd`.

use std::process::ExitCode;
use std::time::Duration;

use shmdp_app::eal::EalArgs;

use shmdp_app::session::attach_or_report;

pub(super) fn fwd_cmd(
    eal: &EalArgs,
    mode: Option<fwd::Mode>,
    args: &shmdp_app::fwdcmd::FwdArgs,
) -> ExitCode {
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
pub(super) fn fwd_on(
    program: &str,
    dp: &impl secondary::Dataplane,
    resolved: &shmdp_app::fwdcmd::Resolved,
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
    shmdp_app::fwdcmd::run(
        program,
        &ports,
        &pool,
        dp.owner_tag(),
        &resolved.cfg,
        resolved.stats_json.as_ref(),
    )
}

pub(super) fn dump_cmd(
    eal: &EalArgs,
    port_id: u16,
    queue: u16,
    count: u64,
    timeout: Duration,
) -> ExitCode {
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
                    shmdp_app::pooltool::describe(&format!("port {port_id}/{queue}"), seen, &m)
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
