//! The batch writer: up to [`BATCH`] queued writes are read, decided and applied as one etcd
//! transaction. The transaction compares the revision of every key the decisions read (each
//! name's record and lease key, the name counter when it changes); if another instance changed
//! one in between, nothing is applied and the batch is read and decided again. The reply waits
//! until this instance's cache has the change, so a lookup after a registration sees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetResponse, PutOptions, Txn, TxnOp, TxnOpResponse};
use futures_util::future::join_all;
use peerchat_proto::{Name, PublicKey};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::follow::keep_newer_seq;
use super::health::Health;
use super::keys::{decimal, Keys, Stored};
use super::{bounded, REQUEST_TIMEOUT};
use crate::table::cache::Cache;
use crate::table::decide::{decide, Change, RuleLimits};
use crate::table::rules::Facts;
use crate::table::types::{Entry, Job, Lease, TableError, Write};

/// Most writes per transaction: each reads 3 keys and writes at most 3, within etcd's default
/// `--max-txn-ops` of 128.
const BATCH: usize = 40;
/// Attempts of one batch that lost a race before its writes are refused as contention.
const ATTEMPTS: u32 = 12;

pub(super) struct Writer {
    pub(super) client: Client,
    pub(super) keys: Keys,
    pub(super) cache: Arc<Cache>,
    pub(super) health: Arc<Health>,
    pub(super) applied: watch::Receiver<i64>,
    pub(super) limits: RuleLimits,
    pub(super) ttl: Duration,
}

/// What a decision read of one name.
struct Seen {
    entry: Option<Entry>,
    /// `names/NAME`'s revision (0: absent).
    rev: i64,
    /// `live/NAME`'s revision and lease (0, None: absent).
    live_rev: i64,
    lease: Option<i64>,
}

/// Everything one attempt read.
struct Read {
    names: HashMap<Name, Seen>,
    tombstones: HashMap<String, u64>,
    count: u64,
    count_rev: i64,
}

enum Attempt {
    Done(Vec<Result<(), TableError>>),
    /// Another instance changed what was read: decide again.
    Lost,
}

/// The rules' reads: tombstones from this attempt's read (and the batch's own removals),
/// seed names per source from the cache (an instance-local count: see docs/protocol.md).
struct EtcdFacts<'a> {
    keys: &'a Keys,
    tombstones: &'a HashMap<String, u64>,
    cache: &'a Cache,
    pending: &'a HashMap<Name, Option<Entry>>,
}

impl Facts for EtcdFacts<'_> {
    fn tombstone_seq(&self, name: &Name, key: &PublicKey) -> Result<Option<u64>, TableError> {
        Ok(self
            .tombstones
            .get(&self.keys.tombstone(name, key))
            .copied())
    }

    fn legacy_held_by(&self, source: &str) -> Result<usize, TableError> {
        let holds = |e: &Entry| e.legacy && e.source.as_deref() == Some(source);
        let cached = self
            .cache
            .read()
            .iter()
            .filter(|(n, e)| !self.pending.contains_key(*n) && holds(e))
            .count();
        let batch = self.pending.values().flatten().filter(|e| holds(e)).count();
        Ok(cached + batch)
    }
}

impl Writer {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let writes: Vec<&Write> = jobs.iter().map(|(w, _)| w).collect();
            let results = self.apply(&writes).await;
            for ((_, reply), result) in jobs.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    async fn apply(&self, writes: &[&Write]) -> Vec<Result<(), TableError>> {
        for attempt in 0..ATTEMPTS {
            match self.attempt(writes).await {
                Ok(Attempt::Done(results)) => return results,
                Ok(Attempt::Lost) => {
                    debug!(
                        attempt,
                        writes = writes.len(),
                        "lost a race in etcd; deciding again"
                    );
                    // Spread the instances' retries apart.
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt) * 3;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => {
                    self.health.down(&e.to_string());
                    let text = e.to_string();
                    return writes
                        .iter()
                        .map(|_| Err(TableError::Unavailable(text.clone())))
                        .collect();
                }
            }
        }
        warn!(
            writes = writes.len(),
            "etcd writes kept losing races; refused"
        );
        writes
            .iter()
            .map(|_| Err(TableError::Contention(ATTEMPTS)))
            .collect()
    }

