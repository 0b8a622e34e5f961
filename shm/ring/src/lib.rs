//! `shm-ring`: fixed-capacity lock-free rings that live entirely inside a memseg.
//!
//! The ring is the dataplane's artery: mbuf handles move between processes, ports and
//! guests through rings. The primary creates a ring in a memzone
//! ([`Ring::create`]); secondaries (and later guests, mapping the memseg at another
//! address) open it by name ([`Ring::lookup`]). Nothing in the ring is a pointer.
//!
//! - **Modes**, fixed at creation as in DPDK: single or multi producer × single or multi
//!   consumer ([`SyncMode`]). Roles are types: [`SpProducer`]/[`ScConsumer`] are not
//!   `Clone` and claim their role in shared memory; [`MpProducer`]/[`McConsumer`] clone.
//! - **Operations**: `enqueue_bulk` (all or nothing), `enqueue_burst` (as many as fit),
//!   `dequeue_bulk`, `dequeue_burst`, single-element forms, `count`, `free_count`, and a
//!   zero-copy reserve/commit (produce) and peek/release (consume) for SP/SC.
//! - **Elements**: 4-byte object indices (`u32`, how mempools keep their free lists),
//!   8-byte handles (`u64`, how mbufs travel) and fixed 16- and 32-byte elements
//!   (`[u64; 2]`, `[u64; 4]`), see [`Element`].
//! - **Capacity is exact**: a ring made for `n` holds `n` (the slot count is the next power
//!   of two), unlike DPDK's default of `count - 1`.
//! - **Untrusted indices**: every slot index is masked, so no value in the header can make
//!   the ring touch memory outside its slots; an impossible state (more elements than the
//!   capacity) is reported as [`RingError::Corrupt`], never spun on or handed out.
//! - **Guest-writable rings**: the host opens a ring in an IVSHMEM export segment with
//!   [`Ring::untrusted_producer`] / [`Ring::untrusted_consumer`], whose every operation is
//!   bounded (no CAS retry or wait a guest can prolong), copies slots with volatile
//!   accesses and keeps a single-role side's head privately ([`UntrustedProducer`]).
//!
//! - **Crash repair**: a process killed between its head CAS and its tail publication
//!   does not brick a multi-producer (consumer) ring. Every multi-role handle holds a
//!   reservation record in the ring's header and writes its range there before the CAS;
//!   a survivor blocked at the tail finds the record, sees its owner is dead and repairs:
//!   an unwritten producer range becomes holes ([`Element::HOLE`], which dequeues skip),
//!   a written one is published, a dead consumer's uncopied elements are adopted. A live
//!   owner stopped there (SIGSTOP) does not brick it either: once its untouched range has
//!   held the tail longer than [`VOID_AFTER`], a waiter voids it the same way, and the
//!   owner, resuming, retries its operation (a finished range is published by any waiter
//!   at once). The
//!   primary calls [`Ring::repair_dead`] when it reclaims a process; a caller that logs
//!   [`MpProducer::next_op_seq`] learns from [`Ring::record_of`] whether that operation
//!   took effect. Diagram and proof sketch: [`records`].
//!
//! Why it is faster than `rte_ring`: each handle keeps a private copy of the other side's
//! tail and only re-reads the shared one when that copy says the ring is full (empty), so
//! in steady state a burst touches one shared cache line instead of two; single-role sides
//! keep their own head privately and need no read of it at all. And each head and tail
//! has a cache line of its own ([`layout`]): the other side reads only a tail, so polling
//! it never pulls away the line a multi-producer (consumer) CASes its head on.
#![deny(missing_docs)]

mod core;
mod handles;
pub mod layout;
pub mod records;
mod sync;
mod untrusted;

use std::ptr::NonNull;

use shm::{Memseg, Memzone, MemzoneKind, Region};
use zerocopy::{FromBytes, Immutable, IntoBytes};

