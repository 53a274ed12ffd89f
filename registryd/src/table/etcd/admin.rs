//! The operator's commands on an etcd store, run directly against etcd (running instances see
//! the change through their watch): `registryd release NAME` and `--legacy-offline`.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use peerchat_proto::Name;

use super::keys::{decimal, KeyKind, Keys, Stored};
use super::{bounded, connect};
use crate::store_url::EtcdUrl;
use crate::table::types::TableError;

/// Attempts before giving up when registryd instances keep changing the same keys.
const ATTEMPTS: u32 = 20;

/// Deletes `name` and its lease key, keeps its key's last sequence number as a tombstone and
/// counts it out; one transaction comparing what it read. Returns whether the name existed.
pub(crate) async fn release(url: &EtcdUrl, name: &Name) -> Result<bool, TableError> {
    let client = connect(url).await?;
    let keys = Keys::new(&url.prefix);
    for _ in 0..ATTEMPTS {
        if let Some(found) = release_once(&client, &keys, name).await? {
            return Ok(found);
        }
    }
    Err(TableError::Contention(ATTEMPTS))
}

/// `Some(existed)`, or `None` when something changed between the read and the transaction.
async fn release_once(
    client: &Client,
    keys: &Keys,
    name: &Name,
) -> Result<Option<bool>, TableError> {
    let mut kv = client.kv_client();
    let rec = bounded(kv.get(keys.name(name), None)).await?;
    let Some(rec) = rec.kvs().first().cloned() else {
        return Ok(Some(false));
    };
    let count = bounded(kv.get(keys.count(), None)).await?;
    let (n, count_rev) = count
        .kvs()
        .first()
        .map_or((0, 0), |c| (decimal(c.value()), c.mod_revision()));
    let mut compares = vec![
        Compare::mod_revision(keys.name(name), CompareOp::Equal, rec.mod_revision()),
        Compare::mod_revision(keys.count(), CompareOp::Equal, count_rev),
    ];
    let mut ops = vec![
        TxnOp::delete(keys.name(name), None),
        TxnOp::delete(keys.live(name), None),
        TxnOp::put(keys.count(), n.saturating_sub(1).to_string(), None),
    ];
    let stored: Option<Stored> = serde_json::from_slice(rec.value()).ok();
    if let Some(signed) = stored.as_ref().and_then(|s| s.signed.as_ref()) {
        let tomb = keys.tombstone(name, &signed.key);
        let old = bounded(kv.get(tomb.clone(), None)).await?;
        let (old_seq, old_rev) = old
            .kvs()
            .first()
            .map_or((0, 0), |t| (decimal(t.value()), t.mod_revision()));
        let last = stored.as_ref().map_or(0, |s| s.last_seq).max(old_seq);
        compares.push(Compare::mod_revision(
            tomb.clone(),
            CompareOp::Equal,
            old_rev,
        ));
        ops.push(TxnOp::put(tomb, last.to_string(), None));
    }
    let resp = bounded(kv.txn(Txn::new().when(compares).and_then(ops))).await?;
    Ok(resp.succeeded().then_some(true))
}

/// Deletes every seed (legacy) record that is not online (marked offline, or its lease ran
/// out). Returns how many.
pub(crate) async fn release_legacy_offline(url: &EtcdUrl) -> Result<usize, TableError> {
    let client = connect(url).await?;
    let keys = Keys::new(&url.prefix);
    let mut kv = client.kv_client().max_decoding_message_size(64 << 20);
    let all = bounded(kv.get(keys.names_dir(), Some(GetOptions::new().with_prefix()))).await?;
    let live = bounded(kv.get(
        keys.live_dir(),
        Some(GetOptions::new().with_prefix().with_keys_only()),
    ))
    .await?;
    let live: std::collections::HashSet<&str> = live
        .kvs()
        .iter()
        .filter_map(|k| match keys.parse(k.key()) {
            Some(KeyKind::Live(n)) => Some(n),
            _ => None,
        })
        .collect();
    let mut released = 0;
    for rec in all.kvs() {
        let Some(KeyKind::Name(n)) = keys.parse(rec.key()) else {
            continue;
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(rec.value()) else {
            continue;
        };
        if !stored.legacy || (!stored.offline && live.contains(n)) {
            continue;
        }
        // Only if unchanged since read, and not online: a renewal in between keeps it.
        for _ in 0..ATTEMPTS {
            let count = bounded(kv.get(keys.count(), None)).await?;
            let (c, count_rev) = count
                .kvs()
                .first()
                .map_or((0, 0), |c| (decimal(c.value()), c.mod_revision()));
            let txn = Txn::new()
                .when(vec![
                    Compare::mod_revision(rec.key(), CompareOp::Equal, rec.mod_revision()),
                    Compare::version(format!("{}{n}", keys.live_dir()), CompareOp::Equal, 0),
                    Compare::mod_revision(keys.count(), CompareOp::Equal, count_rev),
                ])
                .and_then(vec![
                    TxnOp::delete(rec.key(), None),
                    TxnOp::put(keys.count(), c.saturating_sub(1).to_string(), None),
                ])
                .or_else(vec![
                    TxnOp::get(rec.key(), None),
                    TxnOp::get(format!("{}{n}", keys.live_dir()), None),
                ]);
            let resp = bounded(kv.txn(txn)).await?;
            if resp.succeeded() {
                released += 1;
                break;
            }
            // Changed or online now: keep it. Only the counter moved: try again.
            let gets: Vec<Option<i64>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|k| k.mod_revision()),
                    _ => None,
                })
                .collect();
            if gets != [Some(rec.mod_revision()), None] {
                break;
            }
        }
    }
    Ok(released)
}
