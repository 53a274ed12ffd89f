//! The delivery engine: one task per recipient with undelivered messages.
//!
//! A recipient's task keeps one persistent link, streams that recipient's queue in acceptance
//! order with up to `WINDOW` messages unacknowledged, and marks messages delivered when the
//! acks arrive. When the link fails it records the error, forgets the cached address (the peer
//! may have moved), and retries with exponential backoff. Messages older than the configured
//! lifetime become `failed`. Ordering per recipient holds across reconnects because a retry
//! always restarts from the oldest undelivered message and the receiver ignores repeats.
//!
//! The parts, one job each:
//! - [`mailbox`]: a recipient's hand-off queue and the signals that wake its task;
//! - [`source`]: where a link's next messages come from (the database, then the mailbox);
//! - [`window`]: the messages in flight, what the peer's answers settle, and the lazy `sent`;
//! - [`link`]: one established link, until it ends ([`Ended`] says why);
//! - [`dial`]: opening a link (TCP, preamble, handshake, Hello/Welcome);
//! - [`retry`]: the backoff schedule and the presence-aware wait between attempts;
//! - [`legacy`]: sending to seed peers.
//!
//! # How delivery is woken
//!
//! New messages wake delivery one way only: [`Delivery::hand_off`], the store's after-commit
//! hook, which the DB thread calls for every queued recipient of every committed message.
//! - It runs after the commit, so the task that it wakes (or starts) finds the message in the
//!   database whatever it does next.
//! - It runs in commit order, so a recipient's mailbox receives its messages in `seq` order.
//! - It runs on the DB thread, so it only does cheap things that never block: a short lock, a
//!   push, a wake-up, and for a recipient without a task, registering its mailbox and spawning
//!   the task on the runtime's handle. The mailbox is registered before the hook returns, so the
//!   next commit's hand-off finds it: a recipient never gets two tasks.
//!
//! The rest only ends a wait early ([`Delivery::retry_now`], [`Delivery::retry_if_waiting`],
//! [`Delivery::presence_changed`]) or resumes what an earlier run left pending
//! ([`Delivery::resume`], at start).

mod dial;
mod ended;
mod legacy;
mod link;
mod mailbox;
mod retry;
mod source;
#[cfg(test)]
mod testing;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use peerchat_proto::Name;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::ended::{AttemptError, Ended};
use self::link::Link;
use self::mailbox::Mailbox;
use self::retry::Backoff;
pub use self::retry::RetryPolicy;
use crate::identity::Identity;
use crate::observe::LinkDirection;
use crate::peer::PeerConn;
use crate::presence::{Presence, PresenceWatch};
use crate::resolver::{ResolveError, Resolver};
use crate::store::{Outgoing, Store};

/// How often a recipient's task looks for messages past their lifetime.
const EXPIRE_SWEEP: Duration = Duration::from_secs(60);

pub struct Delivery {
    me: Name,
    identity: Arc<Identity>,
    store: Store,
    resolver: Arc<Resolver>,
    presence: Arc<PresenceWatch>,
    retry: RetryPolicy,
    legacy: bool,
    /// Every recipient's mailbox; each has exactly one task, started with it.
    links: Mutex<HashMap<Name, Arc<Mailbox>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Where the tasks run: the hand-off starts them from the DB thread, outside the runtime.
    runtime: tokio::runtime::Handle,
}

/// What opening an attempt led to: a link up (and whether it answers pings), or already the end.
enum Opened {
    /// Boxed: the link is large, and an attempt boxes it once.
    Link(Box<PeerConn>, bool),
    Ended(Ended),
}

