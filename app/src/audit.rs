//! The exact pool audit behind `shmdp-secondary pool-audit POOL --exact`: finds every
//! buffer of a **quiescent** mbuf pool (no live process working on it) in every place a
//! buffer can be, and checks that each is in exactly one, as the ownership-by-location
//! protocol (issue 16) says:
//!
//! ```text
//! header tag   where it must be (exactly one)            otherwise
//! FREE         the free ring or one cache slot           missing / duplicate
//! TRANSIT      one non-local ring entry, or one          missing / duplicate
//!              port queue in-flight record entry
//! T (live)     held privately, plus at most one LOCAL    duplicate (also in a free
//!              entry of a ring whose local_owner is T    list, or two local entries)
//! T (dead)     nowhere: the primary reclaims by tag      held_by_dead
//! ```
//!
//! Ring entries that do not match their buffer's header (a LOCAL entry whose buffer is not
//! tagged with the ring's local owner, a non-local entry whose buffer is not TRANSIT) are
//! **stale**: left by a dead process whose buffers were reclaimed; consumers refuse them, so
//! they are counted apart and are no location. In-flight record entries whose buffer is not
//! TRANSIT are stale the same way. Handles of other pools are skipped.
//!
//! [`gather`] reads the shared memory (the free ring and caches, every `u64` ring of the
//! primary's memsegs, every port's in-flight records, with the single-producer tx rule of
//! `tx_from`, every header) and asks the primary
//! which owner tags are live; [`classify`] is the pure decision, unit-tested on hand-built
//! situations below.

use serde::Serialize;
use shm_mempool::{MbufPool, OwnerTag};

/// Bit 63 of a ring entry: a LOCAL entry (written by the ring's single producer without
/// touching the header; its buffer is tagged with the ring's `local_owner`).
pub const LOCAL_BIT: u64 = 1 << 63;

/// The entries of one ring of handles, as found.
#[derive(Debug, Clone, Default)]
pub struct RingContents {
    /// Ring name (for reports).
    pub name: String,
    /// Its `local_owner` word.
    pub local_owner: u32,
    /// The entries between the consumer and producer tails.
    pub entries: Vec<u64>,
}

/// One port queue's in-flight record, as found.
#[derive(Debug, Clone, Default)]
pub struct InflightRecord {
    /// `port/rx|tx/queue` (for reports).
    pub name: String,
    /// The handles it lists (its count, clamped to the record's size).
    pub handles: Vec<u64>,
}

/// Everything the classifier looks at.
#[derive(Debug, Clone, Default)]
pub struct AuditInput {
    /// The pool's id (the high half of its handles, below bit 63).
    pub pool_id: u32,
    /// Every header's owner tag, by index (its length is the pool's object count).
    pub tags: Vec<u32>,
    /// The free ring's indices.
    pub free_ring: Vec<u32>,
    /// Each claimed cache slot's indices.
    pub caches: Vec<Vec<u32>>,
    /// Every ring of handles.
    pub rings: Vec<RingContents>,
    /// Every port queue's in-flight record.
    pub inflight: Vec<InflightRecord>,
    /// Owner tags of live processes (the primary's and every attached secondary's).
    pub live: Vec<u32>,
}

/// What the audit found (printed as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExactAudit {
    /// Buffers in the pool's object count.
    pub count: u64,
    /// FREE buffers, once in the free ring or a cache.
    pub free: u64,
    /// TRANSIT buffers, once in a ring (non-local entry).
    pub in_rings: u64,
    /// TRANSIT buffers, once in a port queue's in-flight record.
    pub in_flight: u64,
    /// Buffers tagged with a live process (privately held or in one local entry of its
    /// ring).
    pub held_by_live: u64,
    /// Ring or in-flight entries that do not match their buffer's header (no location).
    pub stale_entries: u64,
    /// Buffers found in more than one location (or in a location their header denies).
    pub duplicates: u64,
    /// Buffers in no location their header allows (lost).
    pub missing: u64,
    /// Buffers tagged with a process that is not live (not reclaimed).
    pub held_by_dead: u64,
    /// Free-list entries (ring or cache) not below the object count.
    pub out_of_range: u64,
    /// True when every buffer is exactly one of free, in a ring, in flight or held by a
    /// live process, and the free list holds no garbage.
    pub exact: bool,
    /// The first few problems, one line each.
    pub problems: Vec<String>,
}

/// Most problem lines kept in [`ExactAudit::problems`].
const MAX_PROBLEMS: usize = 12;

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    free: u32,
    transit_ring: u32,
    transit_inflight: u32,
    local: u32,
}

