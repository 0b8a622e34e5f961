//! Local hand-off: moving an mbuf through shared memory without writing its header.
//!
//! Where it sits: the ring ports (`pmds`) move packets between a producer and a consumer
//! through an SP/SC ring. Ownership is recorded by location (see the crate docs): a
//! buffer a process holds carries that process's tag, and while it waits in a ring whose
//! producer put it there with [`Mbuf::into_local`] it keeps that tag. So:
//!
//! ```text
//!   producer P                     ring (local entries)              consumer
//!   into_local(): no write  ──►  [ h | h | h ]  tag stays P  ──►  P itself: take_local()
//!                                                                  (no header access)
//!                                                                 Q != P: adopt_from(P)
//!                                                                  (CAS P -> Q: the only
//!                                                                   write, where the packet
//!                                                                   changes process)
//! ```
//!
//! A process killed anywhere in this leaves its buffers tagged with its own tag, held or
//! in the ring: the primary's reclaim returns them all by tag, and an entry still in a
//! ring after that is stale, which `adopt_from`'s CAS refuses (the tag is no longer `P`;
//! tags are unique per attachment, so `P` never comes back). Within one process
//! (`take_local`) nothing is recorded at all: the handle's pool and index are checked, as
//! for any handle from shared memory, and a duplicate is caught when it is freed (the
//! second free finds the buffer already free).

use crate::mbuf::{Claim, Mbuf, MbufCache, MbufError, MbufHandle};
use crate::owner::OwnerTag;
use crate::pool::Trouble;

impl<'c> Mbuf<'c> {
    /// Gives the packet up for a local hand-off (see the [module docs](self)): returns its
    /// handle without touching the header, which keeps this process's tag. Take it back
    /// with [`MbufCache::take_local`] (this process) or [`MbufCache::adopt_from`] (another).
    ///
    /// # Errors
    /// Gives the mbuf back while it is shared (references do not leave the process).
    #[inline(always)]
    pub fn into_local(self) -> Result<MbufHandle, Mbuf<'c>> {
        if self.is_shared() {
            return Err(self);
        }
        let handle = self.handle();
        std::mem::forget(self);
        Ok(handle)
    }
}

impl MbufCache {
    /// Takes back a handle this process gave up with [`Mbuf::into_local`]: checks the pool
    /// and the index (as for any handle read from shared memory) and nothing else; the
    /// header is not read.
    ///
    /// # Errors
    /// [`MbufError::BadHandle`] (counted) for another pool's handle or an index out of
    /// range.
    #[inline(always)]
    pub fn take_local(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        let index = handle.index();
        if handle.pool_id() == self.pool_id && index < self.n {
            return Ok(Mbuf::from_index(self, index));
        }
        self.bad_local_handle(handle)
    }

