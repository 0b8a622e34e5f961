//! `pmds`: the ethdev-style port API (rx_burst/tx_burst, stats) and one module per poll-mode
//! driver: ring, pcap, vhost-user, virtio-user, and guest drivers for QEMU's NICs.
//!
//! Filled in by the ports issue and the driver issues after it.
#![deny(missing_docs)]
