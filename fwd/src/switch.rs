//! The `l2switch` mode: a learning Ethernet switch between all the run's ports, the
//! switching back end DPDK's vhost and Xen examples used.
//!
//! Each received frame teaches the table that its source MAC, in its VLAN (the 802.1Q tag's
//! VLAN id, 0 when untagged), lives behind the input port. A frame to a known unicast
//! address goes to that port only (and is dropped as `filtered` when that is the port it
//! came from); a frame to an unknown, multicast or broadcast address is flooded to every
//! other port, the original to the last and copies to the rest (copies, not references:
//! a packet crossing into another process must have one owner). Learning never crosses
//! VLANs: the same MAC in two VLANs is two entries. Entries age out after
//! [`AGE`]; the table holds at most [`TABLE_SIZE`] entries (learning stops when full, so the
//! fast path never allocates).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pmds::{Port, RxQueue, TxQueue};
use shm_mempool::{Mbuf, MbufCache};

use crate::{Activity, Counters, FwdConfig, FwdError, Pacer, Step, Stream};

/// Entries the MAC table holds.
pub const TABLE_SIZE: usize = 4096;
/// How long an entry lives without traffic from its address.
pub const AGE: Duration = Duration::from_secs(300);

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To this port only.
    Port(usize),
    /// To every port but the input.
    Flood,
    /// Nowhere (destination is behind the input port, or the frame is too short).
    Drop,
}

/// The learning table.
#[derive(Debug)]
pub struct MacTable {
    entries: HashMap<(u16, [u8; 6]), (usize, Instant)>,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable {
            entries: HashMap::with_capacity(TABLE_SIZE),
        }
    }
}

/// Destination MAC, source MAC and VLAN id of a frame (`None` if shorter than a header).
pub fn parse(frame: &[u8]) -> Option<([u8; 6], [u8; 6], u16)> {
    if frame.len() < 14 {
        return None;
    }
    let dst: [u8; 6] = frame[0..6].try_into().ok()?;
    let src: [u8; 6] = frame[6..12].try_into().ok()?;
    let vlan = if frame[12..14] == [0x81, 0x00] && frame.len() >= 18 {
        u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
    } else {
        0
    };
    Some((dst, src, vlan))
}

