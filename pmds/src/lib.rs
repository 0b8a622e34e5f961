//! `pmds`: the ethdev-style port API and the poll-mode drivers.
//!
//! Where it sits: ports are owned by the primary, which probes them from DPDK-style devargs
//! (`net_ring0`, `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`) into memzones of its main
//! memseg; any process of the group opens a port by name or id and polls the queues it
//! claims. Mbufs come from `shm-mempool`, ring queues are `shm-ring` rings of mbuf handles.
//!
//! - [`devargs`]: parsing and the driver list.
//! - [`layout`]: the port's fixed layout in shared memory.
//! - [`ethdev`]: [`Port`], claims, `rx_burst`/`tx_burst`, statistics; the ring driver
//!   (queues are rings: loopback, cross-connected pairs, or any named rings) and the pcap
//!   driver (rx from a pcap/pcapng file read a chunk at a time, tx to a pcap file, or either side on a
//!   live interface through AF_PACKET with mapped TPACKET_V2 rings).
//! - [`pcap_file`]: the capture file formats.
#![deny(missing_docs)]

mod af_packet;
pub mod devargs;
pub mod ethdev;
pub mod layout;
pub mod pcap_file;
pub mod ring_port;
pub mod vhost;

pub use devargs::{DevArgs, Driver};
pub use ethdev::{Port, PortError, PortSetup, PortStats, QueueStats, RxQueue, TxQueue};
pub use ring_port::{MbufReceiver, MbufSender};
