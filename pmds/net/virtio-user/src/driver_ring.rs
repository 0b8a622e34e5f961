//! The driver side of one split virtqueue (virtio 1.x §2.7) for `net_virtio_user`: we
//! fill descriptors and `avail.ring`, then publish `avail.idx` with **Release (D1)**; we
//! read `used.idx` with **Acquire (D2)** before the used elements and the bytes the device
//! wrote. Before deciding whether to kick, a **SeqCst fence (D3)** orders our `avail.idx`
//! store before the load of the device's `used.flags`.
//!
//! Descriptor `d` always names buffer slot `d` of the ring (see
//! [`crate::frontend_mem`]): nothing but a token per descriptor records what is in
//! flight, in our private memory. The used elements the device returns are checked
//! (index in range, a buffer we posted, a length that fits) like anything else read
//! from shared memory.
//!
//! With `VIRTIO_F_IN_ORDER` (virtio 1.x §2.7.9; DPDK's vhost and ours offer it) the
//! descriptor of a post is its avail position, so the device returns buffers in the order
//! they were posted and may return a batch with one used element naming its last buffer;
//! the buffers before it were used whole. Posting only ever uses descriptors outside the
//! outstanding window, so a device that names the wrong buffer costs an error, not a
//! descriptor in use twice.
//!
//! The rings and slots are the port's memory, which the device writes too: they are
//! reached only through [`PeerSpan`]'s checked accessors (no `unsafe` here).

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::frontend_mem::SLOT_BYTES;
use pmds_common_vhost_user::peer_mem::{PeerArray, PeerSpan};
use pmds_common_virtio::split::{Desc, VRING_USED_F_NO_NOTIFY};

/// Default entries per virtqueue (DPDK's virtio-user default).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// A buffer slot's bytes.
const SLOT: usize = SLOT_BYTES as usize;
/// No buffer at this descriptor.
pub(crate) const NONE: u64 = u64::MAX;
/// Used length of a buffer an in-order device returned without an element of its own:
/// the whole buffer (virtio 1.x §2.7.9).
pub const WHOLE_BUFFER: u32 = u32::MAX;

/// One virtqueue's driver state, handed from queue object to queue object.
pub struct DriverRing {
    /// The descriptor table, driver area and device area, in the port's memory (kept
    /// mapped by the device, which drops its rings first).
    desc: PeerArray<Desc>,
    avail: PeerSpan,
    avail_ring: PeerArray<u16>,
    used: PeerSpan,
    used_ring: PeerArray<[u32; 2]>,
    size: u16,
    avail_idx: u16,
    last_used: u16,
    /// The device's used index as last loaded (see [`DriverRing::used_limit`]).
    seen_used: u16,
    /// Free descriptor ids (a stack) when not in order.
    free: Vec<u16>,
    /// `VIRTIO_F_IN_ORDER` negotiated: descriptors are posted in ring order (id = avail
    /// position masked) and come back in that order; `free` is unused.
    in_order: bool,
    /// In order: avail position of the oldest buffer the device has not returned.
    next_reclaim: u16,
    /// In order: buffers of the current used batch not handed out yet, and the length
    /// the device gave the batch's last buffer (the others were used whole).
    batch_left: u16,
    batch_len: u32,
    inflight: Vec<u64>,
    /// Where each posted buffer starts (for prefetching what the device wrote).
    addrs: Vec<u64>,
    /// The ring's buffer slots: descriptor `d` owns slot `d` ([`SLOT_BYTES`]).
    bufs: PeerArray<[u8; SLOT]>,
    kick: Arc<File>,
}

impl std::fmt::Debug for DriverRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverRing")
            .field("size", &self.size)
            .field("avail_idx", &self.avail_idx)
            .field("last_used", &self.last_used)
            .finish()
    }
}

impl DriverRing {
    /// A fresh ring of `size` entries whose areas are `desc`, `avail` and `used` in our
    /// memory (zeroed), with `size` buffer slots in `bufs`, kicked through `kick`; `None`
    /// when the areas do not hold `size` entries (aligned) or `size` is not a power of two.
    pub(crate) fn new(
        desc: PeerSpan,
        avail: PeerSpan,
        used: PeerSpan,
        (size, in_order): (u16, bool),
        bufs: PeerSpan,
        kick: File,
    ) -> Option<DriverRing> {
        let n = usize::from(size);
        Some(DriverRing {
            desc: desc.array::<Desc>(0, n)?,
            avail,
            avail_ring: avail.array::<u16>(4, n)?,
            used,
            used_ring: used.array::<[u32; 2]>(4, n)?,
            size,
            avail_idx: 0,
            last_used: 0,
            seen_used: 0,
            free: if in_order {
                Vec::new()
            } else {
                (0..size).rev().collect()
            },
            in_order,
            next_reclaim: 0,
            batch_left: 0,
            batch_len: 0,
            inflight: vec![NONE; usize::from(size)],
            addrs: vec![0; usize::from(size)],
            bufs: bufs.array::<[u8; SLOT]>(0, n)?,
            kick: Arc::new(kick),
        })
    }

