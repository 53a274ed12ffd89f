//! The exclusive resources chatd claims at start: the control socket (bound in `platform`). The
//! database's lock file is `peerchat_daemon::lock`, shared with registryd.

use std::path::PathBuf;

/// The I/O error of a variant is part of its message and not its `source()`: chatd prints errors
/// with their chain (`{e:#}`), which would show it twice.
#[derive(Debug, thiserror::Error)]
// Socket paths, directories and groups only exist on Unix.
#[cfg_attr(windows, allow(dead_code))]
pub enum ClaimError {
    #[error("socket path {path} is {len} bytes; Unix sockets allow at most {max}; choose a shorter --socket")]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("another chatd is already answering on {0}; stop it first or use another --socket")]
    SocketInUse(PathBuf),
    #[error("cannot create socket directory {path}: {error}")]
    SocketDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot create socket directory {path}: {error}\n  hint: pass --socket PATH (a directory you may write), or set XDG_RUNTIME_DIR (the socket is then $XDG_RUNTIME_DIR/peerchat/chatd.sock)")]
    DefaultSocketDirDenied {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no group named {0:?} (--socket-group)")]
    UnknownGroup(String),
    #[error("cannot bind control socket {path}: {error}")]
    Bind {
        path: PathBuf,
        error: std::io::Error,
    },
}
