//! The ring driver's data path between host processes: packets move through an SP/SC
//! ring at pointer speed, and ownership is recorded by location.
//!
//! Where it sits: a ring port's queue (`net_ring0`, or named rings) is a ring of mbuf
//! handles. Its producer is a tx queue's poller, its consumer an rx queue's poller, in the
//! same process (a loopback port forwarded by one lcore, DPDK's `testpmd` io over
//! `net_ring`) or in two. Host processes are trusted not to lie but not to stay alive, so
//! what must hold is that a kill at any instruction loses and duplicates no buffer.
//!
//! ```text
//!  producer P (tx burst)                 ring                       consumer (rx burst)
//!  ─────────────────────       ┌──────────────────────┐       ───────────────────────────
//!  local_owner == P:           │ L L L L t t          │       peek; read local_owner O
//!    h | LOCAL, no header      │ local entries (L)    │       L, O == me: take_local
//!    write, tag stays P  ────► │ keep tag O; others   │ ────►   (no header access)
//!  else (an earlier owner's    │ (t) are TRANSIT      │       L, O != me: CAS O -> me
//!    entries are still in):    └──────────────────────┘       t: CAS TRANSIT -> me
//!    TRANSIT + in-flight record      ▲ local_owner, local_until   release
//! ```
//!
//! - **Local entries** carry [`LOCAL`] in the handle; the ring's `local_owner` word names
//!   the process whose tag their headers still carry. Only the producer writes it, and it
//!   changes owner only once the consumer has passed `local_until`, a position at or past
//!   every local entry: so every local entry in the ring belongs to the current
//!   `local_owner`, and a consumer that reads it between its peek and its release (as
//!   [`ScRx::rx_burst`] does) attributes them rightly.
//! - **A consumer that is the owner** takes them with no header access at all, as
//!   `rte_ring` moves pointers; any other consumer claims each with a CAS of the tag, the
//!   one write where the packet changes process.
//! - **Crashes**: a killed producer or consumer leaves its buffers tagged with its own tag
//!   (unique per attachment), held or in the ring; the primary returns them by tag. An entry
//!   that stays in the ring after that is stale, and the consumer's CAS refuses it
//!   (counted). A consumer releases what it peeked only after it has claimed it, so a kill
//!   inside a burst leaves the burst in the ring for the next poller. A producer that
//!   cannot be the owner yet (an earlier owner's entries are still queued) puts packets in
//!   transit, listed in the queue's in-flight record with the ring position they go to,
//!   so the next poller frees exactly those that never reached the ring.
//! - Counted as DPDK's ring PMD counts: packets (the data is not touched, so no bytes).

use std::sync::atomic::Ordering;

use shm_mempool::{Mbuf, MbufCache, MbufHandle, OwnerTag};
use shm_ring::{Ring, ScConsumer, SpProducer};

use pmds_ethdev::layout::QueueBlock;

/// Handle bit of a local entry (pool ids are below 2^31, so real handles never set it).
pub const LOCAL: u64 = 1 << 63;

/// Positions a producer reserves ahead in `local_until` at a time (one store per this
/// many local entries; a takeover after a kill waits at most this much longer before it
/// becomes the owner).
const UNTIL_STEP: u32 = 1 << 16;

/// `a` is at or after `b` in free-running ring positions.
#[inline(always)]
fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// The consumer side: a single-consumer ring read with peek and release.
pub(crate) struct ScRx {
    pub(crate) cons: ScConsumer<u64>,
    pub(crate) ring: Ring<u64>,
}

/// What an rx burst did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RxDone {
    /// Handles refused (stale, duplicated or garbage): counted as errors.
    pub(crate) refused: u64,
    /// The ring's indices were impossible.
    pub(crate) corrupt: bool,
}

