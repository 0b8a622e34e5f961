//! The polling loop of the io, mac, macswap, rxonly and txonly modes: each round, every
//! stream's rx burst is rewritten and sent on (or freed), or generated frames are sent;
//! what happened to the packets (forwarded, or why dropped) is kept per thread and
//! published to the shared counters every [`PUBLISH_EVERY`] rounds. Packets received and
//! sent are the ports' own statistics, counted by the queues.
//!
//! Where it sits: in `fwd`, run by each thread of `engine.rs` (the `l2switch` mode has its
//! own loop, [`crate::switch`]); the stop rules are the [`Pacer`]'s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pmds::{Port, RxQueue, TxQueue};
use shm_mempool::{Mbuf, MbufCache};

use crate::frames::rewrite;
use crate::{peer_mac, raw_frame, txonly_frame};
use crate::{Activity, Counters, FwdConfig, FwdError, Mode, Pacer, Step, Stream, TX_RETRY_FOR};

/// Queues one thread polls, by (port, queue).
struct Lanes<'c> {
    rx: BTreeMap<(usize, u16), RxQueue<'c>>,
    tx: BTreeMap<(usize, u16), TxQueue<'c>>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn poll(
    ports: &[Port],
    cache: &MbufCache,
    cfg: &FwdConfig,
    streams: &[Stream],
    (counters, activity, t0): (&[Counters], &Activity, Instant),
    stop: &AtomicBool,
    done: &AtomicBool,
) -> Result<(), FwdError> {
    let mut lanes = Lanes {
        rx: BTreeMap::new(),
        tx: BTreeMap::new(),
    };
    for s in streams {
        if let Some(i) = s.rx {
            lanes
                .rx
                .insert((i, s.queue), ports[i].rx_queue(s.queue, cache)?);
        }
        if let Some(i) = s.tx {
            if let std::collections::btree_map::Entry::Vacant(e) = lanes.tx.entry((i, s.queue)) {
                e.insert(ports[i].tx_queue(s.queue, cache)?);
            }
        }
    }
    let templates: Vec<Vec<u8>> = ports
        .iter()
        .map(|p| match cfg.tx_ethertype {
            Some(t) => raw_frame(p.mac(), peer_mac(p.id()), t, cfg.txpkt_len),
            None => txonly_frame(p.mac(), peer_mac(p.id()), cfg.txpkt_len),
        })
        .collect();
    let mut buf: Vec<Mbuf<'_>> = Vec::with_capacity(cfg.burst);
    // This thread's counts, added to the shared counters every PUBLISH_EVERY rounds and
    // at the end (an atomic add per counter per burst would cost more than the burst).
    let mut mine: Vec<Local> = vec![Local::default(); counters.len()];
    if cfg.tx_first {
        for (&(t, _), q) in lanes.tx.iter_mut() {
            for _ in 0..cfg.burst {
                match cache.alloc_from(&templates[t]) {
                    Ok(m) => buf.push(m),
                    Err(_) => break,
                }
            }
            // Counted by the port (sent); what did not fit is freed, as before.
            q.tx_burst(&mut buf);
            buf.clear();
        }
    }
    // The queues of each stream, looked up once.
    let mut rx_of: Vec<Option<RxQueue<'_>>> = Vec::with_capacity(streams.len());
    let mut tx_key: Vec<Option<(usize, u16)>> = Vec::with_capacity(streams.len());
    for s in streams {
        rx_of.push(s.rx.and_then(|r| lanes.rx.remove(&(r, s.queue))));
        tx_key.push(s.tx.map(|t| (t, s.queue)));
    }
    let mut pacer = Pacer::new(cfg, activity, t0, stop);
    // io without retries moves ring-port handles directly where it can (`forward_to`).
    let io_direct = cfg.mode == Mode::Io && !cfg.tx_retry;
    let mut sent_by_stream = vec![0u64; streams.len()];
    let mut rounds = 0u32;
    loop {
        let mut moved = 0usize;
        for (k, s) in streams.iter().enumerate() {
            match (rx_of[k].as_mut(), tx_key[k]) {
                (Some(q), tx) => {
                    let r = s.rx.unwrap_or_default();
                    if let (Some(key), true) = (tx, io_direct) {
                        // io between ring ports of this process: handles move ring to
                        // ring, no mbuf made (what testpmd's io over net_ring does).
                        let txq = lanes.tx.get_mut(&key).expect("claimed above");
                        if let Some((n, sent)) = q.forward_to(txq, cfg.burst, &mut buf) {
                            let left = (n - sent) as u64;
                            moved += n;
                            mine[r].forwarded += sent as u64;
                            mine[r].tx_full += left;
                            mine[key.0].tx_dropped += left;
                            buf.clear();
                            continue;
                        }
                    }
                    let n = q.rx_burst(&mut buf, cfg.burst);
                    if n == 0 {
                        continue;
                    }
                    moved += n;
                    match tx {
                        None => {
                            mine[r].filtered += n as u64;
                            // `rte_pktmbuf_free_bulk`, as testpmd's rxonly.
                            cache.free_bulk(&mut buf);
                        }
                        Some(key) => {
                            let t = key.0;
                            rewrite(cfg.mode, &mut buf, &ports[t]);
                            let txq = lanes.tx.get_mut(&key).expect("claimed above");
                            let mut sent = txq.tx_burst(&mut buf);
                            if cfg.tx_retry && !buf.is_empty() {
                                // Opt-in: the clock is read only when a burst did not fit.
                                let until = Instant::now() + TX_RETRY_FOR;
                                while !buf.is_empty() && Instant::now() < until {
                                    std::hint::spin_loop();
                                    sent += txq.tx_burst(&mut buf);
                                }
                            }
                            let left = buf.len() as u64;
                            mine[r].forwarded += sent as u64;
                            mine[r].tx_full += left;
                            mine[t].tx_dropped += left;
                            cache.free_bulk(&mut buf);
                        }
                    }
                }
                (None, Some(key)) => {
                    let t = key.0;
                    if cfg.tx_count.is_some_and(|limit| sent_by_stream[k] >= limit)
                        || stop.load(Ordering::Relaxed)
                    {
                        continue;
                    }
                    let want = cfg.tx_count.map_or(cfg.burst, |l| {
                        (l - sent_by_stream[k]).min(cfg.burst as u64) as usize
                    });
                    for _ in 0..want {
                        match cache.alloc_from(&templates[t]) {
                            Ok(m) => buf.push(m),
                            Err(_) => {
                                mine[t].no_mbuf += 1;
                                break;
                            }
                        }
                    }
                    let offered = buf.len();
                    let sent = lanes
                        .tx
                        .get_mut(&key)
                        .expect("claimed above")
                        .tx_burst(&mut buf);
                    moved += sent;
                    if cfg.tx_retry {
                        // Not sent is not generated: the same frames are offered again.
                        sent_by_stream[k] += sent as u64;
                    } else {
                        sent_by_stream[k] += offered as u64;
                        mine[t].tx_dropped += buf.len() as u64;
                    }
                    buf.clear();
                }
                (None, None) => {}
            }
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(PUBLISH_EVERY) {
            publish(&mut mine, counters);
        }
        let txonly_done = cfg.mode == Mode::TxOnly
            && cfg
                .tx_count
                .is_some_and(|l| sent_by_stream.iter().all(|&s| s >= l));
        // A finished peer thread ends an idle-bounded run too. With --duration the run
        // lasts that long even once txonly has sent its budget (the ports stay served:
        // a vhost-user peer may still be taking the last packets).
        let ending = txonly_done && cfg.duration.is_none()
            || done.load(Ordering::Relaxed) && cfg.idle_exit.is_some();
        match pacer.after_round(moved, ending) {
            Step::Busy => {}
            Step::Idle { flush } => {
                for q in lanes.tx.values_mut() {
                    if flush {
                        q.flush();
                    } else {
                        // Guest-facing ports: land what a slow guest held up.
                        q.idle();
                    }
                }
            }
            Step::Stop => break,
        }
    }
    for q in lanes.tx.values_mut() {
        q.flush();
    }
    publish(&mut mine, counters);
    Ok(())
}

/// Rounds between two additions of a thread's private counts to the shared counters.
pub(crate) const PUBLISH_EVERY: u32 = 64;

/// One thread's counts for one port since they were last published.
#[derive(Debug, Default, Clone, Copy)]
struct Local {
    forwarded: u64,
    tx_full: u64,
    tx_dropped: u64,
    filtered: u64,
    no_mbuf: u64,
}

/// Adds a thread's counts to the shared counters and starts them again.
fn publish(mine: &mut [Local], shared: &[Counters]) {
    for (m, c) in mine.iter_mut().zip(shared) {
        for (n, to) in [
            (m.forwarded, &c.forwarded),
            (m.tx_full, &c.tx_full),
            (m.tx_dropped, &c.tx_dropped),
            (m.filtered, &c.filtered),
            (m.no_mbuf, &c.no_mbuf),
        ] {
            if n > 0 {
                // Relaxed: a number (see `Counters`).
                to.fetch_add(n, Ordering::Relaxed);
            }
        }
        *m = Local::default();
    }
}
