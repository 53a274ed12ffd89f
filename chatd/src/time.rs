//! Timestamps as users see them: RFC 3339, UTC, milliseconds.

use std::time::{Duration, UNIX_EPOCH};

pub fn rfc3339(ms: u64) -> String {
    let mut s = String::with_capacity(24);
    rfc3339_into(&mut s, ms);
    s
}

/// [`rfc3339`] into `out` (replacing what it held), so that a hot loop can reuse one buffer.
pub fn rfc3339_into(out: &mut String, ms: u64) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}",
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
    );
}
