//! `fwd`: a testpmd-style forwarding engine over shmdp ports, used by the primary
//! (`shmdp-primary --fwd`) and by secondaries (`shmdp-secondary fwd`) alike.
//!
//! Where it sits: above `pmds`. It pairs ports into streams (port 0 → 1 and 1 → 0, 2 → 3
//! and 3 → 2, ...; an odd last port forwards to itself), one stream per queue pair (rx
//! queue q of the input feeds tx queue q of the output, as testpmd with several queues;
//! the switch uses queue 0), spreads the streams over one
//! thread per lcore (each pinned, each with its own mbuf cache and its own queue claims),
//! and runs them until a stop flag, an idle timeout or a packet budget ends the run. Then
//! it drains what is in flight and frees every mbuf.
//!
//! Modes: `io` (forward as is), `mac` (source = the output port's MAC, destination = the
//! peer address 02:00:00:00:00:<port>), `macswap` (swap the two), `rxonly` (receive and
//! free), `txonly` (send generated UDP frames of `--txpkts` bytes, or raw
//! frames of one `--tx-ethertype`), `l2switch` (a learning,
//! VLAN-aware switch between all the ports, see [`switch`]).
//!
//! Accounting, per port and in total: every packet received on a port is forwarded or
//! dropped with a reason (`tx_full`: the output queue took fewer than offered; `filtered`:
//! the mode consumed it: rxonly, or a switch destination behind the input port), so
//! `rx_packets = forwarded + tx_full + filtered`
//! for every port. `rx_packets` and `tx_packets` are the ports' own statistics (of the
//! queues the run polls), not a second count: the run counts only what became of the
//! packets. Packets a driver could not allocate an mbuf for are never received; they are
//! `no_mbuf`.
//!
//! Files: the run's configuration and modes (`config.rs`); streams from port pairs and
//! queues (`streams.rs`); starting, threading and joining a run (`engine.rs`); the
//! io/mac/macswap/rxonly/txonly polling loop (`poll.rs`) and its frames and rewrites
//! (`frames.rs`); the stop rules every loop shares (`pacer.rs`); counters and the
//! report (`report.rs`); the `l2switch` mode ([`switch`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod engine;
mod frames;
mod pacer;
mod poll;
mod report;
mod streams;
pub mod switch;

pub use config::{parse_portlist, FwdConfig, FwdError, Mode};
pub use engine::{run, LINK_SETTLE, LINK_WAIT, TX_RETRY_FOR};
pub use frames::{peer_mac, raw_frame, txonly_frame};
pub(crate) use pacer::{Pacer, Step};
pub(crate) use report::{Activity, Counters};
pub use report::{DropReasons, PortReport, Report};
pub use streams::{per_queue, streams, Stream};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_portlists_and_streams() {
        assert_eq!("macswap".parse::<Mode>(), Ok(Mode::MacSwap));
        assert!("bogus"
            .parse::<Mode>()
            .unwrap_err()
            .contains("unknown mode"));
        assert_eq!(parse_portlist("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_portlist("0-3"), Ok(vec![0, 1, 2, 3]));
        assert!(parse_portlist("x").is_err() && parse_portlist("3-1").is_err());
        let s = streams(Mode::Io, 3);
        assert_eq!(
            s.iter().map(|s| (s.rx, s.tx)).collect::<Vec<_>>(),
            vec![(Some(0), Some(1)), (Some(1), Some(0)), (Some(2), Some(2))]
        );
        assert!(streams(Mode::RxOnly, 2).iter().all(|s| s.tx.is_none()));
        assert!(streams(Mode::TxOnly, 2).iter().all(|s| s.rx.is_none()));
    }

    #[test]
    fn txonly_frames_are_valid_ipv4_udp() {
        let f = txonly_frame([2, 0, 0, 0, 0, 1], peer_mac(0), 100);
        assert_eq!(f.len(), 100);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        // The IPv4 header checksums to 0xffff.
        let mut sum: u32 = f[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(txonly_frame([0; 6], [0; 6], 10).len(), 64);
    }

    #[test]
    fn raw_frames_carry_the_asked_ethertype_and_length() {
        let f = raw_frame([2, 0, 0, 0, 0, 1], peer_mac(0), 0x88b5, 128);
        assert_eq!(f.len(), 128);
        assert_eq!(&f[0..6], &peer_mac(0));
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
        assert_eq!(&f[14..19], b"shmdp");
        assert_eq!(raw_frame([0; 6], [0; 6], 0x88b5, 10).len(), 64);
    }
}
