//! The operator's `registryd release`, run directly on the database (not through a running
//! registryd, which notices the change within a second).

use std::path::Path;
use std::time::Duration;

use peerchat_db::now_ms;
use peerchat_db::rusqlite::{params, OptionalExtension};
use peerchat_proto::registry::SignedRegistration;
use peerchat_proto::Name;

use super::schema::{MIGRATIONS, SAVE_TOMBSTONE};
use super::types::TableError;

/// `registryd release NAME`, run by the database's owner: deletes the name directly in the
/// database (a running registryd notices within a second). Returns whether the name existed.
pub fn release(path: &Path, name: &Name) -> Result<bool, TableError> {
    let mut conn = peerchat_db::open(path, MIGRATIONS)?;
    let tx = conn.transaction()?;
    let row: Option<(Option<String>, i64)> = tx
        .query_row(
            "SELECT signed, last_seq FROM names WHERE name = ?1",
            params![name.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((signed, last_seq)) = row else {
        return Ok(false);
    };
    let key = signed.and_then(|s| serde_json::from_str::<SignedRegistration>(&s).ok());
    if let Some(s) = key {
        tx.execute(
            SAVE_TOMBSTONE,
            params![name.as_str(), s.key.to_hex(), last_seq],
        )?;
    }
    tx.execute("DELETE FROM names WHERE name = ?1", params![name.as_str()])?;
    tx.commit()?;
    Ok(true)
}

/// `registryd release --legacy-offline`: deletes every legacy (seed) record that is not online
/// (not renewed within `ttl`), directly in the database. Returns how many.
pub fn release_legacy_offline(path: &Path, ttl: Duration) -> Result<usize, TableError> {
    let conn = peerchat_db::open(path, MIGRATIONS)?;
    let cutoff = now_ms().saturating_sub(ttl.as_millis() as u64);
    let n = conn.execute(
        "DELETE FROM names WHERE legacy = 1 AND (offline = 1 OR last_seen_ms < ?1)",
        params![cutoff as i64],
    )?;
    Ok(n)
}
