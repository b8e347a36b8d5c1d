//! The CLI's documented exit codes (`renewer --help`, "Exit codes"), as types: a command
//! ends with a [`Status`] or fails with an [`Exit`] that carries its message.

use std::process::ExitCode;

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: every selected certificate is fine (or the server stopped cleanly).
    Success,
    /// 1: something failed and was reported (a certificate, a check, work cut off).
    Failed,
}

impl Status {
    /// [`Status::Success`] when `ok`, else [`Status::Failed`].
    pub fn from_ok(ok: bool) -> Status {
        if ok {
            Status::Success
        } else {
            Status::Failed
        }
    }
}

/// A command that stopped early, with the message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    /// 1: the work failed (the certificate in service stays).
    #[error("{0}")]
    Failed(String),
    /// 2: usage or configuration; the message names the field or flag.
    #[error("{0}")]
    Config(String),
    /// 3: setup; the store, Secret Manager, Compute Engine or the CA could not be reached.
    #[error("{0}")]
    Setup(String),
}

impl Exit {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Failed(_) => 1,
            Exit::Config(_) => 2,
            Exit::Setup(_) => 3,
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        match status {
            Status::Success => ExitCode::SUCCESS,
            Status::Failed => ExitCode::from(1),
        }
    }
}
