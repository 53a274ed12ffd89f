//! Unix: the control socket is a Unix domain socket with file permissions.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::paths::ClaimError;

pub type ControlStream = tokio::net::UnixStream;

pub struct ControlListener {
    listener: tokio::net::UnixListener,
    /// Members of this group may connect, besides our own uid and root.
    group: Option<u32>,
}

impl ControlListener {
    pub async fn accept(&self) -> std::io::Result<ControlStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    /// Checks the caller's credentials (SO_PEERCRED), so a socket with loose file permissions
    /// still admits only our own uid, root, and members of `--socket-group`.
    pub fn authorize(&self, s: &ControlStream) -> Result<(), String> {
        let cred = s
            .peer_cred()
            .map_err(|e| format!("cannot read the caller's credentials: {e}"))?;
        let uid = cred.uid();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if uid == 0 || uid == me {
            return Ok(());
        }
        if let Some(gid) = self.group {
            if cred.gid() == gid || user_in_group(uid, gid) {
                return Ok(());
            }
        }
        Err(format!(
            "permission denied: uid {uid} may not use this chatd (allowed: its own user, root{})",
            if self.group.is_some() {
                ", and members of its socket group"
            } else {
                ""
            }
        ))
    }
}

/// Whether `uid`'s group list (primary and supplementary, from the system's databases) has `gid`.
fn user_in_group(uid: u32, gid: u32) -> bool {
    let mut buf: Vec<libc::c_char> = vec![0; 64 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value for getpwuid_r to fill in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers to our own `pw`, a buffer of the length passed, and `result`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return false;
    }
    let mut groups: Vec<libc::gid_t> = vec![0; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: pw_name points into `buf`, still alive; `groups` holds `n` entries.
    let rc = unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut n) };
    if rc < 0 {
        return false;
    }
    groups.truncate(n.max(0) as usize);
    groups.contains(&gid)
}

/// `$RUNTIME_DIRECTORY/chatd.sock`, else `$XDG_RUNTIME_DIR/peerchat/chatd.sock`, else
/// `/run/chatd/chatd.sock`.
pub fn default_socket() -> PathBuf {
    let env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("RUNTIME_DIRECTORY") {
        let s = d.to_string_lossy().into_owned();
        return PathBuf::from(s.split(':').next().unwrap_or(&s)).join("chatd.sock");
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return d.join("peerchat/chatd.sock");
    }
    PathBuf::from("/run/chatd/chatd.sock")
}

/// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Binds the control socket: a live socket at `path` is refused, a stale one (left by a crash) is
/// replaced. A directory we create is mode 0700 and the socket 0600; with a group, 0750 and
/// 0660, both owned by that group, so its members may use chatctl.
pub fn bind_control(path: &Path, group: Option<&str>) -> Result<ControlListener, ClaimError> {
    let gid = group.map(group_id).transpose()?;
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ClaimError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|error| {
                if error.kind() == std::io::ErrorKind::PermissionDenied && path == default_socket()
                {
                    ClaimError::DefaultSocketDirDenied {
                        path: dir.to_path_buf(),
                        error,
                    }
                } else {
                    ClaimError::SocketDir {
                        path: dir.to_path_buf(),
                        error,
                    }
                }
            })?;
            let dir_err = |error| ClaimError::SocketDir {
                path: dir.to_path_buf(),
                error,
            };
            let mode = if gid.is_some() { 0o750 } else { 0o700 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(dir_err)?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(dir_err)?;
            }
        }
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ClaimError::SocketInUse(path.to_path_buf())),
            Err(_) => {
                // Nobody answers: a leftover from a crash.
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let bind_err = |error| ClaimError::Bind {
        path: path.to_path_buf(),
        error,
    };
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_err)?;
    }
    Ok(ControlListener {
        listener,
        group: gid,
    })
}

/// The id of group `name` (from the system's group database; the reentrant call, since the
/// runtime's threads are already running).
fn group_id(name: &str) -> Result<u32, ClaimError> {
    let unknown = || ClaimError::UnknownGroup(name.to_string());
    let cname = std::ffi::CString::new(name).map_err(|_| unknown())?;
    let mut buf: Vec<libc::c_char> = vec![0; 64 * 1024];
    // SAFETY: an all-zero `group` is a valid value for getgrnam_r to fill in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: a NUL-terminated name, our own `grp`, a
    // buffer of the length we pass, and `result`.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(unknown());
    }
    Ok(grp.gr_gid)
}

/// Removes our socket file, unless something else already replaced it.
pub fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the control socket");
        }
    }
}
