//! The port API's errors: one line each that says what is wrong and how to fix it.
//!
//! Where it sits: every fallible call of `pmds-ethdev` and of the driver crates returns a
//! [`PortError`]. Its variants say what kind of thing failed and for which port; the
//! reason is typed: [`DevArgsError`] for a devargs value, [`ConfigError`] and
//! [`BadPortReason`] for the port API's own checks, and a driver's own reason type
//! (boxed, so that adding a driver edits nothing here) for what only the driver knows.
//! Reasons are leaves, shown in the variant's message; a failure that has a cause (an
//! I/O error, a ring or pool error) carries it as its `#[source]`, which the message does
//! not repeat (`shm::error_chain` prints the chain on one line).

use crate::layout::DEVARGS_LEN;

/// A typed reason or cause from a driver crate (or the port API itself).
pub type Reason = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Port errors.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A devargs value of port `port` was refused.
    #[error("{port}: {reason}")]
    DevArgs {
        /// Port name.
        port: String,
        /// What is wrong with the value.
        reason: DevArgsError,
    },
    /// Port `port` cannot be made as configured: the reason (a leaf) says why.
    #[error("{port}: {reason}")]
    Config {
        /// Port name.
        port: String,
        /// A [`ConfigError`] or a driver's own reason.
        reason: Reason,
    },
    /// Something port `port` needs could not be made or opened.
    #[error("{port}: {what}")]
    Failed {
        /// Port name.
        port: String,
        /// What was being made or opened (`ring r0`, `rx_pcap in.pcap`).
        what: String,
        /// Cause.
        #[source]
        source: Reason,
    },
    /// The port's memzone is not a valid port, or what it names is missing.
    #[error("bad port: {port}: {reason}")]
    BadPort {
        /// Port (or memzone) name.
        port: String,
        /// A [`BadPortReason`] or a driver's own reason.
        reason: Reason,
    },
    /// Something the port names is there but unusable.
    #[error("bad port: {port}: {what}")]
    Broken {
        /// Port (or memseg) name.
        port: String,
        /// What was being opened.
        what: String,
        /// Cause.
        #[source]
        source: Reason,
    },
    /// Another live process polls this queue.
    #[error("port {port} {dir} queue {queue} is polled by pid {pid}; stop that process or use another queue")]
    QueueTaken {
        /// Port name.
        port: String,
        /// "rx" or "tx".
        dir: &'static str,
        /// Queue index.
        queue: u16,
        /// The poller.
        pid: u32,
    },
    /// A queue index past the port's queues.
    #[error("port {port} has {have} {dir} queues; there is no queue {queue}")]
    NoQueue {
        /// Port name.
        port: String,
        /// "rx" or "tx".
        dir: &'static str,
        /// Asked.
        queue: u16,
        /// Available.
        have: u16,
    },
    /// An rx queue was given a cache of another pool than the port's.
    #[error("{port}: rx queue needs a cache of pool {pool}")]
    WrongPool {
        /// Port name.
        port: String,
        /// The port's rx pool.
        pool: String,
    },
    /// The port's device runs in another process (the primary), so its queues cannot be
    /// polled here.
    #[error(
        "{port}: a {driver} port is polled in the primary, {why}: forward with shmdp-primary --fwd"
    )]
    NotHere {
        /// Port name.
        port: String,
        /// Its driver (`net_vhost`).
        driver: &'static str,
        /// Why the device is the primary's.
        why: &'static str,
    },
    /// I/O on a driver's file.
    #[error("port {port}: {what}")]
    Io {
        /// Port name.
        port: String,
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl PortError {
    /// Port `port` cannot be made as configured, for `reason` (a leaf error).
    pub fn config(port: &str, reason: impl std::error::Error + Send + Sync + 'static) -> PortError {
        PortError::Config {
            port: port.to_string(),
            reason: Box::new(reason),
        }
    }

    /// A devargs value of port `port` was refused.
    pub fn devargs(port: &str, reason: DevArgsError) -> PortError {
        PortError::DevArgs {
            port: port.to_string(),
            reason,
        }
    }

    /// Making or opening `what` for port `port` failed with `source`.
    pub fn failed(port: &str, what: impl Into<String>, source: impl Into<Reason>) -> PortError {
        PortError::Failed {
            port: port.to_string(),
            what: what.into(),
            source: source.into(),
        }
    }

    /// An invalid port `port`, for `reason` (a leaf error).
    pub fn bad_port(
        port: &str,
        reason: impl std::error::Error + Send + Sync + 'static,
    ) -> PortError {
        PortError::BadPort {
            port: port.to_string(),
            reason: Box::new(reason),
        }
    }

    /// Port `port` names `what`, which is there but unusable (`source`).
    pub fn broken(port: &str, what: impl Into<String>, source: impl Into<Reason>) -> PortError {
        PortError::Broken {
            port: port.to_string(),
            what: what.into(),
            source: source.into(),
        }
    }

    /// An I/O error of port `port` while doing `what`.
    pub fn io(port: &str, what: impl Into<String>, source: std::io::Error) -> PortError {
        PortError::Io {
            port: port.to_string(),
            what: what.into(),
            source,
        }
    }
}

/// Why a devargs string, or one of its values, was refused. The text itself is the
/// caller's to show (a CLI's value parser names it; a port error names the port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevArgsError {
    /// The device name has no instance number.
    #[error("{name:?}: the device name needs an instance number, e.g. net_ring0 or net_pcap0")]
    NoInstance {
        /// The name as given.
        name: String,
    },
    /// No driver of that name.
    #[error("unknown driver {driver:?} (known: {})", known.join(", "))]
    UnknownDriver {
        /// The driver name (the device name without its digits).
        driver: String,
        /// The drivers there are.
        known: Vec<&'static str>,
    },
    /// The device name does not fit a shared name.
    #[error("{name:?}: name must be 1..31 bytes")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// An item after the name is not `key=value`.
    #[error("{item:?} is not key=value")]
    NotKeyValue {
        /// The item.
        item: String,
    },
    /// The driver takes no such key.
    #[error("{driver} does not take {key:?} (it takes: {})", takes.join(", "))]
    UnknownKey {
        /// The driver.
        driver: &'static str,
        /// The key given.
        key: String,
        /// The keys it takes.
        takes: &'static [&'static str],
    },
    /// A key with an empty value.
    #[error("{key}= needs a value")]
    NoValue {
        /// The key.
        key: String,
    },
    /// The text does not fit the port's shared record.
    #[error("devargs longer than {max} bytes ({len} given)")]
    TooLong {
        /// Its length.
        len: usize,
        /// The most the record holds ([`DEVARGS_LEN`]).
        max: usize,
    },
    /// A numeric value out of range or not a number.
    #[error("{key}={value} must be a number in {min}..={max}")]
    BadNumber {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A numeric value that must be a power of two.
    #[error("{key}={value} must be a power of two")]
    NotPowerOfTwo {
        /// The key.
        key: &'static str,
        /// The value.
        value: u32,
    },
    /// A flag other than `0` or `1`.
    #[error("{key}={value}: expected 0 or 1")]
    BadFlag {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A key the driver needs is absent.
    #[error("give {key}={hint}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What its value is, e.g. `/path/to/socket (the vhost-user socket)`.
        hint: &'static str,
    },
}

