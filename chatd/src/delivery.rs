//! The delivery engine: one task per recipient with undelivered messages.
//!
//! A recipient's task keeps one persistent link, streams that recipient's queue in acceptance
//! order with up to [`WINDOW`] messages unacknowledged, and marks messages delivered when the
//! acks arrive. When the link fails it records the error, forgets the cached address (the peer
//! may have moved), and retries with exponential backoff. Messages older than the configured
//! lifetime become `failed`. Ordering per recipient holds across reconnects because a retry
//! always restarts from the oldest undelivered message and the receiver ignores repeats.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat_proto::peer::{self, Frame, MsgRef};
use peerchat_proto::{Name, PublicKey};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::peer_conn::{LinkError, PeerConn};
use crate::presence::{Presence, PresenceWatch};
use crate::resolver::{ResolveError, Resolver};
use crate::store::{Outgoing, Store};

/// Most messages in flight (written, not yet acknowledged) on one link.
const WINDOW: usize = 4096;
/// Most body bytes in flight on one link (large messages fill the window by size first).
const WINDOW_BYTES: usize = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// With messages in flight, the peer must acknowledge something within this time.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// A link with nothing to send for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Messages written to a link (from memory or from the database) are recorded `sent` in one
/// lazy update when the oldest of them has been unacknowledged this long (all still
/// unacknowledged then are marked, even ones written just before); most are acknowledged
/// sooner, saving a row update each. Long
/// enough that a full window (4,096 messages, ≈ 50 ms at full speed) is normally acknowledged
/// first: at 50 ms nearly every message of a sustained stream got the update (≈ 5 % of the
/// sender's database thread). The cost: `status` says `queued` instead of `sent` for up to a
/// second, and a crash within it undercounts `attempts`.
const SENT_MARK_DELAY: Duration = Duration::from_secs(1);
/// While the registry reports the recipient online but it cannot be reached (a partition, a
/// firewall), attempts start at most this long apart (plus the connect timeout).
const ONLINE_RETRY_MAX: Duration = Duration::from_secs(5);
/// While the registry reports the recipient offline, nothing is attempted; its coming back ends
/// the wait. The wait is re-checked this often anyway (cheap: no network).
const OFFLINE_RECHECK: Duration = Duration::from_secs(30);
/// How often a recipient's task looks for messages past their lifetime.
const EXPIRE_SWEEP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// After this long since acceptance, an undelivered message becomes `failed`.
    pub lifetime: Duration,
}

/// How a recipient's task is woken (new messages, or a reason to retry before the backoff
/// ends), and the messages handed to it in memory.
struct Wake {
    work: Notify,
    /// Ends a wait between attempts at once.
    retry: Notify,
    /// The registry's view of the recipient changed: a wait between attempts is recomputed.
    presence: Notify,
    /// The task is waiting between attempts (after a failure).
    waiting: AtomicBool,
    /// While waiting: the last attempt's error, for messages queued since (which no attempt
    /// has touched yet) to show in `status` and `outbox`.
    last_error: Mutex<Option<String>>,
    handed: Mutex<Handed>,
    /// Set when recording acknowledged messages failed: they are no longer in flight but still
    /// pending in the database, so the link must start over from the database.
    resync: AtomicBool,
}

/// Messages committed for a recipient, pushed by the DB thread in commit order (so in `seq`
/// order). A streaming link takes them from here instead of reading them back from SQLite. If
/// the queue is full, pushing stops (`overflowed`); the link drains the queue, then reads what
/// came after it from the database, so nothing is ever lost by the hand-off: the database stays
/// the truth.
#[derive(Default)]
struct Handed {
    queue: VecDeque<Outgoing>,
    /// Body bytes in `queue`.
    bytes: usize,
    overflowed: bool,
}

impl Wake {
    fn reset_handoff(&self) {
        let mut h = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        h.queue.clear();
        h.bytes = 0;
        h.overflowed = false;
    }
}

/// Most messages waiting in one recipient's hand-off queue, and most body bytes.
const HANDOFF_MAX: usize = 2 * WINDOW;
const HANDOFF_MAX_BYTES: usize = 2 * WINDOW_BYTES;