    /// Descriptor `id`'s buffer slot ([`SLOT_BYTES`]; `id` masked to the ring).
    #[inline(always)]
    pub(crate) fn slot(&self, id: u16) -> PeerSpan {
        self.bufs.span(usize::from(id))
    }

    /// Entries.
    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    fn used_idx(&self) -> u16 {
        // D2: Acquire, before reading used elements and the buffers' bytes (bytes 2..4 of
        // the used area: never a miss).
        self.used.load_u16(2, Ordering::Acquire).unwrap_or(0)
    }

    /// How far the device has returned buffers: the used index loaded once everything up
    /// to the last loaded value has been taken, so a burst loads the line the device keeps
    /// writing once, not once per buffer.
    #[inline]
    pub(crate) fn used_limit(&mut self) -> u16 {
        if self.last_used == self.seen_used {
            self.seen_used = self.used_idx();
        }
        self.seen_used
    }

    fn used_elem(&self, i: u16) -> (u32, u32) {
        // One volatile copy: the device writes it.
        let [id, len] = self.used_ring.read(usize::from(i));
        (u32::from_le(id), u32::from_le(len))
    }

    /// Free descriptors.
    pub(crate) fn free_len(&self) -> usize {
        if self.in_order {
            usize::from(self.size - self.avail_idx.wrapping_sub(self.next_reclaim))
        } else {
            self.free.len()
        }
    }

    /// A free descriptor for the next post (in order: the one at the avail position).
    pub(crate) fn take_free(&mut self) -> Option<u16> {
        if self.in_order {
            // Free: not inside the outstanding window [next_reclaim, avail_idx).
            (self.free_len() > 0).then_some(self.avail_idx & (self.size - 1))
        } else {
            self.free.pop()
        }
    }

    #[inline]
    pub(crate) fn post(&mut self, id: u16, addr: u64, len: u32, flags: u16, handle: u64) {
        let d = Desc {
            addr: addr.to_le(),
            len: len.to_le(),
            flags: flags.to_le(),
            next: 0,
        };
        self.desc.write(usize::from(id), d);
        // avail.ring[avail_idx masked]; the device reads it after D1.
        self.avail_ring
            .write(usize::from(self.avail_idx), id.to_le());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.inflight[usize::from(id)] = handle;
        self.addrs[usize::from(id)] = addr;
    }

    /// Warms the cache for up to `max` used elements and the start of their buffers (the
    /// device just wrote both from another core): the misses overlap instead of queueing
    /// behind each other. Hints only; ids are masked and the addresses are our own.
    #[inline]
    pub(crate) fn prefetch_used(&mut self, max: usize) {
        self.seen_used = self.used_idx();
        let ready = usize::from(self.seen_used.wrapping_sub(self.last_used))
            .min(usize::from(self.size))
            .min(max);
        for k in 0..ready as u16 {
            // In order, the buffers come back as they were posted (and the device may
            // not have written every used element).
            let id = if self.in_order {
                self.next_reclaim.wrapping_add(k)
            } else {
                self.used_elem(self.last_used.wrapping_add(k)).0 as u16
            };
            let id = usize::from(id & (self.size - 1));
            // Header and frame start: the two lines a 64-byte frame spans.
            pmds_common_virtio::prefetch::prefetch(self.addrs[id] as *const u8);
            pmds_common_virtio::prefetch::prefetch((self.addrs[id] as *const u8).wrapping_add(64));
        }
    }

    /// Prefetches for writing the descriptors and avail slots the next `k` posts use (the
    /// device last read them from another core).
    pub(crate) fn prefetch_posts(&self, k: usize) {
        let k = k.min(self.free_len());
        let mask = usize::from(self.size - 1);
        if self.in_order {
            let mut j = 0;
            while j < k {
                let id = usize::from(self.avail_idx).wrapping_add(j) & mask;
                pmds_common_virtio::prefetch::prefetch_write(self.desc.hint(id));
                j += 4;
            }
        } else {
            for &id in &self.free[self.free.len() - k..] {
                pmds_common_virtio::prefetch::prefetch_write(self.desc.hint(usize::from(id)));
            }
        }
        let mut j = 0;
        while j < k {
            let slot = usize::from(self.avail_idx).wrapping_add(j) & mask;
            pmds_common_virtio::prefetch::prefetch_write(self.avail_ring.hint(slot));
            j += 32;
        }
    }

