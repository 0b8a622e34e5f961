//! Fixed layout of a ring inside its memzone. Offsets from the start of the memzone:
//!
//! ```text
//! 0     64   RingInfo   magic "SHMDPRNG", layout version, header size, flags, element
//!                       size, slot count, capacity, name   (written once, read as a copy)
//! 64    64   RingCtrl   failed flag, corruption counter, hand-off words (local owner,
//!                       local-until position) for the users' ownership protocol
//! 128   256  prod       HeadTail: 128 head, 136 role holder (pid, start time)
//!                                 192 (guard)   256 tail   320 (guard)
//! 384   256  cons       HeadTail: 384 head, 392 role holder   448 (guard)   512 tail
//!                                 576 (guard)
//! 640   24576 records   REC_COUNT (192) OpRecords, one per multi-role handle (a mempool
//!                       cache holds two: 64 caches and 64 more), REC_STRIDE (128) apart:
//!                       a 64-byte record and a guard line: owner, start time, range,
//!                       state, repairer, adopt-from
//!                       (see [`crate::records`])
//! 25216 ...  slots[slot_count] of elem_size bytes each
//! ```
//!
//! Each head and each tail has a cache line of its own, followed by a guard line that keeps
//! the adjacent-line prefetcher from pairing it with its neighbour. The other side reads
//! only a tail, so a multi-producer's head CAS finds its line still exclusive in its own
//! cache instead of fetching it back from a consumer polling the tail (layout 1 kept head
//! and tail on one line, as DPDK does; the two-core MP/MC bulk-32 bench went from 6.3 to
//! 4.7 ns per element with this layout).
//!
//! Indices are free-running `u32`s; slot = index & (slot_count - 1). The number of
//! elements is `prod.tail - cons.tail` (wrapping), at most `capacity` (which may be any
//! value up to `slot_count`: all slots are usable, unlike DPDK's default of count - 1).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use shm::liveness::Holder;

use crate::sync::{AtomicU32, AtomicU64};

/// First bytes of every ring.
pub const RING_MAGIC: [u8; 8] = *b"SHMDPRNG";
/// Layout major version; readers refuse any other.
pub const RING_LAYOUT_MAJOR: u16 = 5;
/// Layout minor version.
pub const RING_LAYOUT_MINOR: u16 = 0;
/// Offset of [`RingCtrl`].
pub const CTRL_OFF: u64 = 64;
/// Offset of the producers' [`HeadTail`].
pub const PROD_OFF: u64 = 128;
/// Offset of the consumers' [`HeadTail`].
pub const CONS_OFF: u64 = 384;
/// Offset of the reservation records ([`OpRecord`]).
pub const RECS_OFF: u64 = 640;
/// Number of reservation records: the most multi-role handles (all processes, all clones)
/// that can be recorded at once. A handle made when none is free is unrecorded.
pub const REC_COUNT: usize = 192;
/// Bytes from one record to the next: the record's line and a guard line, so that two
/// handles' records never share a line or an adjacent-line prefetch pair.
pub const REC_STRIDE: u64 = 128;
/// Offset of slot 0; also the header size.
pub const SLOTS_OFF: u64 = RECS_OFF + REC_COUNT as u64 * REC_STRIDE;
/// Largest slot count.
pub const MAX_SLOTS: u32 = 1 << 31;

/// Ring flag: single producer (enqueue without CAS).
pub const RING_F_SP_ENQ: u32 = 1 << 0;
/// Ring flag: single consumer (dequeue without CAS).
pub const RING_F_SC_DEQ: u32 = 1 << 1;
/// All known flags.
pub const RING_F_KNOWN: u32 = RING_F_SP_ENQ | RING_F_SC_DEQ;

/// The immutable description at offset 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RingInfo {
    /// [`RING_MAGIC`].
    pub magic: [u8; 8],
    /// [`RING_LAYOUT_MAJOR`].
    pub layout_major: u16,
    /// [`RING_LAYOUT_MINOR`].
    pub layout_minor: u16,
    /// [`SLOTS_OFF`].
    pub hdr_size: u32,
    /// `RING_F_*`.
    pub flags: u32,
    /// Bytes per element (8, 16 or 32).
    pub elem_size: u32,
    /// Number of slots, a power of two.
    pub slot_count: u32,
    /// Most elements the ring holds (1..=slot_count).
    pub capacity: u32,
    /// Ring name, NUL-padded.
    pub name: [u8; 32],
}

/// Shared health words at [`CTRL_OFF`].
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingCtrl {
    /// Non-zero once an operation found the indices impossible or a peer stalled.
    pub failed: AtomicU32,
    /// How many times corruption was detected.
    pub corrupt_events: AtomicU32,
    /// Hand-off word for the ring's users (the ring itself never reads it): `pmds` keeps
    /// here the owner tag of the process whose buffers sit in the ring unmarked (its
    /// "local" entries; 0 = none). Written only by the single producer.
    pub local_owner: AtomicU32,
    /// Hand-off word: a position at or past every local entry (free-running, as the
    /// indices). Written only by the single producer.
    pub local_until: AtomicU32,
    /// Reservations of dead owners repaired (voided, published or adopted) by survivors
    /// or [`crate::Ring::repair_dead`].
    pub repairs: AtomicU32,
    /// Multi-role handles made while every record was taken (they work, unrecorded: a
    /// death inside one of their operations is repaired by nobody but its waiters).
    pub unrecorded: AtomicU32,
    /// Non-zero: records of dead owners are freed only by [`crate::Ring::repair_dead`]
    /// (the primary's reclaim), never recycled by a new handle first, so that a
    /// recovery reading them (a mempool's cache recovery) finds them
    /// ([`crate::Ring::keep_dead_records`]).
    pub keep_dead: AtomicU32,
}

