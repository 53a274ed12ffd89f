//! Exit promptly when our stdout goes away (`chatctl inbox --follow | head -1`), even while no
//! message arrives to be written: a thread polls stdout for an error/hang-up condition.

/// Starts the watcher; on a closed stdout the process exits with status 0.
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
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        });
}
