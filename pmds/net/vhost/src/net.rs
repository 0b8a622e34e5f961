//! virtio-net over split virtqueues, device side: packets from the guest's transmit queue
//! become mbufs ([`NetQueue::dequeue`]), mbufs are written into the guest's receive buffers
//! ([`NetQueue::enqueue`]). Both copy at the boundary (guest memory is the guest's, mbufs
//! are ours) and publish used elements once per burst. When the driver negotiated
//! `VIRTIO_F_IN_ORDER`, a transmit burst goes back as one used element naming its last
//! chain (the receive queue still writes one per chain: the driver needs each length).
//!
//! Every packet starts with a `virtio_net_hdr` (virtio 1.x §5.1.6): 12 bytes with
//! `VIRTIO_F_VERSION_1` or `VIRTIO_NET_F_MRG_RXBUF` (the last two are `num_buffers`), 10
//! without. We offer no offloads, so received headers are ignored and sent ones are zero
//! but for `num_buffers`.

use shm_mempool::{Mbuf, MbufCache};

use super::vring::{ChainError, SplitRing};
use pmds_common_vhost_user::peer_mem::PeerSpan;

pub use pmds_common_virtio::features::{
    header_len, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_INDIRECT_DESC,
};
pub use pmds_common_virtio::split::VRING_USED_F_NO_NOTIFY;
/// Largest frame accepted from a guest (header excluded).
pub const MAX_FRAME: usize = 9728;

/// What one burst did besides moving packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BurstOutcome {
    /// Packets moved.
    pub packets: usize,
    /// Bytes moved (frames, headers excluded).
    pub bytes: u64,
    /// Chains refused as malformed (returned to the guest empty).
    pub bad_chains: u64,
    /// Frames dropped for want of an mbuf (guest to host) or too large for the guest's
    /// buffers without mergeable buffers (host to guest).
    pub dropped: u64,
    /// The driver asked to be interrupted for the used elements.
    pub notify: bool,
    /// The ring itself is impossible (its avail index): stop using it.
    pub broken: bool,
}

/// One direction of one queue pair, polled by one thread.
#[derive(Debug)]
pub struct NetQueue {
    ring: SplitRing,
    hdr_len: usize,
    mergeable: bool,
    /// `VIRTIO_F_IN_ORDER` negotiated: the transmit queue returns each burst with one used
    /// element.
    in_order: bool,
}

impl NetQueue {
    /// A queue over a started ring, for the negotiated `features`.
    pub fn new(ring: SplitRing, features: u64) -> NetQueue {
        ring.set_used_flags(VRING_USED_F_NO_NOTIFY);
        NetQueue {
            ring,
            hdr_len: header_len(features),
            mergeable: features & VIRTIO_NET_F_MRG_RXBUF != 0,
            in_order: features & VIRTIO_F_IN_ORDER != 0,
        }
    }

    /// The next available index (what `GET_VRING_BASE` reports).
    pub fn last_avail(&self) -> u16 {
        self.ring.last_avail
    }

