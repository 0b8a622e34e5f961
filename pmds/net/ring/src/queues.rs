//! The ring driver's queues: the pointer-speed path between host processes
//! ([`crate::ring_port`]), the general path through the queue's in-flight record, and the
//! guest-facing path through a guest pool's choke point.
//!
//! The in-flight record (in the queue block, see `pmds_ethdev::layout::QueueBlock`) lists
//! the handles of a burst while they are in transit and in no ring: rx, taken off the ring
//! and not yet adopted; tx, put in transit and not yet enqueued. A poller killed inside a
//! burst leaves them listed; whoever claims the queue next frees them
//! ([`recover_inflight`]), counted as drops.

use std::any::Any;
use std::sync::atomic::Ordering;

use shm_mempool::{GuestDrop, GuestPool, Mbuf, MbufCache, MbufHandle, MbufPool};
use shm_ring::Ring;

use pmds_ethdev::layout::INFLIGHT_MAX;
use pmds_ethdev::{Burst, PortError, QueueShm, RxBurst, TxBurst, MAX_BURST};

use crate::ring_port::{forward_local, ScRx, SpTx};

enum RingRx {
    Sc(ScRx),
    Mc(shm_ring::McConsumer<u64>),
    /// A ring in a guest's export segment (guest-facing port).
    Untrusted(shm_ring::UntrustedConsumer<u64>),
}

enum RingTx {
    Sp(SpTx),
    Mp(shm_ring::MpProducer<u64>),
    /// A ring in a guest's export segment (guest-facing port).
    Untrusted(shm_ring::UntrustedProducer<u64>),
}

/// For a guest-facing ring port, the host's handle on the guest's pool: the only way the
/// host reads or writes guest-writable mbufs (copies through a choke point; no cache slot,
/// those live in guest-writable memory too).
fn open_guest_pool(
    pool: Option<&MbufPool>,
    q: &QueueShm,
    host: &MbufCache,
) -> Result<Option<GuestPool>, PortError> {
    pool.map(|p| GuestPool::open(p, host.owner()).map_err(|e| q.failed("its guest pool", e)))
        .transpose()
}

/// Frees what a poller killed inside a burst left in the queue's in-flight record
/// (handles in transit and in no ring); returns how many. `enqueued` is how many of the
/// listed handles are known to have reached the ring (a single-producer ring's tail past
/// the record's position): they are the ring's, not freed.
pub fn recover_inflight(
    q: &mut QueueShm,
    cache: &MbufCache,
    mut guest: Option<&mut GuestPool>,
    enqueued: usize,
) -> u64 {
    let (block, record) = q.parts();
    // Acquire: pairs with the Release that published the count, so the handles are seen.
    let n = block.inflight.swap(0, Ordering::Acquire) as usize;
    let mut freed = 0;
    // The poller that wrote the record is gone and we hold the claim: nobody writes it now.
    for &h in &record[enqueued.min(n)..n.min(INFLIGHT_MAX)] {
        // Only handles still in transit were lost; anything else someone owns.
        let back = match guest.as_deref_mut() {
            Some(g) => g.discard(h).is_ok(),
            None => cache.adopt(MbufHandle(h)).is_ok(),
        };
        freed += u64::from(back);
    }
    if let Some(g) = guest {
        g.flush();
    }
    if freed > 0 {
        tracing::warn!(
            "{} {} queue {}: freed {freed} mbufs a killed poller had taken off the ring",
            q.port_name(),
            if q.is_rx() { "rx" } else { "tx" },
            q.queue()
        );
    }
    freed
}

/// A claimed rx queue of a ring port.
pub struct RingRxQueue {
    kind: RingRx,
    /// Guest-facing ports: the guest's pool (packets are copied out of it).
    guest: Option<GuestPool>,
}

impl std::fmt::Debug for RingRxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingRxQueue")
            .field("guest_facing", &self.guest.is_some())
            .finish()
    }
}

