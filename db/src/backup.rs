//! An online, consistent copy of a live database (`chatctl backup`, `registryd backup`).
//!
//! The copy is read through a connection of its own, in one read transaction: in WAL mode that
//! is a snapshot of the last commit, and the daemon's writer goes on committing meanwhile (it
//! never waits for the copy; only a checkpoint cannot pass the snapshot until the copy ends).
//! SQLite's backup API copies the pages in one `step(-1)`: in smaller steps, every commit of the
//! writer between two steps would restart the copy, which under steady traffic might never end.
//!
//! The destination is written safely for a file that a daemon writes on a client's behalf: a
//! temporary file created exclusively, mode 0600, next to the destination; the copy, an fsync;
//! then put in place without replacing anything (a hard link, which fails if the name exists),
//! or with `force` by a rename (which replaces a symlink itself, never its target); then an
//! fsync of the directory. The live database and its companion files are never replaced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists; choose another name, or pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} is the database itself or one of its files; choose another name")]
    IsSource(PathBuf),
    #[error("{path}: {why}")]
    BadPath { path: PathBuf, why: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("reading {path}: {error}")]
    Source {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("writing the copy {path}: {error}")]
    Copy {
        path: PathBuf,
        error: rusqlite::Error,
    },
}

/// What a finished backup wrote.
#[derive(Debug, Clone)]
pub struct Copied {
    pub path: PathBuf,
    pub bytes: u64,
    /// How long the copy took.
    pub took: Duration,
}

/// Copies the database at `source` to `dest` (see the module docs).
pub fn backup(source: &Path, dest: &Path, force: bool) -> Result<Copied, BackupError> {
    let started = Instant::now();
    let (dir, name) = split(dest)?;
    refuse_source_files(source, &dir, &name)?;
    let dest = dir.join(&name);
    if !force && std::fs::symlink_metadata(&dest).is_ok() {
        return Err(BackupError::Exists(dest));
    }
    let tmp = Temp::create(&dir, &name)?;
    copy_pages(source, &tmp.path)?;
    sync_file(&tmp.path)?;
    let io_err = |error| BackupError::Io {
        path: dest.clone(),
        error,
    };
    if force {
        std::fs::rename(&tmp.path, &dest).map_err(io_err)?;
    } else {
        match std::fs::hard_link(&tmp.path, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(dest))
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    drop(tmp); // removes the temporary name (gone already after a rename)
    sync_dir(&dir)?;
    let bytes = std::fs::metadata(&dest).map_err(io_err)?.len();
    Ok(Copied {
        path: dest,
        bytes,
        took: started.elapsed(),
    })
}

/// The destination's directory (made absolute, symlinks resolved) and file name.
fn split(dest: &Path) -> Result<(PathBuf, std::ffi::OsString), BackupError> {
    let bad = |why: &str| BackupError::BadPath {
        path: dest.to_path_buf(),
        why: why.into(),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| bad("needs a file name"))?
        .to_os_string();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.canonicalize().map_err(|error| BackupError::Io {
        path: parent.to_path_buf(),
        error,
    })?;
    if !dir.is_dir() {
        return Err(bad("the parent is not a directory"));
    }
    Ok((dir, name))
}

/// Refuses a destination that is the live database, its `-wal`, `-shm`, `-journal` or `.lock`
/// file, or (with --force) any other name for the database file itself.
fn refuse_source_files(
    source: &Path,
    dir: &Path,
    name: &std::ffi::OsStr,
) -> Result<(), BackupError> {
    let dest = dir.join(name);
    let Some(src) = source.canonicalize().ok() else {
        return Ok(()); // the copy will fail to open it, with the reason
    };
    let mut companions = vec![src.clone()];
    for suffix in ["-wal", "-shm", "-journal", ".lock"] {
        let mut s = src.clone().into_os_string();
        s.push(suffix);
        companions.push(PathBuf::from(s));
    }
    if companions.contains(&dest) || same_file(&src, &dest) {
        return Err(BackupError::IsSource(dest));
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// Copies every page of `source` into the empty file at `dest` in one read transaction.
fn copy_pages(source: &Path, dest: &Path) -> Result<(), BackupError> {
    let src_err = |error| BackupError::Source {
        path: source.to_path_buf(),
        error,
    };
    let dst_err = |error| BackupError::Copy {
        path: dest.to_path_buf(),
        error,
    };
    // Read-write without CREATE (read-only WAL connections need the -shm to exist already),
    // and query_only so that it cannot write.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(src_err)?;
    src.busy_timeout(Duration::from_secs(10)).map_err(src_err)?;
    src.pragma_update(None, "query_only", true)
        .map_err(src_err)?;
    let mut dst = Connection::open(dest).map_err(dst_err)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(dst_err)?;
        loop {
            match backup.step(-1).map_err(dst_err)? {
                rusqlite::backup::StepResult::Done => break,
                // Busy or locked: another connection holds a lock for a moment; try again.
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    // A copy of a WAL database is a WAL database: fold everything into the main file so that
    // the file alone is the whole copy.
    dst.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .map_err(dst_err)?;
    dst.close().map_err(|(_, e)| dst_err(e))?;
    Ok(())
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|error| BackupError::Io {
            path: path.to_path_buf(),
            error,
        })
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    sync_file(dir)
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> Result<(), BackupError> {
    Ok(())
}

/// The temporary file the copy is written to; removed on drop (with its SQLite companions).
struct Temp {
    path: PathBuf,
}

impl Temp {
    fn create(dir: &Path, name: &std::ffi::OsStr) -> Result<Temp, BackupError> {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let path = dir.join(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // O_NOFOLLOW too: never write through a symlink planted at the temporary name.
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        options.open(&path).map_err(|error| BackupError::Io {
            path: path.clone(),
            error,
        })?;
        Ok(Temp { path })
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut s = self.path.clone().into_os_string();
            s.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_rows(path: &Path, n: i64) -> Connection {
        let conn = crate::open(path, &["CREATE TABLE t (x INTEGER);"]).unwrap();
        for i in 0..n {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        conn
    }

    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_copy_holds_every_committed_row_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.db");
        let _live = db_with_rows(&src, 100);
        let out = dir.path().join("copy.db");
        let c = backup(&src, &out, false).unwrap();
        assert!(c.bytes > 0);
        assert_eq!(rows(&out), 100);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced_and_the_source_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.db");
        let _live = db_with_rows(&src, 3);
        let out = dir.path().join("copy.db");
        std::fs::write(&out, b"precious").unwrap();
        let e = backup(&src, &out, false).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
        backup(&src, &out, true).unwrap();
        assert_eq!(rows(&out), 3);
        for name in ["a.db", "a.db-wal", "a.db-shm"] {
            let e = backup(&src, &dir.path().join(name), true).unwrap_err();
            assert!(matches!(e, BackupError::IsSource(_)), "{name}: {e}");
        }
        assert_eq!(rows(&src), 3);
    }

    #[cfg(unix)]
    #[test]
    fn forcing_over_a_symlink_replaces_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.db");
        let _live = db_with_rows(&src, 1);
        let target = dir.path().join("target.txt");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            backup(&src, &link, false),
            Err(BackupError::Exists(_))
        ));
        backup(&src, &link, true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert_eq!(rows(&link), 1);
    }
}