    /// Guest transmit queue: up to `max` frames into mbufs from `cache`, appended to `out`.
    pub fn dequeue<'c>(
        &mut self,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> BurstOutcome {
        let mut o = BurstOutcome::default();
        let pending = match self.ring.pending() {
            Ok(n) => usize::from(n).min(max),
            Err(_) => {
                o.broken = true;
                return o;
            }
        };
        self.ring.prefetch_pending(pending as u16, false);
        // The burst's mbufs in one pool call when the pool has them (a get per packet
        // was a tenth of the work); packet k then goes into `out[start + k]`, and what a
        // bad chain left unused goes back at the end.
        let start = out.len();
        let bulk = pending > 0 && cache.alloc_bulk(out, pending).is_ok();
        for _ in 0..pending {
            let head = self.ring.take_head();
            match self.ring.walk(head, false) {
                Ok((n, total)) => {
                    let frame_len = (total as usize).saturating_sub(self.hdr_len);
                    if total < self.hdr_len as u64 || frame_len > MAX_FRAME {
                        o.bad_chains += 1;
                    } else {
                        let slot = start + o.packets;
                        // Into the burst's mbuf when the frame fits it (the common case);
                        // a larger frame takes a fresh chain.
                        // `slot < out.len()` whenever `bulk` (one mbuf per pending chain).
                        let room = out.get_mut(slot).filter(|_| bulk);
                        let stored = match room {
                            Some(m) if frame_len <= m.tailroom() => self.copy_frame(cache, m, n),
                            room => match cache.alloc() {
                                Some(mut m) => {
                                    let ok = self.copy_frame(cache, &mut m, n);
                                    match room {
                                        Some(r) if ok => *r = m,
                                        None if ok => out.push(m),
                                        _ => {}
                                    }
                                    ok
                                }
                                None => false,
                            },
                        };
                        if stored {
                            o.packets += 1;
                            o.bytes += frame_len as u64;
                        } else {
                            o.dropped += 1;
                        }
                    }
                    self.give_back(head);
                }
                Err(ChainError::IndexOutOfRange) => {
                    // Not a head we can return: the guest loses that entry, not us.
                    o.bad_chains += 1;
                }
                Err(_) => {
                    o.bad_chains += 1;
                    self.give_back(head);
                }
            }
        }
        if bulk {
            out.truncate(start + o.packets);
        }
        o.notify = self.ring.publish();
        o
    }

    /// Returns a transmitted chain (nothing written into it): one used element per chain,
    /// or per burst when the driver negotiated in-order (we take chains in avail order).
    #[inline]
    fn give_back(&mut self, head: u16) {
        if self.in_order {
            self.ring.push_used_in_order(head);
        } else {
            self.ring.push_used(head, 0);
        }
    }

    /// Appends the frame of the walked chain (`n` buffers, header skipped) to `m`, copied
    /// out of guest memory ([`PeerSpan::append_to`]); false when the pool runs dry. The
    /// guest may change its buffers while we copy, which can only spoil its own packet.
    #[inline(always)]
    fn copy_frame<'c>(&self, cache: &'c MbufCache, m: &mut Mbuf<'c>, n: usize) -> bool {
        let mut skip = self.hdr_len;
        for s in self.ring.segs().get(..n).unwrap_or(&[]) {
            let len = s.len();
            if skip >= len {
                skip -= len;
                continue;
            }
            if !s.append_to(skip, len - skip, cache, m) {
                return false;
            }
            skip = 0;
        }
        true
    }

    /// Guest receive queue: writes frames from the front of `pkts` into the guest's
    /// buffers, removing the ones written (their mbufs are freed); what does not fit for
    /// want of buffers stays in `pkts`.
    pub fn enqueue(&mut self, pkts: &mut Vec<Mbuf<'_>>) -> BurstOutcome {
        let mut o = BurstOutcome::default();
        let mut avail = match self.ring.pending() {
            Ok(n) => n,
            Err(_) => {
                o.broken = true;
                return o;
            }
        };
        self.ring.prefetch_pending(
            avail.min(u16::try_from(pkts.len()).unwrap_or(u16::MAX)),
            true,
        );
        let mut done = 0;
        'packets: for m in pkts.iter() {
            // Fast path: a one-segment packet that fits the first buffer of the next chain
            // (what every driver posts for mergeable buffers). Anything else goes back and
            // takes the general path below.
            if avail > 0 && m.nb_segs() == 1 {
                let frame = m.data();
                let head = self.ring.take_head();
                if self.ring.walk(head, true).is_ok() {
                    let buf = self.ring.segs()[0];
                    // The first buffer of a checked, device-writable chain with room for
                    // the header and the frame (our mbuf's bytes).
                    if buf.len() >= self.hdr_len + frame.len() {
                        write_header(&buf, self.hdr_len);
                        buf.copy_in(self.hdr_len, frame);
                        avail -= 1;
                        self.ring
                            .push_used(head, (self.hdr_len + frame.len()) as u32);
                        o.packets += 1;
                        o.bytes += frame.len() as u64;
                        done += 1;
                        continue;
                    }
                }
                self.ring.untake(1);
            }
            let need = self.hdr_len + m.pkt_len() as usize;
            // Chains used by this packet: (head, bytes written).
            let mut chains: [(u16, u32); 16] = [(0, 0); 16];
            let mut nchains = 0usize;
            let mut written = 0usize;
            let mut first = PeerSpan::EMPTY;
            let mut src = PacketCursor::new(m.segments(), self.hdr_len);
            while written < need {
                let full = nchains == chains.len() || (nchains == 1 && !self.mergeable);
                if full {
                    // Does not fit what the guest may give one packet: drop it, return
                    // its buffers empty.
                    for &(head, _) in chains.get(..nchains).unwrap_or(&[]) {
                        self.ring.push_used(head, 0);
                    }
                    o.dropped += 1;
                    done += 1;
                    continue 'packets;
                }
                if avail == 0 {
                    // Out of buffers: give back what this packet took, keep it, stop.
                    self.ring.untake(nchains as u16);
                    break 'packets;
                }
                let head = self.ring.take_head();
                avail -= 1;
                let n = match self.ring.walk(head, true) {
                    // The header must sit in the first buffer (as every driver gives it).
                    Ok((n, _)) if nchains > 0 || self.ring.segs()[0].len() >= self.hdr_len => n,
                    other => {
                        o.bad_chains += 1;
                        if other != Err(ChainError::IndexOutOfRange) {
                            self.ring.push_used(head, 0);
                        }
                        continue;
                    }
                };
                if nchains == 0 {
                    first = self.ring.segs()[0];
                }
                let mut in_chain = 0usize;
                for s in self.ring.segs().get(..n).unwrap_or(&[]) {
                    // A checked, device-writable guest buffer.
                    in_chain += src.fill(s);
                    if src.done() {
                        break;
                    }
                }
                written += in_chain;
                if let Some(c) = chains.get_mut(nchains) {
                    *c = (head, in_chain as u32);
                }
                nchains += 1;
            }
            if self.hdr_len == 12 {
                // `first` is the first buffer of a checked writable chain, at least
                // `hdr_len` = 12 bytes long; num_buffers is its last two bytes.
                first.copy_in(10, &(nchains as u16).to_le_bytes());
            }
            for &(head, len) in chains.get(..nchains).unwrap_or(&[]) {
                self.ring.push_used(head, len);
            }
            o.packets += 1;
            o.bytes += u64::from(m.pkt_len());
            done += 1;
        }
        pkts.drain(..done);
        o.notify = self.ring.publish();
        o
    }
}

