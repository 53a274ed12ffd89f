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
//!
//! With several registries there is one watch per registry endpoint, and a name's state is
//! merged from those that answer: online if any says online (a node that registered with one
//! registry is online, and another may not have heard from it while it was down), offline only
//! if those that know it all say offline. A registry that stops answering drops out of the
//! merge; its watch reconnects with backoff.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use peerchat_proto::envelope::{to_line, Reply};
use peerchat_proto::registry::{Request, RequestLine, Response, MAX_WATCH_NAMES, WATCH_HEARTBEAT};
use peerchat_proto::Name;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
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
/// Most conversation peers watched (the most recently active conversations' ones).
pub const MAX_CONVERSATION_PEERS: usize = 1000;
/// Presence changes buffered for `events` streams.
const PRESENCE_FEED: usize = 1024;

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
    /// Names the delivery engine waits for.
    wanted: Mutex<BTreeSet<Name>>,
    /// Peers of the most recently active conversations (for `conversations` and `events`,
    /// protocol.md §2.9); watched after `wanted`, within the same [`MAX_WATCH_NAMES`].
    conversations: Mutex<BTreeSet<Name>>,
    /// Every change of a watched name's merged state, for `events` streams (bounded: a lagging
    /// stream loses changes and resends its whole view).
    seen: tokio::sync::broadcast::Sender<(Name, Presence)>,
    /// Bumped when `wanted` changes; every endpoint's watch follows it.
    wanted_changed: watch::Sender<u64>,
    /// What each endpoint said, by name: (endpoint index, what it said).
    known: Mutex<HashMap<Name, Vec<(usize, Known)>>>,
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
            conversations: Mutex::new(BTreeSet::new()),
            seen: tokio::sync::broadcast::channel(PRESENCE_FEED).0,
            wanted_changed: watch::Sender::new(0),
            known: Mutex::new(HashMap::new()),
            changes: tx,
        };
        (Arc::new(w), rx)
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<Name>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Vec<(usize, Known)>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `name` (no-op if already watched).
    pub fn watch(&self, name: &Name) {
        if self.wanted().insert(name.clone()) {
            self.wanted_changed.send_modify(|g| *g += 1);
        }
    }

    /// Stops watching `name` (for the delivery engine: a conversation's peer stays watched).
    pub fn unwatch(&self, name: &Name) {
        if self.wanted().remove(name) {
            if !self.conversation_peers().contains(name) {
                self.forget(name);
            }
            self.wanted_changed.send_modify(|g| *g += 1);
        }
    }

    fn conversation_peers(&self) -> std::sync::MutexGuard<'_, BTreeSet<Name>> {
        self.conversations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches these conversation peers (replacing the previous set; at most
    /// [`MAX_CONVERSATION_PEERS`] of them, the first ones).
    pub fn set_conversation_peers(&self, names: impl IntoIterator<Item = Name>) {
        let new: BTreeSet<Name> = names.into_iter().take(MAX_CONVERSATION_PEERS).collect();
        let old = std::mem::replace(&mut *self.conversation_peers(), new.clone());
        if old != new {
            for gone in old.difference(&new) {
                if !self.wanted().contains(gone) {
                    self.forget(gone);
                }
            }
            self.wanted_changed.send_modify(|g| *g += 1);
        }
    }

    /// Whether `name` is watched, by delivery or for a conversation.
    fn is_watched(&self, name: &Name) -> bool {
        self.wanted().contains(name) || self.conversation_peers().contains(name)
    }

    /// The names to watch: the delivery engine's first, then the conversations' peers.
    fn watch_set(&self) -> Vec<Name> {
        let mut set: Vec<Name> = self.wanted().iter().cloned().collect();
        let extra: Vec<Name> = self
            .conversation_peers()
            .iter()
            .filter(|n| set.binary_search(n).is_err())
            .cloned()
            .collect();
        set.extend(extra);
        set.truncate(MAX_WATCH_NAMES);
        set
    }

    fn forget(&self, name: &Name) {
        if self.known().remove(name).is_some() {
            let _ = self.seen.send((name.clone(), Presence::Unknown));
        }
    }

    /// Every watched name whose state is known, with it.
    pub fn snapshot(&self) -> Vec<(Name, Presence)> {
        self.known()
            .iter()
            .filter_map(|(n, said)| merged(said).map(|k| (n.clone(), presence_of(Some(&k)))))
            .collect()
    }

    /// Changes of watched names' states from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(Name, Presence)> {
        self.seen.subscribe()
    }

    pub fn state(&self, name: &Name) -> Presence {
        presence_of(self.known().get(name).and_then(|v| merged(v)).as_ref())
    }

    /// Records what endpoint `from` said; returns the change to pass on, if any.
    fn record(
        &self,
        from: usize,
        name: Name,
        online: bool,
        address: Option<String>,
    ) -> Option<Change> {
        if !self.is_watched(&name) {
            return None; // an event of a set we already replaced
        }
        let mut known = self.known();
        let said = known.entry(name.clone()).or_default();
        let before = merged(said);
        said.retain(|(i, _)| *i != from);
        if address.is_none() {
            // Not registered at all: not "offline" (which would hold delivery back), but worth
            // an attempt now, whose lookup fails the messages as sent to an unknown name (or
            // finds them in another registry).
            let now = merged(said);
            if said.is_empty() {
                known.remove(&name);
            }
            drop(known);
            self.tell_if_changed(&name, before.as_ref(), now.as_ref());
            return Some(Change::Back(name));
        }
        said.push((from, Known { online, address }));
        let Some(now) = merged(said) else {
            return None; // unreachable: `said` holds what was just pushed
        };
        drop(known);
        self.tell_if_changed(&name, before.as_ref(), Some(&now));
        match before {
            Some(b) if b == now => None,
            Some(b) if online && (!b.online || b.address != now.address) => {
                Some(Change::Back(name))
            }
            _ => Some(Change::Changed(name)),
        }
    }

    /// Passes a change of `name`'s merged presence on to `events` streams.
    fn tell_if_changed(&self, name: &Name, before: Option<&Known>, now: Option<&Known>) {
        let (b, n) = (presence_of(before), presence_of(now));
        if b != n {
            let _ = self.seen.send((name.clone(), n));
        }
    }

    /// Endpoint `from`'s watch is gone: what it said no longer counts.
    fn forget_all(&self, from: usize) {
        let mut changed = Vec::new();
        self.known().retain(|name, said| {
            let before = said.len();
            let was = presence_of(merged(said).as_ref());
            said.retain(|(i, _)| *i != from);
            if said.len() != before {
                let now = presence_of(merged(said).as_ref());
                changed.push((name.clone(), was != now, now));
            }
            !said.is_empty()
        });
        for (n, moved, now) in changed {
            if moved {
                let _ = self.seen.send((n.clone(), now));
            }
            let _ = self.changes.send(Change::Changed(n));
        }
    }

    /// Keeps one watch per registry endpoint up until `stop` (none without registries).
    pub async fn run(self: Arc<Self>, registries: Arc<Registries>, stop: CancellationToken) {
        let endpoints = registries.endpoints();
        join_all(
            endpoints
                .iter()
                .enumerate()
                .map(|(i, c)| self.clone().run_one(i, c.clone(), stop.clone())),
        )
        .await;
    }

    /// Keeps the watch on one endpoint up until `stop`: connects when there is something to
    /// watch, reconnects after a failure (1 s doubling to [`RECONNECT_MAX`]).
    async fn run_one(
        self: Arc<Self>,
        index: usize,
        registry: Arc<RegistryClient>,
        stop: CancellationToken,
    ) {
        let mut wanted_changed = self.wanted_changed.subscribe();
        let mut delay = Duration::from_secs(1);
        let mut logged_down = false;
        loop {
            if self.watch_set().is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wanted_changed.changed() => continue,
                }
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.watch_once(index, &registry, &mut wanted_changed) => r,
            };
            self.forget_all(index);
            if let Err(
                WatchError::Io(_)
                | WatchError::Timeout(_)
                | WatchError::Closed
                | WatchError::Bad(_),
            ) = &result
            {
                registry.note_reachable(false);
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
    async fn watch_once(
        &self,
        index: usize,
        registry: &RegistryClient,
        wanted_changed: &mut watch::Receiver<u64>,
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
            let set = self.watch_set();
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
                _ = wanted_changed.changed() => {
                    tokio::time::sleep(DEBOUNCE).await;
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
                            if let Some(c) = self.record(index, name, online, address) {
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

/// What the endpoints that know a name say, merged: online if any says online (at the address
/// of the first that does), else offline.
fn merged(said: &[(usize, Known)]) -> Option<Known> {
    said.iter()
        .find(|(_, k)| k.online)
        .or_else(|| said.first())
        .map(|(_, k)| k.clone())
}

/// A merged state as a [`Presence`] (none known: unknown).
fn presence_of(k: Option<&Known>) -> Presence {
    match k {
        None => Presence::Unknown,
        Some(k) if k.online => Presence::Online,
        Some(_) => Presence::Offline,
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
            w.record(0, n("pb"), false, a.clone()),
            Some(Change::Changed(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Offline);
        assert_eq!(
            w.record(0, n("pb"), true, a.clone()),
            Some(Change::Back(n("pb")))
        );
        assert_eq!(w.record(0, n("pb"), true, a), None);
        // Online at another address: it moved.
        assert_eq!(
            w.record(0, n("pb"), true, Some("127.0.0.1:7001".into())),
            Some(Change::Back(n("pb")))
        );
        // A name that is not watched (an old set's event) is ignored.
        assert_eq!(w.record(0, n("pc"), true, None), None);
        // Not registered at all: unknown, and worth an attempt (which finds the name unknown).
        assert_eq!(
            w.record(0, n("pb"), false, None),
            Some(Change::Back(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
        w.unwatch(&n("pb"));
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
    }

    #[test]
    fn several_registries_merge_to_online_if_any_says_online() {
        let (w, _rx) = PresenceWatch::new();
        w.watch(&n("pb"));
        let a = Some("127.0.0.1:7000".to_string());
        // The first registry still has pb offline (pb registered only with the second since).
        w.record(0, n("pb"), false, a.clone());
        assert_eq!(w.state(&n("pb")), Presence::Offline);
        assert_eq!(
            w.record(1, n("pb"), true, Some("127.0.0.1:7001".into())),
            Some(Change::Back(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Online);
        // The second registry's watch is lost: only the first's word is left.
        w.forget_all(1);
        assert_eq!(w.state(&n("pb")), Presence::Offline);
        w.forget_all(0);
        assert_eq!(w.state(&n("pb")), Presence::Unknown);
    }

    #[test]
    fn a_first_online_report_only_recomputes_the_wait() {
        let (w, _rx) = PresenceWatch::new();
        w.watch(&n("pb"));
        assert_eq!(
            w.record(0, n("pb"), true, Some("h:1".into())),
            Some(Change::Changed(n("pb")))
        );
        assert_eq!(w.state(&n("pb")), Presence::Online);
    }
}
