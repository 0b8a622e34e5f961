//! `shmdp-app`: what the shmdp programs share.
//!
//! Where it sits: on top of the libraries (`shm`, `pmds`, `fwd`, `primary`, `secondary`),
//! below the programs. It holds the command line of the EAL options ([`eal`]), logging
//! ([`init_logging`]) and the table of exit codes ([`Exit`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod eal;
pub mod exit;
mod logging;

pub use exit::Exit;
pub use logging::init_logging;