pub use crate::core::STALL_TIMEOUT;
pub use handles::{
    McConsumer, MpProducer, ReadSlots, RingFull, ScConsumer, SpProducer, WriteSlots,
};
use layout::*;
pub use records::{
    OpState, RecordView, RepairReport, HANDOVER_AFTER, REPAIR_EVERY, REPAIR_FIRST, VOID_AFTER,
};
/// Liveness of a holder: the one rule, in `shm` (re-exported for this crate's users).
pub use shm::liveness::{pid_alive, process_gone, process_start_time};
pub use untrusted::{
    UntrustedConsumer, UntrustedProducer, UNTRUSTED_CAS_TRIES, UNTRUSTED_PUBLISH_SPINS,
};

/// A ring element: plain bytes of 4, 8, 16 or 32 bytes that any bit pattern makes valid
/// (what a peer wrote into a slot is a value to validate, never undefined behaviour).
///
/// [`Element::HOLE`] (all bits set) is reserved: it is what a repaired producer
/// reservation leaves in its slots, and consumers skip it. Never enqueue it.
pub trait Element:
    Copy + PartialEq + FromBytes + IntoBytes + Immutable + Send + Sync + 'static
{
    /// The hole value: all bits set.
    const HOLE: Self;
    /// True for [`Element::HOLE`].
    #[inline(always)]
    fn is_hole(&self) -> bool {
        *self == Self::HOLE
    }
}
impl Element for u32 {
    const HOLE: u32 = u32::MAX;
}
impl Element for u64 {
    const HOLE: u64 = u64::MAX;
}
impl Element for [u64; 2] {
    const HOLE: [u64; 2] = [u64::MAX; 2];
}
impl Element for [u64; 4] {
    const HOLE: [u64; 4] = [u64::MAX; 4];
}

/// Producer and consumer synchronisation, chosen when the ring is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncMode {
    /// Exactly one producer at a time (no CAS on enqueue).
    pub single_producer: bool,
    /// Exactly one consumer at a time (no CAS on dequeue).
    pub single_consumer: bool,
}

impl SyncMode {
    /// Single producer, single consumer.
    pub const SP_SC: SyncMode = SyncMode {
        single_producer: true,
        single_consumer: true,
    };
    /// Multi producer, multi consumer.
    pub const MP_MC: SyncMode = SyncMode {
        single_producer: false,
        single_consumer: false,
    };
    /// Multi producer, single consumer.
    pub const MP_SC: SyncMode = SyncMode {
        single_producer: false,
        single_consumer: true,
    };
    /// Single producer, multi consumer.
    pub const SP_MC: SyncMode = SyncMode {
        single_producer: true,
        single_consumer: false,
    };

    fn flags(self) -> u32 {
        (if self.single_producer {
            RING_F_SP_ENQ
        } else {
            0
        }) | (if self.single_consumer {
            RING_F_SC_DEQ
        } else {
            0
        })
    }
}

/// Errors of ring operations and of opening a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The indices in shared memory are impossible (more elements than the capacity):
    /// something overwrote them. The ring is marked failed.
    #[error(
        "ring indices are corrupt (prod {prod_head}/{prod_tail}, cons {cons_head}/{cons_tail})"
    )]
    Corrupt {
        /// Producer head seen.
        prod_head: u32,
        /// Producer tail seen.
        prod_tail: u32,
        /// Consumer head seen.
        cons_head: u32,
        /// Consumer tail seen.
        cons_tail: u32,
    },
    /// An unrecorded multi-producer (consumer) waited [`STALL_TIMEOUT`] for an earlier one
    /// that neither published nor could be repaired (recorded handles never return it).
    #[error("ring stalled: a peer reserved slots and never published them")]
    Stalled,
    /// Untrusted handles only: nothing moved this time (the CAS budget ran out against a
    /// peer moving the head, or an earlier publication of this handle still waits for an
    /// earlier peer). Count it and try again later.
    #[error("ring busy: a peer kept the head moving or has not published; nothing moved")]
    Busy,
    /// The single-producer (consumer) role is held by a live process.
    #[error("the single-{} role of this ring is held by pid {pid}", if *producer { "producer" } else { "consumer" })]
    RoleTaken {
        /// Producer side (else consumer side).
        producer: bool,
        /// Holder.
        pid: u32,
    },
    /// The handle asked for does not match the ring's mode.
    #[error("the ring is {mode}; it has no {asked} handle")]
    WrongMode {
        /// The ring's mode.
        mode: &'static str,
        /// The handle asked for.
        asked: &'static str,
    },
    /// The memzone does not hold a valid ring of this element type.
    #[error("not a usable ring: {0}")]
    BadRing(String),
    /// Creating the ring failed in the memseg.
    #[error("cannot create ring: {0}")]
    Create(String),
}

