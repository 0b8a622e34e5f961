//! Claimed queues: [`QueueShm`] (the claim and the queue's block in shared memory, which
//! drivers are given), [`RxQueue`] and [`TxQueue`] (what pollers hold).
//!
//! `rx_burst` fills a caller-owned vector (give it the capacity: nothing is allocated);
//! `tx_burst` sends from the front of one and removes what it took: what is not sent stays
//! the caller's, as with DPDK's `rte_eth_tx_burst`. Each burst's [`Burst`] is counted here
//! into the queue block, once: drivers count nothing.
//!
//! A queue's driver state that must outlive a poller (the pcap reader's position, the
//! ring driver's in-flight record) and its statistics live in the queue block, so a new
//! poller continues where the old one was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shm::liveness::Process;
use shm_mempool::{Mbuf, MbufCache};

use crate::devargs::Args;
use crate::driver::{Burst, Registry, RxBurst, TxBurst};
use crate::layout::{QueueBlock, INFLIGHT_MAX, MAX_QUEUES};
use crate::port::{Port, PortCore};
use crate::PortError;

/// Most packets one burst moves.
pub const MAX_BURST: usize = 512;

/// A claimed queue, as its driver sees it: the port, the queue's block in shared memory
/// and its in-flight record. The claim is released on drop.
pub struct QueueShm {
    core: Arc<PortCore>,
    index: usize,
    me: Process,
}

impl std::fmt::Debug for QueueShm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueShm({} block {})", self.core.args.name, self.index)
    }
}

impl QueueShm {
    /// Claims queue `queue` of direction `dir` ("rx" or "tx") for this process.
    pub(crate) fn claim(
        core: Arc<PortCore>,
        dir: &'static str,
        queue: u16,
    ) -> Result<QueueShm, PortError> {
        let (have, base) = if dir == "rx" {
            (core.info.nb_rx_queues, 0)
        } else {
            (core.info.nb_tx_queues, MAX_QUEUES as usize)
        };
        if queue >= have {
            return Err(PortError::NoQueue {
                port: core.args.name.clone(),
                dir,
                queue,
                have,
            });
        }
        let index = base + queue as usize;
        let me = Process::current();
        // A gone poller's claim (shm::liveness's rule: dead, a zombie, its pid reused) is
        // taken over; the claim's Acquire makes the old poller's position and counters
        // visible to the new one.
        match core.block(index).claim.claim(me, 0, true) {
            Ok(_) => Ok(QueueShm {
                core: core.clone(),
                index,
                me,
            }),
            Err(h) => Err(PortError::QueueTaken {
                port: core.args.name.clone(),
                dir,
                queue,
                pid: h.pid,
            }),
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> u16 {
        self.core.info.port_id
    }

    /// The port's name.
    pub fn port_name(&self) -> &str {
        &self.core.args.name
    }

    /// The port's devargs.
    pub fn devargs(&self) -> &Args {
        &self.core.args
    }

    /// The queue's index within its direction.
    pub fn queue(&self) -> u16 {
        (self.index % MAX_QUEUES as usize) as u16
    }

    /// True for an rx queue.
    pub fn is_rx(&self) -> bool {
        self.index < MAX_QUEUES as usize
    }

    /// The queue's block: its claim, the driver state kept across pollers, its counters.
    pub fn block(&self) -> &QueueBlock {
        self.core.block(self.index)
    }

    /// The queue's in-flight record ([`INFLIGHT_MAX`] handles), which its poller alone
    /// writes: the handles of a burst in transit, so the next poller can free what a
    /// killed one left there (see [`QueueBlock::inflight`]).
    pub fn record(&mut self) -> &mut [u64] {
        self.parts().1
    }

    /// The block and the in-flight record together.
    pub fn parts(&mut self) -> (&QueueBlock, &mut [u64]) {
        // SAFETY: this queue's record, `INFLIGHT_MAX` u64s inside the span checked at
        // open (8-aligned) and kept mapped by the port; we hold the queue's claim and
        // `&mut self`, so only this thread, through this borrow, touches it (a peer
        // process reads it only after taking over the claim of a dead poller).
        let record = unsafe {
            std::slice::from_raw_parts_mut(self.core.inflight_slots(self.index), INFLIGHT_MAX)
        };
        (self.core.block(self.index), record)
    }

    /// Refuses a cache of another pool than the port's rx pool (drivers that allocate
    /// received packets from it).
    ///
    /// # Errors
    /// [`PortError::WrongPool`] naming the pool wanted.
    pub fn check_pool(&self, cache: &MbufCache) -> Result<(), PortError> {
        if cache.pool().mempool().id() != self.core.info.rx_pool_id {
            return Err(PortError::WrongPool {
                port: self.port_name().to_string(),
                pool: shm::layout::decode_name(&self.core.info.rx_pool)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok(())
    }

    /// Opening `what` for this queue failed with `source`.
    pub fn failed(&self, what: impl Into<String>, source: impl Into<crate::Reason>) -> PortError {
        PortError::failed(self.port_name(), what, source)
    }

    /// Adds what a burst did to the queue's counters. Relaxed: counters publish no data,
    /// they are numbers read for reports; plain load and store, as the claim makes this
    /// the only writer (a reset moves the baselines, never the counters).
    #[inline(always)]
    pub(crate) fn count(&self, b: &Burst) {
        if b.packets > 0 {
            let blk = self.block();
            add(&blk.packets, b.packets);
            if b.bytes > 0 {
                add(&blk.bytes, b.bytes);
            }
        }
        if b.no_mbuf | b.errors | b.dropped != 0 {
            self.count_losses(b);
        }
    }

    #[cold]
    fn count_losses(&self, b: &Burst) {
        let blk = self.block();
        // The layout has one drop counter: rx no-mbuf and driver drops share it.
        add(&blk.dropped, b.no_mbuf + b.dropped);
        add(&blk.errors, b.errors);
    }
}

/// Adds to a counter with one writer (the queue's poller). Relaxed: a number.
#[inline(always)]
fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl Drop for QueueShm {
    fn drop(&mut self) {
        // The release's Release: the next poller sees our position and counters.
        self.block().claim.release(self.me);
    }
}

/// A claimed rx queue.
pub struct RxQueue<'c, R: Registry> {
    /// Declared first: the driver lets go of its queue before the claim is released.
    driver: R::Rx,
    q: QueueShm,
    port: Port<R>,
    cache: &'c MbufCache,
}

impl<R: Registry> std::fmt::Debug for RxQueue<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RxQueue({} rx {})", self.port.name(), self.q.queue())
    }
}

impl<'c, R: Registry> RxQueue<'c, R> {
    pub(crate) fn new(
        port: Port<R>,
        q: QueueShm,
        cache: &'c MbufCache,
        driver: Box<dyn RxBurst>,
    ) -> Self {
        RxQueue {
            driver: R::rx(driver),
            q,
            port,
            cache,
        }
    }

    /// The port.
    pub fn port(&self) -> &Port<R> {
        &self.port
    }

    /// io forwarding of up to `max` packets from this queue to `tx` without making mbufs,
    /// where the driver can do it (the ring driver: both are ring queues of host processes
    /// and every packet waiting is a local entry of this process, as in a loopback
    /// forwarded by one lcore, testpmd's io over `net_ring`). The handles move from ring
    /// to ring; both ports count them. `None`: use [`rx_burst`](Self::rx_burst) and
    /// [`TxQueue::tx_burst`] (nothing was taken). `Some((received, sent))`: those not sent
    /// (the tx ring was full) are in `unsent` (give it the capacity of a burst), to drop.
    #[inline]
    pub fn forward_to(
        &mut self,
        tx: &mut TxQueue<'c, R>,
        max: usize,
        unsent: &mut Vec<Mbuf<'c>>,
    ) -> Option<(usize, usize)> {
        if !tx.port.is_started() {
            return None;
        }
        let started = self.port.is_started();
        let (n, sent) = R::forward(
            &mut self.driver,
            &mut tx.driver,
            self.cache,
            max,
            unsent,
            started,
        )?;
        if n > 0 {
            self.q.count(&Burst::moved(n, 0));
            tx.q.count(&Burst::moved(sent, 0));
        }
        Some((n, sent))
    }

    /// Receives up to `max` packets (at most [`MAX_BURST`]) into `out`; returns how many.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf<'c>>, max: usize) -> usize {
        if !self.port.is_started() {
            return 0;
        }
        let start = out.len();
        let b = self
            .driver
            .rx_burst(&mut self.q, self.cache, out, max.min(MAX_BURST));
        self.q.count(&b);
        out.len() - start
    }

    /// True when the queue will never deliver more (a pcap file read to its end).
    pub fn exhausted(&self) -> bool {
        self.driver.exhausted()
    }
}

/// A claimed tx queue.
pub struct TxQueue<'c, R: Registry> {
    /// Declared first: the driver lets go of its queue before the claim is released.
    driver: R::Tx,
    q: QueueShm,
    port: Port<R>,
    cache: &'c MbufCache,
}

