//! Fixed layout of a port in its memzone (kind `port`, named after the port). Offsets from
//! the start of the memzone:
//!
//! ```text
//! 0      512   PortInfo     magic "SHMDPPRT", layout version, port id, driver, queue
//!                           counts, descriptors, MAC, name, devargs   (written once)
//! 512    64    PortCtrl     started, link up, promiscuous, all-multicast (atomics)
//! 576    64    (guard)
//! 640    QUEUE_BLOCK x MAX_QUEUES   rx queue blocks, then tx queue blocks
//! 4736   INFLIGHT_MAX x 8 x 2 x MAX_QUEUES   per queue (rx, then tx): the mbuf handles
//!                                     of the burst being moved (see [`QueueBlock::inflight`])
//! ```
//!
//! A queue block is two cache lines: line 0 is the claim (a [`shm::liveness::Holder`]:
//! poller pid and start time, so a gone poller's queue can be taken over) and driver state that must survive a change of
//! poller (the pcap reader's file offset, the mempool the queue allocates from); line 1 is
//! the queue's statistics, written by its poller alone once per burst (plain stores: one
//! writer), with the values at the last reset beside them (a reset from another process
//! records a baseline instead of zeroing a counter under its writer).
//!
//! Nothing here is a pointer or depends on the binary: the driver is a number, its
//! configuration the devargs text, re-parsed by every process that opens the port.

use std::sync::atomic::{AtomicU32, AtomicU64};

use shm::layout::NAME_LEN;
use shm::liveness::Holder;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First bytes of every port.
pub const PORT_MAGIC: [u8; 8] = *b"SHMDPPRT";
/// Layout major version.
pub const PORT_LAYOUT_MAJOR: u16 = 4;
/// Layout minor version.
pub const PORT_LAYOUT_MINOR: u16 = 0;
/// Bytes of [`PortInfo`].
pub const PORT_INFO_SIZE: u64 = 512;
/// Offset of [`PortCtrl`].
pub const PORT_CTRL_OFF: u64 = 512;
/// Offset of the first queue block.
pub const QUEUES_OFF: u64 = 640;
/// Most rx (and most tx) queues per port.
pub const MAX_QUEUES: u16 = 16;
/// Bytes per queue block.
pub const QUEUE_BLOCK: u64 = 128;
/// Most handles one ring-port receive burst takes (its in-flight record's size).
pub const INFLIGHT_MAX: usize = 64;
/// Offset of the queues' in-flight records (`INFLIGHT_MAX` handles each, one per queue
/// block, in block order).
pub const INFLIGHT_OFF: u64 = QUEUES_OFF + 2 * MAX_QUEUES as u64 * QUEUE_BLOCK;
/// Bytes of a port's memzone.
pub const PORT_BYTES: u64 = INFLIGHT_OFF + 2 * MAX_QUEUES as u64 * INFLIGHT_MAX as u64 * 8;
/// Longest devargs text.
pub const DEVARGS_LEN: usize = 320;

/// The port's description, written once when the primary probes it.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PortInfo {
    /// [`PORT_MAGIC`].
    pub magic: [u8; 8],
    /// [`PORT_LAYOUT_MAJOR`].
    pub layout_major: u16,
    /// [`PORT_LAYOUT_MINOR`].
    pub layout_minor: u16,
    /// [`PORT_INFO_SIZE`].
    pub info_size: u32,
    /// Port id (0.., in probe order).
    pub port_id: u16,
    /// Driver number ([`crate::DriverId`]: each driver crate picks its own).
    pub driver: u16,
    /// Rx queues.
    pub nb_rx_queues: u16,
    /// Tx queues.
    pub nb_tx_queues: u16,
    /// Descriptors per queue (ring capacity for the ring driver).
    pub nb_desc: u32,
    /// Id of the mbuf pool rx queues allocate from (0 = none configured).
    pub rx_pool_id: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// Zero.
    pub reserved0: [u8; 2],
    /// Length of `devargs` in use.
    pub devargs_len: u32,
    /// Port name (the devargs' driver instance name, e.g. `net_pcap0`), NUL padded.
    pub name: [u8; NAME_LEN],
    /// Name of the mbuf pool rx queues allocate from, NUL padded.
    pub rx_pool: [u8; NAME_LEN],
    /// The devargs text the port was probed with.
    pub devargs: [u8; DEVARGS_LEN],
    /// Zero.
    pub reserved: [u8; 84],
}

/// Run-time port state, changed by the primary (or any process that controls the port).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PortCtrl {
    /// 1 while started.
    pub started: AtomicU32,
    /// 1 while the link is up.
    pub link_up: AtomicU32,
    /// 1 in promiscuous mode.
    pub promiscuous: AtomicU32,
    /// 1 in all-multicast mode.
    pub all_multicast: AtomicU32,
    /// Zero.
    pub reserved: [u32; 12],
}

/// One queue's claim, persistent driver state and statistics.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct QueueBlock {
    /// The claim: the polling process's pid and start time ([`shm::liveness::Holder`];
    /// free = unclaimed; its tag is unused, 0). Layout 4; layout 3 had the pid at 0, the
    /// start time at 8 and `inflight` at 4.
    pub claim: Holder,
    /// Driver state kept across pollers (pcap rx: offset of the next record).
    pub position: AtomicU64,
    /// Ring tx on a single-producer ring: the ring position the in-flight record's first
    /// handle is enqueued at, so the next poller knows which listed handles made it into
    /// the ring before a kill (those are the ring's) and which did not (those it frees).
    pub tx_from: AtomicU32,
    /// Ring ports: how many handles of the queue's in-flight record are in transit and
    /// in no ring — rx: taken off the ring, not yet adopted; tx: put in transit, not yet
    /// enqueued (0 between bursts). A poller killed inside a burst leaves them listed
    /// here; whoever claims the queue next frees them.
    pub inflight: AtomicU32,
    /// Zero.
    pub reserved1: [u64; 4],
    /// Packets received (rx) or sent (tx).
    pub packets: AtomicU64,
    /// Bytes received or sent.
    pub bytes: AtomicU64,
    /// Rx: packets dropped for want of an mbuf; tx: packets the driver could not send.
    pub dropped: AtomicU64,
    /// Bad input: malformed records, refused mbuf handles.
    pub errors: AtomicU64,
    /// `packets` at the last statistics reset (reported figures are the difference).
    pub reset_packets: AtomicU64,
    /// `bytes` at the last reset.
    pub reset_bytes: AtomicU64,
    /// `dropped` at the last reset.
    pub reset_dropped: AtomicU64,
    /// `errors` at the last reset.
    pub reset_errors: AtomicU64,
}

const _: () = {
    assert!(std::mem::size_of::<PortInfo>() as u64 == PORT_INFO_SIZE);
    assert!(std::mem::size_of::<PortCtrl>() == 64);
    assert!(std::mem::size_of::<QueueBlock>() as u64 == QUEUE_BLOCK);
    assert!(std::mem::offset_of!(QueueBlock, inflight) == 28);
    assert!(std::mem::offset_of!(QueueBlock, packets) == 64);
    assert!(PORT_CTRL_OFF + 64 <= QUEUES_OFF);
};
