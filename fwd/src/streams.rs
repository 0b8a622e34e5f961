//! Streams: which port (and queue) feeds which, in testpmd's paired topology, one stream
//! per queue pair.
//!
//! Where it sits: in `fwd`, between the configuration (`config.rs`) and the run
//! (`engine.rs`), which spreads the streams over its threads.

use crate::Mode;

/// One direction of forwarding: from port index `rx` (into the engine's port list) to
/// port index `tx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Input port (index in the run's port list), if the mode receives.
    pub rx: Option<usize>,
    /// Output port, if the mode sends.
    pub tx: Option<usize>,
    /// The queue used on both (testpmd: rx queue q of the input feeds tx queue q of the
    /// output).
    pub queue: u16,
}

/// The streams a mode makes of `n` ports (testpmd's paired topology).
pub fn streams(mode: Mode, n: usize) -> Vec<Stream> {
    (0..n)
        .map(|i| match mode {
            Mode::RxOnly => Stream {
                rx: Some(i),
                tx: None,
                queue: 0,
            },
            Mode::TxOnly => Stream {
                rx: None,
                tx: Some(i),
                queue: 0,
            },
            // The switch decides the output per packet; every port's tx queue is used.
            Mode::L2Switch => Stream {
                rx: Some(i),
                tx: None,
                queue: 0,
            },
            _ => {
                let peer = if i % 2 == 0 { i + 1 } else { i - 1 };
                Stream {
                    rx: Some(i),
                    tx: Some(if peer < n { peer } else { i }),
                    queue: 0,
                }
            }
        })
        .collect()
}

/// One stream per queue: `stream` (queue 0) repeated for queues `0..n`, where `n` is the
/// fewest queues its input has for receiving and its output for sending (`rx_queues(i)`,
/// `tx_queues(i)` of port `i`); none when a port has no queue of the kind it needs.
pub fn per_queue(
    stream: Stream,
    rx_queues: impl Fn(usize) -> u16,
    tx_queues: impl Fn(usize) -> u16,
) -> impl Iterator<Item = Stream> {
    let n = stream
        .rx
        .map_or(u16::MAX, &rx_queues)
        .min(stream.tx.map_or(u16::MAX, &tx_queues));
    let n = if n == u16::MAX { 0 } else { n };
    (0..n).map(move |queue| Stream { queue, ..stream })
}
