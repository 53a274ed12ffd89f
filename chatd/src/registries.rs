//! Several registries (`--registry host1:8888,host2:8888`): which one chatd talks to, failover
//! between them, and how their answers are merged.
//!
//! The rules (docs/protocol.md 3.8):
//! - Every address counts: a host name that resolves to several addresses gives one endpoint
//!   per address (read at start-up; a name that does not resolve then stays one endpoint, which
//!   each connection resolves anew).
//! - **Registration goes to every endpoint** (`lease::keep_lease`): chatd cannot know
//!   whether the registries share a store, and registering with each is correct either way
//!   (every record is signed; each registry only takes a higher `seq`).
//! - **Lookups and lists ask every endpoint believed reachable** (plus the current one) at
//!   once and keep the freshest record that verifies (highest signed `seq`), so independent
//!   registries need no shared store and a registry serving an old record loses to one serving
//!   the new one. Only when none of those answers are the others tried, in list order (failover).
//! - **The current endpoint** (what `status` shows, and where the presence watch connects) is the
//!   first listed endpoint that answered its last exchange; when none did, the one after the
//!   last that failed. The lease keepers exchange with every endpoint at least every TTL/3 (and
//!   every few seconds while one fails), so chatd comes back to a first-listed registry soon
//!   after it answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use peerchat_proto::registry::Record;
use peerchat_proto::Name;
use tracing::{info, warn};

use crate::registry_client::{RegistryClient, RegistryError};

/// How long resolving one `--registry` host name may take at start-up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Registries {
    endpoints: Vec<Arc<RegistryClient>>,
    /// The endpoint to use while none is known to answer: advanced past each one that fails.
    fallback: AtomicUsize,
    /// The endpoint `current` returned last time (to log a switch once).
    last_current: AtomicUsize,
}

