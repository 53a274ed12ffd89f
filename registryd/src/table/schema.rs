//! The database: its migrations, the tombstone statement, reading it into the map.

use std::collections::HashMap;

use peerchat_db::rusqlite::{self, Connection};
use peerchat_proto::Name;

use super::types::{Entry, Lease};

/// Append-only: never edit an entry, add one.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE names (
        name TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        offline INTEGER NOT NULL DEFAULT 0,
        legacy INTEGER NOT NULL DEFAULT 0,
        first_registered_ms INTEGER NOT NULL
    ) STRICT;",
    // Signed registrations: the node's signed part (JSON of `SignedRegistration`), the highest
    // sequence number accepted, and the name's key rotations (JSON list). Rows from before have
    // no key and are taken over by the first signed registration.
    "ALTER TABLE names ADD COLUMN signed TEXT;
     ALTER TABLE names ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE names ADD COLUMN rotations TEXT NOT NULL DEFAULT '[]';",
    // The last sequence number of each key a name had when it was unregistered or released, so
    // that an old signed registration cannot be replayed to take the name back.
    "CREATE TABLE tombstones (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (name, key)
    ) STRICT, WITHOUT ROWID;",
    // The source address of each seed (legacy) registration, for the per-address cap
    // (`--max-legacy-per-source`). NULL for signed records and legacy rows from before.
    "ALTER TABLE names ADD COLUMN source TEXT;
     CREATE INDEX names_legacy_source ON names (source) WHERE legacy = 1;",
];

pub(super) const SAVE_TOMBSTONE: &str =
    "INSERT INTO tombstones (name, key, last_seq) VALUES (?1, ?2, ?3)
     ON CONFLICT(name, key) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)";

pub(super) fn data_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Reads every row into `map`. Rows that do not parse (edited by hand) are skipped.
pub(super) fn load_map(
    conn: &Connection,
    map: &mut HashMap<Name, Entry>,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT name, address, last_seen_ms, offline, legacy, signed, last_seq, rotations, source
         FROM names",
    )?;
    let rows = stmt.query_map([], |r| {
        let signed: Option<String> = r.get(5)?;
        let rotations: String = r.get(7)?;
        Ok((
            r.get::<_, String>(0)?,
            Entry {
                address: r.get(1)?,
                last_seen_ms: r.get::<_, i64>(2)? as u64,
                offline: r.get(3)?,
                legacy: r.get(4)?,
                signed: signed.and_then(|s| serde_json::from_str(&s).ok()),
                last_seq: r.get::<_, i64>(6)? as u64,
                rotations: serde_json::from_str(&rotations).unwrap_or_default(),
                source: r.get(8)?,
                lease: Lease::Clock,
            },
        ))
    })?;
    for row in rows {
        let (name, entry) = row?;
        if let Ok(name) = Name::new(name) {
            map.insert(name, entry);
        }
    }
    Ok(())
}