/// Classifies every buffer of `input` (see the module docs).
pub fn classify(input: &AuditInput) -> ExactAudit {
    let n = input.tags.len();
    let mut seen = vec![Seen::default(); n];
    let mut a = ExactAudit {
        count: n as u64,
        ..ExactAudit::default()
    };
    let problem = |a: &mut ExactAudit, line: String| {
        if a.problems.len() < MAX_PROBLEMS {
            a.problems.push(line);
        }
    };
    let free_lists = std::iter::once(&input.free_ring).chain(&input.caches);
    for list in free_lists {
        // Holes (all bits set) are positions a ring repair emptied, not objects.
        for &i in list.iter().filter(|&&i| i != u32::MAX) {
            match seen.get_mut(i as usize) {
                Some(s) => s.free += 1,
                None => {
                    a.out_of_range += 1;
                    problem(&mut a, format!("free list entry {i} is out of range"));
                }
            }
        }
    }
    // A handle of this pool: its index, if in range (anything else of this pool is stale).
    let ours = |h: u64| -> Option<Option<usize>> {
        let h = h & !LOCAL_BIT;
        ((h >> 32) as u32 == input.pool_id).then(|| {
            let i = h as u32 as usize;
            (i < n).then_some(i)
        })
    };
    for r in &input.rings {
        for &h in &r.entries {
            let Some(idx) = ours(h) else { continue };
            let Some(i) = idx else {
                a.stale_entries += 1;
                continue;
            };
            let tag = input.tags[i];
            if h & LOCAL_BIT != 0 {
                if tag == r.local_owner && OwnerTag(tag).is_process() {
                    seen[i].local += 1;
                } else {
                    a.stale_entries += 1;
                }
            } else if tag == OwnerTag::TRANSIT.0 {
                seen[i].transit_ring += 1;
            } else {
                a.stale_entries += 1;
            }
        }
    }
    for rec in &input.inflight {
        for &h in &rec.handles {
            let Some(idx) = ours(h) else { continue };
            match idx {
                Some(i) if h & LOCAL_BIT == 0 && input.tags[i] == OwnerTag::TRANSIT.0 => {
                    seen[i].transit_inflight += 1
                }
                _ => a.stale_entries += 1,
            }
        }
    }
    for (i, (s, &tag)) in seen.iter().zip(&input.tags).enumerate() {
        let transit = s.transit_ring + s.transit_inflight;
        let tag_name = match OwnerTag(tag) {
            OwnerTag::FREE => "FREE".to_string(),
            OwnerTag::TRANSIT => "TRANSIT".to_string(),
            t => format!("process tag {}", t.0),
        };
        let where_ = || {
            format!(
                "{} in free lists, {} in rings, {} in in-flight records, {} local entries",
                s.free, s.transit_ring, s.transit_inflight, s.local
            )
        };
        if OwnerTag(tag) == OwnerTag::FREE {
            match s.free {
                1 => a.free += 1,
                0 => {
                    a.missing += 1;
                    problem(&mut a, format!("buffer {i}: {tag_name}, {}", where_()));
                }
                _ => {
                    a.duplicates += 1;
                    problem(&mut a, format!("buffer {i}: {tag_name}, {}", where_()));
                }
            }
        } else if s.free > 0 || s.local > 1 {
            a.duplicates += 1;
            problem(&mut a, format!("buffer {i}: {tag_name}, {}", where_()));
        } else if OwnerTag(tag) == OwnerTag::TRANSIT {
            match (s.transit_ring, s.transit_inflight) {
                (1, 0) => a.in_rings += 1,
                (0, 1) => a.in_flight += 1,
                (0, 0) => {
                    a.missing += 1;
                    problem(&mut a, format!("buffer {i}: {tag_name}, {}", where_()));
                }
                _ => {
                    a.duplicates += 1;
                    problem(&mut a, format!("buffer {i}: {tag_name}, {}", where_()));
                }
            }
        } else {
            debug_assert_eq!(transit, 0, "non-TRANSIT entries are stale");
            if tag == OwnerTag::GUEST.0 || input.live.contains(&tag) {
                a.held_by_live += 1;
            } else {
                a.held_by_dead += 1;
                problem(
                    &mut a,
                    format!("buffer {i}: {tag_name} (not live), {}", where_()),
                );
            }
        }
    }
    a.exact = a.duplicates == 0 && a.missing == 0 && a.held_by_dead == 0 && a.out_of_range == 0;
    a
}

/// Most handles in one queue's in-flight record (pmds layout).
const INFLIGHT_MAX: u64 = pmds::layout::INFLIGHT_MAX as u64;

