//! `shm`: the memory and process-model layer of shmdp, its equivalent of DPDK's EAL.
//!
//! A **primary** process owns the shared memory of a process group named by its
//! `--file-prefix`. The memory is a set of **memsegs**: each one file (on hugetlbfs, else
//! /dev/shm) of a power-of-two size, so that it can be handed whole to QEMU as an
//! `ivshmem-plain` device. Each memseg starts with a header and a table of named
//! **memzones**: the aligned reservations that rings, pools and ports live in.
//!
//! **Secondaries** attach by prefix: they find the primary through the runtime directory
//! ([`runtime`]), greet it on the control socket ([`control`]), map every memseg at
//! whatever address the kernel gives and look objects up by name. Nothing in shared memory
//! is a pointer; everything is an offset from a memseg's base ([`Region`]), so the
//! mapping address never matters, unlike DPDK's same-address rule.
//!
//! Shared memory is untrusted input: any process that maps a memseg can write anything into
//! it. Every header, table entry, offset and length read from it is validated, and a bad
//! value is an [`Error`], never a panic or an access outside the memseg.
//!
//! Layering: `shm` is at the bottom; `shm-ring` and `shm-mempool` build on [`Region`],
//! `pmds` on those, and the `primary` and `secondary` programs on top.
#![deny(missing_docs)]

pub mod access;
pub mod backing;
pub mod control;
pub mod crash;
pub mod eal;
pub mod layout;
pub mod liveness;
pub mod memseg;
pub mod names;
pub mod prefetch;
mod region;
pub mod runtime;
pub mod stats;

pub use layout::{MemsegState, MemzoneKind};
pub use memseg::{Memseg, MemsegSpec, Memzone};
pub use region::{OutOfBounds, Region};

/// An error and its causes on one line (`what: cause: cause`), for the programs' messages:
/// error types keep their causes as `source()` rather than in their own text, and a
/// cause a message already ends with is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.ends_with(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// Errors of the shm layer. Messages are one line saying what is wrong and, where there is
/// one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Hugepages were asked for explicitly but cannot be used.
    #[error("{0}")]
    Hugepages(String),
    /// Not enough memory for the memsegs.
    #[error("{0}")]
    NoMemory(String),
    /// A memseg file or header is not what it should be.
    #[error("bad memseg: {0}")]
    BadMemseg(String),
    /// The memseg was made by an incompatible layout version.
    #[error("memseg layout version {found} is not supported (this build reads version {expected}); run primary and secondary from the same shmdp release")]
    Version {
        /// Found in the header.
        found: u16,
        /// What this build reads.
        expected: u16,
    },
    /// The memseg is initialising or closing.
    #[error("memseg is {0:?}: its primary is starting or stopping; retry in a moment")]
    NotReady(MemsegState),
    /// No memzone of that name.
    #[error("no memzone named {0:?}")]
    NotFound(String),
    /// A memzone of that name exists already.
    #[error("a memzone named {0:?} exists already")]
    Exists(String),
    /// Out of room in a memseg or its memzone table.
    #[error("{0}")]
    NoSpace(String),
    /// Another live primary holds the prefix.
    #[error("a primary (pid {pid}) is already running with --file-prefix {prefix}; stop it or choose another prefix")]
    AlreadyRunning {
        /// The prefix.
        prefix: String,
        /// Its pid.
        pid: u32,
    },
    /// A directory, file or peer is not what this user can trust (another user's, a
    /// symlink, writable by others).
    #[error("{0}")]
    Untrusted(String),
    /// An offset from shared memory pointed outside its region.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// True when trying again later may succeed (the primary is starting or stopping).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotReady(MemsegState::Initialising) => true,
            Error::NotReady(_)
            | Error::Config(_)
            | Error::Io { .. }
            | Error::Hugepages(_)
            | Error::NoMemory(_)
            | Error::BadMemseg(_)
            | Error::Version { .. }
            | Error::NotFound(_)
            | Error::Exists(_)
            | Error::NoSpace(_)
            | Error::AlreadyRunning { .. }
            | Error::Untrusted(_)
            | Error::OutOfBounds(_) => false,
        }
    }
}

/// Result of the shm layer.
pub type Result<T> = std::result::Result<T, Error>;
