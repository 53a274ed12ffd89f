//! The registry protocol: JSON lines over TCP (default port 8888).
//!
//! A client may send many requests on one connection (pipelining); replies come in request order,
//! each echoing the request's `id`. The seed's legacy text protocol (`reg NAME PORT`, `get NAME`)
//! shares the port: a connection whose first byte is not `{` is legacy text.

use serde::{Deserialize, Serialize};

use crate::envelope::{ErrorBody, Reply};
use crate::identity::{PublicKey, Signature};
use crate::name::Name;

/// Longest request line the registry reads (except `watch`, [`MAX_WATCH_LINE`]); longer lines are
/// refused and the connection closed.
pub const MAX_LINE: usize = 4 * 1024;

/// Most distinct names one `watch` request may carry.
pub const MAX_WATCH_NAMES: usize = 1024;

/// Longest `watch` request line: room for [`MAX_WATCH_NAMES`] names of the longest length
/// (`"name",` each) plus the envelope. Other requests stay within [`MAX_LINE`].
pub const MAX_WATCH_LINE: usize = 80 * 1024;

/// Longest reply line a client reads: a `list` of the registry's default 100,000 names (signed
/// records of about 430 bytes each, some 43 MB) fits.
pub const MAX_REPLY: usize = 64 << 20;

/// How often a watching connection hears a `heartbeat` (when nothing else is sent, and also
/// when something is). A client treats 3 intervals of silence as a dead registry.
pub const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// Stable error codes of the registry.
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const INVALID_NAME: &str = "invalid_name";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const STORAGE: &str = "storage";
    pub const BUSY: &str = "busy";
    /// A rate or size limit (registrations per minute, number of names) was reached.
    pub const LIMITED: &str = "limited";
    /// The name is bound to another key (and no valid rotation was given).
    pub const KEY_MISMATCH: &str = "key_mismatch";
    /// The signature does not verify.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// The sequence number is not higher than the last one accepted for the name (a replay).
    pub const REPLAY: &str = "replay";
    /// The registry's shared store (etcd) is unreachable: lookups are still answered (from
    /// memory), writes are refused; try again later or another registry.
    pub const UNAVAILABLE: &str = "unavailable";
}

/// One request line: `{"id":N,"op":"...", ...}`.
pub type RequestLine = crate::envelope::RequestLine<Request>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Register or renew `name` at `host:port`, signed by `key` over [`Statement::Register`].
    /// `host` defaults to the connection's source IP (an unsigned hint). The first registration
    /// binds the name to `key`; later ones need the same key (or a `rotation` from it) and a
    /// higher `seq`.
    Register {
        name: Name,
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        key: PublicKey,
        seq: u64,
        sig: Signature,
        /// Moves the name from the bound key to `key` (signed by the bound key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotation: Option<Rotation>,
    },
    /// Resolve one name.
    Lookup { name: Name },
    /// Every name with its presence.
    List,
    /// The node is going away; its name and last address stay registered, shown offline.
    /// Signed over [`Statement::Offline`].
    Offline {
        name: Name,
        key: PublicKey,
        seq: u64,
        sig: Signature,
    },
    /// Forget the name entirely (it becomes free for any key). Signed over
    /// [`Statement::Unregister`].
    Unregister {
        name: Name,
        key: PublicKey,
        seq: u64,
        sig: Signature,
    },
    /// Turn the connection into a presence stream for `names` (at most [`MAX_WATCH_NAMES`]
    /// distinct ones; duplicates are ignored): one [`Response::Presence`] per name now, then one
    /// whenever a name's `online` or `address` changes, and a [`Response::Heartbeat`] every
    /// [`WATCH_HEARTBEAT`]. A later `watch` replaces the set; any other request closes the
    /// connection. Not signed.
    Watch { names: Vec<Name> },
    /// The registry's own health: its store and how many names it holds. Not signed.
    Status,
}

