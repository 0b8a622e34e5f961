//! The forwarding options of both programs (testpmd's names where it has one) and their
//! resolution: the command line over the config file's `[fwd]` table over the defaults.
//!
//! Where it sits: flattened into `shmdp-secondary fwd`, `shmdp-secondary ivshmem fwd` and
//! `shmdp-primary`; the file is [`crate::config`], the run [`crate::fwdcmd`].

use std::path::PathBuf;
use std::time::Duration;

use fwd::{FwdConfig, Mode};

use crate::config::ConfigFile;
use crate::CliError;

/// Port ids given with `--portlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

fn parse_portlist(s: &str) -> Result<PortList, String> {
    fwd::parse_portlist(s).map(PortList)
}

/// An EtherType written in hex (`0x88b5`) or decimal; values below 0x0600 are 802.3
/// lengths, not types, and are refused.
fn parse_ethertype(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse::<u16>(),
    }
    .map_err(|_| format!("{s:?} is not an EtherType (write it like 0x88b5)"))?;
    check_ethertype(v)
}

fn check_ethertype(v: u16) -> Result<u16, String> {
    if v < 0x0600 {
        return Err(format!(
            "EtherType {v:#06x} is an 802.3 length, not a type (use 0x0600..=0xffff, e.g. 0x88b5)"
        ));
    }
    Ok(v)
}

/// Forwarding options (testpmd's names where it has one).
#[derive(Debug, Clone, clap::Args)]
pub struct FwdArgs {
    /// Ports to forward between, paired in order, e.g. 0,1 or 0-3 (default: all).
    #[arg(long, value_name = "LIST", value_parser = parse_portlist)]
    pub portlist: Option<PortList>,
    /// Packets per burst (1..=512; default 32).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub burst: Option<u16>,
    /// Print statistics every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_period: Option<u64>,
    /// Write the final statistics as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop after SECS seconds without a packet received (default: run until a signal).
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<f64>,
    /// txonly: frame length in bytes (64..=1518; default 64).
    #[arg(long, value_parser = clap::value_parser!(u16).range(64..=1518))]
    pub txpkts: Option<u16>,
    /// txonly: stop after N packets per port.
    #[arg(long, value_name = "N")]
    pub tx_count: Option<u64>,
    /// txonly: send raw frames of this EtherType (hex like 0x88b5, IEEE 802's local
    /// experimental type, or decimal; 0x0600..=0xffff) instead of UDP/IPv4 frames.
    #[arg(long, value_name = "TYPE", value_parser = parse_ethertype)]
    pub tx_ethertype: Option<u16>,
    /// Send one burst on every output port first (loopback topologies need it).
    #[arg(long)]
    pub tx_first: bool,
    /// txonly: offer again what a port cannot take now, instead of dropping it (the run
    /// ends after --tx-count packets really sent). Forwarding modes: offer the rest of a
    /// burst again for up to 20 ms before dropping it.
    #[arg(long)]
    pub tx_retry: bool,
    /// Stop after SECS seconds of forwarding (txonly: even when --tx-count was reached
    /// sooner, so the ports stay served that long).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Read forwarding options from the `[fwd]` table of a TOML file (options given on
    /// the command line win): mode, portlist, burst, lcores, stats_period, stats_json,
    /// idle_exit, duration, txpkts, tx_count, tx_ethertype, tx_first, tx_retry.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Forwarding options resolved from the command line, the config file and the defaults.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The engine configuration.
    pub cfg: FwdConfig,
    /// Where to write the final JSON report.
    pub stats_json: Option<PathBuf>,
    /// True when the config file has a `[fwd]` table (asks the primary to forward).
    pub file_has_fwd: bool,
    /// The config file, read once (`--config`).
    pub config: Option<ConfigFile>,
}

