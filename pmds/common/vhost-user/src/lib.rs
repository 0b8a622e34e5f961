//! `pmds-common-vhost-user`: what both sides of a vhost-user connection share — the
//! vhost-user backend (`pmds-net-vhost`, peers: QEMU guests and virtio-user processes)
//! and the frontend (`pmds-net-virtio-user`, peers: vhost-user backends).
//!
//! - [`proto`]: the vhost-user messages (decoding, replies, the memory table and vring
//!   address payloads), over [`wire`]: the control socket with deadlines, fds by
//!   `SCM_RIGHTS`, eventfds.
//! - [`peer_mem`]: the one way to memory a peer can write (guest RAM, a port's shared
//!   rings and slots): checked spans with volatile/atomic accessors and byte copies.
//!   Every mapping behind a span is under the SIGBUS guard ([`guard`]).
//! - [`memfd`]: sealed memfds, the memory a frontend may share.
//! - [`VhostError`] and its `peer_err!`/`guard_err!`/`setup_err!` macros.
//!
//! Where it sits: under `pmds/common/`, beside `pmds-common-virtio` (the split-ring layout
//! and feature bits, which [`peer_mem`] reads descriptors as). The `unsafe` here is
//! [`peer_mem`] (peer memory), [`guard`] (the signal handler) and [`wire`] (syscalls).
#![deny(missing_docs)]

mod error;
pub mod guard;
pub mod memfd;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
pub mod peer_mem;
pub mod proto;
pub mod wire;

pub use error::VhostError;
pub use peer_mem::{PeerMapping, PeerSpan};