/// One multi-role handle's reservation record (see `records.rs` for the protocol).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct OpRecord {
    /// `side << 32 | pid` of the handle holding the record; 0 = free.
    pub owner: AtomicU64,
    /// Start time of the owner process (`/proc/PID/stat` field 22), 0 if unknown.
    pub start_time: AtomicU64,
    /// `len << 32 | start` of the current (or last) reservation.
    pub range: AtomicU64,
    /// `seq << 32 | state` of the current (or last) operation.
    pub state: AtomicU64,
    /// `tag << 32 | pid` of whoever holds the right to repair this record's reservation
    /// (0 = nobody).
    pub repairer: AtomicU64,
    /// Consumer records: the reservation this operation is adopting, while its state
    /// carries a tentative count (`(index + 1) << 32 | seq` of the voided record; see
    /// `records.rs`, "adoption").
    pub adopt_from: AtomicU64,
}

impl OpRecord {
    /// A free record.
    pub(crate) fn new() -> OpRecord {
        OpRecord {
            owner: AtomicU64::new(0),
            start_time: AtomicU64::new(0),
            range: AtomicU64::new(0),
            state: AtomicU64::new(0),
            repairer: AtomicU64::new(0),
            adopt_from: AtomicU64::new(0),
        }
    }
}

/// One side's indices: the head and the role claim on one cache line, the tail on another,
/// each followed by a guard line (see the module docs for why).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct HeadTail {
    /// Next index to reserve.
    pub head: AtomicU32,
    /// Zero.
    pub reserved: u32,
    /// The process holding the single-producer/consumer role (pid and start time, see
    /// [`shm::liveness`]); free for MP/MC. Written only when a role handle is made or
    /// dropped (layout 5; layout 4 had a pid-only word at offset 4).
    pub owner: Holder,
    _head_guard: GuardLine,
    /// Next index not yet published (everything before it is complete).
    pub tail: TailLine,
    _tail_guard: GuardLine,
}

impl HeadTail {
    /// A fresh side: every index 0, no owner.
    pub(crate) fn new() -> HeadTail {
        HeadTail {
            head: AtomicU32::new(0),
            reserved: 0,
            owner: Holder::new(),
            _head_guard: GuardLine([0; 64]),
            tail: TailLine {
                tail: AtomicU32::new(0),
                handed: AtomicU32::new(0),
                holes: AtomicU32::new(0),
                stuck: AtomicU64::new(0),
            },
            _tail_guard: GuardLine([0; 64]),
        }
    }
}

/// The tail word, alone on its cache line with two rarely written hints that the other
/// side reads next to the tail it loads anyway (same line: no extra miss, no pointer
/// chase); dereferences to the tail.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TailLine {
    tail: AtomicU32,
    /// Ranges of this side handed over (finished, owner gone) and not yet published:
    /// while non-zero, an operation of the other side short of slots (elements) helps
    /// publish them.
    pub handed: AtomicU32,
    /// Producer side only: hole elements published and not yet skipped by a consumer;
    /// while non-zero, consumers look for holes in what they dequeue (it may stay above
    /// zero if a consumer dies between skipping and counting: a scan, never an error).
    pub holes: AtomicU32,
    /// `tail << 32 | ms` (ms of `CLOCK_MONOTONIC`, low bit forced to 1; 0 = never set):
    /// since when a waiter or helper has seen this side's tail stay at `tail` with a
    /// range pending there. Written only while the tail is stuck (cold); it bounds below
    /// how long the range at the tail has held it, which decides when a live owner's
    /// untouched reservation may be voided (see `records.rs`).
    pub stuck: AtomicU64,
}

impl std::ops::Deref for TailLine {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.tail
    }
}

/// A cache line nobody touches.
#[repr(C, align(64))]
#[derive(Debug)]
struct GuardLine([u8; 64]);

#[cfg(not(loom))]
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<RingInfo>() == 64);
    assert!(size_of::<RingCtrl>() == 64);
    assert!(size_of::<OpRecord>() == 64);
    assert!(SLOTS_OFF == 25216);
    assert!(size_of::<HeadTail>() == 256);
    assert!(std::mem::offset_of!(HeadTail, tail) == 128);
    assert!(std::mem::offset_of!(HeadTail, owner) == 8);
};
// Under loom the atomics are larger; they must still fit the reserved space.
const _: () = assert!(std::mem::size_of::<RingCtrl>() <= (PROD_OFF - CTRL_OFF) as usize);
const _: () = assert!(std::mem::size_of::<HeadTail>() <= (CONS_OFF - PROD_OFF) as usize);
const _: () = assert!(std::mem::size_of::<HeadTail>() <= (RECS_OFF - CONS_OFF) as usize);
const _: () = assert!(std::mem::size_of::<OpRecord>() <= REC_STRIDE as usize);
const _: () = assert!(SLOTS_OFF.is_multiple_of(64));
