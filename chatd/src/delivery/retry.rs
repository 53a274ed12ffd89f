//! When to try again after a failed attempt: the backoff schedule, and the wait itself, which
//! the registry's view of the recipient (`crate::presence`) shortens or stretches.

use std::future::Future;
use std::time::Duration;

use peerchat_proto::Name;
use tokio_util::sync::CancellationToken;

use super::mailbox::Mailbox;
use crate::presence::{Presence, PresenceWatch};

/// While the registry reports the recipient online but it cannot be reached (a partition, a
/// firewall), attempts start at most this long apart (plus the connect timeout).
pub const ONLINE_RETRY_MAX: Duration = Duration::from_secs(5);
/// While the registry reports the recipient offline, nothing is attempted; its coming back ends
/// the wait. The wait is re-checked this often anyway (cheap: no network).
pub const OFFLINE_RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// After this long since acceptance, an undelivered message becomes `failed`.
    pub lifetime: Duration,
}

/// The delays between failed attempts: `initial`, doubling up to `max`.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            initial: policy.initial,
            max: policy.max,
            next: policy.initial,
        }
    }

    /// Starts the schedule afresh (something went through).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// An attempt failed: the wait before the next one. If its link had come up (the peer was
    /// reachable), the schedule starts afresh: a restart of the peer must not cost the backoff
    /// of the last outage, doubled.
    pub fn after_failure(&mut self, link_was_up: bool) -> Duration {
        if link_was_up {
            self.reset();
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// How long to wait before the next attempt, given the backoff and what the registry says:
/// while it reports the recipient offline, only a re-check (its coming back ends the wait
/// early); while it reports it online but we cannot reach it, at most [`ONLINE_RETRY_MAX`];
/// when it cannot tell (no watch), the backoff stands.
pub fn wait_for(backoff: Duration, presence: Presence) -> Duration {
    match presence {
        Presence::Offline => OFFLINE_RECHECK,
        Presence::Online => backoff.min(ONLINE_RETRY_MAX),
        Presence::Unknown => backoff,
    }
}

/// After a failed attempt: waits until the next one is worth making (see [`wait_for`]).
/// Returns `false` at shutdown.
///
/// Watches the recipient's presence meanwhile. A change of it recomputes the wait from the same
/// start; a retry request (the recipient is back, it opened a link to us, `trust`) ends it at
/// once; while the recipient is offline, nothing is attempted. Messages keep their lifetime
/// while nothing is attempted (an offline recipient can wait for days): `sweep` (the lifetime
/// sweep) runs every `sweep_every` during the wait, and ends it when it says nothing is left.
pub async fn wait_to_retry<F: Future<Output = bool>>(
    presence: &PresenceWatch,
    to: &Name,
    mailbox: &Mailbox,
    stop: &CancellationToken,
    backoff: Duration,
    sweep_every: Duration,
    mut sweep: impl FnMut() -> F,
) -> bool {
    presence.watch(to);
    let _waiting = mailbox.waiting();
    let mut started = tokio::time::Instant::now();
    let mut next_sweep = started + sweep_every;
    loop {
        let wait = wait_for(backoff, presence.state(to));
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = mailbox.retry_requested() => return true,
            // The registry's view changed: the wait is recomputed from the same start.
            _ = mailbox.presence_notified() => continue,
            _ = tokio::time::sleep_until(next_sweep) => {
                if !sweep().await {
                    return true; // nothing left to wait for
                }
                next_sweep = tokio::time::Instant::now() + sweep_every;
            }
            _ = tokio::time::sleep_until(started + wait) => {
                if presence.state(to) != Presence::Offline {
                    return true;
                }
                started = tokio::time::Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(initial: u64, max: u64) -> Backoff {
        Backoff::new(&RetryPolicy {
            initial: Duration::from_secs(initial),
            max: Duration::from_secs(max),
            lifetime: Duration::from_secs(3600),
        })
    }

    fn secs(b: &mut Backoff, link_was_up: bool) -> u64 {
        b.after_failure(link_was_up).as_secs()
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let mut b = backoff(1, 10);
        let delays: Vec<u64> = (0..6).map(|_| secs(&mut b, false)).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_link_that_came_up_starts_the_schedule_afresh() {
        let mut b = backoff(1, 60);
        for _ in 0..5 {
            b.after_failure(false);
        }
        // The peer was reachable, then the link broke: the first step again, then doubling.
        assert_eq!(secs(&mut b, true), 1);
        assert_eq!(secs(&mut b, false), 2);
        assert_eq!(secs(&mut b, true), 1);
        // Anything that went through resets it too.
        secs(&mut b, false);
        b.reset();
        assert_eq!(secs(&mut b, false), 1);
    }

    #[test]
    fn the_registry_view_caps_or_holds_the_wait() {
        let long = Duration::from_secs(300);
        let short = Duration::from_secs(2);
        // Online but unreachable: at most ONLINE_RETRY_MAX apart.
        assert_eq!(wait_for(long, Presence::Online), ONLINE_RETRY_MAX);
        assert_eq!(wait_for(short, Presence::Online), short);
        // Offline: only the cheap re-check; unknown: the backoff as it is.
        assert_eq!(wait_for(short, Presence::Offline), OFFLINE_RECHECK);
        assert_eq!(wait_for(long, Presence::Unknown), long);
    }

    /// What a test wait sweeps: nothing, and something is always left.
    async fn still_pending() -> bool {
        true
    }

    #[tokio::test]
    async fn a_wait_ends_after_the_backoff_on_a_retry_request_or_at_shutdown() {
        let (presence, _changes) = PresenceWatch::new();
        let to = Name::new("pb").unwrap();
        let mailbox = Mailbox::new();
        let stop = CancellationToken::new();
        let hour = Duration::from_secs(3600);
        let wait = |backoff| {
            wait_to_retry(
                &presence,
                &to,
                &mailbox,
                &stop,
                backoff,
                hour,
                still_pending,
            )
        };
        let started = std::time::Instant::now();
        let short = Duration::from_millis(50);
        assert!(wait(short).await);
        assert!(started.elapsed() >= short);
        // Watched while waiting, and waiting only while in the wait.
        assert!(!mailbox.retry_if_waiting());
        let retried = async {
            while !mailbox.retry_if_waiting() {
                tokio::task::yield_now().await;
            }
        };
        let (ok, ()) = tokio::join!(wait(hour), retried);
        assert!(ok);
        stop.cancel();
        assert!(!wait(hour).await);
        assert!(!mailbox.retry_if_waiting());
    }

    #[tokio::test]
    async fn the_lifetime_sweep_runs_during_a_wait_and_can_end_it() {
        let (presence, _changes) = PresenceWatch::new();
        let to = Name::new("pb").unwrap();
        let mailbox = Mailbox::new();
        let stop = CancellationToken::new();
        let mut sweeps = 0;
        let sweep = || {
            sweeps += 1;
            let left = sweeps < 3; // the third sweep failed the last message
            async move { left }
        };
        let hour = Duration::from_secs(3600);
        let every = Duration::from_millis(10);
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            wait_to_retry(&presence, &to, &mailbox, &stop, hour, every, sweep),
        );
        assert!(waited.await.expect("the sweep ended the wait"));
        assert_eq!(sweeps, 3);
    }
}