    /// Prefetches for writing the buffer slots (header and the first 116 bytes of frame:
    /// two lines) of the next `k` posts: on transmit we copy into them, and the device
    /// last read them from another core.
    pub(crate) fn prefetch_slots(&self, k: usize) {
        let k = k.min(self.free_len());
        let mask = usize::from(self.size - 1);
        let each = |id: usize| {
            let p = self.slot(id as u16);
            pmds_common_virtio::prefetch::prefetch_write(p.hint(0));
            pmds_common_virtio::prefetch::prefetch_write(p.hint(64));
        };
        if self.in_order {
            for j in 0..k {
                each(usize::from(self.avail_idx).wrapping_add(j) & mask);
            }
        } else {
            for &id in &self.free[self.free.len() - k..] {
                each(usize::from(id));
            }
        }
    }

    /// Publishes the posted descriptors and kicks the device if it asked for kicks.
    pub(crate) fn publish(&mut self) {
        // D1: Release, publishing the descriptors and avail entries written above
        // (avail.idx, bytes 2..4 of the avail area).
        self.avail.store_u16(2, self.avail_idx, Ordering::Release);
        // D3: our idx store before the load of the device's flags.
        fence(Ordering::SeqCst);
        let flags = self.used.load_u16(0, Ordering::Relaxed).unwrap_or(0);
        if flags & VRING_USED_F_NO_NOTIFY == 0 {
            let _ = (&*self.kick).write(&1u64.to_ne_bytes());
        }
    }

