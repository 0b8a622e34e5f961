//! The port API's errors: one line each that says what is wrong and how to fix it.

/// Port errors.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Bad devargs text.
    #[error(transparent)]
    DevArgs(#[from] DevArgsError),
    /// Bad devargs or configuration.
    #[error("{0}")]
    Config(String),
    /// The port's memzone is not a valid port.
    #[error("bad port: {0}")]
    BadPort(String),
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
    /// A configuration error of port `port`: `"{port}: {why}"`.
    pub fn config(port: &str, why: impl std::fmt::Display) -> PortError {
        PortError::Config(format!("{port}: {why}"))
    }

    /// An invalid port `port`: `"{port}: {why}"`.
    pub fn bad_port(port: &str, why: impl std::fmt::Display) -> PortError {
        PortError::BadPort(format!("{port}: {why}"))
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

/// Why a devargs string was refused (`--vdev TEXT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--vdev {text:?}: {why}")]
pub struct DevArgsError {
    /// The text as given.
    pub text: String,
    /// What is wrong, and the accepted forms.
    pub why: String,
}

impl DevArgsError {
    pub(crate) fn new(text: &str, why: impl Into<String>) -> DevArgsError {
        DevArgsError {
            text: text.to_string(),
            why: why.into(),
        }
    }
}

/// For callers whose errors are text (a CLI's value parser).
impl From<DevArgsError> for String {
    fn from(e: DevArgsError) -> String {
        e.to_string()
    }
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
