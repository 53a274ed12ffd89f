//! What the control handlers share: the reply future, and writing replies with a time bound.
//! A leaf: the connection code (`mod.rs`) and the handlers import it, it imports neither.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use peerchat_proto::control::{code, Response};
use peerchat_proto::envelope::{to_line, ErrorBody, Reply};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writing one reply may take at most this long; a client that does not read is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's reply, resolved once the work behind it is done (the writer awaits these in
/// request order).
pub type ReplyFuture = Pin<Box<dyn Future<Output = Result<Response, ErrorBody>> + Send>>;

/// A reply that is already known.
pub fn ready(r: Result<Response, ErrorBody>) -> ReplyFuture {
    Box::pin(std::future::ready(r))
}

/// Writes and empties `buf` (bounded by [`WRITE_TIMEOUT`]).
pub async fn flush<W: AsyncWrite + Unpin>(w: &mut W, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let r = match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client is not reading",
        )),
    };
    buf.clear();
    r
}

pub async fn write_line<W: AsyncWrite + Unpin>(
    w: &mut W,
    reply: &Reply<Response>,
) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&to_line(reply))).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client is not reading",
        )),
    }
}

/// A store failure as the caller sees it.
pub fn store_error(e: crate::store::StoreError) -> ErrorBody {
    use crate::store::StoreError;
    match e {
        StoreError::IdConflict(_) => ErrorBody::new(code::CONFLICT, e.to_string()),
        StoreError::Closed => ErrorBody::new(code::SHUTTING_DOWN, e.to_string()),
        _ => ErrorBody::new(code::STORAGE, e.to_string()),
    }
}
