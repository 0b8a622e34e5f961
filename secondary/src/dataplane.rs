//! One API for applications, wherever they run: [`Dataplane`] is what a packet application
//! needs from shmdp (rings, mbuf pools, ports, an allocator per thread), implemented both
//! by [`Secondary`] (a host process attached to a primary) and by
//! [`ExportSegment`] (a QEMU guest attached to its IVSHMEM device, or a host process
//! mapping the same file). An application written against `&impl Dataplane` runs unchanged
//! in both places; `shmdp-secondary fwd` and `shmdp-secondary ivshmem fwd` are one function.

use pmds::Port;
use shm_mempool::{MbufCache, MbufPool, OwnerTag};
use shm_ring::Ring;

use crate::ivshmem::ExportSegment;
use crate::Secondary;

/// Why an object could not be opened: one line naming it and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ObjectError(pub String);

/// What a packet application uses, on the host or in a guest.
pub trait Dataplane {
    /// Where this attachment is (a file prefix, an export group and its device).
    fn describe(&self) -> String;

    /// Opens the ring of 8-byte handles named `name`.
    ///
    /// # Errors
    /// [`ObjectError`] when absent or invalid.
    fn ring(&self, name: &str) -> Result<Ring<u64>, ObjectError>;

    /// Opens the mbuf pool named `name`.
    ///
    /// # Errors
    /// [`ObjectError`] when absent, invalid or not an mbuf pool.
    fn mbuf_pool(&self, name: &str) -> Result<MbufPool, ObjectError>;

    /// Every port this attachment can use, by id.
    ///
    /// # Errors
    /// [`ObjectError`] when a port is invalid.
    fn ports(&self) -> Result<Vec<Port>, ObjectError>;

    /// The owner tag this process's mbufs carry.
    fn owner_tag(&self) -> OwnerTag;

    /// A per-thread mbuf allocator on `pool` (opened as `name`) for this process: a cache
    /// slot in the host's own memory, none in guest-writable memory.
    ///
    /// # Errors
    /// [`ObjectError`] when no cache slot is free.
    fn allocator(&self, name: &str, pool: &MbufPool) -> Result<MbufCache, ObjectError>;
}

impl Dataplane for Secondary {
    fn describe(&self) -> String {
        format!("file prefix {}", self.prefix())
    }

    fn ring(&self, name: &str) -> Result<Ring<u64>, ObjectError> {
        Secondary::ring(self, name).map_err(|e| ObjectError(format!("ring {name}: {e}")))
    }

    fn mbuf_pool(&self, name: &str) -> Result<MbufPool, ObjectError> {
        Secondary::mbuf_pool(self, name).map_err(|e| ObjectError(format!("mempool {name}: {e}")))
    }

    fn ports(&self) -> Result<Vec<Port>, ObjectError> {
        Secondary::ports(self).map_err(|e| ObjectError(shm::error_chain(&e)))
    }

    fn owner_tag(&self) -> OwnerTag {
        Secondary::owner_tag(self)
    }

    fn allocator(&self, name: &str, pool: &MbufPool) -> Result<MbufCache, ObjectError> {
        Secondary::allocator(self, name, pool).map_err(|e| ObjectError(format!("pool {name}: {e}")))
    }
}

impl Dataplane for ExportSegment {
    fn describe(&self) -> String {
        format!(
            "export group {} at {}",
            self.meta().group,
            self.path().display()
        )
    }

    fn ring(&self, name: &str) -> Result<Ring<u64>, ObjectError> {
        ExportSegment::ring(self, name).map_err(|e| ObjectError(e.to_string()))
    }

    fn mbuf_pool(&self, name: &str) -> Result<MbufPool, ObjectError> {
        ExportSegment::mbuf_pool(self, name).map_err(|e| ObjectError(e.to_string()))
    }

    fn ports(&self) -> Result<Vec<Port>, ObjectError> {
        ExportSegment::ports(self).map_err(|e| ObjectError(e.to_string()))
    }

    fn owner_tag(&self) -> OwnerTag {
        OwnerTag::GUEST
    }

    fn allocator(&self, name: &str, pool: &MbufPool) -> Result<MbufCache, ObjectError> {
        // `cache(GUEST)` is uncached: a guest's pid means nothing to the host.
        pool.cache(OwnerTag::GUEST)
            .map_err(|e| ObjectError(format!("pool {name}: {e}")))
    }
}
