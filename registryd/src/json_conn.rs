//! A connection speaking our JSON-lines protocol: many requests, replies in order.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use peerchat_proto::envelope::{append_line, to_line, ErrorBody, Outcome, Reply};
use peerchat_proto::registry::{
    self, code, Request, RequestLine, Response, SignedRegistration, Statement,
};
use peerchat_proto::{Name, PublicKey, Signature};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tracing::debug;

use crate::limits::{FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::metrics::Metrics;
use crate::table::{Presence, Table, TableError, Write};

type Lines = FramedRead<OwnedReadHalf, AnyDelimiterCodec>;

pub async fn serve(stream: TcpStream, peer: SocketAddr, table: Arc<Table>, metrics: Arc<Metrics>) {
    let (read, mut write) = stream.into_split();
    // The codec admits `watch`'s longer lines; every other request must fit in MAX_LINE.
    let codec = AnyDelimiterCodec::new_with_max_length(
        b"\n".to_vec(),
        b"\n".to_vec(),
        registry::MAX_WATCH_LINE,
    );
    let mut lines = FramedRead::new(read, codec);
    let mut timeout = FIRST_REQUEST_TIMEOUT;
    loop {
        let line = match tokio::time::timeout(timeout, lines.next()).await {
            Err(_) => {
                debug!(%peer, "closing silent connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(line)) => line,
        };
        timeout = IDLE_TIMEOUT;
        let req = match parse_line(line) {
            Parsed::Blank => continue,
            Parsed::Fatal(e) => {
                let _ = send(&mut write, &to_line(&error_reply(0, e))).await;
                return;
            }
            Parsed::Err(id, e) => {
                metrics.refused(&e.code);
                if send(&mut write, &to_line(&error_reply(id, e))).await {
                    continue;
                }
                return;
            }
            Parsed::Ok(req) => req,
        };
        let reply = match req.request {
            Request::Watch { names } => match watch_set(names) {
                Ok(names) => return watch(req.id, names, lines, write, peer, &table).await,
                Err(e) => error_reply(req.id, e),
            },
            request => {
                let kind = Kind::of(&request);
                let outcome = handle(request, peer, &table).await;
                count(&metrics, kind, &outcome);
                Reply {
                    id: req.id,
                    outcome: outcome.into(),
                }
            }
        };
        if !send(&mut write, &to_line(&reply)).await {
            return;
        }
    }
}

/// What a request was, for the metrics.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Lookup,
    Register,
    Other,
}

impl Kind {
    fn of(r: &Request) -> Kind {
        match r {
            Request::Lookup { .. } => Kind::Lookup,
            Request::Register { .. } => Kind::Register,
            _ => Kind::Other,
        }
    }
}

fn count(metrics: &Metrics, kind: Kind, outcome: &Result<Response, ErrorBody>) {
    match (kind, outcome) {
        (Kind::Lookup, Ok(_)) => metrics.looked_up(true),
        (Kind::Lookup, Err(e)) if e.code == code::NOT_FOUND => metrics.looked_up(false),
        (Kind::Register, Ok(_)) => metrics.registered(false),
        (_, Err(e)) => metrics.refused(&e.code),
        (Kind::Other, Ok(_)) => {}
    }
}

// One value per line, matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// An empty line, skipped.
    Blank,
    Ok(RequestLine),
    /// Answered with this id and error; the connection stays open.
    Err(u64, ErrorBody),
    /// Answered with id 0 and this error; the connection is closed.
    Fatal(ErrorBody),
}

fn parse_line(line: Result<Bytes, AnyDelimiterCodecError>) -> Parsed {
    let too_long = || {
        ErrorBody::new(
            code::BAD_REQUEST,
            format!(
                "request line longer than {} bytes ({} for watch)",
                registry::MAX_LINE,
                registry::MAX_WATCH_LINE
            ),
        )
    };
    let line = match line {
        Ok(line) => line,
        Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => return Parsed::Fatal(too_long()),
        Err(AnyDelimiterCodecError::Io(e)) => {
            return Parsed::Fatal(ErrorBody::new(
                code::BAD_REQUEST,
                format!("read error: {e}"),
            ))
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(&line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Blank;
    }
    match registry::parse_request(line) {
        Ok(req)
            if line.len() > registry::MAX_LINE && !matches!(req.request, Request::Watch { .. }) =>
        {
            Parsed::Fatal(too_long())
        }
        Ok(req) => Parsed::Ok(req),
        Err(_) if line.len() > registry::MAX_LINE => Parsed::Fatal(too_long()),
        Err((id, e)) => Parsed::Err(id, e),
    }
}

fn error_reply(id: u64, e: ErrorBody) -> Reply<Response> {
    Reply {
        id,
        outcome: Outcome::Err(e),
    }
}

/// Writes `bytes` within [`WRITE_TIMEOUT`]; false if the client is gone or does not read.
async fn send(write: &mut OwnedWriteHalf, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// A `watch` request's names without duplicates (first occurrence kept), at most
/// [`registry::MAX_WATCH_NAMES`].
fn watch_set(names: Vec<Name>) -> Result<Vec<Name>, ErrorBody> {
    let mut seen = HashSet::with_capacity(names.len().min(registry::MAX_WATCH_NAMES + 1));
    let mut set = Vec::new();
    for name in names {
        if seen.insert(name.clone()) {
            set.push(name);
        }
        if set.len() > registry::MAX_WATCH_NAMES {
            return Err(ErrorBody::new(
                code::BAD_REQUEST,
                format!(
                    "watch carries more than {} distinct names",
                    registry::MAX_WATCH_NAMES
                ),
            ));
        }
    }
    Ok(set)
}

/// What a watching connection last announced for each name of its set.
struct Watched {
    id: u64,
    order: Vec<Name>,
    last: HashMap<Name, Presence>,
}

impl Watched {
    fn new(id: u64, order: Vec<Name>) -> Watched {
        Watched {
            id,
            last: HashMap::with_capacity(order.len()),
            order,
        }
    }

    fn line(&self, buf: &mut Vec<u8>, name: &Name, p: &Presence) {
        let reply = Reply {
            id: self.id,
            outcome: Outcome::Ok(Response::Presence {
                name: name.clone(),
                online: p.online,
                address: p.address.clone(),
            }),
        };
        append_line(buf, &reply);
    }

    /// One line per name of the set with its presence now (the start, and the resync after a
    /// lag).
    fn announce_all(&mut self, table: &Table, buf: &mut Vec<u8>) {
        for name in &self.order {
            let p = table.presence(name);
            self.line(buf, name, &p);
            self.last.insert(name.clone(), p);
        }
    }

    /// A line for each of `changed` that is in the set and differs from what was announced.
    fn announce_changes(&mut self, table: &Table, changed: &[Name], buf: &mut Vec<u8>) {
        for name in changed {
            let Some(last) = self.last.get(name) else {
                continue;
            };
            let p = table.presence(name);
            if p != *last {
                self.line(buf, name, &p);
                self.last.insert(name.clone(), p);
            }
        }
    }
}

/// The connection as a presence stream (protocol.md 3.3.6) until the client leaves, sends
/// anything but another `watch`, or does not read.
async fn watch(
    id: u64,
    names: Vec<Name>,
    mut lines: Lines,
    mut write: OwnedWriteHalf,
    peer: SocketAddr,
    table: &Table,
) {
    // Subscribe before the first snapshot, so no change after it is missed (a change already in
    // the snapshot is filtered out as not different).
    let mut changes = table.subscribe();
    debug!(%peer, names = names.len(), "watching");
    let mut set = Watched::new(id, names);
    let mut buf = Vec::new();
    set.announce_all(table, &mut buf);
    let period = registry::WATCH_HEARTBEAT;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !buf.is_empty() {
            if !send(&mut write, &buf).await {
                debug!(%peer, "watching client gone or not reading; dropped");
                return;
            }
            buf.clear();
        }
        tokio::select! {
            line = lines.next() => {
                let Some(line) = line else { return };
                let replaced = match parse_line(line) {
                    Parsed::Blank => continue,
                    Parsed::Ok(RequestLine { id, request: Request::Watch { names } }) => {
                        watch_set(names).map(|names| (id, names)).map_err(|e| (id, e))
                    }
                    Parsed::Ok(req) => Err((
                        req.id,
                        ErrorBody::new(
                            code::BAD_REQUEST,
                            "only watch is allowed on a watching connection",
                        ),
                    )),
                    Parsed::Err(id, e) => Err((id, e)),
                    Parsed::Fatal(e) => Err((0, e)),
                };
                match replaced {
                    Ok((id, names)) => {
                        debug!(%peer, names = names.len(), "watch set replaced");
                        set = Watched::new(id, names);
                        set.announce_all(table, &mut buf);
                    }
                    Err((id, e)) => {
                        let _ = send(&mut write, &to_line(&error_reply(id, e))).await;
                        return;
                    }
                }
            }
            changed = changes.recv() => match changed {
                Ok(changed) => set.announce_changes(table, &changed, &mut buf),
                Err(RecvError::Lagged(_)) => {
                    debug!(%peer, "watcher lagged; resending its set");
                    set.announce_all(table, &mut buf);
                }
                Err(RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => {
                let reply = Reply { id: set.id, outcome: Outcome::Ok(Response::Heartbeat) };
                append_line(&mut buf, &reply);
            }
        }
    }
}

async fn handle(req: Request, peer: SocketAddr, table: &Table) -> Result<Response, ErrorBody> {
    match req {
        Request::Register {
            name,
            port,
            host,
            key,
            seq,
            sig,
            rotation,
        } => {
            table
                .check_rate(peer.ip().to_canonical())
                .map_err(to_body)?;
            if port == 0 {
                return Err(ErrorBody::new(code::BAD_REQUEST, "port must be 1-65535"));
            }
            let address = match &host {
                None => registry::format_address(peer.ip().to_canonical(), port),
                Some(h) => registry::host_address(h, port).ok_or_else(|| {
                    ErrorBody::new(
                        code::BAD_REQUEST,
                        format!("host {h:?} is neither an IP address nor a DNS name"),
                    )
                })?,
            };
            let statement = Statement::Register {
                name: &name,
                key: &key,
                port,
                host: host.as_deref(),
                seq,
            };
            authorize(&key, seq, &sig, &statement)?;
            if let Some(r) = &rotation {
                if !r.verify(&name) {
                    return Err(ErrorBody::new(
                        code::BAD_SIGNATURE,
                        "the rotation is not signed by the key it rotates from",
                    ));
                }
            }
            let signed = SignedRegistration {
                key,
                port,
                host,
                seq,
                sig,
            };
            let write = Write::Register {
                name,
                address: address.clone(),
                signed,
                rotation,
            };
            table.write(write).await.map_err(to_body)?;
            Ok(Response::Registered {
                address,
                ttl_secs: table.ttl().as_secs(),
            })
        }
        Request::Lookup { name } => table
            .lookup(&name)
            .map(Response::Record)
            .ok_or_else(|| to_body(TableError::NotFound(name))),
        Request::List => Ok(Response::Records {
            records: table.list(),
        }),
        Request::Offline {
            name,
            key,
            seq,
            sig,
        } => {
            let statement = Statement::Offline {
                name: &name,
                key: &key,
                seq,
            };
            authorize(&key, seq, &sig, &statement)?;
            table
                .write(Write::Offline { name, key, seq })
                .await
                .map_err(to_body)?;
            Ok(Response::Done)
        }
        Request::Unregister {
            name,
            key,
            seq,
            sig,
        } => {
            let statement = Statement::Unregister {
                name: &name,
                key: &key,
                seq,
            };
            authorize(&key, seq, &sig, &statement)?;
            table
                .write(Write::Unregister { name, key, seq })
                .await
                .map_err(to_body)?;
            Ok(Response::Done)
        }
        Request::Status => {
            let health = table.store_health();
            Ok(Response::Status(registry::RegistryStatus {
                store: health.kind.to_string(),
                store_ok: health.ok,
                store_detail: health.detail,
                names: table.len() as u64,
                ttl_secs: table.ttl().as_secs(),
            }))
        }
        // Turns the connection into a stream: `serve` handles it before calling `handle`.
        Request::Watch { .. } => Err(ErrorBody::new(
            code::BAD_REQUEST,
            "watch is not a request-reply operation",
        )),
    }
}

/// What every signed request must pass before it reaches the table: a sequence number that is
/// not absurdly far ahead (one far in the future would lock the name's own node out, since every
/// later number must be higher; they are milliseconds since the epoch in practice) and a
/// signature by `key` over `statement`.
fn authorize(
    key: &PublicKey,
    seq: u64,
    sig: &Signature,
    statement: &Statement<'_>,
) -> Result<(), ErrorBody> {
    const YEAR_MS: u64 = 366 * 86_400_000;
    if seq > peerchat_db::now_ms().saturating_add(YEAR_MS) {
        return Err(ErrorBody::new(
            code::BAD_REQUEST,
            "sequence number more than a year ahead of the registry's clock",
        ));
    }
    verify(key, statement, sig)
}

fn verify(key: &PublicKey, statement: &Statement<'_>, sig: &Signature) -> Result<(), ErrorBody> {
    if key.verify(&statement.to_bytes(), sig) {
        Ok(())
    } else {
        Err(ErrorBody::new(
            code::BAD_SIGNATURE,
            "the signature does not match the request and key",
        ))
    }
}

fn to_body(e: TableError) -> ErrorBody {
    ErrorBody::new(e.code(), e.to_string())
}
