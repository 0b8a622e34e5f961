//! The one way packet bytes move between our memory and memory a peer can write (a
//! vhost-user frontend's guest RAM, a virtio-user backend's view of our buffers).
//!
//! Where it sits: the vhost backend's dequeue and enqueue copy every frame through these
//! functions; nothing else in the drivers makes a slice (`&[u8]` or `&mut [u8]`) of peer
//! memory. A peer may write its bytes at any moment, even while we copy them: a Rust
//! reference would promise the compiler they do not change, so the only thing we ever hold
//! is a raw pointer the ring walk checked (in bounds of a mapping of the peer's memory),
//! and the only thing we use is our copy. A racing write can spoil the copy of that
//! peer's own packet, nothing else: the copy is a fixed-length `memcpy` whose length and
//! addresses were chosen by us before it started.

/// Copies `dst.len()` bytes of peer memory at `src` into `dst`.
///
/// # Safety
/// `src` must be valid for reads of `dst.len()` bytes for the whole call (inside a mapping
/// that stays mapped), and must not overlap `dst`.
#[inline(always)]
pub unsafe fn copy_from_peer(dst: &mut [u8], src: *const u8) {
    // SAFETY: the caller vouches for `src`; `dst` is ours, exclusive, and does not overlap.
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` into peer memory at `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes for the whole call (inside a
/// mapping that stays mapped), and must not overlap `src`.
#[inline(always)]
pub unsafe fn copy_to_peer(dst: *mut u8, src: &[u8]) {
    // SAFETY: the caller vouches for `dst`; `src` is ours and does not overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
}

/// Writes `len` zero bytes into peer memory at `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes for the whole call.
#[inline(always)]
pub unsafe fn zero_peer(dst: *mut u8, len: usize) {
    // SAFETY: the caller vouches for `dst`.
    unsafe { std::ptr::write_bytes(dst, 0, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_both_ways_and_zeroes() {
        let mut peer = [7u8; 16];
        let mut ours = [0u8; 8];
        // SAFETY: in-bounds pointers into a local array.
        unsafe { copy_from_peer(&mut ours, peer.as_ptr().wrapping_add(4)) };
        assert_eq!(ours, [7; 8]);
        // SAFETY: as above.
        unsafe { copy_to_peer(peer.as_mut_ptr().wrapping_add(2), &[1, 2, 3]) };
        // SAFETY: as above.
        unsafe { zero_peer(peer.as_mut_ptr().wrapping_add(10), 3) };
        assert_eq!(&peer[..6], &[7, 7, 1, 2, 3, 7]);
        assert_eq!(&peer[9..14], &[7, 0, 0, 0, 7]);
    }
}
