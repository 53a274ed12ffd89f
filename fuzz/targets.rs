//! The body of every fuzz target, shared by the cargo-fuzz binaries in `fuzz/fuzz_targets/` and
//! the stable corpus replay test `proto/tests/fuzz_corpus.rs` (both include this file with
//! `#[path]`), so the committed corpus is replayed through exactly the code that was fuzzed.
//!
//! Each function must not panic for any input; a panic is a bug in `peerchat-proto`.

// Each fuzz binary uses only one of these functions.
#![allow(dead_code)]

use peerchat_proto::{control, peer, registry};

/// `peer::decode` on the whole input, and, if the input starts with a big-endian u32 length
/// `N <= peer::MAX_FRAME` followed by at least `N` bytes, on those `N` bytes (a frame as it
/// arrives on a link). A decoded frame must survive `encode` and decode back to itself.
pub fn peer_frame(data: &[u8]) {
    decode_frame(data);
    if let Some((len, rest)) = data.split_first_chunk::<4>() {
        let n = u32::from_be_bytes(*len) as usize;
        if n <= peer::MAX_FRAME && rest.len() >= n {
            decode_frame(&rest[..n]);
        }
    }
}

fn decode_frame(payload: &[u8]) {
    // The hot-path decoder (msg, ack) must agree with the general one on every input.
    let general: Option<peer::Frame> = serde_json::from_slice(payload).ok();
    assert_eq!(
        peer::decode(payload).ok(),
        general,
        "the hot path and the tagged enum disagree"
    );
    if let Ok(frame) = peer::decode(payload) {
        let again = peer::decode(&peer::encode(&frame)).expect("re-encoded frame decodes");
        assert_eq!(again, frame, "frame changed across encode/decode");
    }
}

/// `control::parse_request`; a request it accepts must serialize and parse back unchanged.
pub fn control_request(data: &[u8]) {
    // The `send` hot path must agree with the general parser on every input.
    let general = peerchat_proto::envelope::parse_request_line::<control::Request>(data, "x");
    assert_eq!(
        control::parse_request(data).ok(),
        general.ok(),
        "the send hot path and the general parser disagree"
    );
    if let Ok(req) = control::parse_request(data) {
        let line = serde_json::to_vec(&req).expect("control request serializes");
        let again = control::parse_request(&line).expect("re-serialized control request parses");
        assert_eq!(again, req, "control request changed across a round trip");
    }
}

/// `registry::parse_request`; a request it accepts must serialize and parse back unchanged.
pub fn registry_request(data: &[u8]) {
    if let Ok(req) = registry::parse_request(data) {
        let line = serde_json::to_vec(&req).expect("registry request serializes");
        let again = registry::parse_request(&line).expect("re-serialized registry request parses");
        assert_eq!(again, req, "registry request changed across a round trip");
    }
}

/// `registry::parse_legacy` and `registry::legacy_complete` (the seed's text protocol); a
/// request called complete must also parse.
pub fn registry_legacy(data: &[u8]) {
    let parsed = registry::parse_legacy(data);
    let complete = registry::legacy_complete(data);
    assert!(!complete || parsed.is_some(), "complete but unparseable");
}