/// What a node signs. [`Statement::to_bytes`] is the exact byte string the signature covers:
/// a fixed first line, then `field=value` lines in a fixed order, each ending in `\n`. Names and
/// hosts are validated, so no value can contain a newline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statement<'a> {
    Register {
        name: &'a Name,
        key: &'a PublicKey,
        port: u16,
        host: Option<&'a str>,
        seq: u64,
    },
    Offline {
        name: &'a Name,
        key: &'a PublicKey,
        seq: u64,
    },
    Unregister {
        name: &'a Name,
        key: &'a PublicKey,
        seq: u64,
    },
    /// The holder of `from` hands `name` over to `to`.
    Rotate {
        name: &'a Name,
        from: &'a PublicKey,
        to: &'a PublicKey,
        seq: u64,
    },
}

/// First line of every signed statement (domain separation from anything else a key signs).
pub const STATEMENT_HEADER: &str = "peerchat-registry/1\n";

impl Statement<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::from(STATEMENT_HEADER);
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        };
        match self {
            Statement::Register {
                name,
                key,
                port,
                host,
                seq,
            } => {
                line("op", "register");
                line("name", name.as_str());
                line("key", &key.to_hex());
                line("port", &port.to_string());
                line("host", host.unwrap_or(""));
                line("seq", &seq.to_string());
            }
            Statement::Offline { name, key, seq } | Statement::Unregister { name, key, seq } => {
                let op = if matches!(self, Statement::Offline { .. }) {
                    "offline"
                } else {
                    "unregister"
                };
                line("op", op);
                line("name", name.as_str());
                line("key", &key.to_hex());
                line("seq", &seq.to_string());
            }
            Statement::Rotate {
                name,
                from,
                to,
                seq,
            } => {
                line("op", "rotate");
                line("name", name.as_str());
                line("from", &from.to_hex());
                line("to", &to.to_hex());
                line("seq", &seq.to_string());
            }
        }
        s.into_bytes()
    }
}

/// A key rotation: the holder of `from` hands the name to `to`, signed by `from` over
/// [`Statement::Rotate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub from: PublicKey,
    pub to: PublicKey,
    pub seq: u64,
    pub sig: Signature,
}

impl Rotation {
    pub fn verify(&self, name: &Name) -> bool {
        let st = Statement::Rotate {
            name,
            from: &self.from,
            to: &self.to,
            seq: self.seq,
        };
        self.from.verify(&st.to_bytes(), &self.sig)
    }
}

/// The node's own signed part of a record, exactly as it registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedRegistration {
    pub key: PublicKey,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub seq: u64,
    pub sig: Signature,
}

/// Why a record cannot be trusted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("the record of {0} carries no signature")]
    Unsigned(Name),
    #[error("the signature on the record of {0} is not valid")]
    BadSignature(Name),
    #[error("the address {address} of {name} does not match what the node signed")]
    AddressMismatch { name: Name, address: String },
}

/// Follows `rotations` from `pinned`: true if a chain of valid rotations for `name` leads to
/// `target`. Each step must be signed by the key it leaves.
pub fn rotation_chain_reaches(
    name: &Name,
    pinned: &PublicKey,
    target: &PublicKey,
    rotations: &[Rotation],
) -> bool {
    let mut current = *pinned;
    // Each step moves to a new key; a chain cannot be longer than the list.
    for _ in 0..=rotations.len() {
        if current == *target {
            return true;
        }
        match rotations
            .iter()
            .find(|r| r.from == current && r.verify(name))
        {
            Some(r) => current = r.to,
            None => return false,
        }
    }
    current == *target
}

/// Successful replies (`"ok"` member of the envelope), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Registered {
        /// The address others will use, `IP:PORT` (`[v6]:PORT`).
        address: String,
        /// Renew before this many seconds pass, or the name shows offline.
        ttl_secs: u64,
    },
    Record(Record),
    Records {
        records: Vec<Record>,
    },
    Done,
    /// A watched name's presence (`watch`): `address` is absent when the name is not registered
    /// (`online` is then false).
    Presence {
        name: Name,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// Sent every [`WATCH_HEARTBEAT`] on a watching connection.
    Heartbeat,
    /// The answer to `status`.
    Status(RegistryStatus),
}

