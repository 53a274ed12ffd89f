//! The accept loop every listener of both daemons runs: chatd's control socket (a Unix socket
//! or a named pipe) and peer port, registryd's port.
//!
//! It owns what they must agree on: the connection limit (a semaphore; a connection over it is
//! turned away at once, never queued), the optional limit per source address, the back-off after
//! a failed accept, and where the connection tasks are tracked. What each protocol does with a
//! connection, and what it logs, stays with its caller.
//!
//! # Shutdown handshake
//!
//! Modelled on mini-redis's `Listener`:
//!
//! 1. The caller's `stop` future completes (chatd: its `CancellationToken`; registryd: the
//!    shutdown signal). [`serve`] stops accepting and returns, dropping the listener, so new
//!    connections are refused by the operating system instead of waiting in the backlog.
//! 2. Connections already accepted run on, in the caller's `TaskTracker`. Each handler watches
//!    the same stop signal itself (it captured it) and winds down.
//! 3. The caller closes the tracker and waits on it, bounded by its grace period (chatd:
//!    `SHUTDOWN_GRACE`). A connection's permit and address slot are given back when its task
//!    ends, so the counts stay right even for tasks that outlive the wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// The pause after a failed accept. Failures are typically `EMFILE`: retrying at once would
/// spin on the same error until a connection closes.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Something connections are accepted from.
pub trait Listen: Send {
    /// What one accept yields (for TCP, the stream and the peer's address).
    type Conn: Send + 'static;

    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;

    /// The address the per-address limit counts; `None` (local sockets, pipes) is not limited.
    fn source(conn: &Self::Conn) -> Option<IpAddr> {
        let _ = conn;
        None
    }

    /// Turns away a connection over a limit. By default it is closed at once, without a word;
    /// a protocol may say why first (awaited before the next accept, so keep it bounded).
    fn refuse(&mut self, conn: Self::Conn) -> impl Future<Output = ()> + Send {
        drop(conn);
        std::future::ready(())
    }
}

impl Listen for tokio::net::TcpListener {
    type Conn = (tokio::net::TcpStream, SocketAddr);

    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        tokio::net::TcpListener::accept(self)
    }

    fn source(conn: &Self::Conn) -> Option<IpAddr> {
        Some(conn.1.ip())
    }
}

#[cfg(unix)]
impl Listen for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<Self::Conn> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Connections,
    /// `max_per_address` are open from this connection's source address.
    Address,
}

/// The limits and the log lines of one accept loop. The logging is the caller's (plain
/// functions), so each line keeps its message, level and target (the caller's module).
pub struct Options<C> {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections served at once from one source address (see [`Listen::source`]).
    pub max_per_address: Option<usize>,
    /// The pause after a failed accept (normally [`ACCEPT_BACKOFF`]).
    pub accept_backoff: Duration,
    /// Logs a failed accept; the loop goes on after `accept_backoff`.
    pub on_accept_error: fn(&io::Error),
    /// Logs a connection turned away, before [`Listen::refuse`].
    pub on_refused: fn(&C, Refused),
}

/// Accepts connections until `stop` completes, running `handler`'s future for each one in
/// `tasks`. See the module docs for the shutdown handshake.
pub async fn serve<L, H, F>(
    mut listener: L,
    options: Options<L::Conn>,
    stop: impl Future<Output = ()>,
    tasks: &TaskTracker,
    mut handler: H,
) where
    L: Listen,
    H: FnMut(L::Conn) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let per_address = options.max_per_address.map(PerAddress::new);
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    (options.on_accept_error)(&e);
                    tokio::time::sleep(options.accept_backoff).await;
                    continue;
                }
            },
        };
        // The address is checked first: one busy host is told apart from a full server.
        let slot = match (&per_address, L::source(&conn)) {
            (Some(map), Some(ip)) => match map.take(ip) {
                Some(slot) => Some(slot),
                None => {
                    (options.on_refused)(&conn, Refused::Address);
                    listener.refuse(conn).await;
                    continue;
                }
            },
            _ => None,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            (options.on_refused)(&conn, Refused::Connections);
            listener.refuse(conn).await;
            continue;
        };
        let work = handler(conn);
        tasks.spawn(async move {
            work.await;
            drop(permit);
            drop(slot);
        });
    }
}

/// Open connections per source address; an entry leaves with its last connection.
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of [`PerAddress`], given back on drop.
struct AddressSlot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(PerAddress {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // A panic while holding the lock cannot leave the counts half-updated: keep going.
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