impl ScRx {
    /// Receives up to `max` packets into `out`.
    #[inline]
    pub(crate) fn rx_burst<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> RxDone {
        let mut done = RxDone::default();
        // What is peeked is all claimed before it is released, so `out` must hold it: a
        // caller that did not size it (not the engine's, which never allocates here) gets
        // the room made.
        if out.capacity() - out.len() < max {
            out.reserve(max);
        }
        let Ok(view) = self.cons.peek(max) else {
            done.corrupt = true;
            return done;
        };
        let n = view.len();
        if n == 0 {
            return done;
        }
        // Acquire: pairs with the producer's Release when it became the owner; read after
        // the peek and before the release (see the module docs: the owner cannot change
        // while local entries of it are unreleased here).
        let owner = self.ring.local_owner().load(Ordering::Acquire);
        let me = cache.owner().0;
        let (a, b) = view.slices();
        if owner == me {
            // Our own entries (nearly always all of them when one process holds both
            // ends): no header access, written straight into `out`.
            let took = cache.take_local_burst(a, LOCAL, out);
            if took == a.len() {
                let took_b = cache.take_local_burst(b, LOCAL, out);
                if took_b == b.len() {
                    view.release(n);
                    return done;
                }
                rx_rest(cache, owner, &b[took_b..], out, &mut done);
            } else {
                rx_rest(cache, owner, &a[took..], out, &mut done);
                rx_rest(cache, owner, b, out, &mut done);
            }
            view.release(n);
            return done;
        }
        rx_rest(cache, owner, a, out, &mut done);
        rx_rest(cache, owner, b, out, &mut done);
        shm::crash_point!("ring_port.rx_before_release");
        // Every entry is ours now (or refused): the slots go back to the producer.
        view.release(n);
        done
    }
}

/// io forwarding from one ring port to another, both held by this process: when every
/// entry of the rx burst is a local entry of ours and we own the tx ring, the handles
/// move from ring to ring as they are (`rte_ring` to `rte_ring`, as testpmd's io over
/// `net_ring`), no mbuf made or touched. `None`: the burst needs the general path (an
/// entry of another process, a transit one, a tx ring we do not own yet); nothing was
/// taken then. `Some((received, sent))`: `received` left the rx ring, `sent` of them went
/// into the tx ring, and the rest (the tx ring was full) are pushed into `unsent` as mbufs
/// for the caller to drop, as testpmd drops what its tx burst did not take.
///
/// Crash-exact as the two halves are: the entries are in the tx ring (committed) before
/// they leave the rx ring, so a kill in between leaves them in both, both local entries
/// carrying this process's tag; its end returns every buffer with that tag, and the
/// copies left in the rings are then refused as stale (no buffer lost, none used twice).
///
/// Inlined into the ring rx queue's `forward_to_ring`, which the facade's queue enum calls
/// statically: the whole io path compiles into the forwarding loop, as one crate would.
#[inline(always)]
pub(crate) fn forward_local<'c>(
    rx: &mut ScRx,
    tx: &mut SpTx,
    cache: &'c MbufCache,
    max: usize,
    unsent: &mut Vec<Mbuf<'c>>,
) -> Option<(usize, usize)> {
    if tx.transit_only || (!tx.owner && !tx.try_own()) {
        return None;
    }
    let view = rx.cons.peek(max.min(MAX_LOCAL_BURST)).ok()?;
    let n = view.len();
    if n == 0 {
        return Some((0, 0));
    }
    // Acquire: as in `ScRx::rx_burst`.
    if rx.ring.local_owner().load(Ordering::Acquire) != cache.owner().0 {
        return None;
    }
    let (a, b) = view.slices();
    if !cache.all_local(a, LOCAL)
        || !cache.all_local(b, LOCAL)
        || unsent.capacity() - unsent.len() < n
    {
        return None;
    }
    let pos = tx.prod.position();
    let Ok(mut slots) = tx.prod.reserve(n) else {
        return None;
    };
    let room = slots.len();
    // `local_until` at or past every local entry before any is published (as `tx_burst`).
    let end = pos.wrapping_add(room as u32);
    let until = tx.ring.local_until();
    if !at_or_after(until.load(Ordering::Relaxed), end) {
        until.store(end.wrapping_add(UNTIL_STEP), Ordering::Relaxed);
    }
    let (da, db) = slots.slices();
    copy_wrapped((a, b), (da, db));
    shm::crash_point!("ring_port.tx_before_commit");
    slots.commit(room);
    if room < n {
        // The tx ring was full: the rest are ours, made mbufs to be dropped.
        let (ra, rb) = if room < a.len() {
            (&a[room..], b)
        } else {
            (&b[..0], &b[room - a.len()..])
        };
        cache.take_local_burst(ra, LOCAL, unsent);
        cache.take_local_burst(rb, LOCAL, unsent);
    }
    shm::crash_point!("ring_port.rx_before_release");
    view.release(n);
    Some((n, room))
}

