//! The one way bytes a peer can write are read here: copied once into our memory by
//! volatile reads ([`copy_from_peer`]), never viewed through a Rust reference (`&[u8]`
//! over memory the peer may change during the read would promise the compiler it does
//! not change). Every check and every use is then on the copy. Used for the frames of
//! vhost-user guests (`net.rs`) and of virtio-user backends (`frontend.rs`).

use shm_mempool::{Mbuf, MbufCache};

/// Copies `dst.len()` bytes the peer may be writing at `src` into our memory: 16 and 1
/// bytes at a time by volatile reads, so no reference is ever made to the peer's bytes
/// and every byte is read exactly once. What lands in `dst` is what we check and use.
///
/// # Safety
/// `[src, src + dst.len())` must be mapped and readable for the whole copy.
#[inline]
pub unsafe fn copy_from_peer(dst: &mut [u8], src: *const u8) {
    let mut chunks = dst.chunks_exact_mut(16);
    let mut p = src;
    for c in &mut chunks {
        // SAFETY: the caller vouches for `[src, src + len)`; `p` advances 16 bytes per
        // 16-byte chunk of `dst`, so `[p, p + 16)` is inside it; `[u8; 16]` has alignment 1.
        let v = unsafe { std::ptr::read_volatile(p.cast::<[u8; 16]>()) };
        c.copy_from_slice(&v);
        p = p.wrapping_add(16);
    }
    for b in chunks.into_remainder() {
        // SAFETY: as above, the tail bytes.
        *b = unsafe { std::ptr::read_volatile(p) };
        p = p.wrapping_add(1);
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
    fn copy_from_peer_copies_every_length() {
        let src: Vec<u8> = (0..100u8).collect();
        for n in [0, 1, 15, 16, 17, 33, 100] {
            let mut dst = vec![0u8; n];
            // SAFETY: `src` holds 100 readable bytes.
            unsafe { copy_from_peer(&mut dst, src.as_ptr()) };
            assert_eq!(dst, src[..n]);
        }
    }

    #[test]
    fn no_slice_is_ever_made_over_peer_memory() {
        // The vhost files that touch guest or backend memory: none may build a slice
        // from a raw pointer (the pattern is split so this file does not match itself).
        let pattern = concat!("from_raw", "_parts");
        for (name, src) in [
            ("net.rs", include_str!("net.rs")),
            ("vring.rs", include_str!("vring.rs")),
            ("mem.rs", include_str!("mem.rs")),
            ("frontend.rs", include_str!("frontend.rs")),
            ("driver_ring.rs", include_str!("driver_ring.rs")),
            ("frontend_mem.rs", include_str!("frontend_mem.rs")),
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
