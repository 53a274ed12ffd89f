//! Everything that differs between operating systems: how chatctl reaches chatd (a Unix socket,
//! or a Windows named pipe), the default endpoint, file modes, and watching stdout.

#[cfg(unix)]
mod imp {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    pub type Stream = std::os::unix::net::UnixStream;

    pub fn connect(path: &Path) -> std::io::Result<Stream> {
        Stream::connect(path)
    }

    pub fn set_read_timeout(s: &Stream, t: Option<Duration>) -> std::io::Result<()> {
        s.set_read_timeout(t)
    }

    /// Defaults after `$CHATD_SOCKET`: `$XDG_RUNTIME_DIR/peerchat/chatd.sock` if it exists, then
    /// `/run/chatd/chatd.sock`.
    pub fn default_endpoints() -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|s| !s.is_empty()) {
            let p = PathBuf::from(d).join("peerchat/chatd.sock");
            if p.exists() {
                v.push(p);
            }
        }
        v.push(PathBuf::from("/run/chatd/chatd.sock"));
        v
    }

    /// Permission bits of a file.
    pub fn mode(m: &std::fs::Metadata) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        Some(m.permissions().mode() & 0o777)
    }

    /// Whether the file is something chatd listens on (a Unix socket).
    pub fn is_endpoint(m: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }

    /// Starts a thread that exits the process (status 0) once stdout's reader is gone, even
    /// while nothing is being written (`chatctl inbox --follow | head -1`).
    pub fn exit_when_stdout_closes() {
        let _ = std::thread::Builder::new()
            .name("stdout-watch".into())
            .spawn(|| loop {
                let mut fds = [libc::pollfd {
                    fd: libc::STDOUT_FILENO,
                    events: 0,
                    revents: 0,
                }];
                // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
                if n > 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    std::process::exit(0);
                }
                if n < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    return;
                }
            });
    }
}

#[cfg(windows)]
mod imp {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A named pipe client handle behaves like a file.
    pub type Stream = std::fs::File;

    pub fn connect(path: &Path) -> std::io::Result<Stream> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
    }

    /// Pipe handles have no read timeout; reads block until chatd answers.
    pub fn set_read_timeout(_s: &Stream, _t: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    pub fn default_endpoints() -> Vec<PathBuf> {
        vec![PathBuf::from(r"\\.\pipe\peerchat-chatd")]
    }

    pub fn mode(_m: &std::fs::Metadata) -> Option<u32> {
        None
    }

    /// Named pipes have no distinct file type to check.
    pub fn is_endpoint(_m: &std::fs::Metadata) -> bool {
        true
    }

    /// A closed stdout is noticed at the next write instead.
    pub fn exit_when_stdout_closes() {}
}

pub use imp::*;
