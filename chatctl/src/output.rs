//! Printing: human text or one JSON object per line. A closed stdout (`| head`) ends the
//! program quietly with status 0.

use std::io::Write;

use serde::Serialize;

use crate::exit::Failure;

/// Writes one line to stdout; exits quietly if the reader went away.
pub fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{s}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

pub fn json<T: Serialize>(v: &T) {
    line(&serde_json::to_string(v).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
    }));
}

pub fn failure(json_mode: bool, f: &Failure) {
    if json_mode {
        json(&serde_json::json!({"error": {"code": f.code, "message": f.message}}));
    } else {
        // The message may quote a peer or the registry.
        eprintln!(
            "chatctl: {}",
            crate::safe_text::visible(&f.message, crate::safe_text::INDENT)
        );
    }
}
