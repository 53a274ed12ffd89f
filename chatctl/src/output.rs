//! Printing: human text or one JSON object per line. A closed stdout (`| head`) ends the
//! program quietly with status 0 (`send` carries on instead, see [`keep_going_without_stdout`]).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::exit::Failure;

/// Set by [`keep_going_without_stdout`].
static STDOUT_OPTIONAL: AtomicBool = AtomicBool::new(false);
/// stdout was found closed (with [`STDOUT_OPTIONAL`]): nothing more is written to it.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// For commands whose output only reports on work that must be finished (`send`): a closed
/// stdout no longer ends the program; later output is dropped and the command runs to its own
/// exit status, so `chatctl send -l … | head` never drops input behind a status 0.
pub fn keep_going_without_stdout() {
    STDOUT_OPTIONAL.store(true, Ordering::Relaxed);
}

/// Writes one line to stdout; exits quietly if the reader went away (unless
/// [`keep_going_without_stdout`] was called).
pub fn line(s: &str) {
    // After the lines kept for a batch, never before them.
    flush();
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{s}").and_then(|_| out.flush()).is_err() {
        if STDOUT_OPTIONAL.load(Ordering::Relaxed) {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            return;
        }
        std::process::exit(0);
    }
}

thread_local! {
    /// Lines kept by [`line_unflushed`]. (Rust's stdout writes at every `\n`.)
    static PENDING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Like [`line`] (`s` ends with its `\n`), but kept until [`flush`] or 64 KiB: for a follower
/// in a burst, which flushes once the burst is printed, so the burst costs one write.
pub fn line_unflushed(s: &[u8]) {
    let full = PENDING.with_borrow_mut(|p| {
        p.extend_from_slice(s);
        p.len() >= 64 * 1024
    });
    if full {
        flush();
    }
}

/// Writes out what [`line_unflushed`] kept, in one write; if the reader went away, exits
/// quietly (or, after [`keep_going_without_stdout`], drops the output from then on).
pub fn flush() {
    PENDING.with_borrow_mut(|p| {
        if p.is_empty() || STDOUT_GONE.load(Ordering::Relaxed) {
            p.clear();
            return;
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(p).and_then(|_| out.flush()).is_err() {
            if STDOUT_OPTIONAL.load(Ordering::Relaxed) {
                STDOUT_GONE.store(true, Ordering::Relaxed);
            } else {
                std::process::exit(0);
            }
        }
        p.clear();
    });
}

/// One value as a JSON line, unflushed (see [`line_unflushed`]). Encoded with the same encoder
/// as chatd's lines (sonic-rs: bodies are escaped 32 bytes at a time).
pub fn json_unflushed<T: Serialize>(v: &T) {
    let mut buf = Vec::with_capacity(256);
    peerchat_proto::envelope::append_json(&mut buf, v).unwrap_or_else(|e| {
        buf = format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}").into_bytes();
    });
    buf.push(b'\n');
    line_unflushed(&buf);
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