impl RingRxQueue {
    /// Opens the consumer side of `ring` for the claimed queue `q`, recovering what a
    /// killed poller left in its in-flight record (into `opened.dropped`).
    ///
    /// # Errors
    /// The ring's role is taken, or the guest pool cannot be opened.
    pub fn open(
        ring: &Ring<u64>,
        guest_pool: Option<&MbufPool>,
        q: &mut QueueShm,
        cache: &MbufCache,
        opened: &mut Burst,
    ) -> Result<RingRxQueue, PortError> {
        let kind = if guest_pool.is_some() {
            // In the guest's segment: bounded host operations, private head (the queue
            // claim makes this the only host consumer).
            RingRx::Untrusted(ring.untrusted_consumer())
        } else if ring.mode().single_consumer {
            RingRx::Sc(ScRx {
                cons: ring.sc_consumer().map_err(|e| q.failed("its rx ring", e))?,
                ring: ring.clone(),
            })
        } else {
            RingRx::Mc(ring.mc_consumer().map_err(|e| q.failed("its rx ring", e))?)
        };
        let mut guest = open_guest_pool(guest_pool, q, cache)?;
        opened.dropped += recover_inflight(q, cache, guest.as_mut(), 0);
        Ok(RingRxQueue { kind, guest })
    }

    /// The general path: the handles go straight into the queue's in-flight record in
    /// shared memory, so a poller killed before adopting them all loses nothing.
    fn rx_recorded<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        let port_id = q.port_id();
        let (block, handles) = q.parts();
        let mut b = Burst::default();
        let max = max.min(INFLIGHT_MAX);
        let got = match &mut self.kind {
            RingRx::Sc(c) => c.cons.dequeue_burst(&mut handles[..max]),
            RingRx::Mc(c) => c.dequeue_burst(&mut handles[..max]),
            RingRx::Untrusted(c) => c.dequeue_burst(&mut handles[..max]),
        }
        .unwrap_or_else(|_| {
            b.errors += 1;
            0
        });
        // Release: the handles above before the count that lists them.
        let inflight = &block.inflight;
        inflight.store(got as u32, Ordering::Release);
        for &h in &handles[..got] {
            let adopted = match &mut self.guest {
                // Guest-facing: the packet lives in guest-writable memory; the guest
                // pool's choke point validates it and copies it into a host mbuf (no
                // later change by the guest can reach it), and gives the guest's
                // buffers back.
                Some(g) => match g.receive(h, cache) {
                    Ok(m) => Ok(m),
                    Err(GuestDrop::NoBuffer) => {
                        b.no_mbuf += 1;
                        continue;
                    }
                    Err(_) => {
                        b.errors += 1;
                        continue;
                    }
                },
                None => cache.adopt(MbufHandle(h)),
            };
            match adopted {
                Ok(mut m) => {
                    m.set_port(port_id);
                    b.bytes += u64::from(m.pkt_len());
                    b.packets += 1;
                    out.push(m);
                }
                Err(_) => b.errors += 1,
            }
        }
        if let Some(g) = &mut self.guest {
            // Before the record is cleared: a poller killed in between leaves handles
            // that are no longer in transit, which recovery refuses.
            g.flush();
        }
        // Every listed handle is adopted (or refused): the record is empty again.
        inflight.store(0, Ordering::Release);
        b
    }
}

impl RingRxQueue {
    /// io forwarding to the ring tx queue `tx` without making mbufs (see
    /// [`crate::ring_port::forward_local`]): both are queues of host processes (no guest
    /// pool), single-consumer and single-producer. `None`: nothing was taken, use the
    /// bursts. `started`: whether this queue's port is started.
    #[inline(always)]
    pub fn forward_to_ring<'c>(
        &mut self,
        tx: &mut RingTxQueue,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)> {
        if self.guest.is_some() || tx.guest.is_some() {
            return None;
        }
        let (RingRx::Sc(rx), RingTx::Sp(sp)) = (&mut self.kind, &mut tx.kind) else {
            return None;
        };
        if !started {
            return Some((0, 0));
        }
        forward_local(rx, sp, cache, max, unsent)
    }
}

