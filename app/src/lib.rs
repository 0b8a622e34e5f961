//! `shmdp-app`: the shmdp programs and what they share.
//!
//! Where it sits: on top of the libraries (`shm`, `shm-ring`, `shm-mempool`, `pmds`,
//! `fwd`, `primary`, `secondary`), below the two programs, which are sibling binaries of
//! this package: `shmdp-primary` (`src/bin/shmdp-primary/`) and `shmdp-secondary`
//! (`src/bin/shmdp-secondary/`); each holds only its own command line and dispatch.
//! `shmdp-qemu-cmdgen` uses the EAL front end too.
//!
//! What they share:
//! - the process options and the clap front end ([`eal`]), logging ([`init_logging`]),
//!   the table of exit codes ([`Exit`]) and the one error type of the commands
//!   ([`CliError`]);
//! - forwarding: the options ([`fwdargs`]), the config file read once into typed values
//!   ([`config`]: `[fwd]` and the `[[ivshmem]]` export groups), the run with its report
//!   ([`fwdcmd`]);
//! - attaching from a command line and `monitor` ([`session`]);
//! - the tools the commands run: sequence-numbered ring fill and drain ([`ringtool`]),
//!   mbuf traffic, stress and statistics ([`pooltool`]), the exact pool audit ([`audit`]),
//!   the crash-point workload ([`crashmix`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod crashmix;
pub mod eal;
mod error;
pub mod exit;
pub mod fwdargs;
pub mod fwdcmd;
mod logging;
pub mod pooltool;
mod ringside;
pub mod ringtool;
pub mod session;

pub use error::{finish, CliError, CmdResult};
pub use exit::Exit;
pub use logging::init_logging;
