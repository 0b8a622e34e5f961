//! The one error type of the shmdp commands: what went wrong, in one line with the fix,
//! and which [`Exit`] code it ends the program with.
//!
//! Where it sits: every command of the programs returns a [`CmdResult`]; [`finish`] turns
//! it into the process's exit status, printing the error as `PROGRAM: error: MESSAGE`.

use std::fmt;
use std::process::ExitCode;

use crate::Exit;

/// A command that could not do its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    exit: Exit,
    message: String,
}

impl CliError {
    /// Refused before doing the work ([`Exit::Usage`], 2): a bad argument or config file,
    /// no primary, no such object.
    pub fn usage(message: impl fmt::Display) -> CliError {
        CliError {
            exit: Exit::Usage,
            message: message.to_string(),
        }
    }

    /// The work ran and failed ([`Exit::Failed`], 1).
    pub fn failed(message: impl fmt::Display) -> CliError {
        CliError {
            exit: Exit::Failed,
            message: message.to_string(),
        }
    }

    /// The exit code this error ends the program with.
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl fmt::Display) -> CliError {
        CliError {
            exit: self.exit,
            message: format!("{context}: {}", self.message),
        }
    }

    /// Prints `{program}: error: {message}` on stderr; the exit status.
    pub fn report(&self, program: &str) -> ExitCode {
        eprintln!("{program}: error: {}", self.message);
        self.exit.into()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// What a command returns: how it ended (normally [`Exit::Ok`]; [`Exit::PrimaryGone`]
/// after saying so), or the error to report.
pub type CmdResult = Result<Exit, CliError>;

/// The exit status of `result`, reporting an error on stderr as [`CliError::report`] does.
pub fn finish(program: &str, result: CmdResult) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(e) => e.report(program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_exit_code_and_context() {
        let e = CliError::usage("no memseg named vm9").context("--config f.toml");
        assert_eq!(e.exit(), Exit::Usage);
        assert_eq!(e.to_string(), "--config f.toml: no memseg named vm9");
        assert_eq!(CliError::failed("x").exit().code(), 1);
    }
}