/// An opened ring of `T`: validated once, then used through role handles.
pub struct Ring<T: Element> {
    core: core::RingCore<T>,
    info: RingInfo,
}

impl<T: Element> Clone for Ring<T> {
    /// Another view of the same ring (the mapping stays alive while any view does).
    fn clone(&self) -> Self {
        Ring {
            core: self.core.clone(),
            info: self.info,
        }
    }
}

impl<T: Element> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.name())
            .field("capacity", &self.info.capacity)
            .field("flags", &self.info.flags)
            .finish()
    }
}

/// Bytes a ring of `capacity` elements of `T` needs in its memzone.
pub fn ring_bytes<T: Element>(capacity: u32) -> Option<u64> {
    let slots = slot_count(capacity)?;
    Some(SLOTS_OFF + u64::from(slots) * std::mem::size_of::<T>() as u64)
}

fn slot_count(capacity: u32) -> Option<u32> {
    if capacity == 0 || capacity > MAX_SLOTS {
        return None;
    }
    capacity.checked_next_power_of_two()
}

impl<T: Element> Ring<T> {
    /// Reserves a memzone named `name` in `seg` (primary only) and creates an empty ring of
    /// exactly `capacity` elements in it.
    ///
    /// # Errors
    /// [`RingError::Create`] for a bad capacity, or when the memzone cannot be reserved.
    pub fn create(
        seg: &Memseg,
        name: &str,
        capacity: u32,
        mode: SyncMode,
    ) -> Result<Ring<T>, RingError> {
        let bytes = ring_bytes::<T>(capacity).ok_or_else(|| {
            RingError::Create(format!("capacity {capacity} is not in 1..={MAX_SLOTS}"))
        })?;
        let zone = seg
            .reserve(name, bytes, 64, MemzoneKind::Ring)
            .map_err(|e| RingError::Create(e.to_string()))?;
        Self::init(
            zone.region(),
            zone.offset,
            zone.len_bytes,
            name,
            capacity,
            mode,
        )
    }

