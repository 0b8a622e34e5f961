//! Statistics records that objects in shared memory report and that travel over the control
//! socket (the primary answers [`crate::control::Request::PoolStats`] and
//! [`crate::control::Request::PortStats`] with them; the secondary's `stats` command prints
//! them).

use serde::{Deserialize, Serialize};

/// Occupancy and counters of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Pool name.
    pub name: String,
    /// Pool id.
    pub pool_id: u32,
    /// Objects in the pool.
    pub count: u32,
    /// Bytes per object.
    pub obj_size: u32,
    /// Target cache size.
    pub cache_size: u32,
    /// Free objects (ring + caches).
    pub available: u64,
    /// Objects handed out.
    pub in_use: u64,
    /// Free objects in the ring.
    pub in_ring: u64,
    /// Free objects in caches.
    pub in_caches: u64,
    /// Claimed cache slots.
    pub caches: Vec<CacheStats>,
    /// Failed gets.
    pub get_fail: u64,
    /// Failed puts.
    pub put_fail: u64,
    /// Bad handles dropped.
    pub bad_handle: u64,
    /// Double frees caught.
    pub double_free: u64,
    /// Corrupt mbuf headers caught.
    pub corrupt_header: u64,
    /// Objects reclaimed from dead processes.
    pub reclaimed: u64,
    /// Caches of dead owners flushed.
    pub caches_recovered: u64,
}

/// One claimed cache slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Slot number.
    pub slot: u32,
    /// Owner pid.
    pub pid: u32,
    /// Owner tag.
    pub owner: u32,
    /// Objects cached.
    pub len: u32,
}

/// Statistics of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Rx: no mbuf; tx: not sent by the driver.
    pub dropped: u64,
    /// Bad input.
    pub errors: u64,
}

/// Statistics of a port (sums over its queues), as DPDK's `rte_eth_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Port id.
    pub id: u16,
    /// Port name.
    pub name: String,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped on receive for want of an mbuf (`rx_nombuf`).
    pub rx_dropped: u64,
    /// Packets the driver failed to send.
    pub tx_dropped: u64,
    /// Malformed input and refused handles.
    pub errors: u64,
    /// Per rx queue.
    pub rx_queues: Vec<QueueStats>,
    /// Per tx queue.
    pub tx_queues: Vec<QueueStats>,
}