/// Copies the front of `a ‖ b` (a ring's two-part view) into `da ‖ db` (a reservation's
/// two parts), as many as `da ‖ db` holds: at most three slice copies.
#[inline(always)]
fn copy_wrapped((a, b): (&[u64], &[u64]), (da, db): (&mut [u64], &mut [u64])) {
    let room = da.len() + db.len();
    let (mut i, mut j) = (0usize, 0usize);
    // Walk both sides in runs: each step copies the longest run that is contiguous in
    // both source and destination.
    let mut done = 0;
    while done < room {
        let (s, si) = if i < a.len() {
            (a, i)
        } else {
            (b, i - a.len())
        };
        let (d, dj): (&mut [u64], usize) = if j < da.len() {
            (&mut *da, j)
        } else {
            (&mut *db, j - da.len())
        };
        let k = (s.len() - si).min(d.len() - dj).min(room - done);
        d[dj..dj + k].copy_from_slice(&s[si..si + k]);
        i += k;
        j += k;
        done += k;
    }
}

/// Claims `handles` (entries of another process, transit ones, or handles the burst
/// path stopped at), for an rx burst of a ring whose local owner is `owner`: one
/// [`MbufCache::adopt_burst`], which starts every header's transfer before the first claim.
#[inline]
fn rx_rest<'c>(
    cache: &'c MbufCache,
    owner: u32,
    handles: &[u64],
    out: &mut Vec<Mbuf<'c>>,
    done: &mut RxDone,
) {
    let (_, refused) = cache.adopt_burst(handles, LOCAL, OwnerTag(owner), out);
    done.refused += refused;
}

/// The producer side: a single-producer ring, written locally when this process can be
/// the ring's owner, through transit otherwise.
pub(crate) struct SpTx {
    pub(crate) prod: SpProducer<u64>,
    pub(crate) ring: Ring<u64>,
    /// This process is the ring's `local_owner` (only we change it while we produce).
    owner: bool,
    /// Our tag.
    me: u32,
    /// A guest (`OwnerTag::GUEST`) never hands off locally: the host's guest-facing side
    /// takes only transit handles of the guest's pool through its choke point.
    transit_only: bool,
}

/// How long a producer leaving a ring waits for a live consumer in another process to
/// take more of its local entries (see [`SpTx::release`]): the wait goes on while the
/// consumer keeps taking them, up to [`DRAIN_MAX`].
pub const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest a leaving producer waits for a consumer that keeps taking its entries.
pub const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Most packets one local burst moves.
const MAX_LOCAL_BURST: usize = pmds_ethdev::MAX_BURST;

impl SpTx {
    /// The producer of `ring` for the process tagged `me`. A producer before us that was
    /// killed may have left `local_until` far ahead of what it published (it reserves
    /// ahead); what it published is all that counts, so the bound restarts at the
    /// published tail.
    pub(crate) fn new(ring: Ring<u64>, prod: SpProducer<u64>, me: OwnerTag) -> SpTx {
        // Relaxed: we hold the producer role, the only writer of both words.
        let owner = ring.local_owner().load(Ordering::Relaxed);
        if owner != me.0 && owner != 0 {
            // Every local entry is published, so below the tail: the tail is a bound, and
            // an exact one, whatever the earlier producer reserved ahead.
            ring.local_until().store(prod.position(), Ordering::Relaxed);
        }
        let transit_only = me == OwnerTag::GUEST;
        SpTx {
            owner: owner == me.0 && !transit_only,
            me: me.0,
            transit_only,
            prod,
            ring,
        }
    }