/// A registry's health (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// `sqlite` or `etcd`.
    pub store: String,
    /// Whether the store accepts writes now (false: etcd unreachable; lookups still answered,
    /// from memory).
    pub store_ok: bool,
    /// The store's state in words (e.g. the last etcd error).
    pub store_detail: String,
    /// Names this instance holds in memory.
    pub names: u64,
    /// Seconds a registration stays online without renewal.
    pub ttl_secs: u64,
}

/// What the registry knows of one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: Name,
    /// Last known address, `IP:PORT` or `[v6]:PORT`. Without a signed host, the IP is the
    /// registry's unsigned hint (the source address it saw).
    pub address: String,
    /// Renewed within the TTL and not marked offline.
    pub online: bool,
    /// Last registration or renewal, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// Registered through the seed's text protocol (no key, no signature).
    #[serde(default)]
    pub legacy: bool,
    /// The node's signed registration; absent only for legacy records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedRegistration>,
    /// Key rotations of this name, oldest first (bounded), so that peers who pinned an older
    /// key can follow them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<Rotation>,
    /// Highest sequence number the registry accepted for this name (a node whose clock went
    /// backwards continues above it).
    #[serde(default)]
    pub last_seq: u64,
}

impl Record {
    /// Checks the node's signature and that the address is the one it signed (the port always;
    /// the host when it signed one). Returns the key, or `None` for a legacy record.
    pub fn verify(&self) -> Result<Option<PublicKey>, RecordError> {
        if self.legacy {
            return Ok(None);
        }
        let s = self
            .signed
            .as_ref()
            .ok_or_else(|| RecordError::Unsigned(self.name.clone()))?;
        let st = Statement::Register {
            name: &self.name,
            key: &s.key,
            port: s.port,
            host: s.host.as_deref(),
            seq: s.seq,
        };
        if !s.key.verify(&st.to_bytes(), &s.sig) {
            return Err(RecordError::BadSignature(self.name.clone()));
        }
        let matches = match &s.host {
            Some(h) => host_address(h, s.port).as_deref() == Some(self.address.as_str()),
            None => self
                .address
                .rsplit_once(':')
                .is_some_and(|(_, p)| p == s.port.to_string()),
        };
        if !matches {
            return Err(RecordError::AddressMismatch {
                name: self.name.clone(),
                address: self.address.clone(),
            });
        }
        Ok(Some(s.key))
    }
}

pub type RegistryReply = Reply<Response>;

/// Parses one request line; on error, the id to answer with (the client's, when the line is
/// JSON with an `id`) and the error, ready to send back.
pub fn parse_request(line: &[u8]) -> Result<RequestLine, (u64, ErrorBody)> {
    crate::envelope::parse_request_line(line, code::BAD_REQUEST)
}

/// Formats `ip:port` the way addresses appear on the wire (`[v6]:port` for IPv6).
pub fn format_address(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// `host:port` for an explicit host: an IP address (`[v6]:port` for IPv6) or a DNS name
/// (letters, digits, `-` and `.`, at most 253 characters). `None` if `host` is neither.
pub fn host_address(host: &str, port: u16) -> Option<String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(format_address(ip, port));
    }
    let dns_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    dns_ok.then(|| format!("{host}:{port}"))
}

/// A request of the seed's text protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyRequest {
    Reg { name: Name, port: u16 },
    Get { name: Name },
}