    /// [`take_local`](Self::take_local) for a burst: appends to `out` an mbuf for each
    /// leading handle of `handles` whose high 32 bits are `marker | pool id` (`marker`: bits
    /// the caller requires above the pool id, such as a local-entry flag) and whose index
    /// is in range, stopping at the first other handle or when `out` is at capacity (it
    /// never allocates). Returns how many were taken; the caller deals with the rest.
    #[inline]
    pub fn take_local_burst<'c>(
        &'c self,
        handles: &[u64],
        marker: u64,
        out: &mut Vec<Mbuf<'c>>,
    ) -> usize {
        // A handle is good when its high half is `marker | pool id` and its index is in
        // range: with `want` that high half in place, `h ^ want` is then the index itself
        // (below `n`), and anything else is at least 2^32. The same value, zero-extended,
        // is the `Mbuf`'s (index, not-shared) word.
        let want = (marker & !0xffff_ffff) | (u64::from(self.pool_id) << 32);
        let n = u64::from(self.n);
        let spare = out.spare_capacity_mut();
        let k = spare.len().min(handles.len());
        let (spare, handles) = (&mut spare[..k], &handles[..k]);
        // One pass that writes every slot and checks every handle without a branch (an
        // `Mbuf` written into spare capacity and not counted is simply never used); only
        // when one was bad is the count cut to the good ones before it.
        let bad = fill_mbufs(self, spare, handles, want, n);
        let taken = if bad == 0 {
            k
        } else {
            handles.iter().position(|&h| h ^ want >= n).unwrap_or(k)
        };
        // SAFETY: the first `taken` spare slots were initialised just above.
        unsafe { out.set_len(out.len() + taken) };
        taken
    }

    /// [`Mbuf::into_local`] for a burst: for each leading mbuf of `pkts` that came from
    /// this cache and was never cloned, writes `marker | handle` into `dst` and removes the
    /// mbuf from `pkts` (its header is not touched: the buffer keeps this process's tag),
    /// stopping at the first other mbuf or when `dst` is full. Returns how many went.
    #[inline]
    pub fn give_local_burst(
        &self,
        pkts: &mut Vec<Mbuf<'_>>,
        marker: u64,
        dst: &mut [u64],
    ) -> usize {
        let hi = marker | (u64::from(self.pool_id) << 32);
        let k = dst.len().min(pkts.len());
        let (dst, src) = (&mut dst[..k], &pkts[..k]);
        let plain = |m: &Mbuf<'_>| std::ptr::eq(m.cache, self) & (mbuf_word(m) >> 32 == 0);
        // As `take_local_burst`: one branch-free pass; the caller commits only the first `k`
        // slots, so what was written for a bad one and after it is never used.
        let bad = write_handles(self, dst, src, hi);
        let k = if bad == 0 {
            k
        } else {
            src.iter().position(|m| !plain(m)).unwrap_or(k)
        };
        // The first `k` leave without being dropped (dropping would free them).
        let rest = pkts.len() - k;
        // SAFETY: `k <= len`; the first `k` elements are forgotten (their handles were
        // written above) by moving the `rest` after them to the front and shortening the
        // vector, so each remaining element is still owned exactly once.
        let base = pkts.as_mut_ptr();
        // SAFETY: `k <= len`: the source range `[k, len)` and the destination `[0, rest)`
        // are inside the vector (`copy` allows the overlap).
        unsafe { std::ptr::copy(base.wrapping_add(k), base, rest) };
        // SAFETY: the first `rest` elements are the (moved) remaining mbufs.
        unsafe { pkts.set_len(rest) };
        k
    }

    /// True when every one of `handles` is a local entry (`marker`, as for
    /// [`take_local_burst`](Self::take_local_burst)) of a buffer of this pool: what a
    /// forwarder that moves entries from one ring to another without making mbufs (io
    /// forwarding between two ring ports it holds) checks first. Reads no header.
    #[inline]
    pub fn all_local(&self, handles: &[u64], marker: u64) -> bool {
        let want = (marker & !0xffff_ffff) | (u64::from(self.pool_id) << 32);
        // A handle is good when `x = h ^ want` is below `n` (<= 2^31): then `n - 1 - x` does
        // not wrap and both it and `x` are below 2^31, so `(n - 1 - x) | x` has no bit from
        // 31 up; any other `x` sets one. Subtractions and ORs only, one accumulator per
        // lane: it vectorizes on baseline x86-64 (which has no 64-bit compare).
        let lim = u64::from(self.n).wrapping_sub(1);
        let bits = |h: u64| {
            let x = h ^ want;
            lim.wrapping_sub(x) | x
        };
        let mut lanes = [0u64; 4];
        let (h4, h1) = handles.as_chunks::<4>();
        for c in h4 {
            for k in 0..4 {
                lanes[k] |= bits(c[k]);
            }
        }
        let acc = lanes.iter().fold(0, |a, &b| a | b) | h1.iter().fold(0, |a, &h| a | bits(h));
        acc >> 31 == 0
    }

    /// Claims a burst of handles read from a ring, as [`take_local`](Self::take_local),
    /// [`adopt_from`](Self::adopt_from) or [`adopt`](Self::adopt) would one by one: a
    /// handle with a `local` bit is a local entry of process `from` (taken without a header
    /// access when `from` is this process, else claimed with a CAS from `from`), any other
    /// is in transit (a CAS from `TRANSIT`). Appends an mbuf to `out` for each claimed one,
    /// in order, while `out` has capacity (it never allocates: the caller sizes it; handles
    /// beyond it are left alone); returns how many handles were dealt with and how many of
    /// them were refused (counted in the pool's statistics, as the one-by-one calls count).
    ///
    /// Every header the burst will claim is prefetched for writing first: the buffers come
    /// from another core, and a locked instruction waits for every earlier access, so
    /// claiming them one by one would take one cross-core transfer per packet in turn.
    #[inline]
    pub fn adopt_burst<'c>(
        &'c self,
        handles: &[u64],
        local: u64,
        from: OwnerTag,
        out: &mut Vec<Mbuf<'c>>,
    ) -> (usize, u64) {
        let handles = &handles[..handles.len().min(out.capacity() - out.len())];
        // A local entry of no process (the ring names none: stale or garbage) is claimed
        // as a transit one, as `adopt_from` does: never from FREE.
        let from = if from.is_process() {
            from
        } else {
            OwnerTag::TRANSIT
        };
        let mine = from.0 == self.owner;
        if !mine {
            for &h in handles {
                let index = h as u32;
                if index < self.n {
                    shm::prefetch::write(self.hdr(index).cast());
                }
            }
        }
        let id = u64::from(self.pool_id) << 32;
        let mut refused = 0;
        for &h in handles {
            let expect = if h & local != 0 {
                from.0
            } else {
                OwnerTag::TRANSIT.0
            };
            let h = h & !local;
            let index = h as u32;
            let got = if expect == self.owner {
                self.take_local(MbufHandle(h))
            } else if h & !0xffff_ffff == id && index < self.n && self.claim_single(index, expect) {
                Ok(Mbuf::from_index(self, index))
            } else {
                // Anything unusual (a chain, a refused tag, a bad handle): the one-by-one
                // path decides and counts.
                self.adopt_with(MbufHandle(h), Claim::Shared(expect))
            };
            match got {
                Ok(m) => out.push(m),
                Err(_) => refused += 1,
            }
        }
        (handles.len(), refused)
    }

    #[cold]
    fn bad_local_handle(&self, handle: MbufHandle) -> Result<Mbuf<'_>, MbufError> {
        self.pool().mempool().shared.trouble(
            Trouble::BadHandle,
            1,
            "received an mbuf handle of another pool or out of range",
        );
        Err(MbufError::BadHandle(handle))
    }

    /// Adopts a buffer that process `from` gave up with [`Mbuf::into_local`]: as
    /// [`adopt`](Self::adopt) (every header checked), with a CAS of each segment's tag from
    /// `from` to this process instead of from `TRANSIT`.
    ///
    /// # Errors
    /// As [`adopt`](Self::adopt); [`MbufError::NotInTransit`] when a segment's tag is not
    /// `from` (stale: `from` died and its buffers were reclaimed, or duplicated).
    #[inline]
    pub fn adopt_from(&self, handle: MbufHandle, from: OwnerTag) -> Result<Mbuf<'_>, MbufError> {
        if !from.is_process() {
            return self.adopt(handle);
        }
        self.adopt_with(handle, Claim::Shared(from.0))
    }
}

