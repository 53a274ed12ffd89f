//! Opening the daemons' SQLite databases: durable settings and append-only migrations.
//!
//! Migrations follow cargo's `util/sqlite.rs`: a list that only ever grows, where the number of
//! migrations applied is kept in `PRAGMA user_version`. Never edit or reorder a shipped entry;
//! append a new one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use rusqlite;

pub mod backup;

#[derive(Debug, thiserror::Error)]
/// The underlying error is part of the message, not a `source()` (which would print it twice
/// when the chain is printed).
pub enum DbError {
    #[error("cannot create directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open database {path}: {error}")]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this program knows ({known}); upgrade the program")]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("migrating {path} to schema version {version}: {error}")]
    Migrate {
        path: PathBuf,
        version: usize,
        error: rusqlite::Error,
    },
}

/// Opens (creating if needed) the database at `path`, applies durable settings and brings the
/// schema up to date with `migrations`.
///
/// WAL with `synchronous=FULL`: a committed transaction survives a process crash and a power
/// loss (the WAL is fsynced at every commit).
pub fn open(path: &Path, migrations: &[&str]) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| DbError::CreateDir {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let open_err = |error| DbError::Open {
        path: path.to_path_buf(),
        error,
    };
    // Messages are private: create the file owner-only (SQLite gives its -wal and -shm files the
    // same mode).
    #[cfg(unix)]
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    // Statement journals and sorts stay in memory instead of temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), DbError> {
    let found: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(|error| DbError::Open {
            path: path.to_path_buf(),
            error,
        })?
        .try_into()
        .unwrap_or(usize::MAX);
    if found > migrations.len() {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            known: migrations.len(),
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found) {
        let version = i + 1;
        let err = |error| DbError::Migrate {
            path: path.to_path_buf(),
            version,
            error,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// The state directory for the daemons' databases: `$STATE_DIRECTORY` (set by systemd's
/// `StateDirectory=`), else `$XDG_STATE_HOME/peerchat`, else `~/.local/state/peerchat`.
pub fn default_state_dir() -> PathBuf {
    fn env_dir(var: &str) -> Option<PathBuf> {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
    if let Some(d) = env_dir("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        let s = d.to_string_lossy().into_owned();
        return PathBuf::from(s.split(':').next().unwrap_or(&s));
    }
    if let Some(d) = env_dir("XDG_STATE_HOME") {
        return d.join("peerchat");
    }
    env_dir("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/peerchat")
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_in_order() {
        let dir = tempfile_dir();
        let path = dir.join("t.db");
        let m1 = ["CREATE TABLE a(x)"];
        drop(open(&path, &m1).unwrap());
        let m2 = ["CREATE TABLE a(x)", "CREATE TABLE b(y)"];
        let conn = open(&path, &m2).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        drop(conn);
        assert!(matches!(open(&path, &m1), Err(DbError::TooNew { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("peerchat-db-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