/// Parses a seed request (`reg NAME PORT` or `get NAME`, optional trailing `\r\n`).
/// Returns `None` for anything else; the registry answers that with an empty reply.
pub fn parse_legacy(buf: &[u8]) -> Option<LegacyRequest> {
    let text = std::str::from_utf8(buf).ok()?;
    let text = text.trim_end_matches(['\r', '\n']);
    let mut words = text.split(' ');
    let cmd = words.next()?;
    let name = Name::new(words.next()?).ok()?;
    match (cmd, words.next(), words.next()) {
        ("reg", Some(port), None) => Some(LegacyRequest::Reg {
            name,
            port: port.parse().ok().filter(|p| *p != 0)?,
        }),
        ("get", None, None) => Some(LegacyRequest::Get { name }),
        _ => None,
    }
}

/// True once `buf` holds a complete seed request, so the registry need not wait for more bytes.
pub fn legacy_complete(buf: &[u8]) -> bool {
    parse_legacy(buf).is_some() && !buf.ends_with(b"\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> (ed25519_dalek::SigningKey, PublicKey) {
        let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let p = PublicKey(k.verifying_key().to_bytes());
        (k, p)
    }

    fn sign(k: &ed25519_dalek::SigningKey, st: Statement<'_>) -> Signature {
        use ed25519_dalek::Signer;
        Signature(k.sign(&st.to_bytes()).to_bytes())
    }

    #[test]
    fn request_lines_round_trip() {
        let (_, key) = signer(1);
        let line = format!(
            r#"{{"id":7,"op":"register","name":"pa","port":7000,"key":"{key}","seq":3,"sig":"{}"}}"#,
            "00".repeat(64)
        );
        let r = parse_request(line.as_bytes()).unwrap();
        assert_eq!(r.id, 7);
        assert!(matches!(
            r.request,
            Request::Register {
                port: 7000,
                host: None,
                seq: 3,
                ..
            }
        ));
        // Unsigned registrations are not requests of this protocol.
        assert!(parse_request(br#"{"id":1,"op":"register","name":"pa","port":7000}"#).is_err());
        assert!(parse_request(br#"{"id":1,"op":"lookup","name":"bad name"}"#).is_err());
        assert!(parse_request(br#"{"id":1,"op":"nope"}"#).is_err());
        assert!(parse_request(b"\xff\xfe").is_err());
    }

    #[test]
    fn watch_lines_round_trip() {
        let r = parse_request(br#"{"id":4,"op":"watch","names":["pa","pb","pa"]}"#).unwrap();
        assert_eq!(r.id, 4);
        let names = vec![
            Name::new("pa").unwrap(),
            Name::new("pb").unwrap(),
            Name::new("pa").unwrap(),
        ];
        assert_eq!(r.request, Request::Watch { names });
        let back: RequestLine = serde_json::from_slice(&crate::envelope::to_line(&r)).unwrap();
        assert_eq!(back, r);
        assert!(parse_request(br#"{"id":4,"op":"watch","names":["bad name"]}"#).is_err());
        assert!(parse_request(br#"{"id":4,"op":"watch"}"#).is_err());

        let cases = [
            (
                Response::Presence {
                    name: Name::new("pa").unwrap(),
                    online: true,
                    address: Some("10.0.0.2:7000".into()),
                },
                r#"{"type":"presence","name":"pa","online":true,"address":"10.0.0.2:7000"}"#,
            ),
            (
                Response::Presence {
                    name: Name::new("pb").unwrap(),
                    online: false,
                    address: None,
                },
                r#"{"type":"presence","name":"pb","online":false}"#,
            ),
            (Response::Heartbeat, r#"{"type":"heartbeat"}"#),
        ];
        for (value, json) in cases {
            assert_eq!(serde_json::to_string(&value).unwrap(), json);
            assert_eq!(serde_json::from_str::<Response>(json).unwrap(), value);
        }
        let reply: RegistryReply =
            serde_json::from_str(r#"{"id":4,"ok":{"type":"heartbeat"}}"#).unwrap();
        assert_eq!(reply.id, 4);
        assert_eq!(reply.outcome.into_result().unwrap(), Response::Heartbeat);
    }

    #[test]
    fn records_verify_only_as_signed() {
        let (k, key) = signer(2);
        let name = Name::new("pa").unwrap();
        let sig = sign(
            &k,
            Statement::Register {
                name: &name,
                key: &key,
                port: 7000,
                host: None,
                seq: 5,
            },
        );
        let mut rec = Record {
            name: name.clone(),
            address: "10.0.0.1:7000".into(),
            online: true,
            last_seen_ms: 0,
            legacy: false,
            signed: Some(SignedRegistration {
                key,
                port: 7000,
                host: None,
                seq: 5,
                sig,
            }),
            rotations: vec![],
            last_seq: 5,
        };
        assert_eq!(rec.verify(), Ok(Some(key)));
        rec.address = "10.0.0.1:7001".into();
        assert!(matches!(
            rec.verify(),
            Err(RecordError::AddressMismatch { .. })
        ));
        rec.address = "10.0.0.1:7000".into();
        rec.signed.as_mut().unwrap().seq = 6;
        assert!(matches!(rec.verify(), Err(RecordError::BadSignature(_))));
        rec.signed = None;
        assert!(matches!(rec.verify(), Err(RecordError::Unsigned(_))));
    }

    #[test]
    fn rotation_chains() {
        let name = Name::new("pa").unwrap();
        let (k1, p1) = signer(1);
        let (k2, p2) = signer(2);
        let (_, p3) = signer(3);
        let rot = |k: &ed25519_dalek::SigningKey, from: PublicKey, to: PublicKey, seq| Rotation {
            from,
            to,
            seq,
            sig: sign(
                k,
                Statement::Rotate {
                    name: &name,
                    from: &from,
                    to: &to,
                    seq,
                },
            ),
        };
        let chain = vec![rot(&k1, p1, p2, 1), rot(&k2, p2, p3, 2)];
        assert!(rotation_chain_reaches(&name, &p1, &p3, &chain));
        assert!(rotation_chain_reaches(&name, &p2, &p3, &chain));
        assert!(!rotation_chain_reaches(&name, &p3, &p1, &chain));
        // A rotation signed by the wrong key does not count.
        let forged = vec![rot(&k2, p1, p3, 1)];
        assert!(!rotation_chain_reaches(&name, &p1, &p3, &forged));
        // Nor does one for another name.
        let other = Name::new("pb").unwrap();
        assert!(!rotation_chain_reaches(&other, &p1, &p3, &chain));
    }

    #[test]
    fn legacy_requests() {
        assert_eq!(
            parse_legacy(b"reg pa 1234"),
            Some(LegacyRequest::Reg {
                name: Name::new("pa").unwrap(),
                port: 1234
            })
        );
        assert_eq!(
            parse_legacy(b"get pb\r\n"),
            Some(LegacyRequest::Get {
                name: Name::new("pb").unwrap()
            })
        );
        assert_eq!(parse_legacy(b"reg pa"), None);
        assert_eq!(parse_legacy(b"reg pa 0"), None);
        assert_eq!(parse_legacy(b"get"), None);
        // The seed writes a request in one write without a terminator, so a parseable request is
        // taken as complete; a dangling `\r` means the `\n` is still on its way.
        assert!(legacy_complete(b"get p"));
        assert!(!legacy_complete(b"get p\r"));
        assert!(legacy_complete(b"get p\r\n"));
    }

    #[test]
    fn explicit_hosts() {
        assert_eq!(host_address("::1", 1).as_deref(), Some("[::1]:1"));
        assert_eq!(host_address("[::1]", 1).as_deref(), Some("[::1]:1"));
        assert_eq!(
            host_address("chat.example.org", 7000).as_deref(),
            Some("chat.example.org:7000")
        );
        assert_eq!(host_address("bad host", 1), None);
        assert_eq!(host_address("-x", 1), None);
        assert_eq!(host_address("", 1), None);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(format_address("::1".parse().unwrap(), 7000), "[::1]:7000");
        assert_eq!(
            format_address("10.0.0.1".parse().unwrap(), 80),
            "10.0.0.1:80"
        );
    }
}