    /// Lays out an empty ring at `off` in `region` (which must be zeroed or unused).
    ///
    /// # Errors
    /// [`RingError::Create`] if it does not fit or the parameters are bad.
    pub fn init(
        region: &Region,
        off: u64,
        len_bytes: u64,
        name: &str,
        capacity: u32,
        mode: SyncMode,
    ) -> Result<Ring<T>, RingError> {
        let slots = slot_count(capacity).ok_or_else(|| {
            RingError::Create(format!("capacity {capacity} is not in 1..={MAX_SLOTS}"))
        })?;
        let need = ring_bytes::<T>(capacity).expect("checked");
        if len_bytes < need {
            return Err(RingError::Create(format!(
                "{len_bytes} bytes is too small for {capacity} elements ({need} needed)"
            )));
        }
        let name_bytes = shm::layout::encode_name(name)
            .ok_or_else(|| RingError::Create(format!("bad ring name {name:?}")))?;
        let info = RingInfo {
            magic: RING_MAGIC,
            layout_major: RING_LAYOUT_MAJOR,
            layout_minor: RING_LAYOUT_MINOR,
            hdr_size: SLOTS_OFF as u32,
            flags: mode.flags(),
            elem_size: std::mem::size_of::<T>() as u32,
            slot_count: slots,
            capacity,
            name: name_bytes,
        };
        let oob = |e: shm::OutOfBounds| RingError::Create(e.to_string());
        let ctrl = region.span_of::<RingCtrl>(off + CTRL_OFF, 1).map_err(oob)?;
        let prod = region.span_of::<HeadTail>(off + PROD_OFF, 1).map_err(oob)?;
        let cons = region.span_of::<HeadTail>(off + CONS_OFF, 1).map_err(oob)?;
        // SAFETY (all three writes): the spans were bounds- and alignment-checked above and
        // are not yet shared (the ring is being created, before its name is published or
        // handles exist); writing fresh values (not assigning) is required under loom,
        // whose atomics must be constructed.
        let fresh = RingCtrl {
            failed: sync::AtomicU32::new(0),
            corrupt_events: sync::AtomicU32::new(0),
            local_owner: sync::AtomicU32::new(0),
            local_until: sync::AtomicU32::new(0),
            repairs: sync::AtomicU32::new(0),
            unrecorded: sync::AtomicU32::new(0),
            keep_dead: sync::AtomicU32::new(0),
        };
        // SAFETY: see above.
        unsafe { ctrl.as_ptr().write(fresh) };
        // SAFETY: see above.
        unsafe { prod.as_ptr().write(HeadTail::new()) };
        // SAFETY: see above.
        unsafe { cons.as_ptr().write(HeadTail::new()) };
        for i in 0..records::SCAN as u64 {
            let rec = region
                .span_of::<OpRecord>(off + RECS_OFF + i * REC_STRIDE, 1)
                .map_err(oob)?;
            // SAFETY: as above.
            unsafe { rec.as_ptr().write(OpRecord::new()) };
        }
        region.write(off, &info).map_err(oob)?;
        Self::open(region, off, len_bytes)
    }

    /// Opens the ring in `zone` (any process), validating its header.
    ///
    /// # Errors
    /// [`RingError::BadRing`] if the zone is not a ring of `T`.
    pub fn from_memzone(zone: &Memzone) -> Result<Ring<T>, RingError> {
        if zone.kind != MemzoneKind::Ring {
            return Err(RingError::BadRing(format!(
                "memzone {} holds a {:?}, not a ring",
                zone.name, zone.kind
            )));
        }
        Self::open(zone.region(), zone.offset, zone.len_bytes)
    }

    /// Finds the ring named `name` in `seg` and opens it.
    ///
    /// # Errors
    /// [`RingError::BadRing`] if absent or invalid.
    pub fn lookup(seg: &Memseg, name: &str) -> Result<Ring<T>, RingError> {
        let zone = seg
            .lookup(name)
            .map_err(|e| RingError::BadRing(e.to_string()))?;
        Self::from_memzone(&zone)
    }

