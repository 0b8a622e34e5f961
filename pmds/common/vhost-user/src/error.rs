//! The vhost-user drivers' error: who is at fault, and one line saying what (the line
//! already names the cause where there is one; nothing is chained).

/// What went wrong with a vhost-user device or one of its peers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VhostError {
    /// The peer broke the protocol, or described or shared memory that cannot be used:
    /// it loses its connection (a counted error), nobody else is affected.
    #[error("{0}")]
    Peer(String),
    /// The SIGBUS guard has no room for another mapping, or cannot be installed.
    #[error("{0}")]
    Guard(String),
    /// Something of ours: a setting, a socket, a memfd, a thread.
    #[error("{0}")]
    Setup(String),
}

impl VhostError {
    /// True when the peer caused it (retrying with another peer may work; fixing our
    /// configuration will not help).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, VhostError::Peer(_))
    }
}

/// `VhostError::Peer(format!(...))`.
#[macro_export]
#[doc(hidden)]
macro_rules! peer_err {
    ($($t:tt)*) => { $crate::VhostError::Peer(format!($($t)*)) };
}

/// `VhostError::Guard(format!(...))`.
#[macro_export]
#[doc(hidden)]
macro_rules! guard_err {
    ($($t:tt)*) => { $crate::VhostError::Guard(format!($($t)*)) };
}

/// `VhostError::Setup(format!(...))`.
#[macro_export]
#[doc(hidden)]
macro_rules! setup_err {
    ($($t:tt)*) => { $crate::VhostError::Setup(format!($($t)*)) };
}
