//! The seed's text protocol: one request (`reg NAME PORT` or `get NAME`), a bare `IP:PORT` reply,
//! then close.
//!
//! The seed sends its request in one write with no terminator and reads the reply once, so a
//! request ends at whichever comes first: a complete request, 100 ms without bytes, 1024 bytes,
//! or EOF.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerchat_proto::registry::{self, LegacyRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::limits::WRITE_TIMEOUT;
use crate::metrics::Metrics;
use crate::table::{Table, Write};

const MAX_REQUEST: usize = 1024;
const QUIET: Duration = Duration::from_millis(100);

pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    table: Arc<Table>,
    metrics: Arc<Metrics>,
) {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while buf.len() < MAX_REQUEST && !registry::legacy_complete(&buf) {
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        match tokio::time::timeout(QUIET, stream.read(&mut chunk[..room])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return,
        }
    }
    let reply = match registry::parse_legacy(&buf) {
        Some(LegacyRequest::Reg { name, port }) => {
            let address = registry::format_address(peer.ip().to_canonical(), port);
            match table
                .register(
                    Write::Legacy {
                        name: name.clone(),
                        address: address.clone(),
                        source: peer.ip().to_canonical(),
                    },
                    peer.ip().to_canonical(),
                )
                .await
            {
                Ok(()) => {
                    metrics.registered(true);
                    address
                }
                Err(e) => {
                    metrics.refused(e.code());
                    info!(%peer, source = %peer.ip().to_canonical(), name = %name, error = %e, "legacy registration refused");
                    String::new()
                }
            }
        }
        Some(LegacyRequest::Get { name }) => {
            let found = table.lookup(&name).map(|r| r.address);
            metrics.looked_up(found.is_some());
            found.unwrap_or_default()
        }
        None => {
            metrics.refused(peerchat_proto::registry::code::BAD_REQUEST);
            debug!(%peer, bytes = buf.len(), "unparseable legacy request");
            String::new()
        }
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