    async fn attempt(&self, writes: &[&Write]) -> Result<Attempt, TableError> {
        let read = self.read(writes).await?;
        let mut pending: HashMap<Name, Option<Entry>> = HashMap::new();
        let mut tombstones = read.tombstones.clone();
        let mut new_tombstones: HashMap<String, u64> = HashMap::new();
        let mut names = read.count as usize;
        let now = peerchat_db::now_ms();
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            let name = w.name();
            let old = match pending.get(name) {
                Some(e) => e.clone(),
                None => read.names.get(name).and_then(|s| s.entry.clone()),
            };
            let facts = EtcdFacts {
                keys: &self.keys,
                tombstones: &tombstones,
                cache: &self.cache,
                pending: &pending,
            };
            let decided = decide(w, old.as_ref(), &facts, &mut names, self.limits, now);
            results.push(decided.map(|change| match change {
                Change::Put(e) => {
                    pending.insert(name.clone(), Some(e));
                }
                Change::Remove { tombstone } => {
                    if let Some((key, seq)) = tombstone {
                        let k = self.keys.tombstone(name, &key);
                        tombstones.insert(k.clone(), seq);
                        new_tombstones.insert(k, seq);
                    }
                    pending.insert(name.clone(), None);
                }
            }));
        }
        if pending.is_empty() {
            return Ok(Attempt::Done(results));
        }
        let plan = self.plan(&read, &pending, &new_tombstones, names as u64);
        let granted = self.grant(plan.need_lease.len()).await?;
        let txn = plan.txn(&self.keys, &granted);
        let outcome = bounded(self.client.kv_client().txn(txn)).await;
        let resp = match outcome {
            Ok(r) => r,
            Err(e) => {
                self.revoke(granted);
                // A lease that ran out between the read and the transaction: read again.
                if e.to_string().contains("lease not found") {
                    return Ok(Attempt::Lost);
                }
                return Err(e);
            }
        };
        if !resp.succeeded() {
            self.revoke(granted);
            return Ok(Attempt::Lost);
        }
        self.health.up();
        let revision = resp.header().map_or(0, |h| h.revision());
        self.revoke(plan.released);
        self.refresh(plan.reused);
        self.wait_applied(revision).await;
        Ok(Attempt::Done(results))
    }

    /// One transaction of reads: each name's record and lease key, the tombstones the batch's
    /// registrations may meet, and the name counter.
    async fn read(&self, writes: &[&Write]) -> Result<Read, TableError> {
        let mut names: Vec<&Name> = Vec::new();
        let mut tombstone_keys: Vec<String> = Vec::new();
        for w in writes {
            if !names.contains(&w.name()) {
                names.push(w.name());
            }
            if let Write::Register { name, signed, .. } = w {
                let k = self.keys.tombstone(name, &signed.key);
                if !tombstone_keys.contains(&k) {
                    tombstone_keys.push(k);
                }
            }
        }
        let mut ops = Vec::with_capacity(names.len() * 2 + tombstone_keys.len() + 1);
        for n in &names {
            ops.push(TxnOp::get(self.keys.name(n), None));
            ops.push(TxnOp::get(self.keys.live(n), None));
        }
        ops.extend(tombstone_keys.iter().map(|k| TxnOp::get(k.clone(), None)));
        ops.push(TxnOp::get(self.keys.count(), None));
        let resp = bounded(self.client.kv_client().txn(Txn::new().and_then(ops))).await?;
        let gets: Vec<GetResponse> = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            })
            .collect();
        let expected = names.len() * 2 + tombstone_keys.len() + 1;
        if gets.len() != expected {
            return Err(TableError::Unavailable(format!(
                "etcd answered {} of {expected} reads",
                gets.len()
            )));
        }
        let mut read = Read {
            names: HashMap::new(),
            tombstones: HashMap::new(),
            count: 0,
            count_rev: 0,
        };
        for (i, n) in names.iter().enumerate() {
            read.names
                .insert((*n).clone(), self.seen(n, &gets[2 * i], &gets[2 * i + 1]));
        }
        for (k, g) in tombstone_keys.iter().zip(&gets[names.len() * 2..]) {
            if let Some(kv) = g.kvs().first() {
                read.tombstones.insert(k.clone(), decimal(kv.value()));
            }
        }
        if let Some(kv) = gets[expected - 1].kvs().first() {
            read.count = decimal(kv.value());
            read.count_rev = kv.mod_revision();
        }
        Ok(read)
    }

    fn seen(&self, name: &Name, record: &GetResponse, live: &GetResponse) -> Seen {
        let live = live.kvs().first();
        let lease = live.map(|kv| kv.lease());
        let rec = record.kvs().first();
        let entry = rec
            .and_then(|kv| serde_json::from_slice::<Stored>(kv.value()).ok())
            .map(|s| {
                let mut e = s.into_entry(lease.map_or(Lease::Lapsed, Lease::Held));
                keep_newer_seq(&mut e, self.cache.get(name).as_ref());
                e
            });
        Seen {
            entry,
            rev: rec.map_or(0, |kv| kv.mod_revision()),
            live_rev: live.map_or(0, |kv| kv.mod_revision()),
            lease,
        }
    }

    fn plan<'p>(
        &self,
        read: &'p Read,
        pending: &'p HashMap<Name, Option<Entry>>,
        tombstones: &'p HashMap<String, u64>,
        count: u64,
    ) -> Plan<'p> {
        let mut plan = Plan {
            read,
            pending,
            tombstones,
            count,
            need_lease: Vec::new(),
            reused: Vec::new(),
            released: Vec::new(),
        };
        for (name, next) in pending {
            let lease = read.names.get(name).and_then(|s| s.lease);
            let online = next.as_ref().is_some_and(|e| !e.offline);
            match (online, lease) {
                (true, Some(id)) => plan.reused.push(id),
                (true, None) => plan.need_lease.push(name.clone()),
                (false, Some(id)) => plan.released.push(id),
                (false, None) => {}
            }
        }
        plan
    }

    /// Grants `n` leases of the TTL.
    async fn grant(&self, n: usize) -> Result<Vec<i64>, TableError> {
        let ttl = self.ttl.as_secs().max(1) as i64;
        let grants = (0..n).map(|_| {
            let mut leases = self.client.lease_client();
            async move { bounded(leases.grant(ttl, None)).await.map(|r| r.id()) }
        });
        let mut ids = Vec::with_capacity(n);
        let mut failed = None;
        for r in join_all(grants).await {
            match r {
                Ok(id) => ids.push(id),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            None => Ok(ids),
            Some(e) => {
                self.revoke(ids);
                Err(e)
            }
        }
    }

    /// Revokes leases no key needs any more (they would run out by themselves; this frees them
    /// now). In the background: the reply does not wait.
    fn revoke(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            for id in ids {
                let _ = bounded(client.lease_client().revoke(id)).await;
            }
        });
    }

    /// A registration that moved a live name restarts its lease's TTL.
    fn refresh(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            for id in ids {
                let _ = bounded(client.lease_client().keep_alive(id)).await;
            }
        });
    }

    /// Until the cache has applied `revision` (bounded: the write is committed either way).
    async fn wait_applied(&self, revision: i64) {
        let mut applied = self.applied.clone();
        let waited = tokio::time::timeout(REQUEST_TIMEOUT, applied.wait_for(|r| *r >= revision));
        if waited.await.is_err() {
            warn!(
                revision,
                "the cache did not see a committed write within the timeout"
            );
        }
    }
}