impl Registries {
    /// The endpoints of `entries` (HOST:PORT each), every address of a host name counting as
    /// one; duplicates removed, list order kept.
    pub async fn resolve(entries: &[String]) -> Registries {
        let mut addrs: Vec<String> = Vec::new();
        for entry in entries {
            let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(entry)).await;
            match found {
                Ok(Ok(list)) => {
                    let list: Vec<String> = list.map(|a| a.to_string()).collect();
                    if list.is_empty() {
                        addrs.push(entry.clone());
                    }
                    addrs.extend(list);
                }
                Ok(Err(e)) => {
                    warn!(registry = %entry, error = %e, "cannot resolve the registry's host name now; it is resolved again at each connection");
                    addrs.push(entry.clone());
                }
                Err(_) => {
                    warn!(registry = %entry, "resolving the registry's host name timed out; it is resolved again at each connection");
                    addrs.push(entry.clone());
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        Registries::new(addrs)
    }

    /// One endpoint per address, as given (tests, and [`Registries::resolve`]).
    pub fn new(addrs: Vec<String>) -> Registries {
        Registries {
            endpoints: addrs
                .into_iter()
                .map(|a| Arc::new(RegistryClient::new(a)))
                .collect(),
            fallback: AtomicUsize::new(0),
            last_current: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[Arc<RegistryClient>] {
        &self.endpoints
    }

    /// Whether any endpoint answered its last exchange.
    pub fn any_reachable(&self) -> bool {
        self.endpoints.iter().any(|e| e.reachable())
    }

    /// The endpoint in use: the first listed one that answered its last exchange, else the
    /// fallback (see the module's docs). `None` without registries.
    pub fn current(&self) -> Option<(usize, &Arc<RegistryClient>)> {
        let i = match self.endpoints.iter().position(|e| e.reachable()) {
            Some(i) => i,
            None => self.fallback.load(Ordering::Relaxed) % self.endpoints.len().max(1),
        };
        let client = self.endpoints.get(i)?;
        let before = self.last_current.swap(i, Ordering::Relaxed);
        if before != i && client.reachable() {
            info!(
                registry = client.addr(),
                previous = self.endpoints.get(before).map(|e| e.addr()),
                "using another registry"
            );
        }
        Some((i, client))
    }

    /// The address `status` shows (empty without registries).
    pub fn current_addr(&self) -> String {
        self.current()
            .map(|(_, c)| c.addr().to_string())
            .unwrap_or_default()
    }

    /// Endpoint `i` failed (connect, timeout, closed): the next one becomes the fallback.
    pub fn failed(&self, i: usize) {
        let n = self.endpoints.len().max(1);
        let _ =
            self.fallback
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `f` on the endpoints believed reachable plus the current one, at once; when none of
    /// them answers, on the others one at a time in list order until one answers. Returns every
    /// result it got (an `Unreachable` error for each endpoint that did not answer).
    async fn ask<T, F, Fut>(&self, f: F) -> Vec<Result<T, RegistryError>>
    where
        F: Fn(Arc<RegistryClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let Some((current, _)) = self.current() else {
            return vec![Err(RegistryError::Unreachable {
                addr: "(none)".into(),
                reason: "no registry is configured".into(),
            })];
        };
        let first: Vec<usize> = (0..self.endpoints.len())
            .filter(|&i| i == current || self.endpoints[i].reachable())
            .collect();
        let mut results = join_all(first.iter().map(|&i| f(self.endpoints[i].clone()))).await;
        let answered =
            |r: &Result<T, RegistryError>| !matches!(r, Err(RegistryError::Unreachable { .. }));
        for (&i, r) in first.iter().zip(&results) {
            if !answered(r) {
                self.failed(i);
            }
        }
        if results.iter().any(answered) {
            return results;
        }
        for i in (0..self.endpoints.len()).filter(|i| !first.contains(i)) {
            let r = f(self.endpoints[i].clone()).await;
            let ok = answered(&r);
            results.push(r);
            if ok {
                break;
            }
            self.failed(i);
        }
        results
    }

    /// The freshest record of `name` that any registry answering now has (see the module's
    /// docs); `not_found` only when no answering registry has one.
    pub async fn lookup(&self, name: &Name) -> Result<Record, RegistryError> {
        let results = self
            .ask(|c| {
                let name = name.clone();
                async move { c.lookup(&name).await }
            })
            .await;
        let mut records = Vec::new();
        let mut refused = None;
        let mut unreachable = None;
        for r in results {
            match r {
                Ok(rec) => records.push(rec),
                Err(e @ RegistryError::Refused(_)) => {
                    // A `not_found` only counts when nobody has the name; another refusal is
                    // reported in preference to it.
                    if refused
                        .as_ref()
                        .is_none_or(|p: &RegistryError| p.is_not_found())
                    {
                        refused = Some(e);
                    }
                }
                Err(e) => unreachable = Some(e),
            }
        }
        if let Some(best) = freshest(records) {
            return Ok(best);
        }
        Err(refused
            .or(unreachable)
            .unwrap_or(RegistryError::Unreachable {
                addr: "(none)".into(),
                reason: "no registry answered".into(),
            }))
    }

    /// Every name any answering registry lists, each with its freshest record.
    pub async fn list(&self) -> Result<Vec<Record>, RegistryError> {
        let results = self.ask(|c| async move { c.list().await }).await;
        let mut by_name: HashMap<Name, Vec<Record>> = HashMap::new();
        let mut error = None;
        let mut any = false;
        for r in results {
            match r {
                Ok(records) => {
                    any = true;
                    for rec in records {
                        by_name.entry(rec.name.clone()).or_default().push(rec);
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        if !any {
            return Err(error.unwrap_or(RegistryError::Unreachable {
                addr: "(none)".into(),
                reason: "no registry answered".into(),
            }));
        }
        let mut merged: Vec<Record> = by_name.into_values().filter_map(freshest).collect();
        merged.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(merged)
    }
}

/// The record with the highest signed `seq` among those that verify; if none verifies, the
/// first one (so the caller reports why it is not trustworthy). A registry cannot win with a
/// record it made up: only the node's signature counts.
fn freshest(records: Vec<Record>) -> Option<Record> {
    let seq = |r: &Record| r.signed.as_ref().map_or(0, |s| s.seq);
    let mut best: Option<Record> = None;
    let mut first_bad = None;
    for r in records {
        if r.verify().is_err() {
            first_bad.get_or_insert(r);
            continue;
        }
        if best.as_ref().is_none_or(|b| seq(&r) > seq(b)) {
            best = Some(r);
        }
    }
    best.or(first_bad)
}
