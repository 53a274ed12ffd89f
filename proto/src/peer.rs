//! The peer protocol between chatd nodes: a fixed cleartext preamble, then length-prefixed frames.
//!
//! ```text
//! client → server   "PEERCHAT/1\n"
//! then, both ways   u32 big-endian length N (1 ≤ N ≤ MAX_FRAME) | N bytes of JSON (one Frame)
//! ```
//!
//! The client opens with `Hello`; the server answers `Welcome` (or `Refused` and closes). Then the
//! client streams `Msg` frames without waiting (pipelined, at most a window in flight) and the server
//! answers each with `Ack` once the message is committed to its database, in the same order (or,
//! if the Hello asked for [`feature::ACKS`], each run of them with one `Acks`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::msg_id::MsgId;
use crate::name::Name;

/// Every link of our protocol begins with these bytes (cleartext, before anything else). They are
/// also the Noise prologue, so a tampered preamble fails the handshake.
pub const PREAMBLE: &[u8] = b"PEERCHAT/1\n";

/// The Noise protocol of every peer link, right after the preamble.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Largest frame payload, in bytes. A frame announcing more closes the link.
pub const MAX_FRAME: usize = 512 * 1024;

/// Client: connecting the TCP stream (one attempt).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each step of setting a link up, on either side: the preamble (written by the client, read by
/// the server), the whole Noise handshake (all three messages), the client's wait for `Welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Either side: writing one frame's buffered records; a peer that does not read is dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Client: with messages in flight, the server must answer something within this time.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Client: a link with nothing to send (and nothing in flight) for this long is closed.
pub const CLIENT_IDLE_CLOSE: Duration = Duration::from_secs(120);
/// Server: a link without any frame for this long is closed (the client reconnects when it has
/// something to send). With [`feature::PING`] the limit is [`DEAD_AFTER`] instead.
pub const SERVER_SILENCE_LIMIT: Duration = Duration::from_secs(300);

/// Stable error codes carried by `Refused` and `Nack`.
pub mod code {
    pub const WRONG_NAME: &str = "wrong_name";
    /// The caller's handshake key is not the one bound to the name it claims.
    pub const WRONG_KEY: &str = "wrong_key";
    pub const TOO_LARGE: &str = "too_large";
    pub const BAD_FRAME: &str = "bad_frame";
    pub const STORAGE: &str = "storage";
    pub const BUSY: &str = "busy";
    /// (nack) The recipient already holds a different message from this sender under this id.
    pub const ID_CONFLICT: &str = "id_conflict";
    /// The registry has no record of the caller's name (yet): it may have just started while the
    /// registry was unreachable. Retry once it has registered.
    pub const NOT_REGISTERED: &str = "not_registered";
    /// The caller's key cannot be checked right now (the registry is unreachable and the name is
    /// not pinned). Retry later.
    pub const UNVERIFIED: &str = "unverified";
}

/// Optional behaviours a client can ask for in its `Hello` (`features`). A server uses only the
/// ones it knows and ignores the rest, so adding one never needs a new protocol version.
pub mod feature {
    /// The server may answer a run of consecutive acknowledged messages with one `Acks` frame
    /// instead of one `Ack` each.
    pub const ACKS: &str = "acks";
    /// Liveness: the side that lists it answers every `Ping` with a `Pong`. A client lists it in
    /// its `Hello` and then sends `Ping`s on a silent link; a server lists it in its `Welcome`.
    /// Either side may then treat [`DEAD_AFTER`](super::DEAD_AFTER) of silence as a dead link.
    pub const PING: &str = "ping";
}

