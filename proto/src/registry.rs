//! The registry protocol: JSON lines over TCP (default port 8888).
//!
//! A client may send many requests on one connection (pipelining); replies come in request order,
//! each echoing the request's `id`. The seed's legacy text protocol (`reg NAME PORT`, `get NAME`)
//! shares the port: a connection whose first byte is not `{` is legacy text.

use serde::{Deserialize, Serialize};

use crate::envelope::{ErrorBody, Reply};
use crate::name::Name;

/// Longest request line the registry reads; longer lines are refused and the connection closed.
pub const MAX_LINE: usize = 4 * 1024;

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
}

/// One request line: `{"id":N,"op":"...", ...}`.
pub type RequestLine = crate::envelope::RequestLine<Request>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Register or renew `name` at `host:port`; `host` defaults to the connection's source IP.
    Register {
        name: Name,
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Resolve one name.
    Lookup { name: Name },
    /// Every name with its presence.
    List,
    /// The node is going away; its name and last address stay registered, shown offline.
    Offline { name: Name },
    /// Forget the name entirely.
    Unregister { name: Name },
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
}

/// What the registry knows of one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: Name,
    /// Last known address, `IP:PORT` or `[v6]:PORT`.
    pub address: String,
    /// Renewed within the TTL and not marked offline.
    pub online: bool,
    /// Last registration or renewal, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// Registered through the seed's text protocol.
    #[serde(default)]
    pub legacy: bool,
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

    #[test]
    fn request_lines_round_trip() {
        let line = br#"{"id":7,"op":"register","name":"pa","port":7000}"#;
        let r = parse_request(line).unwrap();
        assert_eq!(r.id, 7);
        assert!(matches!(
            r.request,
            Request::Register {
                port: 7000,
                host: None,
                ..
            }
        ));
        assert!(parse_request(br#"{"id":1,"op":"lookup","name":"bad name"}"#).is_err());
        assert!(parse_request(br#"{"id":1,"op":"nope"}"#).is_err());
        assert!(parse_request(b"\xff\xfe").is_err());
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
