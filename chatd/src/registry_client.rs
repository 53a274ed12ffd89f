//! Talking to registryd: one short JSON-lines exchange per request, every step under a timeout,
//! and the lease keeper that registers us and renews before the TTL runs out.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use peerchat_proto::control::BehindNat;
use peerchat_proto::envelope::{to_line, Reply};
use peerchat_proto::registry::{self, Record, Request, RequestLine, Response, Statement};
use peerchat_proto::{ErrorBody, Name};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::identity::Identity;
use crate::reachability::behind_nat;

/// Longest wait between registration attempts while the registry is unreachable.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(5);
/// Whole request/reply exchange with the registry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("registry refused: {0}")]
    Refused(ErrorBody),
}

impl RegistryError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::Refused(b) if b.code == registry::code::NOT_FOUND)
    }
}

pub struct RegistryClient {
    addr: String,
    reachable: AtomicBool,
    /// Notified when the registry answers again after being unreachable.
    came_back: tokio::sync::Notify,
}

impl RegistryClient {
    pub fn new(addr: String) -> Self {
        RegistryClient {
            addr,
            reachable: AtomicBool::new(false),
            came_back: tokio::sync::Notify::new(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the last exchange with the registry got an answer.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub async fn request(&self, request: Request) -> Result<Response, RegistryError> {
        self.request_from(request)
            .await
            .map(|(response, _)| response)
    }

    /// [`RegistryClient::request`], also returning the local IP address the request was sent
    /// from (to compare with the address the registry saw: `reachability`).
    pub async fn request_from(
        &self,
        request: Request,
    ) -> Result<(Response, Option<IpAddr>), RegistryError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(self.unreachable("timed out")),
        };
        self.note_reachable(!matches!(result, Err(RegistryError::Unreachable { .. })));
        result
    }

    /// Records whether the registry answered; a return after an outage wakes
    /// [`RegistryClient::came_back`]'s waiter (the lease keeper re-registers at once).
    pub fn note_reachable(&self, answered: bool) {
        let was = self.reachable.swap(answered, Ordering::Relaxed);
        if answered && !was {
            self.came_back.notify_one();
        }
    }

    /// Resolves when the registry answers again after being unreachable.
    pub async fn came_back(&self) {
        self.came_back.notified().await
    }

    fn unreachable(&self, reason: impl ToString) -> RegistryError {
        RegistryError::Unreachable {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    async fn exchange(
        &self,
        request: Request,
    ) -> Result<(Response, Option<IpAddr>), RegistryError> {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = stream.set_nodelay(true);
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        stream
            .write_all(&to_line(&RequestLine { id: 1, request }))
            .await
            .map_err(|e| self.unreachable(e))?;
        let codec =
            AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), vec![], registry::MAX_REPLY);
        let mut lines = FramedRead::new(stream, codec);
        let line = match lines.next().await {
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(self.unreachable(e)),
            None => return Err(self.unreachable("connection closed without a reply")),
        };
        let reply: Reply<Response> = serde_json::from_slice(&line)
            .map_err(|e| self.unreachable(format!("bad reply: {e}")))?;
        let response = reply
            .outcome
            .into_result()
            .map_err(RegistryError::Refused)?;
        Ok((response, local_ip))
    }

    pub async fn lookup(&self, name: &Name) -> Result<Record, RegistryError> {
        match self.request(Request::Lookup { name: name.clone() }).await? {
            Response::Record(r) => Ok(r),
            other => Err(self.unreachable(format!("unexpected reply {other:?}"))),
        }
    }

    pub async fn list(&self) -> Result<Vec<Record>, RegistryError> {
        match self.request(Request::List).await? {
            Response::Records { records } => Ok(records),
            other => Err(self.unreachable(format!("unexpected reply {other:?}"))),
        }
    }
}

/// What we register: our name, the port peers should use, and optionally an explicit host.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: Name,
    pub port: u16,
    pub host: Option<String>,
}

/// Our lease on our name: every request signed by our identity with a fresh sequence number.
pub struct Lease {
    pub client: Arc<RegistryClient>,
    pub identity: Arc<Identity>,
    pub reg: Registration,
    /// The address the registry last confirmed for us (empty until the first registration).
    address: Mutex<String>,
    /// Why the last registration failed, until one succeeds.
    error: Mutex<Option<String>>,
    /// Set when the last registration shows a NAT router between us and the registry.
    nat: Mutex<Option<BehindNat>>,
    last_seq: AtomicU64,
}

impl Lease {
    pub fn new(client: Arc<RegistryClient>, identity: Arc<Identity>, reg: Registration) -> Lease {
        Lease {
            client,
            identity,
            reg,
            address: Mutex::new(String::new()),
            error: Mutex::new(None),
            nat: Mutex::new(None),
            last_seq: AtomicU64::new(0),
        }
    }