    /// Validates the header at `off` (`len_bytes` available) and opens the ring.
    ///
    /// # Errors
    /// [`RingError::BadRing`] naming what is wrong.
    pub fn open(region: &Region, off: u64, len_bytes: u64) -> Result<Ring<T>, RingError> {
        let bad = |why: String| RingError::BadRing(why);
        if len_bytes < SLOTS_OFF {
            return Err(bad(format!("{len_bytes} bytes cannot hold a ring header")));
        }
        let info: RingInfo = region.read_copy(off).map_err(|e| bad(e.to_string()))?;
        if info.magic != RING_MAGIC {
            return Err(bad("bad magic".into()));
        }
        if info.layout_major != RING_LAYOUT_MAJOR {
            return Err(bad(format!(
                "layout version {} (this build reads {RING_LAYOUT_MAJOR})",
                info.layout_major
            )));
        }
        if u64::from(info.hdr_size) != SLOTS_OFF || info.flags & !RING_F_KNOWN != 0 {
            return Err(bad(format!(
                "header size {} or flags {:#x} unknown",
                info.hdr_size, info.flags
            )));
        }
        if info.elem_size as usize != std::mem::size_of::<T>() {
            return Err(bad(format!(
                "elements are {} bytes, not {}",
                info.elem_size,
                std::mem::size_of::<T>()
            )));
        }
        if !info.slot_count.is_power_of_two()
            || info.slot_count > MAX_SLOTS
            || info.capacity == 0
            || info.capacity > info.slot_count
        {
            return Err(bad(format!(
                "slot count {} / capacity {} impossible",
                info.slot_count, info.capacity
            )));
        }
        let need = SLOTS_OFF + u64::from(info.slot_count) * u64::from(info.elem_size);
        if need > len_bytes {
            return Err(bad(format!(
                "{} slots need {need} bytes but the zone has {len_bytes}",
                info.slot_count
            )));
        }
        let e = |x: shm::OutOfBounds| bad(x.to_string());
        let ctrl = region.span_of::<RingCtrl>(off + CTRL_OFF, 1).map_err(e)?;
        let prod = region.span_of::<HeadTail>(off + PROD_OFF, 1).map_err(e)?;
        let cons = region.span_of::<HeadTail>(off + CONS_OFF, 1).map_err(e)?;
        let recs = region
            .span_of::<u8>(off + RECS_OFF, REC_COUNT as u64 * REC_STRIDE)
            .map_err(e)?;
        let slots: NonNull<T> = region
            .span_of::<T>(off + SLOTS_OFF, u64::from(info.slot_count))
            .map_err(e)?;
        // SAFETY: every span was bounds- and alignment-checked in `region` above (the
        // records' span is 64-aligned because RECS_OFF is and the zone is); the headers
        // and records were initialised by `init` (any bytes are valid atomics outside
        // loom), and the core keeps `region` alive.
        let core = unsafe {
            core::RingCore::new(
                region.clone(),
                prod,
                cons,
                ctrl,
                recs,
                slots,
                info.slot_count - 1,
                info.capacity,
            )
        };
        Ok(Ring { core, info })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        shm::layout::decode_name(&self.info.name).unwrap_or("?")
    }

    /// Most elements the ring holds.
    pub fn capacity(&self) -> usize {
        self.info.capacity as usize
    }

    /// The mode it was created with.
    pub fn mode(&self) -> SyncMode {
        SyncMode {
            single_producer: self.info.flags & RING_F_SP_ENQ != 0,
            single_consumer: self.info.flags & RING_F_SC_DEQ != 0,
        }
    }

