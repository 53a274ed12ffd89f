//! The reply envelope shared by the control socket and the registry: one JSON object per line,
//! `{"id":N,"ok":{...}}` or `{"id":N,"error":{"code":"...","message":"..."}}`.

use serde::{Deserialize, Serialize};

/// A request: a client-chosen `id` (echoed in the reply) and the request's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLine<R> {
    #[serde(default)]
    pub id: u64,
    #[serde(flatten)]
    pub request: R,
}

/// Parses a request line. A line that is JSON but not a valid request is answered with its own
/// `id` (if it has a numeric one), so a pipelining client can tell which request failed.
pub fn parse_request_line<R: serde::de::DeserializeOwned>(
    line: &[u8],
    code: &str,
) -> Result<RequestLine<R>, (u64, ErrorBody)> {
    serde_json::from_slice(line).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        (id, ErrorBody::new(code, e.to_string()))
    })
}

/// A reply to the request with the same `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply<R> {
    pub id: u64,
    #[serde(flatten)]
    pub outcome: Outcome<R>,
}

/// `Result`, spelled the way it appears on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome<R> {
    #[serde(rename = "ok")]
    Ok(R),
    #[serde(rename = "error")]
    Err(ErrorBody),
}

impl<R> Outcome<R> {
    pub fn into_result(self) -> Result<R, ErrorBody> {
        match self {
            Outcome::Ok(r) => Ok(r),
            Outcome::Err(e) => Err(e),
        }
    }
}

impl<R> From<Result<R, ErrorBody>> for Outcome<R> {
    fn from(r: Result<R, ErrorBody>) -> Self {
        match r {
            Ok(r) => Outcome::Ok(r),
            Err(e) => Outcome::Err(e),
        }
    }
}

/// A machine-readable code (stable, snake_case) and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Encodes any wire value as one line (JSON plus `\n`).
pub fn to_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    append_line(&mut v, value);
    v
}

/// Appends `value` as JSON to `buf`: the encoder of every line and frame that carries a message
/// body. sonic-rs writes the same JSON as serde_json (same escapes, same field order; tested
/// below and in `peer.rs`), but escapes strings 32 bytes at a time, where serde_json's loop
/// costs about 8 instructions per body byte. Parsing stays with serde_json.
pub fn append_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), String> {
    sonic_rs::to_writer(&mut *buf, value).map_err(|e| e.to_string())
}

/// Appends one line (JSON plus `\n`) to `buf`: what [`to_line`] gives, without a buffer of its
/// own (a busy follower or pipelined client writes many lines per write).
pub fn append_line<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    let start = buf.len();
    // Serializing our own plain data types cannot fail (no maps with non-string keys, no
    // failing Serialize impls); fall back to an error line rather than panicking anyway.
    if let Err(e) = append_json(buf, value) {
        buf.truncate(start);
        buf.extend_from_slice(
            format!(r#"{{"id":0,"error":{{"code":"internal","message":"encode: {e}"}}}}"#)
                .as_bytes(),
        );
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{InboxMessage, Response};

    /// Every byte that needs escaping, both quote marks, a backslash, DEL, line and paragraph
    /// separators, bidi controls and a 4-byte character, at the start, middle and end of a
    /// string and across the encoder's 32-byte blocks.
    fn hostile_bodies() -> Vec<String> {
        let mut all: String = (0u8..0x20).map(char::from).collect();
        all.push_str("\"\\/\u{7f}\u{2028}\u{2029}\u{202e}\u{1F600}é");
        let mut bodies = vec![all.clone(), format!("{}{all}", "x".repeat(31))];
        for at in 0..70 {
            let mut b = "y".repeat(70);
            b.insert(at, '"');
            bodies.push(b.clone());
            b.insert(at, '\u{1}');
            bodies.push(b);
        }
        bodies.push("z".repeat(70_000));
        bodies
    }

    #[test]
    fn lines_are_the_json_serde_json_writes() {
        for body in hostile_bodies() {
            let m = InboxMessage {
                seq: -7,
                id: "id\u{0}".into(),
                from: "pa".into(),
                to: "pb".into(),
                recipients: vec!["pb".into(), "p\"c".into()],
                body,
                sent_at: "2026-01-01T00:00:00.000Z".into(),
                received_at: "t".into(),
                authenticated: true,
            };
            let reply = Reply {
                id: u64::MAX,
                outcome: Outcome::Ok(Response::Message(m)),
            };
            let mut ours = Vec::new();
            append_line(&mut ours, &reply);
            let mut theirs = serde_json::to_vec(&reply).expect("serde_json");
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }
}
