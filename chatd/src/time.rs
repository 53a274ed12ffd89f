//! Timestamps as users see them: RFC 3339, UTC, milliseconds.

use std::time::{Duration, UNIX_EPOCH};

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