/// The (index, maybe_shared) word of an mbuf (see [`MbufCache::take_local_burst`]).
#[inline(always)]
fn mbuf_word(m: &Mbuf<'_>) -> u64 {
    // SAFETY: `repr(C)` (asserted in mbuf/packet.rs) puts `index` and `maybe_shared` (a
    // `Cell<u32>`, not written while a shared borrow of the mbuf is used here) in one
    // aligned u64 at offset 8.
    unsafe { std::ptr::from_ref(m).cast::<u64>().wrapping_add(1).read() }
}

/// The loop of [`MbufCache::take_local_burst`]: writes `(cache, h ^ want)` as an `Mbuf`
/// into each slot; non-zero when some `h ^ want` is not below `n`. Vectorised where the
/// CPU allows (AVX2, detected once).
#[inline(always)]
fn fill_mbufs<'c>(
    cache: &'c MbufCache,
    spare: &mut [std::mem::MaybeUninit<Mbuf<'c>>],
    handles: &[u64],
    want: u64,
    n: u64,
) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { fill_mbufs_avx2(cache, spare, handles, want, n) };
    }
    fill_mbufs_body(cache, spare, handles, want, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_mbufs_avx2<'c>(
    cache: &'c MbufCache,
    spare: &mut [std::mem::MaybeUninit<Mbuf<'c>>],
    handles: &[u64],
    want: u64,
    n: u64,
) -> u64 {
    fill_mbufs_body(cache, spare, handles, want, n)
}

#[inline(always)]
fn fill_mbufs_body<'c>(
    cache: &'c MbufCache,
    spare: &mut [std::mem::MaybeUninit<Mbuf<'c>>],
    handles: &[u64],
    want: u64,
    n: u64,
) -> u64 {
    let mut bad = 0u64;
    for (slot, &h) in spare.iter_mut().zip(handles) {
        let word = h ^ want;
        bad |= u64::from(word >= n);
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is a valid, aligned `Mbuf` slot; the cache field (offset 0, asserted
        // in mbuf/packet.rs) is written as itself,
        // and the (index, maybe_shared) pair as the one aligned u64 at offset 8 that
        // `repr(C)` (asserted in mbuf/packet.rs) makes it: the index in the low half, 0 (not
        // shared) in the high half. (Only counted slots are ever read.)
        unsafe { p.cast::<&'c MbufCache>().write(cache) };
        // SAFETY: as above, the aligned u64 at offset 8 of the same slot.
        unsafe { p.cast::<u64>().wrapping_add(1).write(word) };
    }
    bad
}

/// The loop of [`MbufCache::give_local_burst`]: writes `hi | word` of each mbuf into
/// `dst`; non-zero when one is of another cache or was cloned. Vectorised where the CPU
/// allows (AVX2).
#[inline(always)]
fn write_handles(cache: &MbufCache, dst: &mut [u64], src: &[Mbuf<'_>], hi: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { write_handles_avx2(cache, dst, src, hi) };
    }
    write_handles_body(cache, dst, src, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn write_handles_avx2(cache: &MbufCache, dst: &mut [u64], src: &[Mbuf<'_>], hi: u64) -> u64 {
    write_handles_body(cache, dst, src, hi)
}

#[inline(always)]
fn write_handles_body(cache: &MbufCache, dst: &mut [u64], src: &[Mbuf<'_>], hi: u64) -> u64 {
    let me = std::ptr::from_ref(cache) as usize as u64;
    let mut bad = 0u64;
    for (slot, m) in dst.iter_mut().zip(src) {
        let w = mbuf_word(m);
        bad |= (std::ptr::from_ref(m.cache) as usize as u64 ^ me) | (w >> 32);
        *slot = hi | w;
    }
    bad
}

#[cfg(test)]
mod tests {
    use crate::{MbufPool, MbufPoolParams, OwnerTag};
    use shm::{Memseg, Region};

    fn pool() -> MbufPool {
        let seg = Memseg::create_in_region(Region::heap(4 << 20), "handoff", 1).unwrap();
        seg.mark_ready();
        MbufPool::create(&seg, "h", &MbufPoolParams::new(64, 8, 1)).unwrap()
    }

    #[test]
    fn a_local_hand_off_keeps_the_tag_and_another_process_claims_it_once() {
        let pool = pool();
        let (p, q) = (OwnerTag::attached(1, 1), OwnerTag::attached(2, 2));
        let (cp, cq) = (pool.cache(p).unwrap(), pool.cache(q).unwrap());
        let m = cp.alloc_from(b"hello").unwrap();
        let h = m.into_local().unwrap();
        assert_eq!(pool.owned_by(p), 1, "the header still says P");
        // P takes it back without a header access.
        let m = cp.take_local(h).unwrap();
        assert_eq!(m.data(), b"hello");
        let h = m.into_local().unwrap();
        // Q claims it from P, once.
        let m = cq.adopt_from(h, p).unwrap();
        assert_eq!((pool.owned_by(p), pool.owned_by(q)), (0, 1));
        assert!(cq.adopt_from(h, p).is_err(), "a duplicate is refused");
        drop(m);
        assert_eq!(pool.owned_by(q), 0);
    }

    #[test]
    fn a_stale_local_entry_is_refused_after_its_owner_was_reclaimed() {
        let pool = pool();
        let (p, q) = (OwnerTag::attached(1, 3), OwnerTag::attached(1, 4));
        let cp = pool.cache(p).unwrap();
        let h = cp.alloc_from(b"x").unwrap().into_local().unwrap();
        // P "dies": its caches and buffers come back by tag.
        assert_eq!(pool.reclaim_owner(p).returned, 1);
        let cq = pool.cache(q).unwrap();
        assert!(
            cq.adopt_from(h, p).is_err(),
            "stale: P's buffers were reclaimed"
        );
        assert!(
            cp.take_local(crate::MbufHandle::new(9, 0)).is_err(),
            "another pool"
        );
        assert!(
            cp.take_local(crate::MbufHandle::new(1, 64)).is_err(),
            "out of range"
        );
        drop(cp);
        drop(cq);
        assert_eq!(pool.mempool().audit().free, 64);
    }

    #[test]
    fn bursts_hand_off_and_take_back_up_to_the_first_odd_one() {
        let pool = pool();
        let p = OwnerTag::attached(1, 6);
        let c = pool.cache(p).unwrap();
        let mut pkts = Vec::with_capacity(40);
        for i in 0..20u8 {
            pkts.push(c.alloc_from(&[i; 8]).unwrap());
        }
        // A clone in the middle ends the burst there.
        let clone = pkts[12].clone_ref();
        let mut ring = [0u64; 32];
        let marker = 1 << 63;
        assert_eq!(c.give_local_burst(&mut pkts, marker, &mut ring), 12);
        assert_eq!(pkts.len(), 8, "the clone and what follows stay");
        assert_eq!(pkts[0].data(), &[12u8; 8]);
        assert!(ring[..12].iter().all(|h| h & marker != 0));
        // Back: all twelve, then a garbage handle stops the next burst.
        let mut got = Vec::with_capacity(40);
        assert_eq!(c.take_local_burst(&ring[..12], marker, &mut got), 12);
        assert_eq!(got[5].data(), &[5u8; 8]);
        let h = got.remove(0).into_local().unwrap();
        let bad = [h.0 | marker, 99 | marker | (1 << 32), h.0 | marker];
        assert_eq!(
            c.take_local_burst(&bad, marker, &mut got),
            1,
            "out of range"
        );
        assert_eq!(c.take_local_burst(&[h.0], marker, &mut got), 0, "no marker");
        // Never past the vector's capacity.
        let mut small: Vec<crate::Mbuf<'_>> = Vec::with_capacity(0);
        assert_eq!(c.take_local_burst(&ring[..12], marker, &mut small), 0);
        drop((got, pkts, clone, small));
        assert_eq!(pool.owned_by(p), 0);
    }

    #[test]
    fn all_local_accepts_only_local_entries_of_this_pool_in_range() {
        let pool = pool();
        let c = pool.cache(OwnerTag::attached(1, 7)).unwrap();
        let m = 1u64 << 63;
        let good = |i: u64| m | (1 << 32) | i;
        let ok: Vec<u64> = (0..64).map(good).collect();
        assert!(c.all_local(&ok, m));
        assert!(c.all_local(&ok[..5], m), "a tail shorter than a chunk");
        assert!(c.all_local(&[], m));
        for bad in [
            good(64),
            good(u64::from(u32::MAX)),
            (1 << 32) | 3,
            m | (2 << 32) | 3,
            m | (1 << 32) | (1 << 31),
            u64::MAX,
        ] {
            for at in [0, 3, 62] {
                let mut v = ok.clone();
                v[at] = bad;
                assert!(!c.all_local(&v, m), "{bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn a_burst_claim_takes_each_kind_once_and_refuses_the_rest() {
        let pool = pool();
        let (p, q) = (OwnerTag::attached(1, 8), OwnerTag::attached(2, 9));
        let (cp, cq) = (pool.cache(p).unwrap(), pool.cache(q).unwrap());
        let local = 1u64 << 63;
        // Local entries of P, one transit entry, one chain, a duplicate, garbage.
        let mut hs = Vec::new();
        for i in 0..4u8 {
            hs.push(cp.alloc_from(&[i; 8]).unwrap().into_local().unwrap().0 | local);
        }
        hs.push(cp.alloc_from(b"transit").unwrap().into_transit().unwrap().0);
        let chain = cp.alloc_from(&[7u8; 300]).unwrap();
        let tail = cp.alloc_from(&[8u8; 10]).unwrap();
        let mut chain = chain;
        assert!(chain.chain(tail).is_ok());
        hs.push(chain.into_local().unwrap().0 | local);
        hs.push(hs[1]);
        hs.push(local | (1 << 32) | 9999);
        let mut out = Vec::with_capacity(16);
        let (dealt, refused) = cq.adopt_burst(&hs, local, p, &mut out);
        assert_eq!((dealt, refused), (8, 2), "the duplicate and the garbage");
        assert_eq!(out.len(), 6);
        assert_eq!(out[2].data(), &[2u8; 8]);
        assert_eq!(out[4].data(), b"transit");
        assert_eq!(out[5].nb_segs(), 2);
        assert_eq!((pool.owned_by(p), pool.owned_by(q)), (0, 7));
        // No process named: local entries are claimed from TRANSIT, never from FREE.
        drop(out);
        let free = cq.alloc_from(b"f").unwrap().into_local().unwrap();
        let mut out = Vec::with_capacity(4);
        let (_, refused) = cp.adopt_burst(&[free.0 | local], local, OwnerTag::FREE, &mut out);
        assert_eq!((refused, out.len()), (1, 0));
        // Never past the output's capacity.
        let mut none: Vec<crate::Mbuf<'_>> = Vec::with_capacity(0);
        assert_eq!(
            cq.adopt_burst(&[free.0 | local], local, q, &mut none),
            (0, 0)
        );
        assert_eq!(cq.take_local(free).map(drop).ok(), Some(()));
        drop(out);
        drop(none);
        drop((cp, cq));
        assert_eq!(pool.mempool().audit().free, 64);
    }

    #[test]
    fn a_shared_mbuf_is_not_handed_off() {
        let pool = pool();
        let c = pool.cache(OwnerTag::attached(1, 5)).unwrap();
        let mut m = c.alloc_from(b"y").unwrap();
        let r = m.clone_ref();
        m = m.into_local().unwrap_err();
        drop(r);
        assert!(m.into_local().is_ok(), "one reference again");
    }
}
