//! A connection speaking our JSON-lines protocol: many requests, replies in order.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use peerchat_proto::envelope::{to_line, ErrorBody, Outcome, Reply};
use peerchat_proto::registry::{self, code, Request, Response, SignedRegistration, Statement};
use peerchat_proto::{PublicKey, Signature};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tracing::debug;

use crate::table::{Table, TableError, Write};
use crate::{FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};

pub async fn serve(stream: TcpStream, peer: SocketAddr, table: Arc<Table>) {
    let (read, mut write) = stream.into_split();
    let codec =
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), registry::MAX_LINE);
    let mut lines = FramedRead::new(read, codec);
    let mut timeout = FIRST_REQUEST_TIMEOUT;
    loop {
        let line = match tokio::time::timeout(timeout, lines.next()).await {
            Err(_) => {
                debug!(%peer, "closing silent connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => {
                let message = match e {
                    AnyDelimiterCodecError::MaxChunkLengthExceeded => {
                        format!("request line longer than {} bytes", registry::MAX_LINE)
                    }
                    AnyDelimiterCodecError::Io(e) => format!("read error: {e}"),
                };
                let reply: Reply<Response> = Reply {
                    id: 0,
                    outcome: Outcome::Err(ErrorBody::new(code::BAD_REQUEST, message)),
                };
                let _ =
                    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&to_line(&reply))).await;
                return;
            }
        };
        timeout = IDLE_TIMEOUT;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match registry::parse_request(line) {
            Ok(req) => Reply {
                id: req.id,
                outcome: handle(req.request, peer, &table).await.into(),
            },
            Err((id, e)) => Reply {
                id,
                outcome: Outcome::Err(e),
            },
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&to_line(&reply))).await {
            Ok(Ok(())) => {}
            _ => return,
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
    let c = match &e {
        TableError::NotFound(_) => code::NOT_FOUND,
        TableError::Conflict(_) => code::CONFLICT,
        TableError::KeyMismatch { .. } => code::KEY_MISMATCH,
        TableError::Replay { .. } => code::REPLAY,
        TableError::RateLimited(_) | TableError::Full(_) => code::LIMITED,
        TableError::Closed => code::BUSY,
        TableError::Open(_) | TableError::Storage(_) | TableError::Commit(_) => code::STORAGE,
    };
    ErrorBody::new(c, e.to_string())
}