impl<R: Registry> std::fmt::Debug for TxQueue<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxQueue({} tx {})", self.port.name(), self.q.queue())
    }
}

impl<'c, R: Registry> TxQueue<'c, R> {
    pub(crate) fn new(
        port: Port<R>,
        q: QueueShm,
        cache: &'c MbufCache,
        driver: Box<dyn TxBurst>,
    ) -> Self {
        TxQueue {
            driver: R::tx(driver),
            q,
            port,
            cache,
        }
    }

    /// The port.
    pub fn port(&self) -> &Port<R> {
        &self.port
    }

    /// Sends packets from the front of `pkts` and removes the ones the port took (sent, or
    /// dropped by the driver and counted); returns how many. What is not taken stays in
    /// `pkts`, the caller's.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf<'c>>) -> usize {
        if !self.port.is_started() || pkts.is_empty() {
            return 0;
        }
        let before = pkts.len();
        let b = self.driver.tx_burst(&mut self.q, self.cache, pkts);
        self.q.count(&b);
        before - pkts.len()
    }

    /// Flushes buffered output (pcap) so readers see every packet sent so far, and does
    /// what [`idle`](Self::idle) does.
    pub fn flush(&mut self) {
        let b = self.driver.flush();
        self.q.count(&b);
        self.idle();
    }

    /// Call when the lcore has nothing to do (cheap: a load or two): a guest-facing port
    /// gives back guest buffers it took for sending and lands a free-ring publication it
    /// had to leave pending behind a slow guest, which a guest waiting on its own free
    /// ring needs even when no traffic comes.
    pub fn idle(&mut self) {
        self.driver.idle();
    }
}

impl<R: Registry> Drop for TxQueue<'_, R> {
    fn drop(&mut self) {
        self.flush();
    }
}
