//! The one way bytes a peer can write are read here: copied once into our memory by
//! volatile reads ([`copy_from_peer`]), never viewed through a Rust reference (`&[u8]`
//! over memory the peer may change during the read would promise the compiler it does
//! not change). Every check and every use is then on the copy. Used for the frames of
//! vhost-user guests (`net.rs`) and of virtio-user backends (`frontend.rs`).

use shm_mempool::{Mbuf, MbufCache};

/// Copies `dst.len()` bytes the peer may be writing at `src` into our memory, by volatile
/// loads of the aligned 8-byte words that hold them: every word is loaded exactly once,
/// no reference is ever made to the peer's bytes, and a 64-byte frame costs nine loads
/// (a volatile `[u8; N]` read is N byte loads). An unaligned span is shifted together
/// from two neighbouring words per 8 bytes stored. The first and last word may hold a
/// few bytes outside the span; they lie in the same 8-byte word, so in the same page,
/// and are not used. What lands in `dst` is what we check and use.
///
/// # Safety
/// `[src, src + dst.len())` must be mapped and readable for the whole copy.
#[inline]
pub unsafe fn copy_from_peer(dst: &mut [u8], src: *const u8) {
    let len = dst.len();
    if len == 0 {
        return;
    }
    let head = src as usize & 7;
    // The aligned word holding the first byte (same provenance as `src`).
    let base = src.wrapping_sub(head).cast::<u64>();
    let load = |k: usize| {
        // SAFETY: word `k` is 8-byte aligned and is loaded only when it holds at least
        // one byte of `[src, src + len)` (see each call), which the caller vouches for;
        // the rest of such a word is in the same page, so mapped too.
        u64::from_le(unsafe { std::ptr::read_volatile(base.wrapping_add(k)) })
    };
    let mut done = 0;
    if head == 0 {
        while len - done >= 8 {
            dst[done..done + 8].copy_from_slice(&load(done / 8).to_le_bytes());
            done += 8;
        }
        if done < len {
            let w = load(done / 8).to_le_bytes();
            dst[done..].copy_from_slice(&w[..len - done]);
        }
        return;
    }
    let shift = 8 * head as u32;
    // `prev` is word `done / 8`: it holds span bytes `[done, done + 8 - head)`.
    let mut prev = load(0);
    while len - done >= 8 {
        // Span bytes `[done + 8 - head, done + 16 - head)` are in the next word, which
        // starts inside the span (`head >= 1`).
        let next = load(done / 8 + 1);
        let v = (prev >> shift) | (next << (64 - shift));
        dst[done..done + 8].copy_from_slice(&v.to_le_bytes());
        prev = next;
        done += 8;
    }
    let rest = len - done;
    if rest > 0 {
        let mut v = prev >> shift;
        if rest > 8 - head {
            // The last bytes start the next word (inside the span).
            v |= load(done / 8 + 1) << (64 - shift);
        }
        dst[done..].copy_from_slice(&v.to_le_bytes()[..rest]);
    }
}

/// Appends `len` bytes the peer may be writing at `src` to `m`, chaining segments from
/// `cache` as it fills; false (the packet is to be dropped) when the pool runs dry or
/// the chain would grow too long.
///
/// # Safety
/// `[src, src + len)` must be mapped and readable for the whole copy.
pub unsafe fn append_from_peer<'c>(
    cache: &'c MbufCache,
    m: &mut Mbuf<'c>,
    src: *const u8,
    len: usize,
) -> bool {
    // The common case: the last segment has room for all of it.
    if let Some(dst) = m.append(len) {
        // SAFETY: the caller vouches for `[src, src + len)`.
        unsafe { copy_from_peer(dst, src) };
        return true;
    }
    let mut done = 0;
    while done < len {
        if m.tailroom() == 0 {
            match cache.alloc() {
                Some(seg) => {
                    if m.chain(seg).is_err() {
                        return false;
                    }
                }
                None => return false,
            }
        }
        let n = m.tailroom().min(len - done);
        let Some(dst) = m.append(n) else {
            return false;
        };
        // SAFETY: `[src + done, src + done + n)` is inside `[src, src + len)`, which the
        // caller vouches for.
        unsafe { copy_from_peer(dst, src.wrapping_add(done)) };
        done += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_peer_copies_every_length_at_every_alignment() {
        // Aligned backing, so the words around the span are inside it.
        let words: Vec<u64> = (0..32u64).map(|i| i * 0x0101_0101_0101_0101).collect();
        let base = words.as_ptr().cast::<u8>();
        let all: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        for off in 8..24 {
            for n in (0..=40).chain([63, 64, 65, 100, 200]) {
                let mut dst = vec![0u8; n];
                // SAFETY: `[off, off + n)` is inside the 256 bytes.
                unsafe { copy_from_peer(&mut dst, base.wrapping_add(off)) };
                assert_eq!(dst, all[off..off + n], "offset {off}, {n} bytes");
            }
        }
    }

    #[test]
    fn no_slice_is_ever_made_over_peer_memory() {
        // The vhost files that touch guest memory: none may build a slice from a raw
        // pointer (the pattern is split so this file does not match itself; virtio-user
        // checks its own files the same way).
        let pattern = concat!("from_raw", "_parts");
        for (name, src) in [
            ("net.rs", include_str!("net.rs")),
            ("vring.rs", include_str!("vring.rs")),
            ("mem.rs", include_str!("mem.rs")),
            ("peer_copy.rs", include_str!("peer_copy.rs")),
        ] {
            assert!(
                !src.contains(pattern),
                "{name} makes a slice from a raw pointer"
            );
        }
    }

    #[test]
    fn append_from_peer_chains_what_one_segment_cannot_hold() {
        use shm::{Memseg, Region};
        use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "pc", 1).unwrap();
        seg.mark_ready();
        let pool = MbufPool::create(&seg, "m", &MbufPoolParams::new(63, 0, 1)).unwrap();
        let cache = pool.uncached(OwnerTag::PRIMARY).unwrap();
        let src: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut m = cache.alloc().unwrap();
        // SAFETY: `src` holds 5000 readable bytes.
        assert!(unsafe { append_from_peer(&cache, &mut m, src.as_ptr(), src.len()) });
        assert!(m.nb_segs() > 1);
        assert_eq!(m.to_vec(), src);
    }
}