    fn mode_name(&self) -> &'static str {
        match (self.mode().single_producer, self.mode().single_consumer) {
            (true, true) => "SP/SC",
            (true, false) => "SP/MC",
            (false, true) => "MP/SC",
            (false, false) => "MP/MC",
        }
    }

    /// Elements in the ring now (holes of repaired reservations not yet skipped by a
    /// consumer included).
    pub fn count(&self) -> usize {
        self.core.count() as usize
    }

    /// Free slots now.
    pub fn free_count(&self) -> usize {
        self.capacity() - self.count()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// True when full.
    pub fn is_full(&self) -> bool {
        self.count() == self.capacity()
    }

    /// True once corruption or a stall was detected.
    pub fn is_failed(&self) -> bool {
        self.core.ctrl().failed.load(sync::Ordering::Relaxed) != 0
    }

    /// The hand-off word naming the owner of the ring's local entries (see
    /// [`RingCtrl::local_owner`]); the ring never reads it.
    pub fn local_owner(&self) -> &sync::AtomicU32 {
        &self.core.ctrl().local_owner
    }

    /// The hand-off word bounding the positions of the local entries (see
    /// [`RingCtrl::local_until`]); the ring never reads it.
    pub fn local_until(&self) -> &sync::AtomicU32 {
        &self.core.ctrl().local_until
    }

    /// Pid holding the single-consumer role (0: none, or a multi-consumer ring).
    pub fn consumer_pid(&self) -> u32 {
        self.core.cons().owner.pid()
    }

    /// The process holding the single-consumer role (pid and start time), if any.
    pub fn consumer_process(&self) -> Option<shm::liveness::Process> {
        self.core.cons().owner.holder()
    }

    /// The producers' tail: the position after the last published element.
    pub fn prod_tail(&self) -> u32 {
        // Acquire: pairs with the producer's Release publish (R1), so the elements before
        // it are visible to whoever reads them next.
        self.core.prod().tail.load(sync::Ordering::Acquire)
    }

    /// The consumers' tail: the position of the oldest element not yet released.
    pub fn cons_tail(&self) -> u32 {
        // Acquire: pairs with the consumer's Release of its tail (R2).
        self.core.cons().tail.load(sync::Ordering::Acquire)
    }

    /// How many times corruption was detected.
    pub fn corrupt_events(&self) -> u32 {
        self.core
            .ctrl()
            .corrupt_events
            .load(sync::Ordering::Relaxed)
    }

    /// Reservations repaired so far (voided, adopted or published by a survivor or by
    /// [`Ring::repair_dead`]).
    pub fn repairs(&self) -> u32 {
        self.core.ctrl().repairs.load(sync::Ordering::Relaxed)
    }

    /// The reservation records held by the process `pid` (started at `start_time`, as
    /// [`process_start_time`] gives it; 0 matches any), live or dead: what each one's
    /// last operation is doing. A caller that logged [`MpProducer::next_op_seq`] before an
    /// operation learns from [`RecordView::completed`] whether it took effect.
    pub fn record_of(&self, pid: u32, start_time: u64) -> Vec<RecordView> {
        self.core
            .records_of(pid, start_time)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Record `index` if its owner handed it over (an operation that finished its copy
    /// and then waited [`HANDOVER_AFTER`] for an earlier peer gives its range to the ring,
    /// and the handle claims a fresh record): [`Ring::record_of`] no longer lists it under
    /// the owner's pid, so a caller that logged the record's index and
    /// [`MpProducer::next_op_seq`] before the operation looks here. `None` when the record
    /// is not a handed-over one (in use by someone, or free).
    pub fn handed_record(&self, index: usize) -> Option<RecordView> {
        self.core.handed_view(index)
    }

    /// For the primary, when it reclaims a dead process: repairs and frees every record
    /// of `pid` (started at `start_time`, 0 = any). A producer reservation not fully
    /// written becomes holes (nothing was enqueued: the caller still owns those
    /// elements); a consumer reservation not copied out gives its elements back in
    /// [`RepairReport::returned`] (they have left the ring: put them back); finished ones
    /// are published. Records of a live owner are left alone (counted).
    pub fn repair_dead(&self, pid: u32, start_time: u64) -> RepairReport<T> {
        self.core.repair_dead(pid, start_time)
    }

    /// From now on, records of dead owners on this ring are freed only by
    /// [`Ring::repair_dead`], never recycled by a new handle while the table is full: for
    /// rings whose users' recovery reads a dead process's records before the primary
    /// repairs the ring (a mempool's free ring: its caches' recovery,
    /// [`Ring::record_of`]). The primary must then call [`Ring::repair_dead`] for every
    /// dead process, or the table fills and new handles go unrecorded.
    pub fn keep_dead_records(&self) {
        // Relaxed: a policy word read by record claims; set once after `init`, before the
        // ring is shared (the memzone's publication orders it).
        self.core.ctrl().keep_dead.store(1, sync::Ordering::Relaxed);
    }

    /// Multi-role handles made while every record was taken (unrecorded).
    pub fn unrecorded_handles(&self) -> u32 {
        // Relaxed: statistics.
        self.core.ctrl().unrecorded.load(sync::Ordering::Relaxed)
    }

    /// Copies the elements between the consumer and producer tails into `out` (cleared
    /// first), oldest first, without consuming them; returns how many.
    ///
    /// Only a quiescent ring gives an exact picture (audits, reclaim after a process died,
    /// tests): on a live ring the copy is a snapshot that may mix old and new slots. The
    /// count is clamped to the capacity and every index is masked, so corrupt indices give
    /// a wrong list, never an access outside the slots.
    pub fn snapshot_into(&self, out: &mut Vec<T>) -> usize {
        out.clear();
        // A1/A2-style Acquire loads, as for `count`.
        let cons_tail = self.core.cons().tail.load(sync::Ordering::Acquire);
        let prod_tail = self.core.prod().tail.load(sync::Ordering::Acquire);
        let n = prod_tail.wrapping_sub(cons_tail).min(self.core.capacity);
        out.reserve(n as usize);
        for i in 0..n {
            // SAFETY: `slot_ptr` masks the index into the slot array (in bounds and aligned,
            // checked at open); a volatile load of a plain element of which any bit pattern
            // is valid, one at a time and never through a slice, since a peer (a guest, for
            // a ring in its segment) may be writing the slot: the caller accepts a racy
            // snapshot (documented above) and validates what it gets.
            out.push(unsafe {
                self.core
                    .slot_ptr(cons_tail.wrapping_add(i))
                    .read_volatile()
            });
        }
        n as usize
    }

    /// The single producer of an SP ring.
    ///
    /// # Errors
    /// [`RingError::WrongMode`] on an MP ring; [`RingError::RoleTaken`] if a live handle
    /// holds the role; [`RingError::Corrupt`].
    pub fn sp_producer(&self) -> Result<SpProducer<T>, RingError> {
        if !self.mode().single_producer {
            return Err(RingError::WrongMode {
                mode: self.mode_name(),
                asked: "single-producer",
            });
        }
        SpProducer::new(self.core.clone())
    }

    /// A producer of an MP ring.
    ///
    /// # Errors
    /// [`RingError::WrongMode`] on an SP ring.
    pub fn mp_producer(&self) -> Result<MpProducer<T>, RingError> {
        if self.mode().single_producer {
            return Err(RingError::WrongMode {
                mode: self.mode_name(),
                asked: "multi-producer",
            });
        }
        Ok(MpProducer::new(self.core.clone()))
    }

    /// The single consumer of an SC ring.
    ///
    /// # Errors
    /// As [`Ring::sp_producer`], for the consumer side.
    pub fn sc_consumer(&self) -> Result<ScConsumer<T>, RingError> {
        if !self.mode().single_consumer {
            return Err(RingError::WrongMode {
                mode: self.mode_name(),
                asked: "single-consumer",
            });
        }
        ScConsumer::new(self.core.clone(), !self.mode().single_producer)
    }

    /// A consumer of an MC ring.
    ///
    /// # Errors
    /// [`RingError::WrongMode`] on an SC ring.
    pub fn mc_consumer(&self) -> Result<McConsumer<T>, RingError> {
        if self.mode().single_consumer {
            return Err(RingError::WrongMode {
                mode: self.mode_name(),
                asked: "multi-consumer",
            });
        }
        Ok(McConsumer::new(self.core.clone()))
    }

    /// A host producer for a ring in memory a guest can write (SP or MP ring), whose every
    /// operation is bounded ([`UntrustedProducer`]). On an SP ring the caller must make it
    /// the only producer: the role word is guest-writable and is not claimed.
    pub fn untrusted_producer(&self) -> UntrustedProducer<T> {
        UntrustedProducer::new(self.core.clone(), !self.mode().single_producer)
    }

    /// A host consumer for a ring in memory a guest can write (SC or MC ring), as
    /// [`Ring::untrusted_producer`].
    pub fn untrusted_consumer(&self) -> UntrustedConsumer<T> {
        UntrustedConsumer::new(self.core.clone(), !self.mode().single_consumer)
    }
}

#[cfg(all(test, not(loom)))]
mod repair_tests;
#[cfg(all(test, not(loom)))]
mod tests;