    /// The address the registry last confirmed for us (empty until the first registration).
    pub fn address(&self) -> String {
        self.address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the last registration failed, while registrations fail.
    pub fn last_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the last registration came through a NAT router (`reachability::behind_nat`).
    pub fn behind_nat(&self) -> Option<BehindNat> {
        self.nat.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Sequence numbers: milliseconds since the epoch, and always above the last one used (so
    /// they increase across restarts without being stored, unless the clock jumps back; then
    /// the registry says `replay` and we continue above its `last_seq`).
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

    /// One signed registration; on `replay` (our clock went back) continues above the
    /// registry's last sequence number and tries once more. Returns the address and TTL.
    pub async fn register_once(&self) -> Result<(String, u64), RegistryError> {
        let mut result = self.client.request_from(self.register_request()).await;
        if let Err(RegistryError::Refused(b)) = &result {
            if b.code == registry::code::REPLAY {
                if let Ok(record) = self.client.lookup(&self.reg.name).await {
                    self.last_seq.fetch_max(record.last_seq, Ordering::SeqCst);
                    result = self.client.request_from(self.register_request()).await;
                }
            }
        }
        match result? {
            (Response::Registered { address, ttl_secs }, local_ip) => {
                let nat = behind_nat(&address, local_ip, self.reg.host.is_some());
                *self.nat.lock().unwrap_or_else(|p| p.into_inner()) = nat;
                *self.address.lock().unwrap_or_else(|p| p.into_inner()) = address.clone();
                Ok((address, ttl_secs))
            }
            (other, _) => Err(RegistryError::Unreachable {
                addr: self.client.addr().to_string(),
                reason: format!("unexpected reply {other:?}"),
            }),
        }
    }

    async fn offline(&self) -> Result<Response, RegistryError> {
        let seq = self.next_seq();
        let (key, sig) = self.identity.key_and_sign(|key| {
            Statement::Offline {
                name: &self.reg.name,
                key,
                seq,
            }
            .to_bytes()
        });
        self.client
            .request(Request::Offline {
                name: self.reg.name.clone(),
                key,
                seq,
                sig,
            })
            .await
    }
}

/// Keeps our lease: registers now, renews at a third of the TTL, retries with backoff (1 s
/// doubling to [`REGISTER_RETRY_MAX`]) while the registry is down, and at once when it answers
/// again (any exchange with it, such as the presence watch, tells). On cancellation, tells the
/// registry we are offline (best effort, bounded by the request timeout). `on_registered` runs
/// after a registration that follows a failure (peers that refused us as unknown take us now).
pub async fn keep_lease(
    lease: Arc<Lease>,
    first_attempt: tokio::sync::oneshot::Sender<()>,
    on_registered: impl Fn(),
    stop: CancellationToken,
) {
    let mut first_attempt = Some(first_attempt);
    let mut backoff = Duration::from_secs(1);
    let mut was_ok = None;
    let name = lease.reg.name.clone();
    loop {
        let (wait, failing) = match lease.register_once().await {
            Ok((a, ttl_secs)) => {
                if was_ok != Some(true) {
                    info!(name = %name, address = %a, ttl_secs, fingerprint = %lease.identity.public().fingerprint(), registry = lease.client.addr(), "registered");
                    if let Some(nat) = lease.behind_nat() {
                        warn!(seen_ip = %nat.seen_ip, local_ip = %nat.local_ip, "the registry sees this node at another address than its own (a NAT router in between): other nodes reach it only if the router forwards the port; see chatctl doctor");
                    }
                }
                if was_ok == Some(false) {
                    on_registered();
                }
                lease.set_error(None);
                was_ok = Some(true);
                backoff = Duration::from_secs(1);
                (Duration::from_secs((ttl_secs / 3).max(1)), false)
            }
            Err(e) => {
                let text = e.to_string();
                // Logged again whenever the reason changes, so a node that stays unregistered
                // (its name bound to another key, say) says why in its log, not only once.
                if was_ok != Some(false) || lease.last_error().as_deref() != Some(text.as_str()) {
                    warn!(error = %e, retry_in_secs = backoff.as_secs(), "registration failed; will retry");
                } else {
                    debug!(error = %e, "registration retry failed");
                }
                lease.set_error(Some(text));
                was_ok = Some(false);
                let w = backoff;
                backoff = (backoff * 2).min(REGISTER_RETRY_MAX);
                (w, true)
            }
        };
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = lease.client.came_back(), if failing => {
                debug!("the registry answers again; registering now");
            }
        }
    }
    match lease.offline().await {
        Ok(_) => info!(name = %name, "told the registry we are offline"),
        Err(e) => warn!(error = %e, "could not tell the registry we are offline"),
    }
}
