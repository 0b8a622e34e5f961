//! The `ivshmem` commands: what runs on an IVSHMEM export segment (in a guest, or on the
//! host with the segment file) without a primary, and the mapping of `--ivshmem DEV
//! COMMAND` to them.
//!
//! Where it sits: in `shmdp-secondary`, dispatched from `main.rs`; the segment is
//! `secondary::ivshmem::ExportSegment`.

use std::time::Duration;

use secondary::ivshmem::ExportSegment;
use shmdp_app::{CliError, CmdResult, Exit};

use crate::ports::fwd_on;
use crate::session::AllStats;
use crate::{echo_line, Command, IvshmemCommand};

/// `--ivshmem DEV COMMAND`: the commands that make sense on an export segment, mapped to
/// their `ivshmem` forms.
pub(crate) fn on_ivshmem(
    dev: &str,
    command: Command,
    lcores: Option<shm::eal::LcoreList>,
) -> CmdResult {
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
            return Err(CliError::usage(format!(
                "--ivshmem: {name} needs a primary; on an export segment use info, stats, fwd, mbuf-echo or the ivshmem subcommands"
            )));
        }
    };
    ivshmem_cmd(dev, command)
}

/// `ivshmem --dev DEV COMMAND`: opens the export segment and runs the command on it.
///
/// # Errors
/// [`Exit::Usage`] when the segment cannot be opened or the options are bad,
/// [`Exit::Failed`] when the command fails.
pub(crate) fn ivshmem_cmd(dev: &str, command: IvshmemCommand) -> CmdResult {
    if let IvshmemCommand::Scribble {
        seed,
        indices: Some(secs),
        pools_only,
        tails,
        ..
    } = command
    {
        let how_long = std::time::Duration::from_secs_f64(secs);
        let n = ExportSegment::open(dev)
            .and_then(|s| s.scribble_indices(how_long, pools_only, tails, seed))
            .map_err(CliError::usage)?;
        println!("rewrote {n} ring indices in {dev}");
        return Ok(Exit::Ok);
    }
    if let IvshmemCommand::Scribble { rounds, seed, .. } = command {
        let path = if dev.starts_with("auto") {
            secondary::ivshmem::find_devices().into_iter().next()
        } else {
            Some(std::path::PathBuf::from(dev))
        };
        let path = path.ok_or_else(|| CliError::usage("no ivshmem device found"))?;
        let n = secondary::ivshmem::scribble(&path, rounds, seed).map_err(CliError::failed)?;
        println!("scribbled {n} bytes over {}", path.display());
        return Ok(Exit::Ok);
    }
    let seg = ExportSegment::open(dev).map_err(CliError::usage)?;
    if let IvshmemCommand::Fwd { mode, lcores, args } = &command {
        let lcores = lcores.as_ref().map(|l| l.ids()).unwrap_or_default();
        return fwd_on(&seg, &args.resolve(*mode, lcores)?);
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
                let cache = guest_cache(&seg, &pool)?;
                let (rx, tx) = (
                    seg.ring(&rx).map_err(|e| e.to_string())?,
                    seg.ring(&tx).map_err(|e| e.to_string())?,
                );
                echo_line(&cache, &rx, &tx, count, timeout).map_err(|e| e.to_string())
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
                shmdp_app::pooltool::print_port_stats(&ports);
                shmdp_app::pooltool::print_stats(&stats);
                Ok(String::new())
            }
            IvshmemCommand::Dump {
                pool,
                rx,
                count,
                timeout,
            } => {
                let cache = guest_cache(&seg, &pool)?;
                let ring = seg.ring(&rx).map_err(|e| e.to_string())?;
                let lines = shmdp_app::pooltool::dump_ring(
                    &cache,
                    &ring,
                    count,
                    Duration::from_secs(timeout),
                )
                .map_err(|e| e.to_string())?;
                Ok(lines.join("\n"))
            }
            IvshmemCommand::Gen {
                pool,
                tx,
                count,
                size,
            } => {
                let cache = guest_cache(&seg, &pool)?;
                let tx = seg.ring(&tx).map_err(|e| e.to_string())?;
                let n = shmdp_app::pooltool::send(
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
    let line = result.map_err(CliError::failed)?;
    println!("{line}");
    Ok(Exit::Ok)
}

/// An allocator of the segment's pool `name` as a guest has it: no cache slot (a guest's
/// pid means nothing to the host), the guest's owner tag.
fn guest_cache(seg: &ExportSegment, name: &str) -> Result<shm_mempool::MbufCache, String> {
    let pool = seg.mbuf_pool(name).map_err(|e| e.to_string())?;
    pool.uncached(shm_mempool::OwnerTag::GUEST)
        .map_err(|e| e.to_string())
}