/// Reads everything [`classify`] needs for `pool` from the shared memory of `sec` (every
/// non-exported memseg: rings and ports) and asks the primary for the live owner tags.
///
/// # Errors
/// When the primary cannot be asked, or a memseg's memzone table is unreadable.
pub fn gather(sec: &secondary::Secondary, pool: &MbufPool) -> Result<AuditInput, String> {
    use pmds::layout::{QueueBlock, INFLIGHT_OFF, MAX_QUEUES, QUEUES_OFF, QUEUE_BLOCK};
    let live = secondary::processes(sec.prefix())
        .map_err(|e| format!("cannot ask the primary for its processes: {e}"))?
        .into_iter()
        // The auditor itself holds nothing, but it is attached and live.
        .map(|p| p.owner_tag)
        .collect();
    // The ring behind each tx queue of each ring port (by port memzone name and queue),
    // for the single-producer rule below.
    let mut tx_rings = std::collections::HashMap::new();
    for port in sec.ports().map_err(|e| shm::error_chain(&e))? {
        if port.driver() != pmds::Driver::Ring {
            continue;
        }
        let named = pmds::DevArgs::parse(port.devargs())
            .map(|d| {
                d.get_all("tx_ring")
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for q in 0..port.nb_tx_queues() {
            let ring = named
                .get(usize::from(q))
                .cloned()
                .unwrap_or_else(|| pmds::ethdev::ring_name(port.name(), q));
            tx_rings.insert((port.name().to_string(), u64::from(q)), ring);
        }
    }
    let snap = pool.mempool().free_list_snapshot();
    let mut input = AuditInput {
        pool_id: pool.mempool().id(),
        tags: pool.owner_tags(),
        free_ring: snap.ring,
        caches: snap.caches.into_iter().map(|c| c.objs).collect(),
        live,
        ..AuditInput::default()
    };
    // Single-producer rings' producer tails, by name.
    let mut sp_tails = std::collections::HashMap::new();
    let mut records = Vec::new();
    for seg in sec.memsegs() {
        let zones = seg.memzones().map_err(|e| format!("{}: {e}", seg.name()))?;
        for z in &zones {
            match z.kind {
                shm::MemzoneKind::Ring => {
                    // Rings of other element sizes (not handles) do not open as u64 rings.
                    let Ok(r) = shm_ring::Ring::<u64>::from_memzone(z) else {
                        continue;
                    };
                    let mut entries = Vec::new();
                    r.snapshot_into(&mut entries);
                    if r.mode().single_producer {
                        sp_tails.insert(z.name.clone(), r.prod_tail());
                    }
                    input.rings.push(RingContents {
                        name: z.name.clone(),
                        // Relaxed: a quiescent ring; the word is only compared.
                        local_owner: r.local_owner().load(std::sync::atomic::Ordering::Relaxed),
                        entries,
                    });
                }
                shm::MemzoneKind::Port if z.len_bytes >= pmds::layout::PORT_BYTES => {
                    let region = z.region();
                    for q in 0..2 * u64::from(MAX_QUEUES) {
                        let block = z.offset + QUEUES_OFF + q * QUEUE_BLOCK;
                        let field = |off: usize| region.atomic_u32(block + off as u64);
                        let Ok(count) = field(std::mem::offset_of!(QueueBlock, inflight)) else {
                            continue;
                        };
                        // Relaxed: a quiescent port; ordered by the poller's claim release.
                        let tx_from = field(std::mem::offset_of!(QueueBlock, tx_from))
                            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
                            .unwrap_or(0);
                        // Acquire: pairs with the poller's Release of the count.
                        let k = u64::from(count.load(std::sync::atomic::Ordering::Acquire))
                            .min(INFLIGHT_MAX);
                        let handles: Vec<u64> = (0..k)
                            .filter_map(|i| {
                                region
                                    .atomic_u64(
                                        z.offset + INFLIGHT_OFF + (q * INFLIGHT_MAX + i) * 8,
                                    )
                                    .ok()
                                    .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
                            })
                            .collect();
                        if !handles.is_empty() {
                            let (dir, qi) = if q < u64::from(MAX_QUEUES) {
                                ("rx", q)
                            } else {
                                ("tx", q - u64::from(MAX_QUEUES))
                            };
                            let ring = (dir == "tx")
                                .then(|| tx_rings.get(&(z.name.clone(), qi)).cloned())
                                .flatten();
                            records.push((
                                format!("{}/{dir}/{qi}", z.name),
                                ring,
                                tx_from,
                                handles,
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // A tx queue on a single-producer ring lists its burst before the enqueue and records
    // the ring position of the first handle (`tx_from`): the handles before the ring's
    // producer tail made it into the ring (they are the ring's), only the rest are in
    // flight (what the queue's next claimant frees). Other records list only handles in
    // flight.
    for (name, ring, tx_from, mut handles) in records {
        if let Some(tail) = ring.and_then(|r| sp_tails.get(&r).copied()) {
            let enqueued = (tail.wrapping_sub(tx_from) as usize).min(handles.len());
            handles.drain(..enqueued);
        }
        input.inflight.push(InflightRecord { name, handles });
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u32 = u32::MAX;
    const P: u32 = 7; // a live process
    const D: u32 = 9; // a dead one

    fn h(i: u32) -> u64 {
        (3u64 << 32) | u64::from(i)
    }

    /// A pool of 6 buffers: 0,1 in the free ring, 2 in a cache, 3 in transit in a ring, 4
    /// in an in-flight record, 5 held by P through a local entry of P's ring.
    fn healthy() -> AuditInput {
        AuditInput {
            pool_id: 3,
            tags: vec![0, 0, 0, T, T, P],
            free_ring: vec![0, 1],
            caches: vec![vec![2], vec![]],
            rings: vec![
                RingContents {
                    name: "x".into(),
                    local_owner: 0,
                    entries: vec![h(3), (5u64 << 32) | 1],
                },
                RingContents {
                    name: "l".into(),
                    local_owner: P,
                    entries: vec![h(5) | LOCAL_BIT],
                },
            ],
            inflight: vec![InflightRecord {
                name: "p/rx/0".into(),
                handles: vec![h(4)],
            }],
            live: vec![1, P],
        }
    }

    #[test]
    fn a_healthy_pool_is_exact() {
        let a = classify(&healthy());
        assert!(a.exact, "{a:?}");
        assert_eq!(
            (a.free, a.in_rings, a.in_flight, a.held_by_live),
            (3, 1, 1, 1)
        );
        assert_eq!((a.stale_entries, a.duplicates, a.missing), (0, 0, 0));
    }

    #[test]
    fn one_buffer_in_two_free_places_is_a_duplicate() {
        let mut i = healthy();
        i.caches[1].push(0);
        let a = classify(&i);
        assert!(!a.exact);
        assert_eq!((a.free, a.duplicates), (2, 1), "{a:?}");
    }

    #[test]
    fn a_free_buffer_in_no_free_list_is_missing() {
        let mut i = healthy();
        i.free_ring.pop();
        let a = classify(&i);
        assert_eq!((a.missing, a.exact), (1, false), "{a:?}");
    }

    #[test]
    fn a_dead_holder_and_a_free_held_buffer_are_caught() {
        let mut i = healthy();
        i.tags[5] = D;
        i.rings[1].local_owner = D;
        let a = classify(&i);
        assert_eq!((a.held_by_dead, a.exact), (1, false), "{a:?}");
        // Tagged with a live process but also in the free ring: two owners.
        let mut i = healthy();
        i.tags[0] = P;
        let a = classify(&i);
        assert_eq!((a.duplicates, a.exact), (1, false), "{a:?}");
    }

    #[test]
    fn transit_in_a_ring_and_an_inflight_record_is_a_duplicate() {
        let mut i = healthy();
        i.inflight[0].handles.push(h(3));
        let a = classify(&i);
        assert_eq!((a.duplicates, a.in_flight, a.exact), (1, 1, false), "{a:?}");
        // A transit buffer nowhere is lost.
        let mut i = healthy();
        i.inflight.clear();
        let a = classify(&i);
        assert_eq!((a.missing, a.exact), (1, false), "{a:?}");
    }

    #[test]
    fn stale_entries_are_counted_apart_and_keep_the_audit_exact() {
        let mut i = healthy();
        // Reclaimed after a crash: a non-local entry of a FREE buffer, a local entry whose
        // buffer is not the ring's owner's, an in-flight entry of a buffer adopted since,
        // and an out-of-range handle of this pool.
        i.rings[0].entries.push(h(0));
        i.rings[1].entries.push(h(1) | LOCAL_BIT);
        i.inflight[0].handles.push(h(5));
        i.rings[0].entries.push(h(99));
        let a = classify(&i);
        assert!(a.exact, "{a:?}");
        assert_eq!(a.stale_entries, 4, "{a:?}");
        // Two local entries of one buffer are not.
        let mut i = healthy();
        i.rings[1].entries.push(h(5) | LOCAL_BIT);
        assert_eq!(classify(&i).duplicates, 1);
    }

    #[test]
    fn garbage_in_the_free_list_is_not_exact() {
        let mut i = healthy();
        i.free_ring.push(6);
        let a = classify(&i);
        assert_eq!((a.out_of_range, a.exact), (1, false), "{a:?}");
    }
}