/// A client whose link supports [`feature::PING`] sends a `Ping` after this long without
/// receiving anything (and again after each further interval of silence).
pub const PING_AFTER: Duration = Duration::from_secs(5);
/// With [`feature::PING`] on both sides, a link that carried nothing for this long is dead (a
/// pulled cable, a suspended machine): both ends close it. Three pings fit in it.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// Client → server, first frame: who is calling, whom it expects to reach, and the optional
    /// behaviours it understands (see [`feature`]; absent means none).
    Hello {
        version: u32,
        from: Name,
        to: Name,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Server → client: the server is `name`, ready for messages, and understands `features`
    /// (absent from servers that predate it: none).
    Welcome {
        version: u32,
        name: Name,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Server → client, then close: the link is refused (e.g. the server is not `to`).
    Refused { code: String, message: String },
    /// Client → server: one message.
    Msg(WireMessage),
    /// Server → client: message `id` is committed (or was already, for a repeat).
    Ack { id: MsgId },
    /// Server → client, only if the client's Hello listed [`feature::ACKS`]: the next `count`
    /// unanswered messages are committed, the last of them being `last` (so the client can
    /// check that both sides agree on where the run ends).
    Acks { count: u32, last: MsgId },
    /// Server → client: message `id` will never be accepted; do not retry it.
    Nack {
        id: MsgId,
        code: String,
        message: String,
    },
    /// Client → server, only if the server's `Welcome` listed [`feature::PING`]: are you there?
    Ping,
    /// Server → client: the answer to a `Ping`, in order with the acknowledgements.
    Pong,
}

impl Frame {
    /// The frame's type as it appears on the wire (its JSON `type`), for error messages: never
    /// the frame itself, which may be large or hostile.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Welcome { .. } => "welcome",
            Frame::Refused { .. } => "refused",
            Frame::Msg(_) => "msg",
            Frame::Ack { .. } => "ack",
            Frame::Acks { .. } => "acks",
            Frame::Nack { .. } => "nack",
            Frame::Ping => "ping",
            Frame::Pong => "pong",
        }
    }
}

/// Protocol version inside the frames; bumps when frames change incompatibly.
pub const VERSION: u32 = 1;

/// A message as it crosses a peer link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Globally unique, chosen by the sender; with the sender's name, the dedup key. An invalid
    /// one makes the frame invalid (protocol.md §1.2, §4.3).
    pub id: MsgId,
    /// Every recipient of the message (one for a direct message, several for a group send).
    pub to: Vec<Name>,
    /// When the sender accepted it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    pub body: String,
    /// Set when the message was sent to a group conversation: the group's name and owner, so
    /// that every member files it under the same conversation and can answer all (protocol.md
    /// §4.4). Absent for direct messages and from senders that predate it; receivers that
    /// predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<WireGroup>,
}

/// The group a message was sent to: its `name` as its `owner` (the node whose group it is)
/// keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGroup {
    pub owner: Name,
    pub name: Name,
}

/// The borrowed twin of [`Frame::Msg`]: the same JSON, encoded without copying the body.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "msg")]
pub struct MsgRef<'a> {
    pub id: &'a str,
    pub to: &'a [Name],
    pub sent_at_ms: u64,
    pub body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a WireGroup>,
}

/// The JSON error is part of the message, not a `source()` (printed twice with the chain).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not valid JSON for the peer protocol: {0}")]
    Decode(serde_json::Error),
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        FrameError::Decode(e)
    }
}

pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    // Plain data types; serialization cannot fail.
    let _ = crate::envelope::append_json(&mut v, frame);
    v
}

