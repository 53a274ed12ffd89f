//! Why a request got no usable reply. Each kind has a stable code (chatctl prints it with
//! `--json` and maps it to an exit status); chatd's own errors keep chatd's code.

use std::fmt;
use std::io;
use std::path::PathBuf;

use peerchat_proto::control::Response;
use peerchat_proto::ErrorBody;

#[derive(Debug)]
pub enum Error {
    /// No endpoint accepted the connection: every path tried, and why it failed.
    NotRunning(Vec<(PathBuf, io::Error)>),
    /// The endpoint exists but we may not connect to it.
    PermissionDenied(PathBuf),
    /// Reading or writing failed; the string says what was being done.
    Io(&'static str, io::Error),
    /// No reply within the read timeout (what was read of it is kept for the next `recv`).
    Timeout,
    /// chatd closed the connection.
    Disconnected,
    /// chatd broke the protocol (unreadable or overlong line, wrong id).
    Protocol(String),
    /// A reply of another type than the request asks for.
    Unexpected(Box<Response>),
    /// chatd answered with an error.
    Chatd(ErrorBody),
}

impl Error {
    /// A reply of another type than the request asks for.
    pub fn unexpected(r: Response) -> Error {
        Error::Unexpected(Box::new(r))
    }

    /// The machine-readable code: chatd's for its errors, the client's own otherwise.
    pub fn code(&self) -> &str {
        match self {
            Error::NotRunning(_) => "not_running",
            Error::PermissionDenied(_) => "permission",
            Error::Io(..) => "io",
            Error::Timeout => "timeout",
            Error::Disconnected => "disconnected",
            Error::Protocol(_) | Error::Unexpected(_) => "protocol",
            Error::Chatd(e) => &e.code,
        }
    }

    /// Whether the connection is gone (chatd stopped or restarted), so that a reconnect may
    /// help.
    pub fn is_lost(&self) -> bool {
        matches!(self, Error::Disconnected | Error::Io(..))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRunning(tried) => {
                writeln!(f, "chatd is not running (no control socket answered)")?;
                writeln!(f, "tried:")?;
                for (path, e) in tried {
                    writeln!(f, "  {}: {e}", path.display())?;
                }
                write!(f, "start it with `systemctl start chatd` (or `chatd --name NAME`), or point --socket / $CHATD_SOCKET at its socket")
            }
            Error::PermissionDenied(path) => write!(
                f,
                "permission denied on {}: ask the operator to add you to the group that owns chatd's socket (peerchat, when installed from the package), then log in again",
                path.display()
            ),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Timeout => write!(f, "chatd did not answer in time"),
            Error::Disconnected => write!(f, "chatd closed the connection"),
            Error::Protocol(m) => write!(f, "{m}"),
            Error::Unexpected(r) => write!(f, "unexpected reply from chatd: {r:?}"),
            Error::Chatd(e) => write!(f, "{}", e.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<ErrorBody> for Error {
    fn from(e: ErrorBody) -> Self {
        Error::Chatd(e)
    }
}