impl RxBurst for RingRxQueue {
    #[inline]
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        if let (RingRx::Sc(sc), None) = (&mut self.kind, &self.guest) {
            // Pointer speed between host processes (ring_port.rs): packets counted,
            // headers untouched when this process produced them.
            let start = out.len();
            let done = sc.rx_burst(cache, out, max);
            return Burst {
                packets: (out.len() - start) as u64,
                errors: done.refused + u64::from(done.corrupt),
                ..Burst::default()
            };
        }
        self.rx_recorded(q, cache, out, max)
    }

    #[inline]
    fn forward_to<'c>(
        &mut self,
        tx: &mut dyn TxBurst,
        cache: &'c MbufCache,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
        started: bool,
    ) -> Option<(usize, usize)> {
        // Upcast (no call), then one comparison of type ids.
        let tx = (tx as &mut dyn Any).downcast_mut::<RingTxQueue>()?;
        self.forward_to_ring(tx, cache, max, unsent, started)
    }
}

/// A claimed tx queue of a ring port.
pub struct RingTxQueue {
    kind: RingTx,
    /// Scratch space for one burst of handles (allocated once, at claim time).
    handles: Box<[u64]>,
    /// Guest-facing ports: the guest's pool (packets are copied into it).
    guest: Option<GuestPool>,
}

impl std::fmt::Debug for RingTxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingTxQueue")
            .field("guest_facing", &self.guest.is_some())
            .finish()
    }
}

impl RingTxQueue {
    /// Opens the producer side of `ring` for the claimed queue `q`, recovering what a
    /// killed poller left in its in-flight record (into `opened.dropped`).
    ///
    /// # Errors
    /// The ring's role is taken, or the guest pool cannot be opened.
    pub fn open(
        ring: &Ring<u64>,
        guest_pool: Option<&MbufPool>,
        q: &mut QueueShm,
        cache: &MbufCache,
        opened: &mut Burst,
    ) -> Result<RingTxQueue, PortError> {
        let kind = if guest_pool.is_some() {
            // As for rx: bounded, private head, exclusive by the queue claim.
            RingTx::Untrusted(ring.untrusted_producer())
        } else if ring.mode().single_producer {
            RingTx::Sp(SpTx::new(
                ring.clone(),
                ring.sp_producer().map_err(|e| q.failed("its tx ring", e))?,
                cache.owner(),
            ))
        } else {
            RingTx::Mp(ring.mp_producer().map_err(|e| q.failed("its tx ring", e))?)
        };
        let enqueued = match &kind {
            RingTx::Sp(sp) => {
                // Relaxed: the previous poller's claim release (Release) ordered it.
                let from = q.block().tx_from.load(Ordering::Relaxed);
                sp.ring.prod_tail().wrapping_sub(from) as usize
            }
            _ => 0,
        };
        opened.dropped += recover_inflight(q, cache, None, enqueued);
        Ok(RingTxQueue {
            kind,
            handles: vec![0; MAX_BURST].into_boxed_slice(),
            guest: open_guest_pool(guest_pool, q, cache)?,
        })
    }

