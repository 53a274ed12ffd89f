//! systemd readiness (`Type=notify`). Without `$NOTIFY_SOCKET` these do nothing.

/// READY=1: sockets are bound and the daemon serves.
pub fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// STOPPING=1: shutdown has begun.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}
