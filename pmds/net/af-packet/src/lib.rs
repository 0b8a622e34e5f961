//! `pmds-net-af-packet`: queues on live Linux interfaces (DPDK's `net_af_packet`, and
//! `net_pcap`'s `iface=`), through an AF_PACKET socket with memory-mapped TPACKET_V2 rings
//! ([`socket`]).
//!
//! Where it sits: a driver crate under `pmds/net/`; the pcap driver (`pmds-net-pcap`)
//! opens these queues for the sides of a port given as an interface (`iface=`,
//! `rx_iface=`, `tx_iface=`), so they are still reached as `net_pcap0,iface=eth0`. The
//! socket's mapping is this crate's only `unsafe`, all in [`socket`].
#![deny(missing_docs)]

pub mod socket;

use shm_mempool::{Mbuf, MbufCache};

use pmds_ethdev::{Burst, PortError, QueueShm, RxBurst, TxBurst, MAX_BURST};

pub use socket::{ifindex, PacketSocket};

/// An rx queue reading an interface.
#[derive(Debug)]
pub struct IfaceRx(PacketSocket);

impl IfaceRx {
    /// Opens interface `name` for receiving, for the claimed queue `q` (whose cache must
    /// be of the port's rx pool).
    ///
    /// # Errors
    /// [`PortError::Io`] when the socket cannot be opened.
    pub fn open(name: &str, q: &QueueShm, cache: &MbufCache) -> Result<IfaceRx, PortError> {
        q.check_pool(cache)?;
        PacketSocket::open(name, true, false)
            .map(IfaceRx)
            .map_err(|e| PortError::io(q.port_name(), format!("open interface {name}"), e))
    }
}

impl RxBurst for IfaceRx {
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        let port_id = q.port_id();
        let mut b = Burst::default();
        self.0
            .recv_burst(max, |frame| match cache.alloc_from(frame) {
                Ok(mut m) => {
                    m.set_port(port_id);
                    b.bytes += frame.len() as u64;
                    b.packets += 1;
                    out.push(m);
                    true
                }
                Err(_) => {
                    b.no_mbuf += 1;
                    false
                }
            });
        b
    }
}

/// A tx queue writing to an interface.
#[derive(Debug)]
pub struct IfaceTx(PacketSocket);

impl IfaceTx {
    /// Opens interface `name` for sending, for the claimed queue `q`.
    ///
    /// # Errors
    /// [`PortError::Io`] when the socket cannot be opened.
    pub fn open(name: &str, q: &QueueShm) -> Result<IfaceTx, PortError> {
        PacketSocket::open(name, false, true)
            .map(IfaceTx)
            .map_err(|e| PortError::io(q.port_name(), format!("open interface {name}"), e))
    }
}

impl TxBurst for IfaceTx {
    fn tx_burst<'c>(
        &mut self,
        _q: &mut QueueShm,
        _cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        let k = self.0.send_burst(
            pkts.iter()
                .take(MAX_BURST)
                .map(|m| (m.pkt_len() as usize, m.segments())),
        );
        let bytes = pkts[..k].iter().map(|m| u64::from(m.pkt_len())).sum();
        pkts.drain(..k);
        Burst::moved(k, bytes)
    }
}
