//! The persistent peer cache: the last address each name resolved to ("last known good"), so a
//! node keeps reaching known peers while the registry is down, across restarts too.

use peerchat_db::rusqlite::params;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct CachedPeer {
    pub name: String,
    pub address: String,
    pub legacy: bool,
    pub resolved_at_ms: u64,
    /// Verified key of the record (hex); `None` for legacy peers.
    pub key: Option<String>,
}

impl Store {
    pub async fn save_peer(&self, p: CachedPeer) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO peers (name, address, legacy, resolved_at_ms, key) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET address = ?2, legacy = ?3, resolved_at_ms = ?4, key = ?5",
            )?
            .execute(params![
                p.name,
                p.address,
                p.legacy,
                p.resolved_at_ms as i64,
                p.key
            ])?;
            Ok(())
        })
        .await
    }

    pub async fn forget_peer(&self, name: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached("DELETE FROM peers WHERE name = ?1")?
                .execute(params![name])?;
            Ok(())
        })
        .await
    }

    pub async fn load_peers(&self) -> Result<Vec<CachedPeer>, StoreError> {
        self.call(|conn| {
            Ok(conn
                .prepare(
                    "SELECT name, address, legacy, resolved_at_ms, key FROM peers ORDER BY name",
                )?
                .query_map([], |r| {
                    Ok(CachedPeer {
                        name: r.get(0)?,
                        address: r.get(1)?,
                        legacy: r.get(2)?,
                        resolved_at_ms: r.get::<_, i64>(3)? as u64,
                        key: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}

impl Store {
    /// Every pinned name → key (hex).
    pub async fn load_pins(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|conn| {
            Ok(conn
                .prepare("SELECT name, key FROM pins")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Pins `name` to `key` (hex), replacing any earlier pin.
    pub async fn save_pin(&self, name: String, key: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO pins (name, key, pinned_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET key = ?2, pinned_at_ms = ?3",
            )?
            .execute(params![name, key, peerchat_db::now_ms() as i64])?;
            Ok(())
        })
        .await
    }

    pub async fn forget_pin(&self, name: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached("DELETE FROM pins WHERE name = ?1")?
                .execute(params![name])?;
            Ok(())
        })
        .await
    }

    /// `PRAGMA integrity_check`: `["ok"]` or the problems found.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.call(|conn| {
            Ok(conn
                .prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}