impl DevArgsError {
    /// [`DevArgsError::TooLong`] for a text of `len` bytes.
    pub(crate) fn too_long(len: usize) -> DevArgsError {
        DevArgsError::TooLong {
            len,
            max: DEVARGS_LEN,
        }
    }
}

/// Why the port API refuses a port's configuration (inside [`PortError::Config`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The driver asked for more queues than a port has room for.
    #[error("at most {max} queues per direction")]
    TooManyQueues {
        /// The most a port has.
        max: u16,
    },
    /// `Port::from_rings` was given a driver without named rings.
    #[error("from_rings makes net_ring ports (name it net_ringN)")]
    NotRingDriver,
    /// A name does not fit a shared name.
    #[error("{name:?} is not a usable name (1..31 bytes)")]
    BadName {
        /// The name.
        name: String,
    },
    /// The device a key names is already another port's in this process.
    #[error("{key} {value} is used by another port")]
    InUse {
        /// The devargs key (`iface`, `path`).
        key: &'static str,
        /// Its value.
        value: String,
    },
}

/// Why a port's memzone is not a port this build can open (inside [`PortError::BadPort`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPortReason {
    /// The memzone is not a port's.
    #[error("not a port memzone")]
    NotPort,
    /// The header's magic is wrong.
    #[error("bad magic")]
    Magic,
    /// Another layout version (or size).
    #[error("layout version {found} (this build reads {reads}); run primary and secondary from the same shmdp release")]
    Layout {
        /// The port's.
        found: u16,
        /// This build's.
        reads: u16,
    },
    /// No driver of that number in this build.
    #[error("unknown driver {id}")]
    UnknownDriver {
        /// The number in the port's layout.
        id: u16,
    },
    /// More queues than a port has room for.
    #[error("impossible queue counts")]
    QueueCounts,
    /// The devargs record is not text of its recorded length.
    #[error("bad devargs text")]
    DevArgsText,
    /// The devargs recorded do not parse here.
    #[error("devargs: {0}")]
    DevArgs(DevArgsError),
    /// The devargs name another driver than the port's number.
    #[error("devargs and driver disagree")]
    DriverMismatch,
    /// A key the driver needs is not in the devargs.
    #[error("no {key}=")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
}

/// Two drivers of a registry share a number or a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("drivers {first} and {second} share a number or a name")]
pub struct RegistryClash {
    /// One driver's name.
    pub first: &'static str,
    /// The other's.
    pub second: &'static str,
}