pub struct Delivery {
    me: Name,
    identity: Arc<crate::identity::Identity>,
    store: Store,
    resolver: Arc<Resolver>,
    presence: Arc<PresenceWatch>,
    retry: RetryPolicy,
    legacy: bool,
    links: Mutex<HashMap<Name, Arc<Wake>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Refused(String),
}

impl Delivery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: Name,
        identity: Arc<crate::identity::Identity>,
        store: Store,
        resolver: Arc<Resolver>,
        presence: Arc<PresenceWatch>,
        retry: RetryPolicy,
        legacy: bool,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Delivery> {
        Arc::new(Delivery {
            me,
            identity,
            store,
            resolver,
            presence,
            retry,
            legacy,
            links: Mutex::new(HashMap::new()),
            stop,
            tasks,
        })
    }

    /// There is something new for `recipient`: wake its task, starting one if needed.
    pub fn kick(self: &Arc<Self>, recipient: &Name) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            w.work.notify_one();
            return;
        }
        let wake = Arc::new(Wake {
            work: Notify::new(),
            retry: Notify::new(),
            presence: Notify::new(),
            waiting: AtomicBool::new(false),
            last_error: Mutex::new(None),
            handed: Mutex::new(Handed::default()),
            resync: AtomicBool::new(false),
        });
        links.insert(recipient.clone(), wake.clone());
        let this = self.clone();
        let recipient = recipient.clone();
        self.tasks
            .spawn(async move { this.run_recipient(recipient, wake).await });
    }

    /// A message for `recipient` was just committed (called on the DB thread, in commit order).
    /// Only a running task takes it; a new task starts from the database anyway.
    pub fn hand_off(&self, recipient: &Name, m: &Outgoing) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            let mut h = w.handed.lock().unwrap_or_else(|p| p.into_inner());
            if h.queue.len() >= HANDOFF_MAX || h.bytes + m.body.len() > HANDOFF_MAX_BYTES {
                // Keep what is queued (the link drains it, in order) and stop here: the link
                // reads everything after the queue's last message from the database.
                h.overflowed = true;
            } else if !h.overflowed {
                h.bytes += m.body.len();
                h.queue.push_back(m.clone());
            }
            drop(h);
            w.work.notify_one();
        }
    }

    /// Message `seq` to `recipient` was cancelled: drop it from the link's hand-off queue, so
    /// that a link that has not written it yet never does. (One already written, or taken for
    /// the next write, still goes; an ack then turns `cancelled` into `delivered`.)
    pub fn forget(&self, recipient: &Name, seq: i64) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            let mut h = w.handed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = h.queue.iter().position(|m| m.seq == seq) {
                if let Some(m) = h.queue.remove(i) {
                    h.bytes = h.bytes.saturating_sub(m.body.len());
                }
            }
        }
    }

    /// Something that blocked `recipient` was fixed (e.g. `chatctl trust`): end its backoff now.
    pub fn retry_now(self: &Arc<Self>, recipient: &Name) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            w.retry.notify_one();
            w.work.notify_one();
        }
    }

    /// `recipient` was just seen alive (it opened a link to us, or the registry reports it back
    /// online): if its task is waiting to retry, it retries now. (A task that is not waiting is
    /// left alone, so no stale wake-up cuts a later wait short.)
    pub fn retry_if_waiting(&self, recipient: &Name) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            if w.waiting.load(Ordering::SeqCst) {
                debug!(to = %recipient, "the recipient is back; retrying now");
                w.retry.notify_one();
            }
        }
    }

    /// Every recipient waiting to retry retries now (our own registration just succeeded after
    /// failing: peers that refused us as unknown will take us now).
    pub fn retry_all_waiting(&self) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for w in links.values() {
            if w.waiting.load(Ordering::SeqCst) {
                w.retry.notify_one();
            }
        }
    }

    /// Why messages to `recipient` are not moving, if its task is waiting to retry: the last
    /// attempt's error and what the registry says. `status` and `outbox` show it for pending
    /// messages that no attempt has touched yet (queued during the wait).
    pub fn why_waiting(&self, recipient: &Name) -> Option<String> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let w = links.get(recipient)?;
        if !w.waiting.load(Ordering::SeqCst) {
            return None;
        }
        let error = w
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(match self.presence.state(recipient) {
            Presence::Offline => format!(
                "{error}; {recipient} is offline (the registry says), retried as soon as it is back"
            ),
            Presence::Online => format!("{error}; retried every few seconds"),
            Presence::Unknown => error,
        })
    }

    /// The registry's view of `recipient` changed (see [`Delivery::wait_to_retry`]).
    pub fn presence_changed(&self, recipient: &Name) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = links.get(recipient) {
            w.presence.notify_one();
        }
    }

    async fn run_recipient(self: Arc<Self>, to: Name, wake: Arc<Wake>) {
        let notify = &wake.work;
        let mut backoff = self.retry.initial;
        // The lifetime sweep is a database write: not on every wake-up; once a minute (or once per
        // lifetime, if that is shorter) is plenty.
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= EXPIRE_SWEEP.min(self.retry.lifetime)) {
                last_sweep = Some(std::time::Instant::now());
                self.expire_old(&to).await;
            }
            let mut established = false;
            let result = self.attempt(&to, &wake, &mut established).await;
            if established {
                // The peer was reachable: whatever happens next starts the schedule afresh (a
                // restart of the peer must not cost the backoff of the last outage, doubled).
                backoff = self.retry.initial;
                self.presence.unwatch(&to);
            }
            match result {
                Ok(true) => backoff = self.retry.initial,
                Ok(false) => {
                    // Nothing left to send: sleep until kicked.
                    self.presence.unwatch(&to);
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = notify.notified() => {}
                    }
                    backoff = self.retry.initial;
                }
                // A name never known here (a send accepted while the registry was unreachable)
                // that the registry does not know either fails. A name we pinned once is only
                // gone for now (unregistered, released for a new key): it keeps waiting.
                Err(AttemptError::Resolve(ResolveError::Unknown(name)))
                    if self.resolver.pinned(&name).is_none() =>
                {
                    // The registry answered: the name does not exist (a send accepted while the
                    // registry was unreachable, or a name released since). Nothing will change
                    // that by retrying.
                    let why = format!(
                        "unknown name {name}: the registry has no such name (not registered)"
                    );
                    // Every pending message: all were accepted before now.
                    let all = i64::MAX as u64;
                    match self.store.expire(to.clone(), all, why).await {
                        Ok(n) if n > 0 => {
                            warn!(to = %to, messages = n, "the registry does not know this recipient; its messages failed");
                            self.presence.unwatch(&to);
                            backoff = self.retry.initial;
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => warn!(to = %to, error = %e, "could not record the failure"),
                    }
                    // Nothing could be failed: never spin; wait as after any failure.
                    if !self.wait_to_retry(&to, &wake, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.retry.max);
                }
                Err(e) => {
                    let msg = e.to_string();
                    info!(to = %to, error = %msg, retry_in_ms = backoff.as_millis() as u64, presence = self.presence.state(&to).as_str(), "delivery attempt failed");
                    self.resolver.invalidate(&to);
                    *wake.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                    if let Err(e) = self.store.note_link_failure(to.clone(), msg).await {
                        warn!(to = %to, error = %e, "could not record the delivery failure");
                    }
                    if !self.wait_to_retry(&to, &wake, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.retry.max);
                }
            }
        }
    }

    /// After a failed attempt: waits until the next one is worth making. Returns `false` at
    /// shutdown.
    ///
    /// What the registry knows decides: while it reports the recipient offline, nothing is
    /// attempted (its coming back, a link it opens to us, or `trust` ends the wait at once);
    /// while it reports it online but we cannot reach it (a partition, a firewall), attempts are
    /// at most [`ONLINE_RETRY_MAX`] apart; when it cannot tell (no watch), the backoff stands.
    async fn wait_to_retry(&self, to: &Name, wake: &Wake, backoff: Duration) -> bool {
        self.presence.watch(to);
        wake.waiting.store(true, Ordering::SeqCst);
        let mut started = tokio::time::Instant::now();
        // Messages keep their lifetime while nothing is attempted (an offline recipient can
        // wait for days): the sweep goes on during the wait.
        let sweep_every = EXPIRE_SWEEP.min(self.retry.lifetime);
        let mut next_sweep = started + sweep_every;
        let ok = loop {
            let wait = match self.presence.state(to) {
                Presence::Offline => OFFLINE_RECHECK,
                Presence::Online => backoff.min(ONLINE_RETRY_MAX),
                Presence::Unknown => backoff,
            };
            tokio::select! {
                _ = self.stop.cancelled() => break false,
                _ = wake.retry.notified() => break true,
                // The registry's view changed: the wait is recomputed from the same start.
                _ = wake.presence.notified() => continue,
                _ = tokio::time::sleep_until(next_sweep) => {
                    self.expire_old(to).await;
                    next_sweep = tokio::time::Instant::now() + sweep_every;
                    if !self.store.has_pending(to.clone()).await.unwrap_or(true) {
                        break true; // nothing left to wait for
                    }
                }
                _ = tokio::time::sleep_until(started + wait) => {
                    if self.presence.state(to) != Presence::Offline {
                        break true;
                    }
                    started = tokio::time::Instant::now();
                }
            }
        };
        wake.waiting.store(false, Ordering::SeqCst);
        ok
    }

    /// Fails `to`'s messages accepted longer ago than the lifetime.
    async fn expire_old(&self, to: &Name) {
        let cutoff = peerchat_db::now_ms().saturating_sub(self.retry.lifetime.as_millis() as u64);
        let why = format!(
            "not delivered within {}",
            humantime::format_duration(self.retry.lifetime)
        );
        match self.store.expire(to.clone(), cutoff, why).await {
            Ok(0) => {}
            Ok(n) => warn!(to = %to, messages = n, "gave up on messages past their lifetime"),
            Err(e) => warn!(to = %to, error = %e, "could not expire old messages"),
        }
    }

    /// One connection's worth of delivery. `Ok(false)`: nothing was pending; `Ok(true)`: the link
    /// ended normally (idle or shutdown) after doing work.
    ///
    /// The link first catches up from the database (`take_batch`). Once a read comes back
    /// short, everything later is in the hand-off queue, in order, so the path from acceptance
    /// to the wire has no database round trip. Wherever a message came from, its `sent` is
    /// recorded only if it is still unacknowledged after [`SENT_MARK_DELAY`] (one lazy update
    /// for all of them); most are acknowledged first and never pay for that row update.
    ///
    /// `established` is set once the link is up (the recipient proved its key and welcomed us).
    async fn attempt(
        &self,
        to: &Name,
        wake: &Arc<Wake>,
        established: &mut bool,
    ) -> Result<bool, AttemptError> {
        let notify = &wake.work;
        if !self.store.has_pending(to.clone()).await? {
            return Ok(false);
        }
        let target = self.resolver.resolve(to).await?;
        if target.legacy {
            let (pending, _) = self
                .store
                .take_batch(to.clone(), 0, WINDOW, WINDOW_BYTES)
                .await?;
            return self
                .send_legacy(to, &target.address, pending)
                .await
                .map(|()| true);
        }
        let (mut conn, pings) = self.connect(to, &target.address, target.key).await?;
        *established = true;
        // From the database until caught up. The hand-off queue is reset before every read:
        // whatever is committed after the read is pushed to it (in order), and whatever was
        // pushed before the read is also in what the read returns (and skipped by seq). If the
        // queue fills up while streaming, it is drained first and the database read resumes
        // after the last message sent.
        wake.reset_handoff();
        let (mut pending, _) = self
            .store
            .take_batch(to.clone(), 0, WINDOW, WINDOW_BYTES)
            .await?;
        // Body bytes written and not yet acknowledged.
        let mut inflight_bytes = 0usize;
        // Seqs written whose `sent` is not recorded yet, oldest first.
        let mut unmarked: VecDeque<i64> = VecDeque::new();
        // When the link last moved: an answer arrived, or a write went into an empty window.
        let mut last_progress = tokio::time::Instant::now();
        let mut mark_at = tokio::time::Instant::now();
        let mut inflight: VecDeque<Outgoing> = VecDeque::new();
        let mut last_seq = 0;
        let mut from_db = true;
        // With pings (both sides list the feature): when we last heard from the peer, and when
        // the next ping is due. Silence for DEAD_AFTER ends the link, with or without traffic.
        let mut last_heard = tokio::time::Instant::now();
        let mut ping_at = last_heard + peer::PING_AFTER;
        loop {
            if wake.resync.swap(false, Ordering::SeqCst) {
                return Err(AttemptError::Refused(
                    "recording deliveries failed; starting over from the database".into(),
                ));
            }
            // Fill the window.
            if !pending.is_empty() {
                if inflight.is_empty() {
                    last_progress = tokio::time::Instant::now();
                }
                // Usually acknowledged before this matters: `sent` is recorded only for
                // messages still unacknowledged after SENT_MARK_DELAY.
                if unmarked.is_empty() {
                    mark_at = tokio::time::Instant::now() + SENT_MARK_DELAY;
                }
                unmarked.extend(pending.iter().map(|m| m.seq));
                for m in pending.drain(..) {
                    last_seq = m.seq;
                    inflight_bytes += m.body.len();
                    {
                        let frame = MsgRef {
                            id: &m.msg_id,
                            to: &m.recipients,
                            sent_at_ms: m.created_at_ms,
                            body: &m.body,
                        };
                        self.marking_while(to, &mut unmarked, mark_at, conn.feed(&frame))
                            .await?;
                    }
                    inflight.push_back(m);
                }
                self.marking_while(to, &mut unmarked, mark_at, conn.flush())
                    .await?;
            }
            if inflight.len() < WINDOW && (inflight.is_empty() || inflight_bytes < WINDOW_BYTES) {
                let room = WINDOW - inflight.len();
                if from_db {
                    wake.reset_handoff();
                    let room_bytes = WINDOW_BYTES.saturating_sub(inflight_bytes);
                    let (batch, more_in_db) = self
                        .store
                        .take_batch(to.clone(), last_seq, room, room_bytes)
                        .await?;
                    pending = batch;
                    if more_in_db {
                        continue;
                    }
                    // Caught up: from now on the hand-off queue has everything newer.
                    from_db = false;
                    if !pending.is_empty() {
                        continue;
                    }
                } else {
                    let mut h = wake.handed.lock().unwrap_or_else(|p| p.into_inner());
                    let mut bytes = inflight_bytes;
                    while pending.len() < room
                        && (bytes < WINDOW_BYTES || inflight.is_empty() && pending.is_empty())
                    {
                        match h.queue.pop_front() {
                            Some(m) => {
                                h.bytes = h.bytes.saturating_sub(m.body.len());
                                if m.seq > last_seq {
                                    bytes += m.body.len();
                                    pending.push(m);
                                }
                            }
                            None => break,
                        }
                    }
                    // The queue stopped taking messages when it was full: once it is drained,
                    // the rest is read from the database (which resets the queue).
                    let drained_overflow = h.overflowed && h.queue.is_empty();
                    drop(h);
                    if !pending.is_empty() {
                        continue;
                    }
                    if drained_overflow {
                        from_db = true;
                        continue;
                    }
                }
            }
            // Measured from the last progress (an answer, or the first write into an empty
            // window), not from this wake-up: hand-offs and timers wake the loop often, and must
            // not keep a peer that stopped answering alive.
            let deadline = last_progress
                + if inflight.is_empty() {
                    IDLE_TIMEOUT
                } else {
                    ACK_TIMEOUT
                };
            let dead_at = last_heard + peer::DEAD_AFTER;
            tokio::select! {
                _ = tokio::time::sleep_until(mark_at), if !unmarked.is_empty() => {
                    self.store.mark_sent_soon(to.clone(), unmarked.drain(..).collect())?;
                }
                _ = tokio::time::sleep_until(ping_at), if pings => {
                    ping_at = tokio::time::Instant::now() + peer::PING_AFTER;
                    self.marking_while(to, &mut unmarked, mark_at, conn.send(&Frame::Ping)).await?;
                }
                _ = self.stop.cancelled(), if inflight.is_empty() => return Ok(true),
                _ = notify.notified() => {}
                frame = tokio::time::timeout_at(if pings { deadline.min(dead_at) } else { deadline }, conn.recv()) => {
                    let now = tokio::time::Instant::now();
                    let frame = match frame {
                        Err(_) if pings && now >= dead_at => {
                            warn!(to = %to, silent_secs = peer::DEAD_AFTER.as_secs(), "the peer stopped answering pings; the link is dead");
                            return Err(LinkError::Timeout("for the peer: no answer to pings (dead link)").into());
                        }
                        Err(_) if inflight.is_empty() => return Ok(true),
                        Err(_) => return Err(LinkError::Timeout("waiting for acknowledgements").into()),
                        Ok(f) => f?,
                    };
                    last_progress = now;
                    last_heard = now;
                    ping_at = now + peer::PING_AFTER;
                    let mut delivered = Vec::new();
                    let mut next = Some(Ok(frame));
                    while let Some(f) = next {
                        self.on_reply(to, f?, &mut inflight, &mut delivered).await?;
                        next = conn.try_recv_ready();
                    }
                    inflight_bytes = inflight.iter().map(|m| m.body.len()).sum();
                    if !delivered.is_empty() {
                        // Acknowledged before their `sent` was recorded: the `delivered` update
                        // counts the attempt (a row still `queued` gets attempts + 1).
                        if let Some(&last) = delivered.last() {
                            while unmarked.front().is_some_and(|s| *s <= last) {
                                unmarked.pop_front();
                            }
                        }
                        debug!(to = %to, messages = delivered.len(), "delivered");
                        let w = wake.clone();
                        self.store.mark_delivered_soon(to.clone(), delivered, move || {
                            w.resync.store(true, Ordering::SeqCst);
                            w.work.notify_one();
                        })?;
                    }
                }
            }
        }
    }

    /// Runs a write to the link; if it blocks past `mark_at` (the peer stopped reading), the
    /// messages written so far are recorded `sent` meanwhile, so that `status` never shows a
    /// message stuck in a blocked write as `queued` with no attempt.
    async fn marking_while<T>(
        &self,
        to: &Name,
        unmarked: &mut VecDeque<i64>,
        mark_at: tokio::time::Instant,
        write: impl std::future::Future<Output = Result<T, LinkError>>,
    ) -> Result<T, AttemptError> {
        tokio::pin!(write);
        loop {
            tokio::select! {
                r = &mut write => return Ok(r?),
                _ = tokio::time::sleep_until(mark_at), if !unmarked.is_empty() => {
                    self.store.mark_sent_soon(to.clone(), unmarked.drain(..).collect())?;
                }
            }
        }
    }

    async fn on_reply(
        &self,
        to: &Name,
        frame: Frame,
        inflight: &mut VecDeque<Outgoing>,
        delivered: &mut Vec<i64>,
    ) -> Result<(), AttemptError> {
        let (id, nack) = match frame {
            Frame::Ack { id } => (id, None),
            Frame::Acks { count, last } => {
                // A run of acks: every message but the last is taken on trust of the order, the
                // last is checked by id, like a single ack.
                let count = count as usize;
                if count == 0 || count > inflight.len() {
                    return Err(LinkError::Protocol(format!(
                        "acknowledgement of {count} messages with {} in flight",
                        inflight.len()
                    ))
                    .into());
                }
                delivered.extend(inflight.drain(..count - 1).map(|m| m.seq));
                (last, None)
            }
            Frame::Nack { id, code, message } => {
                (id, Some(format!("refused by {to}: {message} ({code})")))
            }
            Frame::Refused { code, message } => {
                return Err(AttemptError::Refused(format!(
                    "{to} refused the link: {message} ({code})"
                )))
            }
            Frame::Pong => return Ok(()),
            other => {
                return Err(LinkError::Protocol(format!(
                    "unexpected {} frame",
                    crate::peer_server::kind(&other)
                ))
                .into())
            }
        };
        // Replies come in order; anything else is a protocol violation.
        match inflight.pop_front() {
            Some(m) if *m.msg_id == *id => {
                match nack {
                    None => delivered.push(m.seq),
                    Some(err) => {
                        warn!(to = %to, id = %m.msg_id, error = %err, "message refused by the recipient");
                        self.store.mark_failed(to.clone(), m.seq, err).await?;
                    }
                }
                Ok(())
            }
            _ => Err(
                LinkError::Protocol(format!("acknowledgement for unexpected message {id}")).into(),
            ),
        }
    }

    async fn connect(
        &self,
        to: &Name,
        address: &str,
        key: Option<PublicKey>,
    ) -> Result<(PeerConn, bool), AttemptError> {
        let key = key
            .ok_or_else(|| AttemptError::Refused(format!("the registry gives no key for {to}")))?;
        let expected = key
            .to_x25519()
            .ok_or_else(|| AttemptError::Refused(format!("the key of {to} is not valid")))?;
        let mut stream = dial(address).await?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.write_all(peer::PREAMBLE))
            .await
            .map_err(|_| LinkError::Timeout("writing the preamble"))?
            .map_err(LinkError::Io)?;
        let hello = Frame::Hello {
            version: peer::VERSION,
            from: self.me.clone(),
            to: to.clone(),
            features: vec![
                peer::feature::ACKS.to_string(),
                peer::feature::PING.to_string(),
            ],
        };
        let secret = self.identity.noise_secret();
        let mut conn = match crate::noise::initiate(stream, &secret, &expected, &hello).await {
            Ok(c) => c,
            Err(LinkError::WrongKey) => {
                return Err(AttemptError::Refused(format!(
                    "{address} did not prove the key of {to} (fingerprint {}); nothing sent",
                    key.fingerprint()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        drop(secret);
        match conn
            .recv_timeout(HANDSHAKE_TIMEOUT, "waiting for welcome")
            .await?
        {
            Frame::Welcome { name, features, .. } if name == *to => {
                let pings = features.iter().any(|f| f == peer::feature::PING);
                Ok((conn, pings))
            }
            Frame::Welcome { name, .. } => Err(AttemptError::Refused(format!(
                "{address} is {name}, not {to}; the peer may have moved"
            ))),
            Frame::Refused { code, message } => Err(AttemptError::Refused(format!(
                "{to} refused the link: {message} ({code})"
            ))),
            other => Err(LinkError::Protocol(format!(
                "expected welcome, got {}",
                crate::peer_server::kind(&other)
            ))
            .into()),
        }
    }

    async fn send_legacy(
        &self,
        to: &Name,
        address: &str,
        batch: Vec<Outgoing>,
    ) -> Result<(), AttemptError> {
        if !self.legacy {
            for m in &batch {
                let err = format!(
                    "{to} is a legacy (seed) peer; start chatd with --legacy to send to it"
                );
                self.store.mark_failed(to.clone(), m.seq, err).await?;
            }
            return Ok(());
        }
        for m in batch {
            if m.body.len() > crate::legacy::MAX_LEGACY_BODY {
                let err = format!(
                    "body over {} bytes cannot go to a legacy peer",
                    crate::legacy::MAX_LEGACY_BODY
                );
                self.store.mark_failed(to.clone(), m.seq, err).await?;
                continue;
            }
            let stream = dial(address).await?;
            crate::legacy::send(stream, &m.body).await?;
            // The seed never acknowledges: `sent` is as far as it goes.
            self.store.mark_sent_final(to.clone(), m.seq).await?;
        }
        Ok(())
    }
}

async fn dial(address: &str) -> Result<TcpStream, AttemptError> {
    let connect_err = |reason: String| AttemptError::Connect {
        addr: address.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
