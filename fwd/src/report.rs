//! What a run counts and reports: the per-port [`Counters`] the threads share (what
//! became of the packets: forwarded, or why dropped), the [`Activity`] times, and the
//! [`Report`] (per port and in total, with drop reasons) made from them and the ports'
//! own statistics, which are the only count of packets received and sent.
//!
//! Where it sits: in `fwd`; the loops (`poll.rs`, [`crate::switch`]) add to the counters,
//! `engine.rs` makes the report while running and at the end.

use std::sync::atomic::{AtomicU64, Ordering};

use pmds::Port;

#[cfg(doc)]
use crate::poll::PUBLISH_EVERY;
use crate::Mode;

/// Per-port drop-reason counters, shared by the forwarding threads (the threads polling a
/// port's queues add to the same counters; the io/mac loop adds what it counted privately
/// every [`PUBLISH_EVERY`] rounds). All their operations are Relaxed: they publish no
/// data, only numbers that reports read after the threads joined (join orders them) or,
/// while running, as approximate progress. Packets and bytes received and sent are the
/// ports' own counts, of the queues the run polls ([`Polled`]); bytes are counted where a
/// driver touches the data (the ring driver, as DPDK's, counts packets only).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) forwarded: AtomicU64,
    pub(crate) tx_full: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) no_mbuf: AtomicU64,
}

/// One port's figures at the end of (or during) a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortReport {
    /// Port id.
    pub id: u16,
    /// Port name.
    pub name: String,
    /// Packets received on this port.
    pub rx_packets: u64,
    /// Packets sent on this port.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received here and sent on (some port).
    pub forwarded: u64,
    /// Received here and dropped (`tx_full + filtered`).
    pub rx_dropped: u64,
    /// Offered to this port's tx queue and not taken, or taken and dropped by its driver.
    pub tx_dropped: u64,
    /// Driver errors (malformed input, refused handles).
    pub errors: u64,
    /// Drop reasons of packets received here.
    pub drops: DropReasons,
}

/// Why packets were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropReasons {
    /// The driver had no mbuf (never received).
    pub no_mbuf: u64,
    /// The output queue was full.
    pub tx_full: u64,
    /// The mode consumed the packet (rxonly).
    pub filtered: u64,
}

/// A run's figures.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Mode.
    pub mode: String,
    /// Seconds from the first packet moved to the last (idle time before and after is
    /// not counted).
    pub seconds: f64,
    /// Per port.
    pub ports: Vec<PortReport>,
    /// Sums over the ports.
    pub total: PortReport,
}

impl Report {
    /// True when every packet is accounted for, per port and in total.
    pub fn balanced(&self) -> bool {
        self.ports
            .iter()
            .chain(std::iter::once(&self.total))
            .all(|p| p.rx_packets == p.forwarded + p.rx_dropped)
    }

    /// A testpmd-like table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for p in self.ports.iter().chain(std::iter::once(&self.total)) {
            let title = if p.name == "total" {
                "Accumulated forward statistics for all ports".to_string()
            } else {
                format!("Forward statistics for port {} ({})", p.id, p.name)
            };
            s += &format!("  ---------------------- {title} ----------------------\n");
            s += &format!(
                "  RX-packets: {:<14} RX-dropped: {:<14} RX-total: {}\n",
                p.rx_packets, p.rx_dropped, p.rx_packets
            );
            s += &format!(
                "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}\n",
                p.tx_packets,
                p.tx_dropped,
                p.tx_packets + p.tx_dropped
            );
            s += &format!(
                "  forwarded: {}  drops: no_mbuf {} tx_full {} filtered {}  errors: {}\n",
                p.forwarded, p.drops.no_mbuf, p.drops.tx_full, p.drops.filtered, p.errors
            );
        }
        let moved = self.total.rx_packets.max(self.total.tx_packets);
        s += &format!(
            "  {moved} packets in {:.3} s ({:.2} Mpps)\n",
            self.seconds,
            moved as f64 / self.seconds.max(1e-9) / 1e6
        );
        s
    }
}

