//! The handle that names a buffer across processes, the mbuf constants, and the header
//! initialisation that the mbuf pool gives [`crate::pool`] as its object-init hook. The
//! header's layout itself is pinned in [`crate::layout`] (re-exported here).
//!
//! Where it sits: the bottom of [`crate::mbuf`]; everything else in it (and the guest
//! pool, the snapshots) reaches a header through `header_ptr`.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

pub(crate) use crate::layout::mbuf_header_ptr as header_ptr;
pub use crate::layout::{MbufHeader, MBUF_HEADER_SIZE};
use crate::owner::OwnerTag;

/// Default headroom (as DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const DEFAULT_HEADROOM: u32 = 128;
/// Default data room (as DPDK's `RTE_MBUF_DEFAULT_DATAROOM`).
pub const DEFAULT_DATA_ROOM: u32 = 2048;
/// Most segments in one packet.
pub const MAX_SEGS: u16 = u16::MAX;
/// `port` of an mbuf that did not come from a port.
pub const NO_PORT: u16 = u16::MAX;

/// An mbuf as it travels between processes: pool id in the high 32 bits, object index in
/// the low 32. Never 0 (pool ids are non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MbufHandle(pub u64);

impl MbufHandle {
    /// Builds a handle.
    pub fn new(pool_id: u32, index: u32) -> MbufHandle {
        MbufHandle((u64::from(pool_id) << 32) | u64::from(index))
    }

    /// Pool id.
    pub fn pool_id(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Object index.
    pub fn index(self) -> u32 {
        self.0 as u32
    }
}

/// The mbuf pool's object-init hook ([`crate::Mempool::create_with`]): writes object
/// `index`'s free header, for a pool of id `pool_id` with these headroom and data room.
pub(crate) fn init_header(
    pool_id: u32,
    headroom: u32,
    data_room: u32,
) -> impl FnMut(u32, NonNull<[u8]>) {
    move |index, obj| {
        let hdr = obj.cast::<MbufHeader>();
        if obj.len() < MBUF_HEADER_SIZE as usize || !hdr.as_ptr().is_aligned() {
            // Not an object of an mbuf pool's geometry (checked before the pool is laid out).
            return;
        }
        let fresh = MbufHeader {
            index,
            pool_id,
            owner: AtomicU32::new(OwnerTag::FREE.0),
            refcnt: AtomicU32::new(0),
            data_off: headroom as u16,
            nb_segs: 1,
            port: NO_PORT,
            data_len: 0,
            pkt_len: 0,
            packet_type: 0,
            ol_flags: 0,
            vlan_tci: 0,
            vlan_tci_outer: 0,
            rss_hash: 0,
            next: 0,
            buf_len: headroom + data_room,
            reserved0: 0,
            user_data: 0,
            timestamp: 0,
            tx_offload: 0,
            reserved1: [0; 5],
        };
        // SAFETY: `obj` is one object's span, in bounds of the pool's checked objects span
        // (the pool's guarantee to its hook); it holds a header (length) and is aligned
        // for one (both checked above); the pool is being laid out and not yet valid, so
        // nobody else reads it; a raw write, no reference.
        unsafe { hdr.as_ptr().write(fresh) };
    }
}