    /// Becomes the ring's owner if no earlier owner's entries are left in it.
    #[cold]
    fn try_own(&mut self) -> bool {
        let ring = &self.ring;
        // Relaxed: only the producer (us) writes these.
        let cur = ring.local_owner().load(Ordering::Relaxed);
        if cur != 0 && cur != self.me {
            let until = ring.local_until().load(Ordering::Relaxed);
            if !at_or_after(ring.cons_tail(), until) {
                return false;
            }
        }
        ring.local_until().store(
            self.prod.position().wrapping_add(UNTIL_STEP),
            Ordering::Relaxed,
        );
        // Release: pairs with the consumer's Acquire load after its peek; the entries we
        // write from now on are published after this (by the ring's R1).
        ring.local_owner().store(self.me, Ordering::Release);
        self.owner = true;
        true
    }

    /// Sends from the front of `pkts` (removing what went); returns how many. `record` is
    /// the queue's in-flight record, used only on the transit path; without one (an
    /// application ring) nothing is sent until this process can be the owner.
    #[inline]
    pub(crate) fn tx_burst<'c>(
        &mut self,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
        record: Option<(&QueueBlock, &mut [u64])>,
    ) -> usize {
        if self.transit_only || (!self.owner && !self.try_own()) {
            return match record {
                Some((block, record)) => self.tx_transit(cache, pkts, block, record),
                None => 0,
            };
        }
        let k = pkts.len().min(MAX_LOCAL_BURST);
        if k == 0 {
            return 0;
        }
        let pos = self.prod.position();
        let Ok(mut slots) = self.prod.reserve(k) else {
            return 0;
        };
        let room = slots.len();
        // `local_until` at or past every local entry before any is published. Relaxed:
        // only we write it; a later owner reads it after our role is released.
        let end = pos.wrapping_add(room as u32);
        let until = self.ring.local_until();
        if !at_or_after(until.load(Ordering::Relaxed), end) {
            until.store(end.wrapping_add(UNTIL_STEP), Ordering::Relaxed);
        }
        let (a, b) = slots.slices();
        let mut sent = cache.give_local_burst(pkts, LOCAL, a);
        if sent == a.len() {
            sent += cache.give_local_burst(pkts, LOCAL, b);
        }
        // A clone, or an mbuf of another cache, ended the burst: one by one from there,
        // until one cannot be handed off (a clone still shared stays the caller's).
        while sent < room && !pkts.is_empty() {
            let m = pkts.remove(0);
            match m.into_local() {
                Ok(h) => {
                    let slot = if sent < a.len() {
                        &mut a[sent]
                    } else {
                        &mut b[sent - a.len()]
                    };
                    *slot = h.0 | LOCAL;
                    sent += 1;
                }
                Err(m) => {
                    pkts.insert(0, m);
                    break;
                }
            }
        }
        shm::crash_point!("ring_port.tx_before_commit");
        slots.commit(sent);
        sent
    }

    /// The transit path (we cannot be the owner yet): each packet tagged TRANSIT and listed
    /// in the in-flight record with the ring position it goes to.
    #[cold]
    fn tx_transit<'c>(
        &mut self,
        cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
        block: &QueueBlock,
        record: &mut [u64],
    ) -> usize {
        let k = pkts
            .iter()
            .take(record.len())
            .take_while(|m| !m.is_shared())
            .count();
        // Relaxed: read by the next poller after our claim is released (Release/Acquire).
        block.tx_from.store(self.prod.position(), Ordering::Relaxed);
        for (i, (slot, m)) in record.iter_mut().zip(pkts.drain(..k)).enumerate() {
            *slot = m.into_transit().map(|h| h.0).unwrap_or(0);
            // Release: the handle above before the count that lists it.
            block.inflight.store(i as u32 + 1, Ordering::Release);
        }
        let pushed = self.prod.enqueue_burst(&record[..k]).unwrap_or(0);
        // Enqueued handles belong to the ring now; the rest come back to the caller.
        let back: Vec<Mbuf<'c>> = record[pushed..k]
            .iter()
            .filter_map(|&h| cache.reclaim(MbufHandle(h)).ok())
            .collect();
        block.inflight.store(0, Ordering::Release);
        if !back.is_empty() {
            pkts.splice(0..0, back);
        }
        pushed
    }

    /// Gives up the role (the queue is dropped): the bound becomes exact, so the next
    /// producer becomes the owner as soon as the consumer has passed our last entry.
    ///
    /// Local entries still queued carry our tag, and when this process ends the primary
    /// returns every buffer with its tag, those too (the consumer then refuses the stale
    /// entries): so a producer that leaves while another live process consumes the ring
    /// first waits for it to take what was sent, as long as it keeps taking (up to
    /// [`DRAIN_WAIT`] without progress, [`DRAIN_MAX`] in all).
    pub(crate) fn release(&mut self) {
        if self.owner {
            let consumer = self.ring.consumer_process();
            if let Some(consumer) = consumer.filter(|c| c.pid != std::process::id()) {
                let end = self.prod.position();
                let t0 = std::time::Instant::now();
                let (mut seen, mut moved) = (self.ring.cons_tail(), t0);
                // While it keeps taking them: a consumer slower than we were (a loaded
                // machine) is waited for, one that stopped taking is not.
                while !at_or_after(seen, end)
                    && moved.elapsed() < DRAIN_WAIT
                    && t0.elapsed() < DRAIN_MAX
                    && !consumer.is_gone()
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let now = self.ring.cons_tail();
                    if now != seen {
                        (seen, moved) = (now, std::time::Instant::now());
                    }
                }
            }
            // Relaxed: the role's release (Release) orders it for the next producer.
            self.ring
                .local_until()
                .store(self.prod.position(), Ordering::Relaxed);
        }
    }
}