impl FwdArgs {
    /// Resolves the options: the command line (`mode`, `lcores` and these flags) wins over
    /// the config file, which wins over the defaults.
    ///
    /// # Errors
    /// [`Exit::Usage`](crate::Exit::Usage): one line naming the file and what is wrong in it.
    pub fn resolve(&self, mode: Option<Mode>, lcores: Vec<usize>) -> Result<Resolved, CliError> {
        let config = self.config.as_deref().map(ConfigFile::read).transpose()?;
        let table = config.as_ref().and_then(|c| c.fwd.as_ref());
        let file_has_fwd = table.is_some();
        let file = table.cloned().unwrap_or_default();
        let bad = |what: String| {
            CliError::usage(format!(
                "--config {}: {what}",
                self.config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ))
        };
        let mode = match (mode, &file.mode) {
            (Some(m), _) => m,
            (None, Some(m)) => m.parse().map_err(|e: String| bad(e))?,
            (None, None) => Mode::Io,
        };
        let burst = self.burst.or(file.burst).unwrap_or(32);
        if !(1..=512).contains(&burst) {
            return Err(bad(format!("burst {burst} must be 1..=512")));
        }
        let txpkts = self.txpkts.or(file.txpkts).unwrap_or(64);
        if !(64..=1518).contains(&txpkts) {
            return Err(bad(format!("txpkts {txpkts} must be 64..=1518")));
        }
        let tx_ethertype = match self.tx_ethertype.or(file.tx_ethertype) {
            Some(t) => Some(check_ethertype(t).map_err(bad)?),
            None => None,
        };
        Ok(Resolved {
            cfg: FwdConfig {
                mode,
                portlist: self
                    .portlist
                    .clone()
                    .map(|p| p.0)
                    .or(file.portlist)
                    .unwrap_or_default(),
                burst: usize::from(burst),
                lcores: if lcores.is_empty() {
                    file.lcores.unwrap_or_default()
                } else {
                    lcores
                },
                stats_period: self
                    .stats_period
                    .or(file.stats_period)
                    .map(Duration::from_secs),
                idle_exit: self
                    .idle_exit
                    .or(file.idle_exit)
                    .map(Duration::from_secs_f64),
                txpkt_len: usize::from(txpkts),
                tx_count: self.tx_count.or(file.tx_count),
                tx_ethertype,
                tx_first: self.tx_first || file.tx_first.unwrap_or(false),
                tx_retry: self.tx_retry || file.tx_retry.unwrap_or(false),
                duration: self.duration.or(file.duration).map(Duration::from_secs_f64),
            },
            stats_json: self.stats_json.clone().or(file.stats_json),
            file_has_fwd,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        fwd: FwdArgs,
    }

    #[test]
    fn command_line_wins_over_the_config_file() {
        let path = std::env::temp_dir().join(format!("shmdp-fwd-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[fwd]\nmode = \"macswap\"\nportlist = [2, 3]\nburst = 64\nidle_exit = 1.5\nstats_json = \"/tmp/x.json\"\n",
        )
        .unwrap();
        let p = path.display().to_string();
        let cli = Cli::parse_from(["x", "--config", &p, "--burst", "16"]);
        let r = cli.fwd.resolve(None, vec![]).unwrap();
        assert_eq!(r.cfg.mode, Mode::MacSwap);
        assert_eq!(r.cfg.portlist, vec![2, 3]);
        assert_eq!(r.cfg.burst, 16, "the command line wins");
        assert_eq!(r.cfg.idle_exit, Some(Duration::from_millis(1500)));
        assert_eq!(r.stats_json, Some(PathBuf::from("/tmp/x.json")));
        let r = cli.fwd.resolve(Some(Mode::Io), vec![1]).unwrap();
        assert_eq!((r.cfg.mode, r.cfg.lcores.clone()), (Mode::Io, vec![1]));
        std::fs::write(&path, "[fwd]\nburts = 3\n").unwrap();
        let e = cli.fwd.resolve(None, vec![]).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("burts"), "{e}");
        std::fs::write(&path, "[fwd]\nburst = 9999\n").unwrap();
        let cli = Cli::parse_from(["x", "--config", &p]);
        assert!(cli
            .fwd
            .resolve(None, vec![])
            .unwrap_err()
            .to_string()
            .contains("1..=512"));
        std::fs::write(&path, "[fwd]\nmode = \"sideways\"\n").unwrap();
        assert!(cli
            .fwd
            .resolve(None, vec![])
            .unwrap_err()
            .to_string()
            .contains("unknown mode"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn tx_ethertype_takes_hex_or_decimal_and_refuses_lengths() {
        let cli = Cli::parse_from(["x", "--tx-ethertype", "0x88b5"]);
        let r = cli.fwd.resolve(Some(Mode::TxOnly), vec![]).unwrap();
        assert_eq!(r.cfg.tx_ethertype, Some(0x88b5));
        let cli = Cli::parse_from(["x", "--tx-ethertype", "34997"]);
        assert_eq!(cli.fwd.tx_ethertype, Some(0x88b5));
        for bad in ["0x05dc", "zz", "0x10000"] {
            let e = Cli::try_parse_from(["x", "--tx-ethertype", bad]).unwrap_err();
            assert!(e.to_string().contains("EtherType"), "{bad}: {e}");
        }
        let path = std::env::temp_dir().join(format!("shmdp-eth-{}.toml", std::process::id()));
        std::fs::write(&path, "[fwd]\ntx_ethertype = 100\n").unwrap();
        let p = path.display().to_string();
        let cli = Cli::parse_from(["x", "--config", &p]);
        let e = cli.fwd.resolve(None, vec![]).unwrap_err().to_string();
        assert!(e.contains("802.3 length"), "{e}");
        let _ = std::fs::remove_file(path);
    }
}