/// One attempt's transaction, before the new leases are granted.
struct Plan<'p> {
    read: &'p Read,
    pending: &'p HashMap<Name, Option<Entry>>,
    tombstones: &'p HashMap<String, u64>,
    count: u64,
    /// Names coming online without a live lease (granted before the transaction).
    need_lease: Vec<Name>,
    /// Live leases the names keep.
    reused: Vec<i64>,
    /// Live leases of names going offline or away.
    released: Vec<i64>,
}

impl Plan<'_> {
    /// Compares every read revision of a changed name; applies every change. `granted` are the
    /// leases for `need_lease`, in order.
    fn txn(&self, keys: &Keys, granted: &[i64]) -> Txn {
        let new_lease: HashMap<&Name, i64> = self
            .need_lease
            .iter()
            .zip(granted.iter().copied())
            .collect();
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for (name, next) in self.pending {
            let seen = self.read.names.get(name);
            compares.push(Compare::mod_revision(
                keys.name(name),
                CompareOp::Equal,
                seen.map_or(0, |s| s.rev),
            ));
            compares.push(Compare::mod_revision(
                keys.live(name),
                CompareOp::Equal,
                seen.map_or(0, |s| s.live_rev),
            ));
            let had_lease = seen.and_then(|s| s.lease);
            match next {
                Some(e) => {
                    ops.push(TxnOp::put(keys.name(name), Stored::of(e).to_json(), None));
                    if !e.offline {
                        let lease = had_lease
                            .or_else(|| new_lease.get(name).copied())
                            .unwrap_or(0);
                        ops.push(TxnOp::put(
                            keys.live(name),
                            Vec::new(),
                            Some(PutOptions::new().with_lease(lease)),
                        ));
                    } else if had_lease.is_some() {
                        ops.push(TxnOp::delete(keys.live(name), None));
                    }
                }
                None => {
                    ops.push(TxnOp::delete(keys.name(name), None));
                    if had_lease.is_some() {
                        ops.push(TxnOp::delete(keys.live(name), None));
                    }
                }
            }
        }
        for (k, seq) in self.tombstones {
            ops.push(TxnOp::put(k.clone(), seq.to_string(), None));
        }
        if self.count != self.read.count {
            compares.push(Compare::mod_revision(
                keys.count(),
                CompareOp::Equal,
                self.read.count_rev,
            ));
            ops.push(TxnOp::put(keys.count(), self.count.to_string(), None));
        }
        Txn::new().when(compares).and_then(ops)
    }
}
