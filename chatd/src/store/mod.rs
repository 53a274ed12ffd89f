//! The node's database: one thread owns the SQLite connection; everything else sends it jobs.
//!
//! Jobs are closures run on that thread. Whatever jobs are queued together run in one
//! transaction (group commit: one fsync for many messages). A job's reply is sent only after the
//! transaction committed, so "the store said ok" always means "it is on disk".
//!
//! Jobs do not get savepoints (a savepoint copies every page a job touches into a sub-journal:
//! measured at ~10% of the DB thread under load). Instead, the rule: a job refuses (a logical
//! error such as an id conflict) only *before* it writes anything, and a database error inside
//! any job fails the whole transaction, so every job in it hears the error and nothing partial
//! is ever committed.

mod batch;
mod groups;
mod inbox;
mod outbox;
mod peers;
mod retention;
mod schema;
#[cfg(test)]
mod tests;
mod timeline;

use std::path::Path;
use std::sync::mpsc;

use peerchat_db::rusqlite::{self, Connection};
use peerchat_proto::Name;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{debug, error};

use crate::observe::Observe;

pub use batch::Batch;
pub use groups::GroupError;
pub use inbox::INSERT_INBOX;
pub use inbox::{Arrival, InboxQuery, InboxRow, Received};
pub use outbox::{
    DeliveryRow, Outgoing, SendOutcome, ADVANCE_FLOOR_PAST, DELIVERED_RANGE, INSERT_DELIVERY,
    INSERT_OUTBOX,
};
pub use peers::CachedPeer;
pub use retention::Retention;
pub use timeline::{ConvSummary, Page, ResolveError, SearchQuery};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Open(#[from] peerchat_db::DbError),
    /// The SQLite error is in the message, not a `source()` (printed twice with the chain).
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error("database commit failed: {0}")]
    Commit(String),
    #[error("message id {0:?} was already used for a different message")]
    IdConflict(String),
    #[error("the database is closed (chatd is shutting down)")]
    Closed,
}

/// Runs on the DB thread with the connection (inside the batch's transaction, see [`Batch`]);
/// returns the database error that spoils the transaction, if it hit one, and a completion to
/// run once the commit's outcome is known. If the transaction could not even begin, the job gets
/// the error instead of a connection.
type Job = Box<dyn FnOnce(Result<&Batch, &str>) -> (Option<String>, Completion) + Send>;
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A job and whether someone waits for it (`Now`) or it may wait for the next batch (`Lazy`).
enum Queued {
    Now(Job),
    Lazy(Job),
}

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Called on the DB thread, in commit order, for every newly accepted message and each of its
/// queued recipients (the delivery engine's in-memory hand-off: `Delivery::hand_off` in
/// `delivery/mod.rs`, queued in `delivery/mailbox.rs`).
pub type OutgoingSink = Box<dyn Fn(&Name, &Outgoing) + Send + Sync>;

#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Queued>,
    sink: std::sync::Arc<std::sync::OnceLock<OutgoingSink>>,
    /// Bumped after every committed change of a delivery state (for `wait`).
    deliveries_tx: std::sync::Arc<watch::Sender<u64>>,
    /// The newest committed `events` seq, set by the DB thread after each commit that added
    /// events (the `events` streams wake on it and read the rows from the database).
    events_tx: std::sync::Arc<watch::Sender<i64>>,
    /// Every newly stored inbox row, sent on the DB thread right after its commit (in seq
    /// order), so caught-up followers need no database read. Bounded: a follower that lags
    /// behind it reads from the database instead.
    inbox_feed: broadcast::Sender<FeedItem>,
    /// The large rows the feed refers to (see [`FeedItem::Large`]).
    large_rows: std::sync::Arc<std::sync::Mutex<LargeRows>>,
    inbox_seq_mark: SeqHighWater,
    outbox_seq_mark: SeqHighWater,
    /// Recipients known to have a committed `pending_floor` row (see `submit_send`).
    floors: KnownFloors,
    /// False while `inbox_seen` is certainly empty (no retention ever removed an inbox row):
    /// then a received message needs no lookup there (≈ 2,400 instructions each). Read and set
    /// only on the DB thread; set by `prune` before it inserts keys, never cleared while
    /// running (a cleared flag whose transaction rolled back would let a repeat in).
    seen_keys: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The node's log lines and metrics per message (`observe.rs`); set once at start.
    observer: Observer,
}

