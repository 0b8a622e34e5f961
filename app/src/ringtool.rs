//! Filling and draining rings with sequence-numbered elements: the cross-process check
//! that a ring made by the primary carries every element exactly once and in order, and a
//! simple way to measure a ring between processes.
//!
//! Element format: `producer_id << 48 | sequence`. A single drainer checks that each
//! producer's sequence arrives complete and consecutive.

use std::time::{Duration, Instant};

use shm_ring::{Ring, RingError};

use crate::ringside::RingSide;

/// Most producers a drain tracks.
pub const MAX_PRODUCERS: u64 = 1 << 15;
const SEQ_MASK: u64 = (1 << 48) - 1;

/// Why a fill or drain stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RingToolError {
    /// The ring reported an error (corrupt indices, stall).
    #[error("ring {ring}: {source}")]
    Ring {
        /// Ring name.
        ring: String,
        /// Cause.
        #[source]
        source: RingError,
    },
    /// Nothing moved for the whole timeout.
    #[error("ring {ring}: no progress for {secs} s after {done} of {want} elements")]
    Timeout {
        /// Ring name.
        ring: String,
        /// Seconds waited.
        secs: u64,
        /// Elements moved.
        done: u64,
        /// Elements wanted.
        want: u64,
    },
    /// An element arrived out of order, twice, or from an unknown producer.
    #[error(
        "ring {ring}: element {value:#x} from producer {producer}: expected sequence {expected}"
    )]
    Order {
        /// Ring name.
        ring: String,
        /// The element.
        value: u64,
        /// Producer id in it.
        producer: u64,
        /// What was expected from that producer.
        expected: u64,
    },
}

/// Outcome of a fill or drain.
#[derive(Debug, Clone, Copy)]
pub struct Moved {
    /// Elements moved.
    pub count: u64,
    /// Time from the first to the last element.
    pub elapsed: Duration,
}

impl Moved {
    /// Millions of elements per second.
    pub fn mpps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

fn err(ring: &Ring<u64>, source: RingError) -> RingToolError {
    RingToolError::Ring {
        ring: ring.name().to_string(),
        source,
    }
}

/// No progress on `ring` for `timeout` after `done` of `want` elements.
#[cold]
fn timed_out(ring: &Ring<u64>, timeout: Duration, done: u64, want: u64) -> RingToolError {
    RingToolError::Timeout {
        ring: ring.name().into(),
        secs: timeout.as_secs(),
        done,
        want,
    }
}

/// Enqueues `count` elements `producer_id << 48 | seq` in bursts of `burst`, waiting while
/// the ring is full, and giving up after `timeout` without progress.
///
/// # Errors
/// [`RingToolError`].
pub fn fill(
    ring: &Ring<u64>,
    producer_id: u64,
    count: u64,
    burst: usize,
    timeout: Duration,
) -> Result<Moved, RingToolError> {
    let burst = burst.clamp(1, 256);
    let mut buf = vec![0u64; burst];
    let mut seq = 0u64;
    let mut producer = RingSide::producer(ring).map_err(|e| err(ring, e))?;
    let start = Instant::now();
    let mut last_progress = start;
    while seq < count {
        let k = ((count - seq) as usize).min(burst);
        for (j, b) in buf[..k].iter_mut().enumerate() {
            *b = producer_id << 48 | (seq + j as u64);
        }
        let n = producer.put_burst(&buf[..k]).map_err(|e| err(ring, e))?;
        if n == 0 {
            if last_progress.elapsed() > timeout {
                return Err(timed_out(ring, timeout, seq, count));
            }
            std::thread::yield_now();
            continue;
        }
        seq += n as u64;
        last_progress = Instant::now();
    }
    Ok(Moved {
        count,
        elapsed: start.elapsed(),
    })
}

/// Dequeues `count` elements from `producers` producers and checks each producer's
/// sequence is complete and consecutive.
///
/// # Errors
/// [`RingToolError`]; an order violation names the element.
pub fn drain(
    ring: &Ring<u64>,
    producers: u64,
    count: u64,
    burst: usize,
    timeout: Duration,
) -> Result<Moved, RingToolError> {
    let producers = producers.clamp(1, MAX_PRODUCERS);
    let burst = burst.clamp(1, 256);
    let mut expect = vec![0u64; producers as usize];
    let mut buf = vec![0u64; burst];
    let mut consumer = RingSide::consumer(ring).map_err(|e| err(ring, e))?;
    let mut done = 0u64;
    let mut start = None;
    let mut last_progress = Instant::now();
    while done < count {
        let k = ((count - done) as usize).min(burst);
        let n = consumer
            .take_burst(&mut buf[..k])
            .map_err(|e| err(ring, e))?;
        if n == 0 {
            if last_progress.elapsed() > timeout {
                return Err(timed_out(ring, timeout, done, count));
            }
            std::thread::yield_now();
            continue;
        }
        start.get_or_insert_with(Instant::now);
        for &v in &buf[..n] {
            let (id, seq) = (v >> 48, v & SEQ_MASK);
            let slot = expect.get_mut(id as usize);
            match slot {
                Some(e) if *e == seq => *e += 1,
                _ => {
                    return Err(RingToolError::Order {
                        ring: ring.name().into(),
                        value: v,
                        producer: id,
                        expected: expect.get(id as usize).copied().unwrap_or(0),
                    })
                }
            }
        }
        done += n as u64;
        last_progress = Instant::now();
    }
    Ok(Moved {
        count,
        elapsed: start.map_or(Duration::ZERO, |s| s.elapsed()),
    })
}
