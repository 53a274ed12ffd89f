//! What the registry says about the presence of the names we have messages for, learned from
//! one long-lived `watch` connection (protocol.md §3.3.6) instead of polling every name.
//!
//! A recipient's delivery task asks to watch its name when an attempt fails and stops watching
//! once a link is up. The watcher keeps one connection to the registry for the whole set (the
//! first [`MAX_WATCH_NAMES`] of it), replacing the set on the same connection when it changes.
//! Every change of a name's state is passed on as a [`Change`]; a name that comes back online is
//! retried at once by the delivery engine. While there is no live watch (the registry is down,
//! or the connection was lost), every name is [`Presence::Unknown`] and the delivery engine keeps
//! its backoff schedule.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use peerchat_proto::envelope::{to_line, Reply};
use peerchat_proto::registry::{Request, RequestLine, Response, MAX_WATCH_NAMES, WATCH_HEARTBEAT};
use peerchat_proto::Name;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registries::Registries;
use crate::registry_client::RegistryClient;

/// The registry sends a heartbeat every `WATCH_HEARTBEAT` (15 s); three times that without a
/// line means the watch is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3 * WATCH_HEARTBEAT.as_secs());
/// Connecting and sending the request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest event line we read (an event is a name and an address: well under 1 KiB).
const MAX_EVENT_LINE: usize = 64 * 1024;
/// Reconnect delays while the registry cannot be reached: 1 s doubling to this.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// After the registry refused a watch (one that predates it): try again this much later.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// Changes of the set within this long go out as one `watch` line.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often a watch on a later-listed registry checks whether an earlier one answers again
/// (the lease keepers find out; the watch then moves back to it).
const PREFER_CHECK: Duration = Duration::from_secs(2);

/// What the registry says about a name right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not watched, or no live watch.
    Unknown,
    Online,
    Offline,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Unknown => "unknown",
            Presence::Online => "online",
            Presence::Offline => "offline",
        }
    }
}

/// A change of a watched name's state, for the delivery engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Online again after being reported offline, or online at another address: worth an
    /// attempt right now.
    Back(Name),
    /// Any other change (including the watch itself being lost): waits are recomputed.
    Changed(Name),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    online: bool,
    address: Option<String>,
}

pub struct PresenceWatch {
    wanted: Mutex<BTreeSet<Name>>,
    wanted_changed: Notify,
    known: Mutex<HashMap<Name, Known>>,
    changes: mpsc::UnboundedSender<Change>,
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("cannot reach the registry: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the registry closed the watch")]
    Closed,
    #[error("the registry refused the watch: {0}")]
    Refused(String),
    #[error("bad event line from the registry: {0}")]
    Bad(String),
}

