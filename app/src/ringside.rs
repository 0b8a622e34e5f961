//! Either kind of producer or consumer of a ring of `u64` handles or elements, chosen by
//! the ring's mode: what the tools that take any ring (`pooltool`, `ringtool`,
//! `crashmix`) enqueue and dequeue through.

use shm_ring::{Ring, RingError};

/// Either kind of producer or consumer of a ring of handles.
pub(crate) enum RingSide {
    Sp(shm_ring::SpProducer<u64>),
    Mp(shm_ring::MpProducer<u64>),
    Sc(shm_ring::ScConsumer<u64>),
    Mc(shm_ring::McConsumer<u64>),
}

impl RingSide {
    pub(crate) fn producer(ring: &Ring<u64>) -> Result<RingSide, RingError> {
        if ring.mode().single_producer {
            ring.sp_producer().map(RingSide::Sp)
        } else {
            ring.mp_producer().map(RingSide::Mp)
        }
    }

    pub(crate) fn consumer(ring: &Ring<u64>) -> Result<RingSide, RingError> {
        if ring.mode().single_consumer {
            ring.sc_consumer().map(RingSide::Sc)
        } else {
            ring.mc_consumer().map(RingSide::Mc)
        }
    }

    /// Enqueues one handle; false when the ring is full.
    pub(crate) fn put(&mut self, v: u64) -> Result<bool, RingError> {
        let n = match self {
            RingSide::Sp(p) => p.enqueue_burst(&[v])?,
            RingSide::Mp(p) => p.enqueue_burst(&[v])?,
            _ => unreachable!("producer side"),
        };
        Ok(n == 1)
    }

    /// Enqueues as many of `v` as fit; how many did.
    #[inline]
    pub(crate) fn put_burst(&mut self, v: &[u64]) -> Result<usize, RingError> {
        match self {
            RingSide::Sp(p) => p.enqueue_burst(v),
            RingSide::Mp(p) => p.enqueue_burst(v),
            _ => unreachable!("producer side"),
        }
    }

    /// Dequeues up to `out.len()` handles; how many.
    #[inline]
    pub(crate) fn take_burst(&mut self, out: &mut [u64]) -> Result<usize, RingError> {
        match self {
            RingSide::Sc(c) => c.dequeue_burst(out),
            RingSide::Mc(c) => c.dequeue_burst(out),
            _ => unreachable!("consumer side"),
        }
    }

    /// Dequeues one handle, if any.
    pub(crate) fn take(&mut self) -> Result<Option<u64>, RingError> {
        match self {
            RingSide::Sc(c) => c.dequeue(),
            RingSide::Mc(c) => c.dequeue(),
            _ => unreachable!("consumer side"),
        }
    }
}