/// Where the store (and everything that holds it) reports messages and commits.
type Observer = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<Observe>>>;

/// The installed [`Observe`], or one that only logs if none is (yet).
pub(crate) fn observed(observer: &Observer) -> &Observe {
    observer.get_or_init(|| std::sync::Arc::new(Observe::disabled()))
}

/// Recipients whose `pending_floor` row is committed, so that a send to them needs no insert
/// there. Loaded at open; a name is added only after the commit that gave it its row.
pub(crate) type KnownFloors = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Name>>>;

/// The highest seq `inbox` or `outbox` ever handed out, while that is above the table's largest
/// seq (0 otherwise). Seqs are plain rowids (the largest plus one), so they are never reused as
/// long as the newest row stays, which retention guarantees; but before schema 6, retention could
/// remove the newest rows, and then only AUTOINCREMENT's `sqlite_sequence` remembered how far
/// the seqs had gone (migration 6 keeps it in the `seq_floor` table). Until an insert above the mark has
/// committed, inserts give the seq explicitly: `CASE WHEN ?mark > 0 THEN MAX(?mark, MAX(seq)) + 1 END`
/// (NULL, i.e. the next rowid, when there is no mark). Not to be confused with a recipient's
/// pending floor (`pending_floor`, `store/outbox/transitions.rs`).
#[derive(Clone, Default)]
pub(crate) struct SeqHighWater(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl SeqHighWater {
    fn load(conn: &Connection, table: &str) -> Result<SeqHighWater, StoreError> {
        use rusqlite::OptionalExtension;
        let mark: Option<i64> = conn
            .query_row(
                &format!(
                    "SELECT seq FROM seq_floor
                     WHERE name = ?1 AND seq > (SELECT COALESCE(MAX(seq), 0) FROM {table})"
                ),
                [table],
                |r| r.get(0),
            )
            .optional()?;
        Ok(SeqHighWater(std::sync::Arc::new(mark.unwrap_or(0).into())))
    }

    fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A row with `seq` committed: once that is above the mark, plain rowids are safe.
    fn committed(&self, seq: i64) {
        if seq > self.get() {
            self.0.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What the inbox feed carries: a committed row, or for a body too large to hold in the feed a
/// weak reference to its row, which [`LargeRows`] keeps alive for a while (a follower that finds
/// it gone reads the row from the database). This bounds the feed in bytes as well as in rows:
/// 4,096 × 4 KiB, plus [`LARGE_ROWS_BYTES`].
#[derive(Debug, Clone)]
pub enum FeedItem {
    Row(std::sync::Arc<InboxRow>),
    Large {
        seq: i64,
        row: std::sync::Weak<InboxRow>,
    },
}

/// Largest body carried in the inbox feed itself.
pub const FEED_MAX_BODY: usize = 4096;

/// Bytes of large bodies kept for followers that keep up (512 bodies of 16 KiB). Without them
/// a follower read each body over [`FEED_MAX_BODY`] back from the database: one more query, a
/// copy and a UTF-8 check per message on the recipient's busiest path.
pub const LARGE_ROWS_BYTES: usize = 8 << 20;

/// The newest large inbox rows, strongly held up to [`LARGE_ROWS_BYTES`] (the feed holds only
/// weak references to them); filled only on the DB thread.
#[derive(Default)]
pub struct LargeRows {
    rows: std::collections::VecDeque<std::sync::Arc<InboxRow>>,
    bytes: usize,
}

impl LargeRows {
    /// Keeps `row`, dropping the oldest rows past the budget; returns the feed's reference.
    pub fn keep(&mut self, row: InboxRow) -> FeedItem {
        let row = std::sync::Arc::new(row);
        let item = FeedItem::Large {
            seq: row.seq,
            row: std::sync::Arc::downgrade(&row),
        };
        self.bytes += row.body.len();
        self.rows.push_back(row);
        while self.bytes > LARGE_ROWS_BYTES {
            match self.rows.pop_front() {
                Some(old) => self.bytes -= old.body.len(),
                None => break,
            }
        }
        item
    }
}

/// Rows the inbox feed holds for slow followers before they must catch up from the database.
const INBOX_FEED: usize = 4096;

/// Joins the DB thread; dropping every [`Store`] handle lets it finish its queue and stop.
pub struct StoreThread(Option<std::thread::JoinHandle<()>>);

impl StoreThread {
    pub fn join(mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<(Store, StoreThread), StoreError> {
        let conn = peerchat_db::open(path, schema::MIGRATIONS)?;
        let inbox_seq_mark = SeqHighWater::load(&conn, "inbox")?;
        let outbox_seq_mark = SeqHighWater::load(&conn, "outbox")?;
        let seen_keys: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM inbox_seen)", [], |r| r.get(0))?;
        let floors: std::collections::HashSet<Name> = conn
            .prepare("SELECT recipient FROM pending_floor")?
            .query_map([], |r| r.get::<_, String>(0))?
            .filter_map(|r| r.ok().and_then(|n| Name::new(n).ok()))
            .collect();
        let newest_event = timeline::newest_event(&conn)?;
        let events_tx = std::sync::Arc::new(watch::channel(newest_event).0);
        let events_mark = events_tx.clone();
        let (tx, rx) = mpsc::channel::<Queued>();
        let observer = Observer::default();
        let commits = observer.clone();
        let thread = std::thread::Builder::new()
            .name("chatd-db".into())
            .spawn(move || db_loop(conn, rx, commits, events_mark))
            .map_err(|e| StoreError::Commit(format!("cannot start the database thread: {e}")))?;
        let (deliveries_tx, _) = watch::channel(0u64);
        Ok((
            Store {
                jobs: tx,
                sink: std::sync::Arc::default(),
                deliveries_tx: std::sync::Arc::new(deliveries_tx),
                events_tx,
                inbox_feed: broadcast::channel(INBOX_FEED).0,
                large_rows: std::sync::Arc::default(),
                inbox_seq_mark,
                outbox_seq_mark,
                floors: std::sync::Arc::new(std::sync::Mutex::new(floors)),
                seen_keys: std::sync::Arc::new(seen_keys.into()),
                observer,
            },
            StoreThread(Some(thread)),
        ))
    }

    /// Runs `f` on the DB thread in a transaction; resolves after the commit.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Batch) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` now (so jobs keep the order they were submitted in) and returns a receiver for
    /// its committed result.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Batch) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        self.submit_then(f, |_| {})
    }

    /// Like [`Store::submit`] for bookkeeping nobody waits on: the job joins the next batch (or
    /// commits on its own after 20 ms), so it does not cost a commit of its own.
    pub fn submit_lazy<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Batch) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (job, rx) = make_job(f, |_| {});
        self.jobs
            .send(Queued::Lazy(job))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Like [`Store::submit`]; `after_commit` runs on the DB thread once the job's transaction
    /// committed (in job order), before the result is sent.
    pub fn submit_then<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Batch) -> Result<T, StoreError> + Send + 'static,
        after_commit: impl FnOnce(&T) + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (job, rx) = make_job(f, after_commit);
        self.jobs
            .send(Queued::Now(job))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Installs the in-memory hand-off of newly accepted messages (once, at start).
    pub fn set_outgoing_sink(&self, sink: OutgoingSink) {
        let _ = self.sink.set(sink);
    }

    /// Installs the node's log lines and metrics (once, at start; until then they are logged
    /// only).
    pub fn set_observer(&self, observe: std::sync::Arc<Observe>) {
        let _ = self.observer.set(observe);
    }

    /// Where messages accepted, delivered, received and failed are reported.
    pub fn observe(&self) -> &Observe {
        observed(&self.observer)
    }

    /// Newly committed inbox rows from now on (see [`Store::inbox_feed`] field docs).
    pub fn inbox_feed(&self) -> broadcast::Receiver<FeedItem> {
        self.inbox_feed.subscribe()
    }

    /// The newest committed `events` seq, changing after every commit that added events.
    pub fn event_commits(&self) -> watch::Receiver<i64> {
        self.events_tx.subscribe()
    }

    /// Changes whenever a delivery state changed (after the commit).
    pub fn delivery_changes(&self) -> watch::Receiver<u64> {
        self.deliveries_tx.subscribe()
    }

    fn bump_deliveries(&self) {
        self.deliveries_tx.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Wraps `f` as a job whose result reaches the returned receiver after the commit.
#[allow(clippy::type_complexity)]
fn make_job<T: Send + 'static>(
    f: impl FnOnce(&Batch) -> Result<T, StoreError> + Send + 'static,
    after_commit: impl FnOnce(&T) + Send + 'static,
) -> (Job, oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let result = match conn {
            Ok(conn) => f(conn),
            Err(e) => Err(StoreError::Commit(e.to_string())),
        };
        let spoiled = match &result {
            Err(e @ (StoreError::Sql(_) | StoreError::Commit(_))) => Some(e.to_string()),
            _ => None,
        };
        let done: Completion = Box::new(move |commit| {
            let _ = tx.send(match commit {
                Ok(()) => {
                    if let Ok(v) = &result {
                        after_commit(v);
                    }
                    result
                }
                Err(e) => Err(StoreError::Commit(e)),
            });
        });
        (spoiled, done)
    });
    (job, rx)
}

