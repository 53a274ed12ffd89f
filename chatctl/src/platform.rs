//! Everything that differs between operating systems besides reaching chatd (that is
//! `peerchat_client::platform`): file modes, endpoint file types, and watching stdout.

#[cfg(unix)]
mod imp {
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
