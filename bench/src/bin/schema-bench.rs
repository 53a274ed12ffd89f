//! schema-bench: the CPU cost per message of chatd's SQLite writes, and of alternatives to them.
//!
//! chat-bench shows that the sender's database thread is the busiest stage of a 64 B stream.
//! This program isolates what that thread does per message (insert the `outbox` row, insert the
//! `deliveries` row, and later the range update to `delivered`; on the recipient, the `inbox`
//! insert) and times it with `synchronous=OFF` in a temporary directory, so that only CPU is
//! measured, not the disk. The statements are chatd's own (`chatd::INSERT_OUTBOX`,
//! `INSERT_DELIVERY`, `DELIVERED_RANGE`, `ADVANCE_FLOOR_PAST`, `INSERT_INBOX`; the seq floor
//! bound to 0, as in normal operation). The "shipped" tables are those of chatd's migration 7
//! (restated here: update both together): no `deliveries_pending` index, a per-recipient
//! pending floor moved after every `delivered` update. "schema 6" is the one before it, with
//! the partial index; the others drop one feature each, to price it.
//! Run: `target/release/schema-bench`.

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rusqlite::{params, Connection};

/// Per-message CPU cost of chatd's SQLite writes and of schema alternatives (see the source).
#[derive(Parser)]
struct Args {
    /// Messages per measurement
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages per transaction (chatd's group commit under load is a few hundred)
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Rounds; the median is printed
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const OUTBOX: &str = "CREATE TABLE outbox (seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE, recipients TEXT NOT NULL, body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL) STRICT;";
const DELIVERIES: &str = "CREATE TABLE deliveries (
    out_seq INTEGER NOT NULL, recipient TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'queued' OR state = 'sent' OR state = 'delivered'
        OR state = 'failed' OR state = 'cancelled'),
    attempts INTEGER NOT NULL DEFAULT 0, final INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    updated_at_ms INTEGER NOT NULL, PRIMARY KEY (out_seq, recipient)) STRICT, WITHOUT ROWID;
    CREATE TABLE pending_floor (recipient TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL)
    STRICT, WITHOUT ROWID;";
const DELIVERIES_6: &str = "CREATE TABLE deliveries (
    out_seq INTEGER NOT NULL, recipient TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'queued' OR state = 'sent' OR state = 'delivered'
        OR state = 'failed' OR state = 'cancelled'),
    attempts INTEGER NOT NULL DEFAULT 0, final INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    updated_at_ms INTEGER NOT NULL, PRIMARY KEY (out_seq, recipient)) STRICT, WITHOUT ROWID;";
const PENDING: &str = "CREATE INDEX deliveries_pending ON deliveries(recipient, out_seq)
    WHERE state IN ('queued','sent') AND final = 0;";
const INBOX: &str = "CREATE TABLE inbox (seq INTEGER PRIMARY KEY,
    sender TEXT NOT NULL, msg_id TEXT NOT NULL, recipients TEXT NOT NULL, body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL, received_at_ms INTEGER NOT NULL,
    authenticated INTEGER NOT NULL, UNIQUE (sender, msg_id)) STRICT;";
const INBOX_BY_SENDER: &str = "CREATE INDEX inbox_by_sender ON inbox(sender, seq);";

struct Variant {
    name: &'static str,
    ddl: String,
    foreign_keys: bool,
    /// Sender side (outbox, maybe deliveries) or recipient side (inbox).
    side: Side,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// `floor`: schema 7's pending floor is moved after the `delivered` update.
    Sender {
        deliveries: bool,
        floor: bool,
    },
    Recipient,
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "sender, shipped (schema 7)",
            ddl: format!("{OUTBOX}{DELIVERIES}"),
            foreign_keys: true,
            side: Side::Sender {
                deliveries: true,
                floor: true,
            },
        },
        Variant {
            name: "sender, schema 6",
            ddl: format!("{OUTBOX}{DELIVERIES_6}{PENDING}"),
            foreign_keys: true,
            side: Side::Sender {
                deliveries: true,
                floor: false,
            },
        },
        Variant {
            name: "sender, outbox row only",
            ddl: OUTBOX.to_string(),
            foreign_keys: true,
            side: Side::Sender {
                deliveries: false,
                floor: false,
            },
        },
        Variant {
            name: "recipient, shipped (schema 7)",
            ddl: format!("{INBOX}{INBOX_BY_SENDER}"),
            foreign_keys: true,
            side: Side::Recipient,
        },
        Variant {
            name: "recipient, no inbox_by_sender",
            ddl: INBOX.to_string(),
            foreign_keys: true,
            side: Side::Recipient,
        },
    ]
}

/// Microseconds per message: (all of it, of which the `delivered` update).
fn measure(dir: &std::path::Path, v: &Variant, args: &Args) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("schema-bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = Connection::open(&path).context("opening the database")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "foreign_keys", v.foreign_keys)?;
    conn.execute_batch(&v.ddl)?;
    let body = "x".repeat(64);
    let ids: Vec<String> = (0..args.messages)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let start = Instant::now();
    let mut in_update = 0.0;
    for chunk in ids.chunks(args.batch.max(1)) {
        let tx = conn.unchecked_transaction()?;
        let (mut first, mut last) = (0i64, 0i64);
        for id in chunk {
            match v.side {
                Side::Sender { deliveries, .. } => {
                    tx.prepare_cached(chatd::INSERT_OUTBOX)?
                        .execute(params![id, "[\"b\"]", body, 1i64, 0i64])?;
                    let seq = tx.last_insert_rowid();
                    if deliveries {
                        tx.prepare_cached(chatd::INSERT_DELIVERY)?.execute(params![
                            seq,
                            "b",
                            "queued",
                            None::<String>,
                            1i64
                        ])?;
                    }
                    if first == 0 {
                        first = seq;
                    }
                    last = seq;
                }
                Side::Recipient => {
                    tx.prepare_cached(chatd::INSERT_INBOX)?
                        .execute(params!["a", id, "[\"b\"]", body, 1i64, 2i64, true, 0i64])?;
                }
            }
        }
        if let Side::Sender {
            deliveries: true,
            floor,
        } = v.side
        {
            // What chatd's lazy `delivered` job does for a window of acknowledgements.
            let t = Instant::now();
            tx.prepare_cached(chatd::DELIVERED_RANGE)?
                .execute(params!["b", first, last, 2i64])?;
            if floor {
                tx.prepare_cached(chatd::ADVANCE_FLOOR_PAST)?
                    .execute(params!["b", first, last])?;
            }
            in_update += t.elapsed().as_secs_f64();
        }
        tx.commit()?;
    }
    let n = args.messages.max(1) as f64;
    Ok((start.elapsed().as_secs_f64() / n * 1e6, in_update / n * 1e6))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "schema-bench: CPU µs per message, {} messages of 64 B, {} per transaction, synchronous=OFF, median of {} rounds",
        args.messages, args.batch, args.rounds
    );
    println!(
        "{:<32} {:>9} {:>22}",
        "variant", "µs/msg", "of which 'delivered'"
    );
    for v in variants() {
        let mut runs = Vec::new();
        for _ in 0..args.rounds.max(1) {
            runs.push(measure(dir.path(), &v, &args)?);
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (all, update) = runs[(runs.len() - 1) / 2];
        println!("{:<32} {:>9.2} {:>22.2}", v.name, all, update);
    }
    Ok(())
}