/// Writes a virtio-net header for one packet at the start of `dst` (a guest buffer of at
/// least `hdr_len` bytes): zeros (no offloads), and num_buffers = 1 when the header has
/// that field (12 bytes). Two 8-byte stores where they fit; a `fill` call would cost more
/// than the rest of the header's work.
#[inline(always)]
fn write_header(dst: &PeerSpan, hdr_len: usize) {
    if hdr_len == 12 || hdr_len == 10 {
        // Bytes [0, 8) and [hdr_len - 8, hdr_len): both inside the header.
        let tail: u64 = if hdr_len == 12 {
            // Bytes 4..12: zeros, then num_buffers = 1 (little-endian) at bytes 10..12.
            1 << 48
        } else {
            0
        };
        dst.copy_in(0, &[0; 8]);
        dst.copy_in(hdr_len - 8, &tail.to_le_bytes());
    } else {
        dst.zero(0, hdr_len);
    }
}

/// Reads a virtio-net header (zeros) followed by a packet's bytes, in pieces.
struct PacketCursor<'a, I: Iterator<Item = &'a [u8]>> {
    hdr_left: usize,
    segs: I,
    cur: &'a [u8],
}

impl<'a, I: Iterator<Item = &'a [u8]>> PacketCursor<'a, I> {
    fn new(segs: I, hdr_len: usize) -> PacketCursor<'a, I> {
        let mut c = PacketCursor {
            hdr_left: hdr_len,
            segs,
            cur: &[],
        };
        c.advance();
        c
    }

    /// Moves to the next non-empty segment once the current one is used up.
    fn advance(&mut self) {
        while self.cur.is_empty() {
            match self.segs.next() {
                Some(s) => self.cur = s,
                None => return,
            }
        }
    }

    fn done(&self) -> bool {
        self.hdr_left == 0 && self.cur.is_empty()
    }

    /// Copies as much as fits into `dst` (a guest buffer, written only through its
    /// accessors); returns how many bytes.
    fn fill(&mut self, dst: &PeerSpan) -> usize {
        let len = dst.len();
        let mut k = 0;
        if self.hdr_left > 0 {
            let h = self.hdr_left.min(len);
            dst.zero(0, h);
            self.hdr_left -= h;
            k = h;
        }
        while k < len && !self.cur.is_empty() {
            let c = self.cur.len().min(len - k);
            // `[k, k + c)` is inside `dst`; the source is our own mbuf's data.
            dst.copy_in(k, self.cur.get(..c).unwrap_or(&[]));
            k += c;
            self.cur = self.cur.get(c..).unwrap_or(&[]);
            self.advance();
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::super::vring::tests::{FakeGuest, BUFS};
    use super::super::vring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use super::*;
    use shm::{Memseg, Region};
    use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};

    fn pool() -> MbufPool {
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "vhost", 1).unwrap();
        seg.mark_ready();
        MbufPool::create(&seg, "m", &MbufPoolParams::new(255, 0, 1)).unwrap()
    }

    const FEATURES: u64 = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF;

    #[test]
    fn guest_frames_become_mbufs_and_bad_chains_are_counted() {
        let mut g = FakeGuest::new(8);
        let ring = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
        let mut q = NetQueue::new(ring, FEATURES);
        let pool = pool();
        let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
        // Frame 1: header and 60 bytes in one buffer. Frame 2: header alone, then the
        // frame in two buffers. Then a chain with a buffer outside guest memory.
        let frame: Vec<u8> = (0..60u8).collect();
        for (i, b) in frame.iter().enumerate() {
            g.write(BUFS + 12 + i as u64, *b);
        }
        g.desc(0, BUFS, 72, 0, 0);
        g.offer(0);
        g.desc(1, BUFS + 0x1000, 12, VRING_DESC_F_NEXT, 2);
        g.desc(2, BUFS + 12, 30, VRING_DESC_F_NEXT, 3);
        g.desc(3, BUFS + 42, 30, 0, 0);
        g.offer(1);
        g.desc(4, 0x4000_0000, 100, 0, 0);
        g.offer(4);
        let mut out = Vec::new();
        let o = q.dequeue(&cache, &mut out, 32);
        assert_eq!(o.packets, 2);
        assert_eq!(o.bad_chains, 1);
        assert!(o.notify);
        assert_eq!(out[0].data(), &frame[..]);
        assert_eq!(out[1].to_vec(), frame);
        assert_eq!(g.used_idx(), 3, "every chain went back, the bad one too");
        drop(out);
        assert_eq!(pool.mempool().stats().available, 255);
    }

    #[test]
    fn mbufs_fill_guest_buffers_with_num_buffers_set() {
        let mut g = FakeGuest::new(8);
        let ring = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
        let mut q = NetQueue::new(ring, FEATURES);
        let pool = pool();
        let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
        // Three writable buffers of 64 bytes, one per chain: a 100-byte frame needs two.
        for i in 0..3u16 {
            g.desc(i, BUFS + 0x100 * u64::from(i), 64, VRING_DESC_F_WRITE, 0);
            g.offer(i);
        }
        let frame: Vec<u8> = (0..100u8).collect();
        let mut pkts = vec![
            cache.alloc_from(&frame).unwrap(),
            cache.alloc_from(&frame).unwrap(),
        ];
        let o = q.enqueue(&mut pkts);
        assert_eq!(o.packets, 1, "the second frame waits for buffers");
        assert_eq!(pkts.len(), 1, "and stays the caller's");
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.used_elem(0), (0, 64));
        assert_eq!(g.used_elem(1), (1, 48));
        assert_eq!(g.read::<u16>(BUFS + 10), 2, "num_buffers");
        let mut got = Vec::new();
        for i in 12..64 {
            got.push(g.read::<u8>(BUFS + i));
        }
        for i in 0..48 {
            got.push(g.read::<u8>(BUFS + 0x100 + i));
        }
        assert_eq!(got, frame);
        drop(pkts);
        assert_eq!(pool.mempool().stats().available, 255);
    }

    #[test]
    fn one_buffer_frames_take_the_fast_path_and_bad_chains_the_general_one() {
        // Version 1 (12-byte header with num_buffers) and legacy (10 bytes, no field).
        for (features, hdr) in [(FEATURES, 12u64), (0, 10)] {
            let mut g = FakeGuest::new(8);
            let ring = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
            let mut q = NetQueue::new(ring, features);
            let pool = pool();
            let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
            // Stale bytes in the buffers, so the header's zeros are seen to be written.
            for i in 0..0x300 {
                g.write(BUFS + i, 0xff);
            }
            g.desc(0, BUFS, 128, VRING_DESC_F_WRITE, 0);
            g.offer(0);
            g.desc(1, 0x4000_0000, 128, VRING_DESC_F_WRITE, 0);
            g.offer(1);
            g.desc(2, BUFS + 0x200, 128, VRING_DESC_F_WRITE, 0);
            g.offer(2);
            let a: Vec<u8> = (0..60u8).collect();
            let b: Vec<u8> = (100..164u8).collect();
            let mut pkts = vec![cache.alloc_from(&a).unwrap(), cache.alloc_from(&b).unwrap()];
            let o = q.enqueue(&mut pkts);
            assert_eq!((o.packets, o.bad_chains, o.dropped), (2, 1, 0));
            assert_eq!(o.bytes, 124);
            assert!(pkts.is_empty());
            assert_eq!(g.used_idx(), 3);
            assert_eq!(g.used_elem(0), (0, hdr as u32 + 60));
            assert_eq!(g.used_elem(1), (1, 0), "the bad chain goes back empty");
            assert_eq!(g.used_elem(2), (2, hdr as u32 + 64));
            for (base, frame) in [(BUFS, &a), (BUFS + 0x200, &b)] {
                let header: Vec<u8> = (0..hdr).map(|i| g.read::<u8>(base + i)).collect();
                let mut want = vec![0u8; hdr as usize];
                if hdr == 12 {
                    want[10] = 1; // num_buffers
                }
                assert_eq!(header, want);
                let got: Vec<u8> = (0..frame.len() as u64)
                    .map(|i| g.read::<u8>(base + hdr + i))
                    .collect();
                assert_eq!(&got, frame);
                assert_eq!(g.read::<u8>(base + hdr + frame.len() as u64), 0xff);
            }
            assert_eq!(pool.mempool().stats().available, 255);
        }
    }

    #[test]
    fn in_order_transmit_bursts_come_back_as_one_used_element() {
        let mut g = FakeGuest::new(8);
        let ring = SplitRing::start(g.mem.clone(), &g.addrs()).unwrap();
        let mut q = NetQueue::new(ring, FEATURES | VIRTIO_F_IN_ORDER);
        let pool = pool();
        let cache = pool.cache(OwnerTag::PRIMARY).unwrap();
        // Used element 1 holds a stale value: an in-order device must not write it.
        g.set_used_elem(1, (7, 7));
        for i in 0..3u16 {
            g.desc(i, BUFS + 0x100 * u64::from(i), 72, 0, 0);
            g.offer(i);
        }
        let mut out = Vec::new();
        let o = q.dequeue(&cache, &mut out, 32);
        assert_eq!(o.packets, 3);
        assert_eq!(g.used_idx(), 3, "the used index moves by one per chain");
        assert_eq!(g.used_elem(0), (2, 0), "one element, naming the last chain");
        assert_eq!(g.used_elem(1), (7, 7), "the skipped slots are not written");
        // The next burst's element goes where its first chain sits; a bad chain is part
        // of the batch like any other.
        g.desc(3, BUFS, 72, 0, 0);
        g.offer(3);
        g.desc(4, 0x4000_0000, 100, 0, 0);
        g.offer(4);
        let o = q.dequeue(&cache, &mut out, 32);
        assert_eq!((o.packets, o.bad_chains), (1, 1));
        assert_eq!(g.used_idx(), 5);
        assert_eq!(g.used_elem(3), (4, 0));
        drop(out);
        assert_eq!(pool.mempool().stats().available, 255);
    }
}