    /// Takes the next used element: (descriptor id, bytes written, the mbuf handle).
    #[inline(always)]
    pub(crate) fn next_used(&mut self) -> Option<Result<(u16, u32, u64), ()>> {
        if self.in_order {
            return self.next_used_in_order();
        }
        let used_idx = self.used_limit();
        if self.last_used == used_idx {
            return None;
        }
        if used_idx.wrapping_sub(self.last_used) > self.size {
            // More used than ever posted: a broken device. Skip to its index (once), so
            // a bad value costs one error, not a walk over 64K elements.
            self.last_used = used_idx;
            return Some(Err(()));
        }
        let (id, len) = self.used_elem(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
        let Some(h) = usize::try_from(id)
            .ok()
            .and_then(|i| self.inflight.get(i).copied())
            .filter(|&h| h != NONE)
        else {
            return Some(Err(()));
        };
        self.inflight[id as usize] = NONE;
        self.free.push(id as u16);
        Some(Ok((id as u16, len, h)))
    }

    /// In order (virtio 1.x §2.7.9): buffers come back in the order they were posted. A
    /// batch starts with the used element at its first position, which names the head of
    /// its last buffer; the device may skip the elements of the others, which were used
    /// whole ([`WHOLE_BUFFER`]). An element naming a buffer that is not outstanding, or a
    /// batch longer than the used index allows, is one error and the device's stretch is
    /// skipped; our buffers stay outstanding (and come home when the port stops), and
    /// posting never reuses an outstanding descriptor.
    #[inline(always)]
    fn next_used_in_order(&mut self) -> Option<Result<(u16, u32, u64), ()>> {
        let mask = self.size - 1;
        if self.batch_left == 0 {
            let used_idx = self.used_limit();
            let ready = used_idx.wrapping_sub(self.last_used);
            if ready == 0 {
                return None;
            }
            let outstanding = self.avail_idx.wrapping_sub(self.next_reclaim);
            let (last, len) = self.used_elem(self.last_used);
            let span = u16::try_from(last)
                .ok()
                .filter(|&l| l < self.size)
                .map(|l| l.wrapping_sub(self.next_reclaim) & mask);
            match span {
                Some(span) if span < ready && span < outstanding => {
                    self.batch_left = span + 1;
                    self.batch_len = len;
                    self.last_used = self.last_used.wrapping_add(span + 1);
                }
                _ => {
                    self.last_used = used_idx;
                    return Some(Err(()));
                }
            }
        }
        self.batch_left -= 1;
        let id = self.next_reclaim & mask;
        self.next_reclaim = self.next_reclaim.wrapping_add(1);
        let len = if self.batch_left == 0 {
            self.batch_len
        } else {
            WHOLE_BUFFER
        };
        let h = std::mem::replace(&mut self.inflight[usize::from(id)], NONE);
        if h == NONE {
            return Some(Err(()));
        }
        Some(Ok((id, len, h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver ring of `size` entries over `mem` (zeroed), as `connect` lays it out.
    fn ring(mem: &mut [u64], size: u16, in_order: bool) -> DriverRing {
        let n = usize::from(size);
        let used_off = (16 * n + 6 + 2 * n).next_multiple_of(64);
        assert!(used_off + 6 + 8 * n <= mem.len() * 8);
        // SAFETY: the test's own memory, which outlives the ring (each test drops the ring
        // first) and is used only through the spans meanwhile.
        let all = unsafe { PeerSpan::new(mem.as_mut_ptr().cast(), mem.len() * 8) };
        // The slots: never touched by these tests, kept for the test run.
        let slots: &'static mut [u64] = Box::leak(vec![0u64; 256 * n].into_boxed_slice());
        // SAFETY: leaked, so mapped for the rest of the run.
        let bufs = unsafe { PeerSpan::new(slots.as_mut_ptr().cast(), slots.len() * 8) };
        DriverRing::new(
            all.sub(0, 16 * n).unwrap(),
            all.sub(16 * n, 6 + 2 * n).unwrap(),
            all.sub(used_off, 6 + 8 * n).unwrap(),
            (size, in_order),
            bufs,
            crate::device::eventfd().unwrap(),
        )
        .unwrap()
    }

    /// What the device does: element `pos` = (id, len), then used.idx = `idx`.
    fn device_returns(r: &DriverRing, pos: u16, id: u32, len: u32, idx: u16) {
        r.used_ring.write(usize::from(pos), [id, len]);
        r.used.store_u16(2, idx, Ordering::Release);
    }

    fn post_n(r: &mut DriverRing, n: u64, first_handle: u64) {
        for h in first_handle..first_handle + n {
            let id = r.take_free().unwrap();
            r.post(id, 0x1000 * h, 64, 0, h);
        }
        r.publish();
    }

    #[test]
    fn in_order_posts_in_ring_order_and_takes_back_batches() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, true);
        post_n(&mut r, 4, 100);
        for i in 0..4u16 {
            assert_eq!(r.avail_ring.read(usize::from(i)), i);
        }
        assert_eq!(r.free_len(), 4);
        // One element for three buffers: the first two were used whole.
        device_returns(&r, 0, 2, 50, 3);
        assert_eq!(r.next_used(), Some(Ok((0, WHOLE_BUFFER, 100))));
        assert_eq!(r.next_used(), Some(Ok((1, WHOLE_BUFFER, 101))));
        assert_eq!(r.next_used(), Some(Ok((2, 50, 102))));
        assert_eq!(r.next_used(), None);
        assert_eq!(r.free_len(), 7);
        // The next batch's element sits at its first position.
        device_returns(&r, 3, 3, 7, 4);
        assert_eq!(r.next_used(), Some(Ok((3, 7, 103))));
        // Wrapping the ring: descriptors 4..8 then 0..2.
        post_n(&mut r, 6, 200);
        device_returns(&r, 4, 1, 9, 10);
        let got: Vec<_> = std::iter::from_fn(|| r.next_used()).collect();
        let ids: Vec<u16> = got.iter().map(|g| g.unwrap().0).collect();
        assert_eq!(ids, [4, 5, 6, 7, 0, 1]);
        assert_eq!(got[5], Ok((1, 9, 205)));
        assert_eq!(r.free_len(), 8);
    }

    #[test]
    fn an_in_order_element_naming_no_outstanding_buffer_is_one_error() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, true);
        post_n(&mut r, 2, 100);
        // Names descriptor 5, which was never posted; then an index far ahead.
        device_returns(&r, 0, 5, 0, 1);
        assert_eq!(r.next_used(), Some(Err(())));
        assert_eq!(r.next_used(), None, "the bad stretch is skipped once");
        assert_eq!(
            r.free_len(),
            6,
            "our buffers stay outstanding, never reposted"
        );
        device_returns(&r, 1, 0x1_0000, 0, 2);
        assert_eq!(r.next_used(), Some(Err(())));
        // A batch longer than the used index allows.
        device_returns(&r, 2, 1, 0, 3);
        assert_eq!(r.next_used(), Some(Err(())));
        // Posting continues after the outstanding window.
        assert_eq!(r.take_free(), Some(2));
        assert!(r.inflight[..2].iter().all(|&h| h != NONE));
    }

    #[test]
    fn not_in_order_returns_what_each_element_names() {
        let mut mem = vec![0u64; 1024];
        let mut r = ring(&mut mem, 8, false);
        post_n(&mut r, 3, 100);
        device_returns(&r, 0, 1, 5, 1);
        assert_eq!(r.next_used(), Some(Ok((1, 5, 101))));
        device_returns(&r, 1, 1, 5, 2);
        assert_eq!(r.next_used(), Some(Err(())), "a buffer returned twice");
    }
}
