//! One daemon per database: an advisory lock on a file next to it (`DB.lock`).
//!
//! The lock belongs to the open file, so the OS releases it when the process ends, even after
//! kill -9: a crash never blocks a restart. Operator commands that write the database directly
//! (`registryd release`) do not take it; the running daemon notices their changes itself.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The underlying I/O error is part of the message, not a `source()` (which would print it twice
/// when the chain is printed).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create directory {dir} for the database: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("cannot open lock file {lock}: {error}")]
    Open {
        lock: PathBuf,
        error: std::io::Error,
    },
    #[error("another {daemon} is already using the database {db} (lock file {lock} is held); stop it first or use another --db")]
    Held {
        daemon: String,
        db: PathBuf,
        lock: PathBuf,
    },
}

/// The lock file of the database at `db`: `DB.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Takes the exclusive lock for the database at `db` on behalf of `daemon` (named in the error
/// when another process holds it), creating the database's directory if needed. Held until the
/// returned file is dropped.
pub fn lock_database(db: &Path, daemon: &str) -> Result<File, LockError> {
    let lock = lock_path(db);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| LockError::Dir {
            dir: dir.to_path_buf(),
            error,
        })?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|error| LockError::Open {
            lock: lock.clone(),
            error,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
            daemon: daemon.to_string(),
            db: db.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(LockError::Open { lock, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/r.db");
        let first = lock_database(&db, "registryd").unwrap();
        let err = lock_database(&db, "registryd").unwrap_err().to_string();
        assert!(err.contains("another registryd"), "{err}");
        assert!(err.contains(&lock_path(&db).display().to_string()), "{err}");
        drop(first);
        lock_database(&db, "registryd").unwrap();
    }
}
