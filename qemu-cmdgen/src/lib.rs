//! `qemu-cmdgen`: turns a running primary's export groups into the exact QEMU arguments
//! (`memory-backend-file` + `ivshmem-plain`) that give a guest those segments.
//!
//! Filled in by the IVSHMEM issue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
