//! `backup`: a consistent copy of the database, written while chatd keeps serving
//! (`peerchat_db::backup`: a WAL snapshot read by a connection of its own on a blocking thread,
//! so the DB thread never waits for it). One backup at a time.
//!
//! The path is the client's, the file is written by chatd's user: it must be absolute (the
//! client's working directory means nothing here), an existing file is refused unless `force`,
//! the database's own files are always refused, and the copy is created owner-only (0600) under
//! a temporary name and put in place only when complete and synced.

use std::path::PathBuf;
use std::sync::Arc;

use peerchat_db::backup::BackupError;
use peerchat_proto::control::{code, Response};
use peerchat_proto::ErrorBody;
use tracing::info;

use super::reply::ReplyFuture;
use crate::node::Node;

pub fn handle(node: &Arc<Node>, path: String, force: bool) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let dest = PathBuf::from(&path);
        if !dest.is_absolute() {
            return Err(ErrorBody::new(
                code::BAD_REQUEST,
                format!("backup path {path:?} must be absolute (chatd's working directory is not yours)"),
            ));
        }
        let Ok(_one) = node.backup_running.try_lock() else {
            return Err(ErrorBody::new(
                code::CONFLICT,
                "a backup is already running",
            ));
        };
        let source = node.db.clone();
        let copied =
            tokio::task::spawn_blocking(move || peerchat_db::backup::backup(&source, &dest, force))
                .await
                .map_err(|e| ErrorBody::new(code::INTERNAL, format!("backup task failed: {e}")))?
                .map_err(backup_error)?;
        info!(path = %copied.path.display(), bytes = copied.bytes, millis = copied.took.as_millis() as u64, "database backed up");
        Ok(Response::BackedUp {
            path: copied.path.display().to_string(),
            bytes: copied.bytes,
            millis: copied.took.as_millis() as u64,
        })
    })
}

fn backup_error(e: BackupError) -> ErrorBody {
    let code = match &e {
        BackupError::Exists(_) => code::CONFLICT,
        BackupError::IsSource(_) => code::REFUSED,
        BackupError::BadPath { .. } => code::BAD_REQUEST,
        BackupError::Io { error, .. } if error.kind() == std::io::ErrorKind::PermissionDenied => {
            code::REFUSED
        }
        // Not `not_found` (chatctl's "unknown name"): a missing directory is a bad path.
        BackupError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            code::BAD_REQUEST
        }
        _ => code::STORAGE,
    };
    ErrorBody::new(code, e.to_string())
}