impl PresenceWatch {
    pub fn new() -> (Arc<PresenceWatch>, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = PresenceWatch {
            wanted: Mutex::new(BTreeSet::new()),
            wanted_changed: Notify::new(),
            known: Mutex::new(HashMap::new()),
            changes: tx,
        };
        (Arc::new(w), rx)
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<Name>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `name` (no-op if already watched).
    pub fn watch(&self, name: &Name) {
        if self.wanted().insert(name.clone()) {
            self.wanted_changed.notify_one();
        }
    }

    /// Stops watching `name`.
    pub fn unwatch(&self, name: &Name) {
        if self.wanted().remove(name) {
            self.known().remove(name);
            self.wanted_changed.notify_one();
        }
    }

    pub fn state(&self, name: &Name) -> Presence {
        match self.known().get(name) {
            None => Presence::Unknown,
            Some(k) if k.online => Presence::Online,
            Some(_) => Presence::Offline,
        }
    }

    /// Records what the registry said; returns the change to pass on, if any.
    fn record(&self, name: Name, online: bool, address: Option<String>) -> Option<Change> {
        if !self.wanted().contains(&name) {
            return None; // an event of a set we already replaced
        }
        if address.is_none() {
            // Not registered at all: not "offline" (which would hold delivery back), but worth
            // an attempt now, whose lookup fails the messages as sent to an unknown name.
            self.known().remove(&name);
            return Some(Change::Back(name));
        }
        let now = Known { online, address };
        let before = self.known().insert(name.clone(), now.clone());
        match before {
            Some(b) if b == now => None,
            Some(b) if online && (!b.online || b.address != now.address) => {
                Some(Change::Back(name))
            }
            _ => Some(Change::Changed(name)),
        }
    }

    /// The watch is gone: everything is unknown again.
    fn forget_all(&self) {
        let names: Vec<Name> = self.known().drain().map(|(n, _)| n).collect();
        for n in names {
            let _ = self.changes.send(Change::Changed(n));
        }
    }

    /// Keeps the watch up until `stop`: connects when there is something to watch, reconnects
    /// after a failure (1 s doubling to [`RECONNECT_MAX`]).
    ///
    /// The watch goes to the registries' current endpoint; one that fails hands over to the next
    /// (`Registries::failed`), and a watch on a later-listed endpoint moves back to an earlier
    /// one once it answers again.
    pub async fn run(self: Arc<Self>, registries: Arc<Registries>, stop: CancellationToken) {
        let mut delay = Duration::from_secs(1);
        let mut logged_down = false;
        loop {
            let Some((index, registry)) = registries.current().map(|(i, c)| (i, c.clone())) else {
                // No registry configured: no presence; delivery keeps its retry schedule.
                return stop.cancelled().await;
            };
            if self.wanted().is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wanted_changed.notified() => continue,
                }
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.watch_once(&registry, &registries, index) => r,
            };
            self.forget_all();
            if let Err(
                WatchError::Io(_)
                | WatchError::Timeout(_)
                | WatchError::Closed
                | WatchError::Bad(_),
            ) = &result
            {
                registry.note_reachable(false);
                registries.failed(index);
            }
            match result {
                Ok(()) => {
                    delay = Duration::from_secs(1);
                    logged_down = false;
                    continue;
                }
                Err(WatchError::Refused(e)) => {
                    // A registry that predates `watch` says so on every try: ask rarely.
                    if !logged_down {
                        info!(registry = registry.addr(), error = %e, "the registry refused the presence watch; delivery keeps its retry schedule");
                        logged_down = true;
                    }
                    delay = REFUSED_RETRY;
                }
                Err(e) => {
                    if logged_down {
                        debug!(registry = registry.addr(), error = %e, "presence watch still down");
                    } else {
                        info!(registry = registry.addr(), error = %e, "presence watch lost; delivery falls back to its retry schedule until it is back");
                        logged_down = true;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// One watch connection, until it fails or there is nothing left to watch (`Ok`).
    /// Also `Ok` when an endpoint listed before `index` answers again (the caller reconnects to
    /// it).
    async fn watch_once(
        &self,
        registry: &RegistryClient,
        registries: &Registries,
        index: usize,
    ) -> Result<(), WatchError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(registry.addr()))
            .await
            .map_err(|_| WatchError::Timeout("connecting"))??;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), vec![], MAX_EVENT_LINE);
        let mut lines = FramedRead::new(read, codec);
        let mut id: u64 = 0;
        let mut sent: Vec<Name> = Vec::new();
        let mut first_answer = true;
        // The silence limit runs from the last line read, whichever branch woke us since.
        let mut silent_until = tokio::time::Instant::now() + SILENCE_LIMIT;
        loop {
            let set: Vec<Name> = self
                .wanted()
                .iter()
                .take(MAX_WATCH_NAMES)
                .cloned()
                .collect();
            if set.is_empty() {
                return Ok(());
            }
            if set != sent {
                id += 1;
                let bytes = to_line(&RequestLine {
                    id,
                    request: Request::Watch { names: set.clone() },
                });
                tokio::time::timeout(CONNECT_TIMEOUT, write.write_all(&bytes))
                    .await
                    .map_err(|_| WatchError::Timeout("sending the watch request"))??;
                if self.wanted().len() > MAX_WATCH_NAMES {
                    warn!(
                        watched = MAX_WATCH_NAMES,
                        "more recipients wait than one watch covers; the rest keep the retry schedule"
                    );
                }
                debug!(names = set.len(), "watching presence");
                sent = set;
            }
            tokio::select! {
                _ = self.wanted_changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                }
                _ = tokio::time::sleep(PREFER_CHECK), if index > 0 => {
                    if registries.current().is_some_and(|(i, _)| i < index) {
                        debug!(registry = registry.addr(), "an earlier-listed registry answers again; moving the presence watch back to it");
                        return Ok(());
                    }
                }
                line = tokio::time::timeout_at(silent_until, lines.next()) => {
                    silent_until = tokio::time::Instant::now() + SILENCE_LIMIT;
                    let line = match line {
                        Err(_) => return Err(WatchError::Timeout("waiting for the registry's heartbeat")),
                        Ok(None) => return Err(WatchError::Closed),
                        Ok(Some(Err(e))) => return Err(WatchError::Bad(e.to_string())),
                        Ok(Some(Ok(l))) => l,
                    };
                    let event: Reply<Response> = serde_json::from_slice(&line)
                        .map_err(|e| WatchError::Bad(e.to_string()))?;
                    if first_answer {
                        first_answer = false;
                        registry.note_reachable(true);
                    }
                    match event.outcome.into_result() {
                        Ok(Response::Presence { name, online, address }) => {
                            if let Some(c) = self.record(name, online, address) {
                                let _ = self.changes.send(c);
                            }
                        }
                        Ok(Response::Heartbeat) => {}
                        Ok(other) => return Err(WatchError::Bad(format!("unexpected reply {}", reply_kind(&other)))),
                        Err(e) => return Err(WatchError::Refused(e.message)),
                    }
                }
            }
        }
    }
}

/// A reply's type, for an error message (never the whole reply: it may be large).
fn reply_kind(r: &Response) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn only_a_return_or_a_move_is_worth_an_attempt_now() {
        let (w, _rx) = PresenceWatch::new();
        w.watch(&n("pb"));
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
        // First word: offline. Then back: retry now.
        let a = Some("127.0.0.1:7000".to_string());
        assert_eq!(
            w.record(n("pb"), false, a.clone()),
            Some(Change::Changed(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Offline);
        assert_eq!(
            w.record(n("pb"), true, a.clone()),
            Some(Change::Back(n("pb")))
        );
        assert_eq!(w.record(n("pb"), true, a), None);
        // Online at another address: it moved.
        assert_eq!(
            w.record(n("pb"), true, Some("127.0.0.1:7001".into())),
            Some(Change::Back(n("pb")))
        );
        // A name that is not watched (an old set's event) is ignored.
        assert_eq!(w.record(n("pc"), true, None), None);
        // Not registered at all: unknown, and worth an attempt (which finds the name unknown).
        assert_eq!(w.record(n("pb"), false, None), Some(Change::Back(n("pb"))));
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
        w.unwatch(&n("pb"));
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
    }

    #[test]
    fn a_first_online_report_only_recomputes_the_wait() {
        let (w, _rx) = PresenceWatch::new();
        w.watch(&n("pb"));
        assert_eq!(
            w.record(n("pb"), true, Some("h:1".into())),
            Some(Change::Changed(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Online);
    }
}
