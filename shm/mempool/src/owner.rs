//! Who holds what: owner tags written into mbuf headers and cache slots, and the process
//! liveness checks that decide when a holder is gone.

/// Identifies the holder of an mbuf (or a cache) in shared memory: a process slot of the
/// primary's control table, or one of the two special states.
///
/// Values: `0` free (in the pool), `u32::MAX` in transit (put in a ring by one process,
/// not yet adopted by another), [`OwnerTag::GUEST`], and process tags below it:
/// `1 + slot + 128 * attachment` for process slot `slot` (0..128; the primary is slot 0,
/// so its tag is 1) and the primary's count of attachments so far
/// ([`OwnerTag::attached`]), so that a slot used again gets a tag of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerTag(pub u32);

impl OwnerTag {
    /// In the pool.
    pub const FREE: OwnerTag = OwnerTag(0);
    /// In a ring between processes.
    pub const TRANSIT: OwnerTag = OwnerTag(u32::MAX);
    /// The primary (process slot 0).
    pub const PRIMARY: OwnerTag = OwnerTag(1);
    /// A QEMU guest attached through IVSHMEM (no process slot on the host).
    pub const GUEST: OwnerTag = OwnerTag(0x4000_0000);

    /// Process slots a tag can name (slot numbers are 0..this).
    pub const SLOTS: u32 = 128;
    /// Attachments a slot can see before tags repeat.
    pub const ATTACHMENTS: u32 = (OwnerTag::GUEST.0 - 1) / OwnerTag::SLOTS;

    /// The tag of process slot `slot` (0 = primary) in its first use (the primary's own
    /// tag; tests).
    pub fn process(slot: u32) -> OwnerTag {
        OwnerTag::attached(slot, 0)
    }

    /// The tag of process slot `slot` (`< SLOTS`) for the primary's `attachment`-th
    /// attachment (taken modulo [`OwnerTag::ATTACHMENTS`]): always a process tag, below
    /// [`OwnerTag::GUEST`].
    pub fn attached(slot: u32, attachment: u32) -> OwnerTag {
        let slot = slot.min(OwnerTag::SLOTS - 1);
        OwnerTag(1 + slot + OwnerTag::SLOTS * (attachment % OwnerTag::ATTACHMENTS))
    }

    /// True for a process tag (neither free nor in transit).
    pub fn is_process(self) -> bool {
        self != OwnerTag::FREE && self != OwnerTag::TRANSIT
    }
}

// Liveness of a holder: one rule, in `shm` (re-exported for this crate's users).
pub use shm::liveness::{pid_alive, process_gone, process_start_time};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "probes pids and reads /proc")]
    fn tags_and_liveness() {
        assert_eq!(OwnerTag::process(0), OwnerTag::PRIMARY);
        assert_eq!(OwnerTag::process(3), OwnerTag(4));
        assert!(OwnerTag::process(u32::MAX).is_process());
        assert_ne!(OwnerTag::attached(3, 1), OwnerTag::attached(3, 2));
        assert_ne!(OwnerTag::attached(3, 1), OwnerTag::attached(4, 1));
        for a in [
            0,
            1,
            OwnerTag::ATTACHMENTS - 1,
            OwnerTag::ATTACHMENTS,
            u32::MAX,
        ] {
            let t = OwnerTag::attached(OwnerTag::SLOTS - 1, a);
            assert!(t.is_process() && t.0 < OwnerTag::GUEST.0, "{a}: {t:?}");
        }
        assert!(!OwnerTag::TRANSIT.is_process() && !OwnerTag::FREE.is_process());
        // The liveness functions re-exported here are tested where they live
        // (`shm::liveness`).
    }
}
