//! Talking to one registryd endpoint: one short JSON-lines exchange per request, every step
//! under a timeout. Several endpoints, failover and merging: `registries.rs`; the lease:
//! `lease.rs`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use peerchat_proto::envelope::{to_line, Reply};
use peerchat_proto::registry::{self, Record, Request, RequestLine, Response};
use peerchat_proto::{ErrorBody, Name};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

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
