//! `registryd migrate --from sqlite:PATH --to etcd://...`: copies every record and tombstone
//! of an SQLite registry into an empty etcd prefix. Names come over offline (their presence is
//! a lease, granted at each node's next renewal), with their keys, sequence numbers and
//! rotations.

use std::collections::HashMap;
use std::path::Path;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use peerchat_db::rusqlite::params;

use super::etcd::keys::{Keys, Stored};
use super::etcd::{bounded, connect};
use super::schema::{load_map, MIGRATIONS};
use super::types::TableError;
use crate::store_url::EtcdUrl;

/// Keys written per transaction (below etcd's default `--max-txn-ops` of 128).
const PER_TXN: usize = 100;

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub names: usize,
    pub tombstones: usize,
}

pub async fn migrate(from: &Path, to: &EtcdUrl) -> Result<Migrated, TableError> {
    let (map, tombstones) = read_sqlite(from)?;
    let client = connect(to).await?;
    let keys = Keys::new(&to.prefix);
    let mut kv = client.kv_client();
    let held = bounded(kv.get(
        keys.all(),
        Some(GetOptions::new().with_prefix().with_count_only()),
    ))
    .await?;
    if held.count() > 0 {
        return Err(TableError::Unavailable(format!(
            "{to} already holds {} keys; migrate only into an empty prefix (another PREFIX in the URL, or delete it with `etcdctl del --prefix`)",
            held.count()
        )));
    }
    let mut puts: Vec<(String, Vec<u8>)> = Vec::with_capacity(map.len() + tombstones.len());
    for (name, entry) in &map {
        puts.push((keys.name(name), Stored::of(entry).to_json()));
    }
    for ((name, key), seq) in &tombstones {
        puts.push((
            format!("{}tombstones/{name}/{key}", keys.all()),
            seq.to_string().into_bytes(),
        ));
    }
    for chunk in puts.chunks(PER_TXN) {
        // Each key only if still absent: a registryd already serving this prefix wins.
        let compares: Vec<Compare> = chunk
            .iter()
            .map(|(k, _)| Compare::version(k.clone(), CompareOp::Equal, 0))
            .collect();
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
            .collect();
        let resp = bounded(kv.txn(Txn::new().when(compares).and_then(ops))).await?;
        if !resp.succeeded() {
            return Err(TableError::Contention(1));
        }
    }
    let count = Txn::new()
        .when(vec![Compare::version(keys.count(), CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(keys.count(), map.len().to_string(), None)]);
    if !bounded(kv.txn(count)).await?.succeeded() {
        return Err(TableError::Contention(1));
    }
    Ok(Migrated {
        names: map.len(),
        tombstones: tombstones.len(),
    })
}

type Tombstones = HashMap<(String, String), u64>;

fn read_sqlite(
    path: &Path,
) -> Result<
    (
        HashMap<peerchat_proto::Name, super::types::Entry>,
        Tombstones,
    ),
    TableError,
> {
    if !path.exists() {
        return Err(TableError::NotFoundFile(path.display().to_string()));
    }
    let conn = peerchat_db::open(path, MIGRATIONS)?;
    let mut map = HashMap::new();
    load_map(&conn, &mut map)?;
    let mut tombstones = HashMap::new();
    let mut stmt = conn.prepare("SELECT name, key, last_seq FROM tombstones")?;
    let rows = stmt.query_map(params![], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (name, key, seq) = row?;
        tombstones.insert((name, key), seq as u64);
    }
    Ok((map, tombstones))
}