/// First and last time (ns since the run's start) any thread moved packets.
#[derive(Debug)]
pub(crate) struct Activity {
    pub(crate) first: AtomicU64,
    pub(crate) last: AtomicU64,
}

impl Activity {
    fn seconds(&self) -> f64 {
        let (f, l) = (
            self.first.load(Ordering::Relaxed),
            self.last.load(Ordering::Relaxed),
        );
        if l > f {
            (l - f) as f64 / 1e9
        } else {
            0.0
        }
    }
}

/// The queues of one port a run polls: their statistics are the run's (a claim makes the
/// run their only poller; other queues of the port may be another process's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Polled {
    pub(crate) rx: Vec<u16>,
    pub(crate) tx: Vec<u16>,
}

/// One direction's figures over some queues: packets, bytes, dropped, errors.
fn over(queues: &[pmds::QueueStats], which: &[u16]) -> [u64; 4] {
    let mut sum = [0u64; 4];
    for q in which.iter().filter_map(|&i| queues.get(usize::from(i))) {
        for (s, v) in sum
            .iter_mut()
            .zip([q.packets, q.bytes, q.dropped, q.errors])
        {
            *s += v;
        }
    }
    sum
}

/// Errors the port's driver counts outside its queues.
fn driver_errors(st: &pmds::PortStats) -> u64 {
    let queues: u64 = st
        .rx_queues
        .iter()
        .chain(&st.tx_queues)
        .map(|q| q.errors)
        .sum();
    st.errors.saturating_sub(queues)
}

pub(crate) fn report(
    mode: Mode,
    ports: &[Port],
    polled: &[Polled],
    counters: &[Counters],
    base: &[pmds::PortStats],
    activity: &Activity,
) -> Report {
    let mut out = Report {
        mode: mode.name().to_string(),
        seconds: activity.seconds(),
        ..Report::default()
    };
    let mut total = PortReport {
        name: "total".into(),
        ..PortReport::default()
    };
    for (((port, c), b), q) in ports.iter().zip(counters).zip(base).zip(polled) {
        let st = port.stats();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Since the run started, over the queues it polls.
        let delta = |now: [u64; 4], then: [u64; 4]| -> [u64; 4] {
            std::array::from_fn(|i| now[i].saturating_sub(then[i]))
        };
        let [rx_packets, rx_bytes, rx_lost, rx_errors] =
            delta(over(&st.rx_queues, &q.rx), over(&b.rx_queues, &q.rx));
        let [tx_packets, tx_bytes, tx_lost, tx_errors] =
            delta(over(&st.tx_queues, &q.tx), over(&b.tx_queues, &q.tx));
        let p = PortReport {
            id: port.id(),
            name: port.name().to_string(),
            rx_packets,
            tx_packets,
            rx_bytes,
            tx_bytes,
            forwarded: g(&c.forwarded),
            rx_dropped: g(&c.tx_full) + g(&c.filtered),
            tx_dropped: g(&c.tx_dropped) + tx_lost,
            errors: rx_errors + tx_errors + driver_errors(&st).saturating_sub(driver_errors(b)),
            drops: DropReasons {
                no_mbuf: g(&c.no_mbuf) + rx_lost,
                tx_full: g(&c.tx_full),
                filtered: g(&c.filtered),
            },
        };
        total.rx_packets += p.rx_packets;
        total.tx_packets += p.tx_packets;
        total.rx_bytes += p.rx_bytes;
        total.tx_bytes += p.tx_bytes;
        total.forwarded += p.forwarded;
        total.rx_dropped += p.rx_dropped;
        total.tx_dropped += p.tx_dropped;
        total.errors += p.errors;
        total.drops.no_mbuf += p.drops.no_mbuf;
        total.drops.tx_full += p.drops.tx_full;
        total.drops.filtered += p.drops.filtered;
        out.ports.push(p);
    }
    out.total = total;
    out
}