/// How long a lazy job may wait for company before it commits on its own.
const LAZY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

fn db_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Queued>,
    observer: Observer,
    events: std::sync::Arc<watch::Sender<i64>>,
) {
    // Lazy jobs (bookkeeping nobody waits for) ride along with the next batch instead of paying
    // for a commit (an fsync) of their own; at the latest after LAZY_DELAY.
    let mut deferred: Vec<Job> = Vec::new();
    let mut deadline: Option<std::time::Instant> = None;
    let mut open = true;
    while open || !deferred.is_empty() {
        let first = match deadline {
            _ if !open => None,
            None => match rx.recv() {
                Ok(q) => Some(q),
                Err(_) => {
                    open = false;
                    None
                }
            },
            Some(d) => {
                match rx.recv_timeout(d.saturating_duration_since(std::time::Instant::now())) {
                    Ok(q) => Some(q),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            }
        };
        let now_job = match first {
            Some(Queued::Lazy(job)) => {
                deadline.get_or_insert_with(|| std::time::Instant::now() + LAZY_DELAY);
                deferred.push(job);
                if deferred.len() < MAX_BATCH {
                    continue;
                }
                None
            }
            Some(Queued::Now(job)) => Some(job),
            None => None,
        };
        // Submission order: the deferred jobs came first, then the channel in order.
        let mut batch = std::mem::take(&mut deferred);
        deadline = None;
        batch.extend(now_job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Queued::Now(j) | Queued::Lazy(j)) => batch.push(j),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        let mut completions = Vec::with_capacity(n);
        let started = std::time::Instant::now();
        let outcome = run_batch(&mut conn, batch, &mut completions);
        if let Some(o) = observer.get() {
            o.committed(started.elapsed());
        }
        if let Err(e) = &outcome {
            error!(error = %e, jobs = n, "database transaction failed; nothing in it was accepted");
        }
        let outcome = outcome.map(|newest| {
            events.send_if_modified(|v| std::mem::replace(v, newest) != newest);
        });
        for c in completions {
            c(outcome.clone());
        }
    }
    debug!("database thread stopped");
}

/// Runs and commits one batch; on success, the newest `events` seq after it.
fn run_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    completions: &mut Vec<Completion>,
) -> Result<i64, String> {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            // Every job must still hear back, with the reason.
            let msg = e.to_string();
            for job in batch {
                completions.push(job(Err(&msg)).1);
            }
            return Err(msg);
        }
    };
    let mut failed: Option<String> = None;
    // Dropped before the commit: the statements it kept go back to rusqlite's cache.
    let jobs = Batch::new(&tx);
    for job in batch {
        if let Some(msg) = &failed {
            // The transaction is lost; the remaining jobs hear why instead of running.
            completions.push(job(Err(msg)).1);
            continue;
        }
        let (spoiled, done) = job(Ok(&jobs));
        completions.push(done);
        if let Some(msg) = spoiled {
            // Dropping the transaction below rolls back every job of the batch.
            failed = Some(msg);
        }
    }
    drop(jobs);
    if let Some(msg) = failed {
        return Err(msg);
    }
    let newest = timeline::newest_event(&tx).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(newest)
}