impl Delivery {
    /// Call from within the runtime that is to run the delivery tasks.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: Name,
        identity: Arc<Identity>,
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
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn links(&self) -> MutexGuard<'_, HashMap<Name, Arc<Mailbox>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `to`'s mailbox, starting its task if it has none. Never blocks (see the module docs).
    fn mailbox<'m>(
        self: &Arc<Self>,
        links: &'m mut HashMap<Name, Arc<Mailbox>>,
        to: &Name,
    ) -> &'m Arc<Mailbox> {
        if !links.contains_key(to) {
            let mailbox = Arc::new(Mailbox::new());
            if !self.stop.is_cancelled() {
                let (this, to, mb) = (self.clone(), to.clone(), mailbox.clone());
                self.tasks.spawn_on(
                    async move { this.run_recipient(to, mb).await },
                    &self.runtime,
                );
            }
            links.insert(to.clone(), mailbox);
        }
        &links[to]
    }

    /// A message for `recipient` was just committed: the after-commit hook, called on the DB
    /// thread in commit order. The recipient's task takes it from memory, or starts (and reads
    /// it from the database).
    pub fn hand_off(self: &Arc<Self>, recipient: &Name, m: &Outgoing) {
        let mut links = self.links();
        self.mailbox(&mut links, recipient).hand_off(m);
    }

    /// `recipient` has messages left by an earlier run: start its task.
    pub fn resume(self: &Arc<Self>, recipient: &Name) {
        let mut links = self.links();
        self.mailbox(&mut links, recipient).wake();
    }

    /// Message `seq` to `recipient` was cancelled: drop it from the link's hand-off queue, so
    /// that a link that has not written it yet never does. (One already written, or taken for
    /// the next write, still goes; an ack then turns `cancelled` into `delivered`.)
    pub fn forget(&self, recipient: &Name, seq: i64) {
        if let Some(mb) = self.links().get(recipient) {
            mb.forget(seq);
        }
    }

    /// Something that blocked `recipient` was fixed (e.g. `chatctl trust`): end its backoff now.
    pub fn retry_now(&self, recipient: &Name) {
        if let Some(mb) = self.links().get(recipient) {
            mb.retry_now();
        }
    }

    /// `recipient` was just seen alive (it opened a link to us, or the registry reports it back
    /// online): if its task is waiting to retry, it retries now. (A task that is not waiting is
    /// left alone, so no stale wake-up cuts a later wait short.)
    pub fn retry_if_waiting(&self, recipient: &Name) {
        if let Some(mb) = self.links().get(recipient) {
            if mb.retry_if_waiting() {
                tracing::debug!(to = %recipient, "the recipient is back; retrying now");
            }
        }
    }

    /// Every recipient waiting to retry retries now (our own registration just succeeded after
    /// failing: peers that refused us as unknown will take us now).
    pub fn retry_all_waiting(&self) {
        for mb in self.links().values() {
            mb.retry_if_waiting();
        }
    }

    /// Why messages to `recipient` are not moving, if its task is waiting to retry: the last
    /// attempt's error and what the registry says. `status` and `outbox` show it for pending
    /// messages that no attempt has touched yet (queued during the wait).
    pub fn why_waiting(&self, recipient: &Name) -> Option<String> {
        let error = self.links().get(recipient)?.error_while_waiting()?;
        Some(match self.presence.state(recipient) {
            Presence::Offline => format!(
                "{error}; {recipient} is offline (the registry says), retried as soon as it is back"
            ),
            Presence::Online => format!("{error}; retried every few seconds"),
            Presence::Unknown => error,
        })
    }

    /// The registry's view of `recipient` changed (see [`retry::wait_to_retry`]).
    pub fn presence_changed(&self, recipient: &Name) {
        if let Some(mb) = self.links().get(recipient) {
            mb.presence_changed();
        }
    }

    /// A recipient's task: attempts, and between them sleeps (nothing pending) or waits to
    /// retry (after a failure), until shutdown.
    async fn run_recipient(self: Arc<Self>, to: Name, mailbox: Arc<Mailbox>) {
        let mut backoff = Backoff::new(&self.retry);
        // The lifetime sweep is a database write: not on every wake-up; once a minute (or once per
        // lifetime, if that is shorter) is plenty.
        let sweep_every = EXPIRE_SWEEP.min(self.retry.lifetime);
        let mut last_sweep: Option<Instant> = None;
        while !self.stop.is_cancelled() {
            if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                last_sweep = Some(Instant::now());
                self.expire_old(&to).await;
            }
            let end = self.attempt(&to, &mailbox).await;
            if end.link_was_up() {
                self.presence.unwatch(&to);
            }
            let delay = match end {
                Ended::Failed {
                    reason,
                    link_was_up,
                } => {
                    let delay = backoff.after_failure(link_was_up);
                    if !self.on_failure(&to, &mailbox, reason, delay).await {
                        backoff.reset();
                        continue;
                    }
                    delay
                }
                Ended::NothingPending => {
                    // Nothing left to send: sleep until something is handed off.
                    self.presence.unwatch(&to);
                    backoff.reset();
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = mailbox.woken() => continue,
                    }
                }
                Ended::Idle | Ended::Shutdown | Ended::LegacySent => {
                    backoff.reset();
                    continue;
                }
            };
            if !self.wait_to_retry(&to, &mailbox, delay, sweep_every).await {
                return;
            }
        }
    }

    /// [`retry::wait_to_retry`], with the lifetime sweep going on meanwhile. `false`: shutdown.
    async fn wait_to_retry(
        &self,
        to: &Name,
        mailbox: &Mailbox,
        delay: Duration,
        sweep_every: Duration,
    ) -> bool {
        let sweep = || async {
            self.expire_old(to).await;
            self.store.has_pending(to.clone()).await.unwrap_or(true)
        };
        let (presence, stop) = (&self.presence, &self.stop);
        retry::wait_to_retry(presence, to, mailbox, stop, delay, sweep_every, sweep).await
    }

    /// One attempt: open a link (or send to a seed peer) and stream until it ends.
    async fn attempt(&self, to: &Name, mailbox: &Arc<Mailbox>) -> Ended {
        match self.open(to).await {
            Ok(Opened::Link(conn, pings)) => {
                let _open = self.store.observe().link_open(LinkDirection::Out);
                Link::new(to, &self.store, mailbox, &self.stop, *conn, pings)
                    .run()
                    .await
            }
            Ok(Opened::Ended(end)) => end,
            Err(reason) => Ended::Failed {
                reason,
                link_was_up: false,
            },
        }
    }

    async fn open(&self, to: &Name) -> Result<Opened, AttemptError> {
        if !self.store.has_pending(to.clone()).await? {
            return Ok(Opened::Ended(Ended::NothingPending));
        }
        let target = self.resolver.resolve(to).await?;
        if target.legacy {
            legacy::send_pending(&self.store, to, &target.address, self.legacy).await?;
            return Ok(Opened::Ended(Ended::LegacySent));
        }
        let (conn, pings) =
            dial::connect(&self.me, &self.identity, to, &target.address, target.key).await?;
        Ok(Opened::Link(Box::new(conn), pings))
    }

    /// Deals with a failed attempt (the next waits `retry_in`). Returns `false` when there is
    /// nothing to wait for: the name is unknown and its messages failed.
    async fn on_failure(
        &self,
        to: &Name,
        mailbox: &Mailbox,
        reason: AttemptError,
        retry_in: Duration,
    ) -> bool {
        match &reason {
            // A name never known here (a send accepted while the registry was unreachable) that
            // the registry does not know either fails: nothing will change that by retrying. A
            // name we pinned once is only gone for now (unregistered, released for a new key):
            // it keeps waiting, like after any failure. If nothing could be failed, never spin:
            // wait as after any failure.
            AttemptError::Resolve(ResolveError::Unknown(name))
                if self.resolver.pinned(name).is_none() =>
            {
                return !self.fail_unknown(to, name).await;
            }
            _ => {}
        }
        let msg = reason.to_string();
        info!(to = %to, error = %msg, retry_in_ms = retry_in.as_millis() as u64, presence = self.presence.state(to).as_str(), "delivery attempt failed");
        self.resolver.invalidate(to);
        mailbox.set_last_error(msg.clone());
        if let Err(e) = self.store.note_link_failure(to.clone(), msg).await {
            warn!(to = %to, error = %e, "could not record the delivery failure");
        }
        true
    }

    /// Fails every message pending for `to`, whose name the registry does not know. Returns
    /// whether any was failed.
    async fn fail_unknown(&self, to: &Name, name: &Name) -> bool {
        let why = format!("unknown name {name}: the registry has no such name (not registered)");
        // Every pending message: all were accepted before now.
        let all = i64::MAX as u64;
        match self.store.expire(to.clone(), all, why).await {
            Ok(n) if n > 0 => {
                warn!(to = %to, messages = n, "the registry does not know this recipient; its messages failed");
                self.store.observe().failed(to.as_str(), n);
                self.presence.unwatch(to);
                true
            }
            Ok(_) => false,
            Err(e) => {
                warn!(to = %to, error = %e, "could not record the failure");
                false
            }
        }
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
            Ok(n) => {
                warn!(to = %to, messages = n, "gave up on messages past their lifetime");
                self.store.observe().failed(to.as_str(), n);
            }
            Err(e) => warn!(to = %to, error = %e, "could not expire old messages"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{name, send};
    use super::*;
    use crate::registries::Registries;

    /// The after-commit hook is the only wake-up for new messages: run on the DB thread, it
    /// starts a task for a recipient that has none (once), and hands later messages to it.
    #[tokio::test]
    async fn a_commit_for_a_recipient_without_a_task_starts_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _thread) = Store::open(&dir.path().join("t.db")).unwrap();
        let identity = Arc::new(Identity::load_or_create(&dir.path().join("k")).unwrap());
        // No registry: attempts fail and wait to retry, which is all this needs.
        let registry = Arc::new(Registries::new(vec!["127.0.0.1:1".into()]));
        let resolver = Arc::new(Resolver::new(registry, None, store.clone()).await);
        let (presence, _changes) = PresenceWatch::new();
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let retry = RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
            lifetime: Duration::from_secs(3600),
        };
        let delivery = Delivery::new(
            name("pa"),
            identity,
            store.clone(),
            resolver,
            presence,
            retry,
            false,
            stop.clone(),
            tasks.clone(),
        );
        let d = Arc::downgrade(&delivery);
        store.set_outgoing_sink(Box::new(move |to, m| {
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "the hook runs on the DB thread, outside the runtime"
            );
            if let Some(d) = d.upgrade() {
                d.hand_off(to, m);
            }
        }));
        assert_eq!(tasks.len(), 0);
        let first = send(&store, "one").await;
        assert_eq!(tasks.len(), 1, "the commit started the recipient's task");
        let second = send(&store, "two").await;
        assert_eq!(tasks.len(), 1, "one task per recipient");
        // Until its link takes them, the task's mailbox holds them, in commit order.
        let taken = delivery.links()[&name("pb")].take(0, 10, usize::MAX);
        let seqs: Vec<i64> = taken.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [first.seq, second.seq]);
        stop.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("the task stops at shutdown");
    }
}