impl MacTable {
    /// Learns the source of a frame that came in on `port` and decides where it goes.
    pub fn switch(&mut self, frame: &[u8], port: usize, now: Instant) -> Decision {
        let Some((dst, src, vlan)) = parse(frame) else {
            return Decision::Drop;
        };
        // Unicast sources only (a multicast source is bogus).
        if src[0] & 1 == 0 {
            if let Some(e) = self.entries.get_mut(&(vlan, src)) {
                *e = (port, now);
            } else if self.entries.len() < TABLE_SIZE {
                self.entries.insert((vlan, src), (port, now));
            }
        }
        if dst[0] & 1 != 0 {
            return Decision::Flood;
        }
        match self.entries.get(&(vlan, dst)) {
            Some(&(p, seen)) if now.duration_since(seen) < AGE => {
                if p == port {
                    Decision::Drop
                } else {
                    Decision::Port(p)
                }
            }
            _ => Decision::Flood,
        }
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Runs the switch on this thread over every port in `streams` until stopped or idle.
pub(crate) fn poll(
    ports: &[Port],
    cache: &MbufCache,
    cfg: &FwdConfig,
    streams: &[Stream],
    (counters, activity, t0): (&[Counters], &Activity, Instant),
    stop: &AtomicBool,
) -> Result<(), FwdError> {
    let mut rx: Vec<(usize, RxQueue<'_>)> = Vec::new();
    let mut tx: Vec<Option<TxQueue<'_>>> = ports.iter().map(|_| None).collect();
    for s in streams {
        if let Some(i) = s.rx {
            rx.push((i, ports[i].rx_queue(0, cache)?));
        }
    }
    // Every port can be an output, including ports that only transmit.
    for (i, port) in ports.iter().enumerate() {
        if port.nb_tx_queues() > 0 {
            tx[i] = Some(port.tx_queue(0, cache)?);
        }
    }
    let mut table = MacTable::default();
    let mut inbuf: Vec<Mbuf<'_>> = Vec::with_capacity(cfg.burst);
    let room = cfg.burst * ports.len().max(1);
    let mut out: Vec<Vec<Mbuf<'_>>> = ports.iter().map(|_| Vec::with_capacity(room)).collect();
    // The input port of each queued original, or None for a flood copy.
    let mut origin: Vec<Vec<Option<usize>>> =
        ports.iter().map(|_| Vec::with_capacity(room)).collect();
    let mut pacer = Pacer::new(cfg, activity, t0, stop);
    loop {
        let mut moved = 0usize;
        let now = Instant::now();
        for (r, q) in rx.iter_mut() {
            let r = *r;
            let n = q.rx_burst(&mut inbuf, cfg.burst);
            if n == 0 {
                continue;
            }
            moved += n;
            let c = &counters[r];
            for m in inbuf.drain(..) {
                let decision = table.switch(m.data(), r, now);
                let is_target = |p: usize| {
                    tx[p].is_some()
                        && match decision {
                            Decision::Port(x) => p == x,
                            Decision::Flood => p != r,
                            Decision::Drop => false,
                        }
                };
                let Some(last) = (0..ports.len()).rev().find(|&p| is_target(p)) else {
                    c.filtered.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                for p in (0..last).filter(|&p| is_target(p)) {
                    let copy = if m.nb_segs() == 1 {
                        cache.alloc_from(m.data())
                    } else {
                        cache.alloc_from(&m.to_vec())
                    };
                    match copy {
                        Ok(copy) => {
                            out[p].push(copy);
                            origin[p].push(None);
                        }
                        Err(_) => {
                            counters[p].no_mbuf.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                out[last].push(m);
                origin[last].push(Some(r));
            }
        }
        for (p, q) in tx.iter_mut().enumerate() {
            let Some(q) = q else { continue };
            if out[p].is_empty() {
                continue;
            }
            let sent = q.tx_burst(&mut out[p]);
            let cp = &counters[p];
            cp.tx_dropped
                .fetch_add(out[p].len() as u64, Ordering::Relaxed);
            for (k, o) in origin[p].iter().enumerate() {
                if let Some(r) = *o {
                    if k < sent {
                        counters[r].forwarded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters[r].tx_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            origin[p].clear();
            out[p].clear();
        }
        match pacer.after_round(moved, false) {
            Step::Busy => {}
            Step::Idle { flush } => {
                if flush {
                    for q in tx.iter_mut().flatten() {
                        q.flush();
                    }
                }
            }
            Step::Stop => break,
        }
    }
    for q in tx.iter_mut().flatten() {
        q.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(dst);
        f.extend(src);
        if let Some(v) = vlan {
            f.extend([0x81, 0x00]);
            f.extend(v.to_be_bytes());
        }
        f.extend([0x08, 0x00]);
        f.extend([0u8; 46]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_floods_and_forwards_per_vlan() {
        let mut t = MacTable::default();
        let now = Instant::now();
        // Unknown destination: flood; A learned behind port 0.
        assert_eq!(t.switch(&frame(B, A, None), 0, now), Decision::Flood);
        // B answers from port 1: A is known.
        assert_eq!(t.switch(&frame(A, B, None), 1, now), Decision::Port(0));
        assert_eq!(t.switch(&frame(B, A, None), 0, now), Decision::Port(1));
        // Broadcast floods; a destination behind the input port is dropped.
        assert_eq!(t.switch(&frame(BCAST, A, None), 0, now), Decision::Flood);
        assert_eq!(t.switch(&frame(A, B, None), 0, now), Decision::Drop);
        // B moved to port 0 by that last frame... and VLAN 7 is a separate table.
        assert_eq!(t.switch(&frame(B, A, Some(7)), 2, now), Decision::Flood);
        assert_eq!(t.switch(&frame(A, B, Some(7)), 3, now), Decision::Port(2));
        // Entries age out.
        assert_eq!(
            t.switch(&frame(B, A, Some(7)), 2, now + AGE + Duration::from_secs(1)),
            Decision::Flood,
            "B's VLAN 7 entry is older than AGE"
        );
        assert_eq!(t.switch(&[0u8; 10], 0, now), Decision::Drop, "runt");
        assert_eq!(t.len(), 4);
    }
}
