//! The mbuf header's shared-memory layout (pinned by compile-time asserts), the handle
//! that names a buffer across processes, and the pool geometry checks and header
//! initialisation that [`crate::pool`] calls when it creates or opens an mbuf pool.
//!
//! Where it sits: the bottom of [`crate::mbuf`]; everything else in it (and the guest
//! pool, the snapshots) reaches a header through [`header_ptr`].

use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use crate::layout::PoolInfo;
use crate::owner::OwnerTag;
use crate::pool::Mempool;
/// Bytes of [`MbufHeader`].
pub const MBUF_HEADER_SIZE: u32 = 128;
/// Default headroom (as DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const DEFAULT_HEADROOM: u32 = 128;
/// Default data room (as DPDK's `RTE_MBUF_DEFAULT_DATAROOM`).
pub const DEFAULT_DATA_ROOM: u32 = 2048;
/// Most segments in one packet.
pub const MAX_SEGS: u16 = u16::MAX;
/// `port` of an mbuf that did not come from a port.
pub const NO_PORT: u16 = u16::MAX;

/// The fixed header at the start of every mbuf (see the module docs for the layout).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    /// Object index of this buffer in its pool (identity check).
    pub index: u32,
    /// Id of the pool it belongs to (identity check).
    pub pool_id: u32,
    /// Holder ([`OwnerTag`] value).
    pub owner: AtomicU32,
    /// References (1 when not cloned; 0 while free).
    pub refcnt: AtomicU32,
    /// Offset of the data from the start of the buffer (after the header).
    pub data_off: u16,
    /// Segments in the packet (meaningful in the first segment).
    pub nb_segs: u16,
    /// Input port, or [`NO_PORT`].
    pub port: u16,
    /// Data bytes in this segment.
    pub data_len: u16,
    /// Data bytes in the whole packet (meaningful in the first segment).
    pub pkt_len: u32,
    /// Packet type (DPDK `RTE_PTYPE_*` style bits).
    pub packet_type: u32,
    /// Offload flags.
    pub ol_flags: u64,
    /// VLAN tag.
    pub vlan_tci: u16,
    /// Outer VLAN tag.
    pub vlan_tci_outer: u16,
    /// RSS hash.
    pub rss_hash: u32,
    /// Handle of the next segment; 0 for the last.
    pub next: u64,
    /// Headroom + data room (informational; the pool's value is authoritative).
    pub buf_len: u32,
    /// Zero.
    pub reserved0: u32,
    /// Application data.
    pub user_data: u64,
    /// Timestamp (application or port defined).
    pub timestamp: u64,
    /// Transmit offload lengths.
    pub tx_offload: u64,
    /// Zero.
    pub reserved1: [u64; 5],
}

const _: () = {
    assert!(std::mem::size_of::<MbufHeader>() == MBUF_HEADER_SIZE as usize);
    assert!(std::mem::offset_of!(MbufHeader, next) == 48);
    assert!(std::mem::offset_of!(MbufHeader, user_data) == 64);
};

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

/// Checks an mbuf pool's geometry (called when a pool is opened).
pub(crate) fn check_geometry(info: &PoolInfo) -> Result<(), String> {
    let buf = u64::from(info.headroom) + u64::from(info.data_room);
    if buf > u64::from(u16::MAX) || info.data_room == 0 {
        return Err(format!(
            "headroom {} + data room {} must be 1..=65535 bytes",
            info.headroom, info.data_room
        ));
    }
    if u64::from(info.obj_size) < u64::from(MBUF_HEADER_SIZE) + buf {
        return Err("objects are smaller than header + headroom + data room".into());
    }
    Ok(())
}

/// Writes every free header of a fresh pool.
pub(crate) fn init_headers(pool: &Mempool) {
    let sh = &pool.shared;
    for index in 0..sh.info.obj_count {
        let hdr = header_ptr(sh.objs, sh.info.obj_size, index);
        let fresh = MbufHeader {
            index,
            pool_id: sh.info.pool_id,
            owner: AtomicU32::new(OwnerTag::FREE.0),
            refcnt: AtomicU32::new(0),
            data_off: sh.info.headroom as u16,
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
            buf_len: sh.info.headroom + sh.info.data_room,
            reserved0: 0,
            user_data: 0,
            timestamp: 0,
            tx_offload: 0,
            reserved1: [0; 5],
        };
        // SAFETY: `index < obj_count`, so the header lies in the objects span checked at
        // open, aligned to 128; the pool is being created and not yet shared.
        unsafe { hdr.write(fresh) };
    }
}

/// Address of object `index`'s header (`index < obj_count` keeps it in bounds).
#[inline(always)]
pub(crate) fn header_ptr(objs: NonNull<u8>, obj_size: u32, index: u32) -> *mut MbufHeader {
    objs.as_ptr()
        .wrapping_add(index as usize * obj_size as usize)
        .cast::<MbufHeader>()
}
