//! What a run is asked to do: the forwarding [`Mode`], the [`FwdConfig`] the programs
//! build from their command lines, port-list parsing, and the errors that stop a run
//! before it starts.
//!
//! Where it sits: the top of `fwd`; read by every other module of the engine.

use std::str::FromStr;
use std::time::Duration;

use pmds::PortError;

#[cfg(doc)]
use crate::{raw_frame, TX_RETRY_FOR};

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
