//! `pmds-common-virtio`: what every virtio driver of shmdp shares, whichever side of the
//! virtqueue it is on (DPDK's `drivers/common/virtio`).
//!
//! Where it sits: below the drivers. The vhost-user backend (`pmds-net-vhost`, the device
//! side of queues in a guest's memory), virtio-user (`pmds-net-virtio-user`, the driver
//! side of queues in our own memory) and the coming virtio-pci driver take the split-ring
//! layout ([`split`]), the feature bits ([`features`]) and the cache hints ([`prefetch`])
//! from here, so neither borrows from the other's files.
//!
//! Nothing here reads or writes a virtqueue: the layouts are plain data, the accessors
//! (and their trust rules) belong to each side.
#![deny(missing_docs)]

pub mod features;
pub mod prefetch;
pub mod split;
