//! Our lease on our name with every registry endpoint: each request signed by our identity
//! with a fresh sequence number, and the keeper that registers with each endpoint and renews
//! before the TTL runs out (registering with every endpoint: see `registries.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use peerchat_proto::control::BehindNat;
use peerchat_proto::registry::{self, Request, Response, Statement};
use peerchat_proto::Name;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::identity::Identity;
use crate::reachability::behind_nat;
use crate::registries::Registries;
use crate::registry_client::{RegistryClient, RegistryError};

/// Longest wait between registration attempts while a registry is unreachable.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(5);

/// What we register: our name, the port peers should use, and optionally an explicit host.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: Name,
    pub port: u16,
    pub host: Option<String>,
}

/// What one endpoint last said about our registration.
#[derive(Default)]
struct Standing {
    /// The address it confirmed for us (empty until the first registration).
    address: String,
    /// Why the last registration failed, until one succeeds.
    error: Option<String>,
    /// Set when its last registration shows a NAT router between us and it.
    nat: Option<BehindNat>,
}

/// One endpoint's registration, for `status`.
pub struct EndpointStanding {
    pub registry: String,
    pub reachable: bool,
    pub address: String,
    pub error: Option<String>,
}

pub struct Lease {
    pub identity: Arc<Identity>,
    pub reg: Registration,
    pub registries: Arc<Registries>,
    /// One per endpoint of `registries`, same order.
    standing: Vec<Mutex<Standing>>,
    last_seq: AtomicU64,
}

impl Lease {
    pub fn new(registries: Arc<Registries>, identity: Arc<Identity>, reg: Registration) -> Lease {
        Lease {
            identity,
            reg,
            standing: registries
                .endpoints()
                .iter()
                .map(|_| Mutex::new(Standing::default()))
                .collect(),
            registries,
            last_seq: AtomicU64::new(0),
        }
    }

    fn standing(&self, i: usize) -> std::sync::MutexGuard<'_, Standing> {
        self.standing[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address the current registry confirmed for us; else any registry's (empty until the
    /// first registration).
    pub fn address(&self) -> String {
        if let Some((i, _)) = self.registries.current() {
            let a = self.standing(i).address.clone();
            if !a.is_empty() {
                return a;
            }
        }
        (0..self.standing.len())
            .map(|i| self.standing(i).address.clone())
            .find(|a| !a.is_empty())
            .unwrap_or_default()
    }

    /// Why registration fails, while it fails with every registry (`None` once one has us).
    pub fn last_error(&self) -> Option<String> {
        let errors: Vec<Option<String>> = (0..self.standing.len())
            .map(|i| self.standing(i).error.clone())
            .collect();
        if errors.iter().any(Option::is_none) {
            return None;
        }
        errors.into_iter().flatten().next()
    }

    /// Whether a registry saw our last registration come through a NAT router
    /// (`reachability::behind_nat`): the current registry's view, else any registry's.
    pub fn behind_nat(&self) -> Option<BehindNat> {
        if let Some((i, _)) = self.registries.current() {
            if let Some(n) = self.standing(i).nat.clone() {
                return Some(n);
            }
        }
        (0..self.standing.len()).find_map(|i| self.standing(i).nat.clone())
    }

    /// Every endpoint's standing, in list order.
    pub fn endpoints(&self) -> Vec<EndpointStanding> {
        self.registries
            .endpoints()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let s = self.standing(i);
                EndpointStanding {
                    registry: c.addr().to_string(),
                    reachable: c.reachable(),
                    address: s.address.clone(),
                    error: s.error.clone(),
                }
            })
            .collect()
    }

    /// Sequence numbers: milliseconds since the epoch, and always above the last one used (so
    /// they increase across restarts without being stored, unless the clock jumps back; then
    /// the registry says `replay` and we continue above its `last_seq`). One counter for every
    /// registry: each only needs numbers above the last it took.
    pub fn next_seq(&self) -> u64 {
        let now = peerchat_db::now_ms();
        let prev = self
            .last_seq
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(last.saturating_add(1).max(now))
            })
            .unwrap_or(0);
        prev.saturating_add(1).max(now)
    }

    fn register_request(&self) -> Request {
        let seq = self.next_seq();
        let (key, sig) = self.identity.key_and_sign(|key| {
            Statement::Register {
                name: &self.reg.name,
                key,
                port: self.reg.port,
                host: self.reg.host.as_deref(),
                seq,
            }
            .to_bytes()
        });
        Request::Register {
            name: self.reg.name.clone(),
            port: self.reg.port,
            host: self.reg.host.clone(),
            key,
            seq,
            sig,
            rotation: self.identity.rotation(),
        }
    }

    /// One signed registration with endpoint `i`; on `replay` (our clock went back) continues
    /// above that registry's last sequence number and tries once more. Returns the address and
    /// TTL.
    async fn register_at(&self, i: usize) -> Result<(String, u64), RegistryError> {
        let client = &self.registries.endpoints()[i];
        let mut result = client.request_from(self.register_request()).await;
        if let Err(RegistryError::Refused(b)) = &result {
            if b.code == registry::code::REPLAY {
                if let Ok(record) = client.lookup(&self.reg.name).await {
                    self.last_seq.fetch_max(record.last_seq, Ordering::SeqCst);
                    result = client.request_from(self.register_request()).await;
                }
            }
        }
        let mut nat = None;
        let outcome = match result {
            Ok((Response::Registered { address, ttl_secs }, local_ip)) => {
                nat = behind_nat(&address, local_ip, self.reg.host.is_some());
                Ok((address, ttl_secs))
            }
            Ok((other, _)) => Err(RegistryError::Unreachable {
                addr: client.addr().to_string(),
                reason: format!("unexpected reply {other:?}"),
            }),
            Err(e) => Err(e),
        };
        let mut s = self.standing(i);
        match &outcome {
            Ok((address, _)) => {
                s.address = address.clone();
                s.error = None;
                s.nat = nat;
            }
            Err(e) => s.error = Some(e.to_string()),
        }
        outcome
    }

    /// Registers with every endpoint at once (publishing a rotation now): the first success, or
    /// the first error when none succeeded.
    pub async fn register_once(&self) -> Result<(String, u64), RegistryError> {
        let n = self.registries.endpoints().len();
        let results = join_all((0..n).map(|i| self.register_at(i))).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(RegistryError::Unreachable {
            addr: "(none)".into(),
            reason: "no registry is configured".into(),
        }))
    }

    async fn offline_at(&self, client: &RegistryClient) -> Result<Response, RegistryError> {
        let seq = self.next_seq();
        let (key, sig) = self.identity.key_and_sign(|key| {
            Statement::Offline {
                name: &self.reg.name,
                key,
                seq,
            }
            .to_bytes()
        });
        client
            .request(Request::Offline {
                name: self.reg.name.clone(),
                key,
                seq,
                sig,
            })
            .await
    }
}

