//! Memory files made to be shared with a vhost-user peer.
//!
//! Where it sits: `pmds-common-vhost-user`; the virtio-user port's memory is one, and the
//! vhost backend's tests and fuzz targets use one as guest RAM.

use crate::VhostError;
use std::fs::File;

/// A memfd of `len` bytes sealed with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, as
/// QEMU's `memory-backend-memfd` makes guest RAM: memory the vhost backend accepts (`pmds_net_vhost::mem::GuestMemory::map`).
/// Our virtio-user frontend shares such a file; tests and fuzz targets use it as guest
/// memory.
///
/// # Errors
/// One line when the memfd cannot be made, sized or sealed.
pub fn sealed_memfd(name: &str, len: u64) -> Result<File, VhostError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| crate::setup_err!("memfd_create: {e}"))?;
    let file = File::from(fd);
    file.set_len(len)
        .map_err(|e| crate::setup_err!("size the memfd: {e}"))?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(|e| crate::setup_err!("seal the memfd: {e}"))?;
    Ok(file)
}