/// A whole frame as it is carried inside the encrypted stream: the u32 big-endian length, then
/// the payload (for tests and simple tools; chatd's link writes frames itself).
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let payload = encode(frame);
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn decode(payload: &[u8]) -> Result<Frame, FrameError> {
    // Hot path: `msg` and `ack` (every message crosses a link as one and comes back as the
    // other) decode straight into a plain struct. The tagged enum buffers every field first;
    // it still decides everything else, errors included, so both paths accept the same frames.
    // (The whole payload must be UTF-8, as for the general path, which checks every string it
    // buffers, ignored ones included.)
    let text = std::str::from_utf8(payload).ok();
    if let Some(text) = text.filter(|t| t.starts_with(r#"{"type":"msg","#)) {
        if let Ok(m) = serde_json::from_str::<FastMsg>(text) {
            return Ok(Frame::Msg(WireMessage {
                id: m.id,
                to: m.to,
                sent_at_ms: m.sent_at_ms,
                body: m.body,
                group: m.group,
            }));
        }
    } else if let Some(text) = text.filter(|t| t.starts_with(r#"{"type":"ack","#)) {
        if let Ok(a) = serde_json::from_str::<FastAck>(text) {
            return Ok(Frame::Ack { id: a.id });
        }
    }
    Ok(serde_json::from_slice(payload)?)
}

/// The `type` of a frame decoded on the hot path.
#[derive(Deserialize)]
enum MsgTag {
    #[serde(rename = "msg")]
    Msg,
}

#[derive(Deserialize)]
enum AckTag {
    #[serde(rename = "ack")]
    Ack,
}

/// `Frame::Msg` as a plain struct (same fields and defaults as [`WireMessage`]).
#[derive(Deserialize)]
struct FastMsg {
    #[serde(rename = "type")]
    _type: MsgTag,
    id: MsgId,
    to: Vec<Name>,
    sent_at_ms: u64,
    body: String,
    #[serde(default)]
    group: Option<WireGroup>,
}

#[derive(Deserialize)]
struct FastAck {
    #[serde(rename = "type")]
    _type: AckTag,
    id: MsgId,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> MsgId {
        MsgId::new(s).unwrap()
    }

    #[test]
    fn a_frames_kind_is_its_wire_type() {
        let name = || Name::new("pb").unwrap();
        let frames = [
            Frame::Hello {
                version: VERSION,
                from: name(),
                to: name(),
                features: vec![],
            },
            Frame::Welcome {
                version: VERSION,
                name: name(),
                features: vec![],
            },
            Frame::Refused {
                code: "c".into(),
                message: "m".into(),
            },
            Frame::Msg(WireMessage {
                id: mid("x"),
                to: vec![name()],
                sent_at_ms: 1,
                body: "b".into(),
                group: None,
            }),
            Frame::Ack { id: mid("x") },
            Frame::Acks {
                count: 1,
                last: mid("x"),
            },
            Frame::Nack {
                id: mid("x"),
                code: "c".into(),
                message: "m".into(),
            },
            Frame::Ping,
            Frame::Pong,
        ];
        for f in frames {
            let json: serde_json::Value = serde_json::from_slice(&encode(&f)).unwrap();
            assert_eq!(json["type"], f.kind());
        }
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame::Msg(WireMessage {
            id: mid("x"),
            to: vec![Name::new("pb").unwrap()],
            sent_at_ms: 1,
            body: "hi\n\u{1F600}".into(),
            group: Some(WireGroup {
                owner: Name::new("pa").unwrap(),
                name: Name::new("ops").unwrap(),
            }),
        });
        assert_eq!(decode(&encode(&f)).unwrap(), f);
        assert!(decode(b"{\"type\":\"msg\"}").is_err());
        assert!(decode(b"\x00\x01").is_err());
    }

    #[test]
    fn a_frame_with_an_invalid_message_id_is_invalid() {
        let long = "x".repeat(crate::msg_id::MAX_MSG_ID + 1);
        let max = "x".repeat(crate::msg_id::MAX_MSG_ID);
        let msg = |id: &str| {
            format!(r#"{{"type":"msg","id":"{id}","to":["pb"],"sent_at_ms":1,"body":"b"}}"#)
        };
        // The hot path and the general one (a field order the hot path does not take).
        let msg_late_id = |id: &str| {
            format!(r#"{{"to":["pb"],"type":"msg","sent_at_ms":1,"body":"b","id":"{id}"}}"#)
        };
        // As JSON text: a tab, a non-ASCII letter, a newline, a NUL, a DEL.
        for bad in [
            "",
            "a b",
            r"tab\t",
            r"caf\u00e9",
            r"nl\n",
            r"nul\u0000",
            "del\u{7f}",
            long.as_str(),
        ] {
            for frame in [
                msg(bad),
                msg_late_id(bad),
                format!(r#"{{"type":"ack","id":"{bad}"}}"#),
                format!(r#"{{"type":"acks","count":2,"last":"{bad}"}}"#),
                format!(r#"{{"type":"nack","id":"{bad}","code":"c","message":"m"}}"#),
            ] {
                assert!(decode(frame.as_bytes()).is_err(), "{frame}");
            }
        }
        for good in ["m1", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", max.as_str()] {
            let Frame::Msg(m) = decode(msg(good).as_bytes()).unwrap() else {
                panic!("not a msg")
            };
            assert_eq!(&*m.id, good);
            assert!(decode(msg_late_id(good).as_bytes()).is_ok());
            let ack = decode(format!(r#"{{"type":"ack","id":"{good}"}}"#).as_bytes()).unwrap();
            assert_eq!(ack, Frame::Ack { id: mid(good) });
        }
    }

    #[test]
    fn hello_features_are_optional_both_ways() {
        // An earlier chatd's Hello (no features) still decodes, and ours without features
        // encodes exactly as before.
        let old = br#"{"type":"hello","version":1,"from":"pa","to":"pb"}"#;
        let hello = decode(old).unwrap();
        assert!(matches!(&hello, Frame::Hello { features, .. } if features.is_empty()));
        assert_eq!(encode(&hello), old);
        let new = Frame::Hello {
            version: VERSION,
            from: Name::new("pa").unwrap(),
            to: Name::new("pb").unwrap(),
            features: vec![feature::ACKS.into()],
        };
        assert_eq!(
            encode(&new),
            br#"{"type":"hello","version":1,"from":"pa","to":"pb","features":["acks"]}"#
        );
        let acks = Frame::Acks {
            count: 3,
            last: mid("m3"),
        };
        assert_eq!(encode(&acks), br#"{"type":"acks","count":3,"last":"m3"}"#);
        assert_eq!(decode(&encode(&acks)).unwrap(), acks);
    }

    #[test]
    fn welcome_features_and_pings_are_compatible() {
        // A Welcome from an earlier chatd (no features) decodes; ours without features encodes
        // as before, so earlier clients read it.
        let old = br#"{"type":"welcome","version":1,"name":"pb"}"#;
        let w = decode(old).unwrap();
        assert!(matches!(&w, Frame::Welcome { features, .. } if features.is_empty()));
        assert_eq!(encode(&w), old);
        let w = Frame::Welcome {
            version: VERSION,
            name: Name::new("pb").unwrap(),
            features: vec![feature::PING.into()],
        };
        assert_eq!(
            encode(&w),
            br#"{"type":"welcome","version":1,"name":"pb","features":["ping"]}"#
        );
        assert_eq!(encode(&Frame::Ping), br#"{"type":"ping"}"#);
        assert_eq!(decode(br#"{"type":"pong"}"#).unwrap(), Frame::Pong);
    }

    #[test]
    fn borrowed_msg_encodes_like_frame_msg() {
        let to = vec![Name::new("pb").unwrap(), Name::new("pc").unwrap()];
        let owned = Frame::Msg(WireMessage {
            id: mid("m1"),
            to: to.clone(),
            sent_at_ms: 7,
            body: "hé \"x\"".into(),
            group: None,
        });
        let borrowed = MsgRef {
            id: "m1",
            to: &to,
            sent_at_ms: 7,
            body: "hé \"x\"",
            group: None,
        };
        assert_eq!(serde_json::to_vec(&borrowed).unwrap(), encode(&owned));
    }

    #[test]
    fn hot_path_decodes_like_the_tagged_enum() {
        let cases: &[&[u8]] = &[
            br#"{"type":"msg","id":"m","to":["pb"],"sent_at_ms":5,"body":"x\n\u00e9"}"#,
            br#"{"type":"msg","id":"m","to":["pb"],"sent_at_ms":5,"body":"x","extra":1}"#,
            br#"{"type":"msg","id":"m","to":["bad name"],"sent_at_ms":5,"body":"x"}"#,
            br#"{"type":"msg","id":"m","to":[],"sent_at_ms":-1,"body":"x"}"#,
            br#"{"type":"msg","id":"m","id":"n","to":[],"sent_at_ms":1,"body":"x"}"#,
            br#"{"type":"msg","id":"m","to":["pb"],"sent_at_ms":5,"body":"x","group":{"owner":"pa","name":"ops"}}"#,
            br#"{"type":"msg","id":"m","to":["pb"],"sent_at_ms":5,"body":"x","group":{"owner":"pa"}}"#,
            br#"{"type":"msg","id":"m","to":["pb"],"sent_at_ms":5,"body":"x","group":null}"#,
            br#"{"type":"ack","id":"m"}"#,
            br#"{"type":"ack","id":"m","type":"nack"}"#,
            br#"{"type":"ack"}"#,
        ];
        for c in cases {
            let slow: Result<Frame, _> = serde_json::from_slice(c);
            let fast = decode(c);
            assert_eq!(
                slow.as_ref().ok(),
                fast.as_ref().ok(),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn worst_case_body_fits_a_frame() {
        let body = "\u{1}".repeat(crate::MAX_BODY_BYTES);
        let f = Frame::Msg(WireMessage {
            id: MsgId::new("i".repeat(crate::msg_id::MAX_MSG_ID)).unwrap(),
            to: vec![],
            sent_at_ms: 0,
            body,
            group: Some(WireGroup {
                owner: Name::new("o".repeat(crate::name::MAX_NAME_LEN)).unwrap(),
                name: Name::new("g".repeat(crate::name::MAX_NAME_LEN)).unwrap(),
            }),
        });
        assert!(encode(&f).len() <= MAX_FRAME);
    }
}
