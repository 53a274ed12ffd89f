//! SIGTERM/SIGINT end the daemon gracefully; SIGHUP is logged (configuration is read at start,
//! so a restart applies changes) instead of killing the process as its default action would.

use std::future::Future;

#[cfg(unix)]
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Windows: Ctrl-C (or the service stopping) ends the daemon.
#[cfg(not(unix))]
pub fn shutdown_on_signals(_daemon: &'static str) -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    })
}

/// A future that completes on the first SIGTERM or SIGINT (installed with signal-hook).
#[cfg(unix)]
pub fn shutdown_on_signals(daemon: &'static str) -> std::io::Result<impl Future<Output = ()>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = tokio::sync::oneshot::channel::<i32>();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                tracing::info!(
                    "SIGHUP received: {daemon} reads its configuration only at start; restart it to apply changes"
                );
                continue;
            }
            let _ = tx.send(sig);
            return;
        }
    })?;
    Ok(async move {
        if let Ok(sig) = rx.await {
            tracing::info!(signal = sig, "shutdown requested");
        }
    })
}
