//! The exclusive resources chatd claims at start: the database (by a lock file next to it) and
//! the control socket (bound in `platform`).

use std::fs::File;
use std::path::{Path, PathBuf};

/// The I/O error of a variant is part of its message and not its `source()`: chatd prints errors
/// with their chain (`{e:#}`), which would show it twice.
#[derive(Debug, thiserror::Error)]
// Socket paths, directories and groups only exist on Unix.
#[cfg_attr(windows, allow(dead_code))]
pub enum ClaimError {
    #[error("cannot open lock file {path}: {error}")]
    LockFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("another chatd is already using {db} (lock {lock} is held); stop it first or use another --db")]
    Locked { db: PathBuf, lock: PathBuf },
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

/// Takes an exclusive lock for the database at `db`; held until the returned file is dropped
/// (the OS releases it even after kill -9, so a crash never blocks a restart).
pub fn lock_database(db: &Path) -> Result<File, ClaimError> {
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| ClaimError::LockFile {
            path: lock.clone(),
            error,
        })?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|error| ClaimError::LockFile {
            path: lock.clone(),
            error,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ClaimError::Locked {
            db: db.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(ClaimError::LockFile { path: lock, error }),
    }
}
