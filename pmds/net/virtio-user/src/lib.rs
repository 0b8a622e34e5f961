//! `pmds-net-virtio-user`: the `net_virtio_user` driver (DPDK's virtio-user): shmdp as
//! the vhost-user *frontend* of a backend at `path=`.
//!
//! Where it sits: a driver crate under `pmds/net/`; the facade `pmds` registers
//! [`VirtioUserDriver`] ([`driver`]). The device ([`device`]) speaks the vhost-user
//! protocol through `pmds-common-vhost-user`'s [`proto`](pmds_common_vhost_user::proto)
//! and [`wire`](pmds_common_vhost_user::wire), and drives each virtqueue from the driver side
//! ([`driver_ring`]) in memory of the port's own ([`frontend_mem`]), with the split-ring
//! layout and feature bits of `pmds-common-virtio`. A connected device is recorded in the
//! process's device table (`pmds_ethdev::Devices`) under its socket path.
//!
//! The port's memory, which the backend also writes, is reached only through
//! `pmds-common-vhost-user`'s checked accessors (`peer_mem::PeerSpan`); the one `unsafe`
//! here is [`frontend_mem`] vouching once for its own mapping.
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
        // raw pointer, and only the memory's owner may vouch for it (the patterns are
        // split so this file does not match itself).
        let pattern = concat!("from_raw", "_parts");
        for (name, src) in [
            ("device.rs", include_str!("device.rs")),
            ("driver_ring.rs", include_str!("driver_ring.rs")),
            ("driver.rs", include_str!("driver.rs")),
        ] {
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            assert!(
                !code.contains(concat!("unsafe", " {")),
                "{name} has an unsafe block"
            );
        }
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
