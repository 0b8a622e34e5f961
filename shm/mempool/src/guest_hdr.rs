//! The host's private copies of guest memory: one header's fields ([`HeaderCopy`], read
//! once as whole words by `GuestPool::read_header`) and the segments of a claimed chain
//! ([`Chain`], the indices the host claimed, so freeing never re-reads a `next`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::mem::offset_of;

use super::GUEST_MAX_SEGS;
use crate::mbuf::MbufHeader;

/// The fields of a guest mbuf header the host uses, copied once (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderCopy {
    /// `index`.
    pub index: u32,
    /// `pool_id`.
    pub pool_id: u32,
    /// `data_off`.
    pub data_off: u16,
    /// `nb_segs`.
    pub nb_segs: u16,
    /// `data_len`.
    pub data_len: u16,
    /// `pkt_len`.
    pub pkt_len: u32,
    /// `next`.
    pub next: u64,
}

// The header words the copy reads: 0 (index, pool_id), 2 (data_off, nb_segs, port,
// data_len), 3 (pkt_len, packet_type), 6 (next).
const _: () = {
    assert!(offset_of!(MbufHeader, index) == 0 && offset_of!(MbufHeader, pool_id) == 4);
    assert!(offset_of!(MbufHeader, owner) == 8 && offset_of!(MbufHeader, refcnt) == 12);
    assert!(offset_of!(MbufHeader, data_off) == 16 && offset_of!(MbufHeader, nb_segs) == 18);
    assert!(offset_of!(MbufHeader, port) == 20 && offset_of!(MbufHeader, data_len) == 22);
    assert!(offset_of!(MbufHeader, pkt_len) == 24 && offset_of!(MbufHeader, packet_type) == 28);
    assert!(offset_of!(MbufHeader, ol_flags) == 32 && offset_of!(MbufHeader, vlan_tci) == 40);
    assert!(offset_of!(MbufHeader, rss_hash) == 44 && offset_of!(MbufHeader, next) == 48);
    assert!(offset_of!(MbufHeader, buf_len) == 56);
    assert!(GUEST_MAX_SEGS <= u16::MAX as usize);
};

pub(super) fn lo32(w: u64) -> u32 {
    let b = w.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) fn hi32(w: u64) -> u32 {
    let b = w.to_ne_bytes();
    u32::from_ne_bytes([b[4], b[5], b[6], b[7]])
}

pub(super) fn u16_at(w: u64, k: usize) -> u16 {
    let b = w.to_ne_bytes();
    match k {
        0 => u16::from_ne_bytes([b[0], b[1]]),
        1 => u16::from_ne_bytes([b[2], b[3]]),
        2 => u16::from_ne_bytes([b[4], b[5]]),
        _ => u16::from_ne_bytes([b[6], b[7]]),
    }
}

pub(super) fn pair32(lo: u32, hi: u32) -> u64 {
    let (l, h) = (lo.to_ne_bytes(), hi.to_ne_bytes());
    u64::from_ne_bytes([l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]])
}

pub(super) fn quad16(a: u16, b: u16, c: u16, d: u16) -> u64 {
    let (a, b, c, d) = (
        a.to_ne_bytes(),
        b.to_ne_bytes(),
        c.to_ne_bytes(),
        d.to_ne_bytes(),
    );
    u64::from_ne_bytes([a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1]])
}

/// The segments of one guest packet the host has claimed, in host memory: index, data
/// offset and length of each, as validated.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) idx: [u32; GUEST_MAX_SEGS],
    pub(super) off: [u16; GUEST_MAX_SEGS],
    pub(super) len: [u16; GUEST_MAX_SEGS],
    pub(super) n: usize,
    pub(super) total: u32,
}

impl Chain {
    pub(super) fn new() -> Chain {
        Chain {
            idx: [0; GUEST_MAX_SEGS],
            off: [0; GUEST_MAX_SEGS],
            len: [0; GUEST_MAX_SEGS],
            n: 0,
            total: 0,
        }
    }

    pub(super) fn claimed(&self) -> &[u32] {
        self.idx.get(..self.n).unwrap_or(&[])
    }

    pub(super) fn contains(&self, index: u32) -> bool {
        self.claimed().contains(&index)
    }

    /// Records a claimed segment (span empty until [`Chain::set_span`]); false when the
    /// chain is full.
    pub(super) fn push(&mut self, index: u32) -> bool {
        let Some(i) = self.idx.get_mut(self.n) else {
            return false;
        };
        *i = index;
        self.n += 1;
        true
    }

    /// Sets the span of the last recorded segment and adds it to the total.
    pub(super) fn set_span(&mut self, off: u16, len: u16) {
        let last = self.n.wrapping_sub(1);
        if let (Some(o), Some(l)) = (self.off.get_mut(last), self.len.get_mut(last)) {
            (*o, *l) = (off, len);
            self.total += u32::from(len);
        }
    }
}