/// Keeps our lease with every endpoint (one loop each, see [`keep_one`]); `first_attempt`
/// fires once every endpoint had its first attempt. On cancellation, tells every registry we
/// are offline (best effort, at once, bounded by the request timeout).
pub async fn keep_lease(
    lease: Arc<Lease>,
    first_attempt: tokio::sync::oneshot::Sender<()>,
    on_registered: impl Fn(),
    stop: CancellationToken,
) {
    let n = lease.registries.endpoints().len();
    let first_attempt = Mutex::new(Some(first_attempt));
    let remaining = AtomicUsize::new(n);
    let attempted = || {
        if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(tx) = first_attempt
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                let _ = tx.send(());
            }
        }
    };
    if n == 0 {
        if let Some(tx) = first_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        return;
    }
    join_all((0..n).map(|i| keep_one(&lease, i, &attempted, &on_registered, &stop))).await;
    let name = lease.reg.name.clone();
    let endpoints = lease.registries.endpoints();
    let told = join_all(endpoints.iter().map(|c| lease.offline_at(c))).await;
    for (c, r) in endpoints.iter().zip(told) {
        match r {
            Ok(_) => info!(name = %name, registry = c.addr(), "told the registry we are offline"),
            Err(e) => warn!(error = %e, "could not tell the registry we are offline"),
        }
    }
}

/// Keeps our lease with endpoint `i`: registers now, renews at a third of the TTL, retries with
/// backoff (1 s doubling to [`REGISTER_RETRY_MAX`]) while it is down, and at once when it
/// answers again (any exchange with it, such as the presence watch, tells). `on_registered`
/// runs after a registration that follows a failure (peers that refused us as unknown take us
/// now).
async fn keep_one(
    lease: &Lease,
    i: usize,
    attempted: &impl Fn(),
    on_registered: &impl Fn(),
    stop: &CancellationToken,
) {
    let client = lease.registries.endpoints()[i].clone();
    let mut first = true;
    let mut backoff = Duration::from_secs(1);
    let mut was_ok = None;
    let name = &lease.reg.name;
    loop {
        let before = lease.standing(i).error.clone();
        let (wait, failing) = match lease.register_at(i).await {
            Ok((a, ttl_secs)) => {
                if was_ok != Some(true) {
                    info!(name = %name, address = %a, ttl_secs, fingerprint = %lease.identity.public().fingerprint(), registry = client.addr(), "registered");
                    if let Some(nat) = lease.standing(i).nat.clone() {
                        warn!(seen_ip = %nat.seen_ip, local_ip = %nat.local_ip, registry = client.addr(), "the registry sees this node at another address than its own (a NAT router in between): other nodes reach it only if the router forwards the port; see chatctl doctor");
                    }
                }
                if was_ok == Some(false) {
                    on_registered();
                }
                was_ok = Some(true);
                backoff = Duration::from_secs(1);
                (Duration::from_secs((ttl_secs / 3).max(1)), false)
            }
            Err(e) => {
                let text = e.to_string();
                // Logged again whenever the reason changes, so a node that stays unregistered
                // (its name bound to another key, say) says why in its log, not only once.
                if was_ok != Some(false) || before.as_deref() != Some(text.as_str()) {
                    warn!(error = %e, registry = client.addr(), retry_in_secs = backoff.as_secs(), "registration failed; will retry");
                } else {
                    debug!(error = %e, registry = client.addr(), "registration retry failed");
                }
                was_ok = Some(false);
                let w = backoff;
                backoff = (backoff * 2).min(REGISTER_RETRY_MAX);
                (w, true)
            }
        };
        if first {
            first = false;
            attempted();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = client.came_back(), if failing => {
                debug!(registry = client.addr(), "the registry answers again; registering now");
            }
        }
    }
}
