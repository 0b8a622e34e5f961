//! Cache hints for virtqueue areas and buffers: both sides prefetch what the next burst
//! touches (descriptors, ring slots, packet bytes) so the lines another core holds move
//! while earlier work is still in flight. The hints themselves are `shm::prefetch`'s, the
//! one implementation the mempool and the drivers share.

/// Asks the CPU to bring the line at `p` into its cache (no fault, no effect elsewhere).
pub use shm::prefetch::read as prefetch;
/// Asks the CPU to bring the line at `p` into its cache for writing (PREFETCHW where the
/// CPU has it, else a read prefetch).
pub use shm::prefetch::write as prefetch_write;
