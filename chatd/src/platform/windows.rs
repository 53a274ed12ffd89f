//! Windows: the control "socket" is a named pipe (`\\.\pipe\...`), reachable by the same user.

use std::path::{Path, PathBuf};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio::sync::Mutex;

use crate::paths::ClaimError;

pub type ControlStream = NamedPipeServer;

/// A named pipe accepts one client per instance: the listener keeps the next instance ready.
pub struct ControlListener {
    name: PathBuf,
    next: Mutex<NamedPipeServer>,
}

impl ControlListener {
    /// The pipe rejects remote clients; local access is governed by the pipe's default ACL.
    pub fn authorize(&self, _s: &ControlStream) -> Result<(), String> {
        Ok(())
    }

    pub async fn accept(&self) -> std::io::Result<ControlStream> {
        let mut next = self.next.lock().await;
        next.connect().await?;
        let fresh = ServerOptions::new().create(&self.name)?;
        Ok(std::mem::replace(&mut *next, fresh))
    }
}

/// `\\.\pipe\peerchat-chatd`.
pub fn default_socket() -> PathBuf {
    PathBuf::from(r"\\.\pipe\peerchat-chatd")
}

/// Creates the first pipe instance; a pipe another chatd already serves is refused. `group` has
/// no meaning here and is ignored.
pub fn bind_control(path: &Path, _group: Option<&str>) -> Result<ControlListener, ClaimError> {
    let first = ServerOptions::new()
        .first_pipe_instance(true)
        .reject_remote_clients(true)
        .create(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClaimError::SocketInUse(path.to_path_buf()),
            _ => ClaimError::Bind {
                path: path.to_path_buf(),
                error: e,
            },
        })?;
    Ok(ControlListener {
        name: path.to_path_buf(),
        next: Mutex::new(first),
    })
}

/// Named pipes vanish with their last handle; nothing to remove.
pub fn remove_socket(_path: &Path) {}
