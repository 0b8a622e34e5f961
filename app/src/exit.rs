//! The one table of exit codes of the shmdp programs.
//!
//! Where it sits: every command of `shmdp-primary`, `shmdp-secondary` and
//! `shmdp-qemu-cmdgen` ends in an [`Exit`], directly or through a
//! [`CliError`](crate::CliError). Tests and scripts rely on these values; the README
//! documents them.

use std::process::ExitCode;

/// How a program ends.
///
/// A failed ring check and a failed pool check share [`Exit::Failed`] (1): the README
/// documents `ring-drain` and `pool-audit` as "exit 1", and the tests check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done as asked (also: stopped by SIGINT/SIGTERM, and `--help`).
    Ok,
    /// 1: the work ran and failed: a ring or pool operation or check, a dump, packet
    /// accounting that does not balance, a queue that could not be claimed.
    Failed,
    /// 2: refused before doing the work: a bad command line or config file, no primary
    /// to attach to, no such object, memory or ports that cannot be set up.
    Usage,
    /// 3: the primary went away while this process was attached.
    PrimaryGone,
}

impl Exit {
    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::PrimaryGone => 3,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_distinct_and_as_documented() {
        let all = [Exit::Ok, Exit::Failed, Exit::Usage, Exit::PrimaryGone];
        let codes: Vec<u8> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