    /// Guest-facing: copies into the guest's pool through its choke point (the guest can
    /// only reach its own segment).
    fn tx_guest<'c>(&mut self, pkts: &mut Vec<Mbuf<'c>>) -> Burst {
        let mut b = Burst::default();
        let Some(g) = &mut self.guest else {
            return b;
        };
        let handles = &mut self.handles;
        let (mut k, mut i) = (0, 0);
        while i < pkts.len() && k < handles.len() {
            match g.send(&pkts[i]) {
                Ok(h) => {
                    handles[k] = h;
                    k += 1;
                    i += 1;
                }
                Err(GuestDrop::TooLong) => {
                    // Cannot be sent to this guest at all: dropped (counted).
                    drop(pkts.remove(i));
                    b.dropped += 1;
                }
                Err(_) => break,
            }
        }
        let pushed = match &mut self.kind {
            RingTx::Sp(p) => p.prod.enqueue_burst(&handles[..k]),
            RingTx::Mp(p) => p.enqueue_burst(&handles[..k]),
            RingTx::Untrusted(p) => p.enqueue_burst(&handles[..k]),
        }
        .unwrap_or_else(|_| {
            // Busy or corrupt (the guest broke its ring): counted, nothing sent.
            b.errors += 1;
            0
        });
        // Copies that did not fit go back to the guest pool; their originals stay the
        // caller's.
        for &h in &handles[pushed..k] {
            let _ = g.discard(h);
        }
        g.flush();
        b.bytes = pkts[..pushed].iter().map(|m| u64::from(m.pkt_len())).sum();
        b.packets = pushed as u64;
        pkts.drain(..pushed);
        b
    }

    /// The general path between host processes: the handles are listed in the queue's
    /// in-flight record as they go into transit, so a poller killed before the enqueue
    /// loses nothing.
    fn tx_recorded<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        // Shared mbufs cannot cross processes: the first one ends the burst.
        let k = pkts
            .iter()
            .take(MAX_BURST)
            .take_while(|m| !m.is_shared())
            .count();
        let k = k.min(INFLIGHT_MAX);
        let (block, handles) = q.parts();
        let inflight = &block.inflight;
        let mut bytes = 0;
        for (i, (slot, m)) in handles.iter_mut().zip(pkts.drain(..k)).enumerate() {
            bytes += u64::from(m.pkt_len());
            *slot = m.into_transit().expect("checked unshared").0;
            // Release: the handle above before the count that lists it.
            inflight.store(i as u32 + 1, Ordering::Release);
        }
        let pushed = match &mut self.kind {
            RingTx::Sp(p) => p.prod.enqueue_burst(&handles[..k]),
            RingTx::Mp(p) => p.enqueue_burst(&handles[..k]),
            RingTx::Untrusted(p) => p.enqueue_burst(&handles[..k]),
        }
        .unwrap_or(0);
        // Enqueued handles belong to the ring now: only the rest stay listed while they
        // are adopted back.
        handles.copy_within(pushed..k, 0);
        inflight.store((k - pushed) as u32, Ordering::Release);
        // Not enqueued: take them back (still ours, in transit) in order, in front.
        let back: Vec<Mbuf<'c>> = handles[..k - pushed]
            .iter()
            .filter_map(|&h| cache.adopt(MbufHandle(h)).ok())
            .collect();
        inflight.store(0, Ordering::Release);
        if !back.is_empty() {
            bytes -= back.iter().map(|m| u64::from(m.pkt_len())).sum::<u64>();
            pkts.splice(0..0, back);
        }
        Burst::moved(pushed, bytes)
    }
}

impl TxBurst for RingTxQueue {
    #[inline]
    fn tx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        if self.guest.is_some() {
            return self.tx_guest(pkts);
        }
        if let RingTx::Sp(sp) = &mut self.kind {
            // Pointer speed between host processes (ring_port.rs): packets counted.
            let sent = sp.tx_burst(cache, pkts, Some(q.parts()));
            return Burst::moved(sent, 0);
        }
        self.tx_recorded(q, cache, pkts)
    }

    fn idle(&mut self) {
        if let Some(g) = &mut self.guest {
            g.flush();
        }
        if let RingTx::Untrusted(p) = &mut self.kind {
            let _ = p.complete();
        }
    }
}

impl Drop for RingTxQueue {
    fn drop(&mut self) {
        if let RingTx::Sp(sp) = &mut self.kind {
            sp.release();
        }
    }
}
