//! systemd readiness (`Type=notify`). Without `$NOTIFY_SOCKET` (or off Unix) these do nothing.

/// READY=1: sockets are bound and the daemon serves.
pub fn ready() {
    #[cfg(unix)]
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// STOPPING=1: shutdown has begun.
pub fn stopping() {
    #[cfg(unix)]
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}
