//! `pmds-net-virtio-user`: the `net_virtio_user` driver (DPDK's virtio-user): shmdp as
//! the vhost-user *frontend* of a backend at `path=`.
//!
//! Where it sits: a driver crate under `pmds/net/`; the facade `pmds` registers
//! [`VirtioUserDriver`] ([`driver`]). The device ([`device`]) speaks the vhost-user
//! protocol through `pmds-net-vhost`'s [`proto`](pmds_net_vhost::proto) and
//! [`wire`](pmds_net_vhost::wire), and drives each virtqueue from the driver side
//! ([`driver_ring`]) in memory of the port's own ([`frontend_mem`]), with the split-ring
//! layout and feature bits of `pmds-common-virtio`. A connected device is recorded in the
//! process's device table (`pmds_ethdev::Devices`) under its socket path.
//!
//! The `unsafe` here is the driver side of the rings in our own memory that the backend
//! also writes ([`driver_ring`]) and the eventfds ([`device`]).
#![deny(missing_docs)]

pub mod device;
pub mod driver;
pub mod driver_ring;
#[cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
pub mod frontend_mem;

pub use device::{stop, PortMemory, VirtioUserDevice, VirtioUserQueue};
pub use driver::{VirtioUserDriver, DRIVER_ID};

#[cfg(test)]
mod tests {
    #[test]
    fn no_slice_is_ever_made_over_peer_memory() {
        // The files that touch memory the backend writes: none may build a slice from a
        // raw pointer (the pattern is split so this file does not match itself).
        let pattern = concat!("from_raw", "_parts");
        for (name, src) in [
            ("device.rs", include_str!("device.rs")),
            ("driver_ring.rs", include_str!("driver_ring.rs")),
            ("frontend_mem.rs", include_str!("frontend_mem.rs")),
            ("driver.rs", include_str!("driver.rs")),
        ] {
            assert!(
                !src.contains(pattern),
                "{name} makes a slice from a raw pointer"
            );
        }
    }
}
