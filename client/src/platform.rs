//! How a client reaches chatd on each operating system: a Unix socket, or a Windows named pipe.

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

    pub fn set_write_timeout(s: &Stream, t: Option<Duration>) -> std::io::Result<()> {
        s.set_write_timeout(t)
    }

    pub fn shutdown_write(s: &Stream) -> std::io::Result<()> {
        s.shutdown(std::net::Shutdown::Write)
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

    /// Nor a write timeout.
    pub fn set_write_timeout(_s: &Stream, _t: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    /// A pipe has no half-close; chatd sees the end when the handles are closed.
    pub fn shutdown_write(_s: &Stream) -> std::io::Result<()> {
        Ok(())
    }

    pub fn default_endpoints() -> Vec<PathBuf> {
        vec![PathBuf::from(r"\\.\pipe\peerchat-chatd")]
    }
}

pub use imp::*;
