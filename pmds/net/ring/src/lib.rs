//! `pmds-net-ring`: the `net_ring` driver (DPDK's `net_ring`, `rte_eth_from_rings`).
//!
//! Where it sits: a driver crate under `pmds/net/`, over `pmds-ethdev`'s driver traits;
//! the facade `pmds` registers [`RingDriver`]. A port's queues are shm rings of mbuf
//! handles: `net_ring0` makes one SP/SC ring per queue, used as both rx and tx (a
//! loopback); `rx_ring=`/`tx_ring=` name existing rings, one queue per ring, in order
//! (cross-connected pairs, usable from any processes). With `guest_pool=` the rings are in
//! a guest's IVSHMEM export segment and packets are copied between that pool and the
//! host's at the boundary ([`shm_mempool::GuestPool`]).
//!
//! Data path ([`ring_port`]): between host processes, packets move at pointer speed and
//! a kill at any instruction loses and duplicates no buffer; the general path lists the
//! handles of a burst in the queue's in-flight record in shared memory
//! ([`pmds_ethdev::QueueShm::record`]), which the next poller recovers ([`queues`]).
//! This crate has no `unsafe`: the record is reached through the port API's choke point.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod queues;
pub mod ring_port;

use shm_mempool::MbufPool;
use shm_ring::{Ring, SyncMode};

use pmds_ethdev::layout::MAX_QUEUES;
use pmds_ethdev::{
    Attach, Burst, DriverId, NetDriver, PortDriver, PortError, Probe, QueueShm, Queues, RxBurst,
    TxBurst,
};

pub use ring_port::{MbufReceiver, MbufSender};

/// The `net_ring` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingDriver;

/// `net_ring`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(1);

/// Why `net_ring` refuses a port's devargs, or cannot open a port (the reasons of
/// [`PortError::Config`] and [`PortError::BadPort`] that only this driver knows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingPortError {
    /// `queues=` with named rings.
    #[error("with rx_ring=/tx_ring= there is one queue per ring; drop queues=")]
    QueuesWithRings,
    /// More named rings than a port has queues.
    #[error("at most {max} rings per direction")]
    TooManyRings {
        /// The most a port has.
        max: u16,
    },
    /// A ring the port names does not exist.
    #[error("ring {name} not found; create it on the primary with --ring {name}=1024")]
    NoRing {
        /// The ring.
        name: String,
    },
    /// `guest_pool=` without named rings.
    #[error("guest_pool= needs rx_ring=/tx_ring= rings in the guest's export segment")]
    GuestPoolNeedsRings,
    /// The guest pool the port names does not exist.
    #[error("guest pool {name} not found")]
    NoGuestPool {
        /// The pool.
        name: String,
    },
    /// The rings found do not make the port's queues.
    #[error("queue counts do not match the devargs")]
    QueueCounts,
}

/// Name of the ring behind queue `q` of a `net_ring` port made without named rings.
pub fn ring_name(port: &str, q: u16) -> String {
    format!("{port}_q{q}")
}

impl NetDriver for RingDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        "net_ring"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["rx_ring", "tx_ring", "queues", "nb_desc", "guest_pool"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let cfg = |why: RingPortError| PortError::config(&d.name, why);
        let q = d.number("queues", 1, 1..=u32::from(MAX_QUEUES))?;
        let (rx_rings, tx_rings) = (d.get_all("rx_ring"), d.get_all("tx_ring"));
        let named = !rx_rings.is_empty() || !tx_rings.is_empty();
        if named && d.get("queues").is_some() {
            return Err(cfg(RingPortError::QueuesWithRings));
        }
        if rx_rings.len() > MAX_QUEUES as usize || tx_rings.len() > MAX_QUEUES as usize {
            return Err(cfg(RingPortError::TooManyRings { max: MAX_QUEUES }));
        }
        if named {
            return Ok(Queues {
                rx: rx_rings.len() as u16,
                tx: tx_rings.len() as u16,
            });
        }
        for i in 0..q as u16 {
            let name = ring_name(&d.name, i);
            Ring::<u64>::create(p.seg, &name, p.nb_desc, SyncMode::SP_SC)
                .map_err(|e| PortError::failed(&d.name, format!("ring {name}"), e))?;
        }
        Ok(Queues {
            rx: q as u16,
            tx: q as u16,
        })
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        let d = a.devargs;
        let bad = |why: RingPortError| PortError::bad_port(&d.name, why);
        let ring = |n: &str| -> Result<Ring<u64>, PortError> {
            let z = (a.find)(n).ok_or_else(|| bad(RingPortError::NoRing { name: n.into() }))?;
            Ring::from_memzone(&z).map_err(|e| PortError::broken(&d.name, format!("ring {n}"), e))
        };
        let named = d.get("rx_ring").is_some() || d.get("tx_ring").is_some();
        let port = if d.get("guest_pool").is_some() && !named {
            return Err(bad(RingPortError::GuestPoolNeedsRings));
        } else if named {
            // Named rings: one queue per ring, in order (from_rings).
            RingPort {
                rx: d
                    .get_all("rx_ring")
                    .into_iter()
                    .map(ring)
                    .collect::<Result<_, _>>()?,
                tx: d
                    .get_all("tx_ring")
                    .into_iter()
                    .map(ring)
                    .collect::<Result<_, _>>()?,
                guest_pool: match d.get("guest_pool") {
                    None => None,
                    Some(n) => {
                        let z = (a.find)(n)
                            .ok_or_else(|| bad(RingPortError::NoGuestPool { name: n.into() }))?;
                        Some(
                            shm_mempool::Mempool::from_memzone(&z)
                                .and_then(MbufPool::from_mempool)
                                .map_err(|e| {
                                    PortError::broken(&d.name, format!("guest pool {n}"), e)
                                })?,
                        )
                    }
                },
            }
        } else {
            // Loopback: queue q's rx and tx are the same ring.
            RingPort {
                guest_pool: None,
                rx: (0..a.info.nb_rx_queues)
                    .map(|q| ring(&ring_name(&d.name, q)))
                    .collect::<Result<_, _>>()?,
                tx: (0..a.info.nb_tx_queues)
                    .map(|q| ring(&ring_name(&d.name, q)))
                    .collect::<Result<_, _>>()?,
            }
        };
        if port.rx.len() != usize::from(a.info.nb_rx_queues)
            || port.tx.len() != usize::from(a.info.nb_tx_queues)
        {
            return Err(bad(RingPortError::QueueCounts));
        }
        Ok(Box::new(port))
    }
}

/// A ring port's rings in this process.
struct RingPort {
    rx: Vec<Ring<u64>>,
    tx: Vec<Ring<u64>>,
    /// Guest-facing port (`guest_pool=`): its rings are in an IVSHMEM export segment
    /// and packets are copied between this pool and the host's at the boundary.
    guest_pool: Option<MbufPool>,
}

impl PortDriver for RingPort {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &shm_mempool::MbufCache,
        opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        let ring = &self.rx[usize::from(q.queue())];
        queues::RingRxQueue::open(ring, self.guest_pool.as_ref(), q, cache, opened)
            .map(|r| Box::new(r) as Box<dyn RxBurst>)
    }

    fn tx_queue(
        &self,
        q: &mut QueueShm,
        cache: &shm_mempool::MbufCache,
        opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError> {
        let ring = &self.tx[usize::from(q.queue())];
        queues::RingTxQueue::open(ring, self.guest_pool.as_ref(), q, cache, opened)
            .map(|t| Box::new(t) as Box<dyn TxBurst>)
    }
}
