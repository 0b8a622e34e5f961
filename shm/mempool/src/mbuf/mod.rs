//! Packet buffers (mbufs): the objects of an mbuf pool, each a fixed 128-byte header
//! followed by headroom and data room, and the safe API over them.
//!
//! Object layout (offsets from the object start; the object stride is a multiple of 128):
//!
//! ```text
//! 0     128  MbufHeader   (two cache lines, below)
//! 128   headroom          (default 128 B: room to prepend headers)
//! ...   data room         (default 2048 B)
//! ```
//!
//! [`MbufHeader`], line 0 (what the fast path touches): `index` and `pool_id` (the buffer's
//! identity, checked on adopt), `owner` (an [`OwnerTag`]), `refcnt`, `data_off`, `nb_segs`,
//! `port`, `data_len`, `pkt_len`, `packet_type`, `ol_flags`, `vlan_tci`, `vlan_tci_outer`,
//! `rss_hash`, `next` (the next segment's [`MbufHandle`], 0 = last), `buf_len`; line 1:
//! `user_data`, `timestamp`, `tx_offload`, reserved.
//!
//! Where it sits: a process allocates mbufs from its [`MbufCache`] (a per-thread handle
//! with a cache slot in shared memory), fills them, and hands them to another process or a
//! port through a ring as an [`MbufHandle`] ([`Mbuf::into_transit`]); the receiver turns
//! the handle back into an [`Mbuf`] with [`MbufCache::adopt`], which validates everything
//! it reads. Dropping an `Mbuf` frees it (every segment) to the dropper's cache.
//!
//! Ownership is written into each header so a dead process's buffers can be found: `owner`
//! is the holder's tag while a process holds it, [`OwnerTag::TRANSIT`] while it sits in a
//! ring, [`OwnerTag::FREE`] in the pool. Adopting is a compare-and-swap from `TRANSIT`, so
//! a duplicated or stale handle is refused instead of giving two processes one buffer, and
//! freeing checks the tag, so a double free is counted instead of corrupting the free list.
//! [`MbufPool::reclaim_owner`] returns a dead process's buffers. Reference-counted clones
//! ([`Mbuf::clone_ref`]) stay inside one process: only a buffer with one reference may go
//! into transit.
//!
//! Headers live in memory other processes (and guests) can write: fields are re-validated
//! on each access and an impossible value is clamped (an empty data span) and counted,
//! never used to reach outside the buffer.
//!
//! Files: the header layout, handles and geometry (`header.rs`); the pool and its
//! reclaim by tag (`pool.rs`); the per-thread allocator's alloc and free paths
//! (`cache.rs`); the owned packet and its data operations (`packet.rs`); going into and
//! out of transit, with every check on a received handle (`transit.rs`).
//!
//! [`OwnerTag`]: crate::OwnerTag
//! [`OwnerTag::TRANSIT`]: crate::OwnerTag::TRANSIT
//! [`OwnerTag::FREE`]: crate::OwnerTag::FREE

mod cache;
mod header;
mod packet;
mod pool;
mod transit;

pub use cache::MbufCache;
pub(crate) use header::header_ptr;
pub use header::{
    MbufHandle, MbufHeader, DEFAULT_DATA_ROOM, DEFAULT_HEADROOM, MAX_SEGS, MBUF_HEADER_SIZE,
    NO_PORT,
};
pub use packet::Mbuf;
pub use pool::{MbufPool, MbufPoolParams, Reclaimed};
pub(crate) use transit::Claim;
pub use transit::MbufError;
