//! Exit codes (documented in `--help` and the README) and the error type that carries them.

use peerchat_proto::control::code;
use peerchat_proto::ErrorBody;

pub const OK: i32 = 0;
pub const OTHER: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_RUNNING: i32 = 3;
pub const UNKNOWN_NAME: i32 = 4;
pub const WAIT_EXPIRED: i32 = 5;
pub const FAILED: i32 = 6;
pub const REFUSED: i32 = 7;

/// A command failed: what to print and how to exit.
#[derive(Debug, Clone)]
pub struct Failure {
    pub exit: i32,
    /// Machine-readable code (chatd's, or chatctl's own such as `not_running`).
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(exit: i32, code: &str, message: impl Into<String>) -> Self {
        Failure {
            exit,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(USAGE, "usage", message)
    }

    pub fn io(what: &str, e: std::io::Error) -> Self {
        Failure::new(OTHER, "io", format!("{what}: {e}"))
    }
}

/// The exit code for an error chatd sent back.
pub fn for_code(c: &str) -> i32 {
    match c {
        code::UNKNOWN_NAME | code::NOT_FOUND => UNKNOWN_NAME,
        code::TOO_LARGE
        | code::CONFLICT
        | code::REFUSED
        | code::KEY_CHANGED
        | code::VERSION_MISMATCH
        | code::UNKNOWN_OP => REFUSED,
        _ => OTHER,
    }
}

/// A request without a usable reply: chatd's errors by their code, the client's own ones as
/// `not_running` (3), `permission` (7), or 1 (`io`, `timeout`, `disconnected`, `protocol`).
impl From<peerchat_client::Error> for Failure {
    fn from(e: peerchat_client::Error) -> Self {
        use peerchat_client::Error;
        match e {
            Error::Chatd(body) => body.into(),
            e => {
                let exit = match e {
                    Error::NotRunning(_) => NOT_RUNNING,
                    Error::PermissionDenied(_) => REFUSED,
                    _ => OTHER,
                };
                Failure::new(exit, e.code(), e.to_string())
            }
        }
    }
}

impl From<ErrorBody> for Failure {
    fn from(e: ErrorBody) -> Self {
        Failure {
            exit: for_code(&e.code),
            code: e.code,
            message: e.message,
        }
    }
}