/// Sends mbufs through a single-producer ring of handles, crash-exact and at pointer speed
/// (see the [module docs](self)): what a process does that moves packets to another one
/// (or to itself) through an application ring instead of a port. Pair it with
/// [`MbufReceiver`] on the ring's single consumer.
pub struct MbufSender {
    tx: SpTx,
}

impl std::fmt::Debug for MbufSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufSender")
            .field("ring", &self.tx.ring.name())
            .finish()
    }
}

impl MbufSender {
    /// Claims the producer role of `ring` (single-producer) for the process tagged `me`.
    ///
    /// # Errors
    /// The ring's error: not single-producer, role taken, corrupt.
    pub fn new(ring: &Ring<u64>, me: OwnerTag) -> Result<MbufSender, shm_ring::RingError> {
        let prod = ring.sp_producer()?;
        Ok(MbufSender {
            tx: SpTx::new(ring.clone(), prod, me),
        })
    }

    /// Sends from the front of `pkts` (what went leaves it); returns how many. Nothing goes
    /// while entries of an earlier producer process are still queued (it returns 0, as
    /// for a full ring), nor a clone still shared.
    pub fn send<'c>(&mut self, cache: &'c MbufCache, pkts: &mut Vec<Mbuf<'c>>) -> usize {
        self.tx.tx_burst(cache, pkts, None)
    }
}

impl Drop for MbufSender {
    fn drop(&mut self) {
        self.tx.release();
    }
}

/// Receives mbufs from a single-consumer ring that an [`MbufSender`] (or a ring port's tx
/// queue) feeds: a kill at any point loses nothing (what was peeked stays in the ring
/// until claimed).
pub struct MbufReceiver {
    rx: ScRx,
}

impl std::fmt::Debug for MbufReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufReceiver")
            .field("ring", &self.rx.ring.name())
            .finish()
    }
}

impl MbufReceiver {
    /// Claims the consumer role of `ring` (single-consumer).
    ///
    /// # Errors
    /// The ring's error: not single-consumer, role taken, corrupt.
    pub fn new(ring: &Ring<u64>) -> Result<MbufReceiver, shm_ring::RingError> {
        Ok(MbufReceiver {
            rx: ScRx {
                cons: ring.sc_consumer()?,
                ring: ring.clone(),
            },
        })
    }

    /// Receives up to `max` mbufs into `out` (give it the capacity: nothing is allocated);
    /// returns how many arrived and how many handles were refused (stale or garbage,
    /// counted in the pool's statistics too).
    pub fn recv<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> (usize, u64) {
        let before = out.len();
        let done = self.rx.rx_burst(cache, out, max);
        (out.len() - before, done.refused)
    }
}
