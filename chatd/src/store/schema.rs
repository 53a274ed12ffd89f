//! Append-only migrations (see `peerchat_db`). Never edit a shipped entry; add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: messages in and out, deliveries per recipient, the peer cache.
    "CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        recipients TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        authenticated INTEGER NOT NULL,
        UNIQUE (sender, msg_id)
    ) STRICT;
    CREATE INDEX inbox_by_sender ON inbox(sender, seq);

    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        recipients TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE deliveries (
        out_seq INTEGER NOT NULL REFERENCES outbox(seq) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued','sent','delivered','failed','cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        -- 1 when nothing more will happen to a 'sent' row (seed peers never acknowledge).
        final INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (out_seq, recipient)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX deliveries_pending ON deliveries(recipient, out_seq)
        WHERE state IN ('queued','sent') AND final = 0;

    CREATE TABLE peers (
        name TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        legacy INTEGER NOT NULL,
        resolved_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 2: groups kept by this node.
    "CREATE TABLE groups (
        name TEXT PRIMARY KEY NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE group_members (
        group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
        member TEXT NOT NULL,
        PRIMARY KEY (group_name, member)
    ) STRICT, WITHOUT ROWID;",
    // 3: dedup keys of inbox rows removed by retention, so a late resend is still recognised.
    "CREATE TABLE inbox_seen (
        sender TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender, msg_id)
    ) STRICT, WITHOUT ROWID;",
    // 4: the same deliveries table without `CHECK (state IN (...))`, which made SQLite build a
    // temporary b-tree on every insert and update (measured: ~10 µs per message); the OR form
    // checks the same thing without it.
    "CREATE TABLE deliveries_v4 (
        out_seq INTEGER NOT NULL REFERENCES outbox(seq) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'queued' OR state = 'sent' OR state = 'delivered'
            OR state = 'failed' OR state = 'cancelled'),
        attempts INTEGER NOT NULL DEFAULT 0,
        final INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (out_seq, recipient)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO deliveries_v4 (out_seq, recipient, state, attempts, final, last_error, updated_at_ms)
        SELECT out_seq, recipient, state, attempts, final, last_error, updated_at_ms FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v4 RENAME TO deliveries;
    CREATE INDEX deliveries_pending ON deliveries(recipient, out_seq)
        WHERE state IN ('queued','sent') AND final = 0;",
    // 5: identities. `pins` binds a peer's name to the key first seen for it (trust on first
    // use; changed only by a valid rotation or `chatctl trust`); the peer cache remembers the
    // verified key with the last known address.
    "CREATE TABLE pins (
        name TEXT PRIMARY KEY NOT NULL,
        key TEXT NOT NULL,
        pinned_at_ms INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    ALTER TABLE peers ADD COLUMN key TEXT;",
    // 6: `inbox` and `outbox` without AUTOINCREMENT (its `sqlite_sequence` update was ≈ 1 µs of
    // every insert), `deliveries` without the foreign key (its check on every insert, and the
    // cascade, which retention now does itself). A seq must never be handed out twice (links and
    // followers keep seq cursors), so retention never removes a table's newest row, and
    // `seq_floor` keeps the old high-water marks: where retention had already removed the
    // newest rows, the next insert goes above the mark (see `SeqHighWater`). `deliveries` goes
    // first: dropping `outbox` while a foreign key still points at it would cascade.
    "CREATE TABLE seq_floor (
        name TEXT PRIMARY KEY NOT NULL,
        seq INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO seq_floor (name, seq)
        SELECT name, seq FROM sqlite_sequence WHERE name IN ('inbox', 'outbox');

    CREATE TABLE deliveries_v6 (
        out_seq INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'queued' OR state = 'sent' OR state = 'delivered'
            OR state = 'failed' OR state = 'cancelled'),
        attempts INTEGER NOT NULL DEFAULT 0,
        final INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (out_seq, recipient)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO deliveries_v6 (out_seq, recipient, state, attempts, final, last_error, updated_at_ms)
        SELECT out_seq, recipient, state, attempts, final, last_error, updated_at_ms FROM deliveries;
    DROP TABLE deliveries;

    CREATE TABLE outbox_v6 (
        seq INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL UNIQUE,
        recipients TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    INSERT INTO outbox_v6 (seq, msg_id, recipients, body, created_at_ms)
        SELECT seq, msg_id, recipients, body, created_at_ms FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v6 RENAME TO outbox;
    ALTER TABLE deliveries_v6 RENAME TO deliveries;
    CREATE INDEX deliveries_pending ON deliveries(recipient, out_seq)
        WHERE state IN ('queued','sent') AND final = 0;

    CREATE TABLE inbox_v6 (
        seq INTEGER PRIMARY KEY,
        sender TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        recipients TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        authenticated INTEGER NOT NULL,
        UNIQUE (sender, msg_id)
    ) STRICT;
    INSERT INTO inbox_v6 (seq, sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated)
        SELECT seq, sender, msg_id, recipients, body, sent_at_ms, received_at_ms, authenticated FROM inbox;
    DROP TABLE inbox;
    ALTER TABLE inbox_v6 RENAME TO inbox;
    CREATE INDEX inbox_by_sender ON inbox(sender, seq);",
    // 7: no `deliveries_pending` index. Every message entered it when sent and left it when
    // delivered: three B-tree seeks over text keys, about a fifth of the sender's CPU per
    // message. Instead `pending_floor` says where a recipient's pending rows start: every
    // `queued` or `sent` (not final) row of a recipient has `out_seq > pending_floor.seq`, so
    // its pending rows are a primary-key range scan from there. A floor only moves up, and only
    // past rows that are no longer pending (`advance_floor`); a new row always gets a seq above
    // every existing one. Here every recipient with rows gets its floor; a new one gets it with
    // its first message (`submit_send`). Floor rows are never removed.
    "DROP INDEX deliveries_pending;
    CREATE TABLE pending_floor (
        recipient TEXT PRIMARY KEY NOT NULL,
        seq INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO pending_floor (recipient, seq)
        SELECT recipient,
               COALESCE(MIN(CASE WHEN state IN ('queued','sent') AND final = 0 THEN out_seq END) - 1,
                        MAX(out_seq))
        FROM deliveries GROUP BY recipient;",
    // 8: the SHA-256 of each removed message's body next to its dedup key, so that a sender
    // reusing an id for a *different* message after the inbox row is gone is refused
    // (`id_conflict`) instead of acknowledged as a repeat and lost. NULL for keys kept before
    // this migration: their bodies are gone, so they still count as repeats.
    "ALTER TABLE inbox_seen ADD COLUMN body_sha256 BLOB;",
    // 9: conversations (protocol.md §2.9). `conv` on `inbox`/`outbox`: the group conversation
    // (`@OWNER/NAME`) of a message sent to one, NULL for direct ones. `events` is both the
    // timeline (kinds 1, 2: one row per conversation entry of a received / sent message; its
    // seq is the entry's `pos`) and the resumable event log (3: a delivery state change, written
    // by the trigger in the transaction that changed it; 4: a read position moved), one sequence
    // for both. `read_positions` per conversation. `bodies`: the full-text index (FTS5,
    // trigram tokenizer: substrings in any script, CJK included), rowid = the message's first
    // timeline row. Existing messages get their timeline rows in local time order, and their
    // index entries, here.
    "ALTER TABLE inbox ADD COLUMN conv TEXT;
    ALTER TABLE outbox ADD COLUMN conv TEXT;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        kind INTEGER NOT NULL,
        conv TEXT,
        ref INTEGER NOT NULL,
        recipient TEXT,
        state TEXT
    ) STRICT;
    CREATE INDEX events_timeline ON events(conv, seq) WHERE kind <= 2;
    CREATE TABLE read_positions (
        conv TEXT PRIMARY KEY NOT NULL,
        up_to INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE VIRTUAL TABLE bodies USING fts5(body, tokenize = 'trigram');
    CREATE TRIGGER deliveries_state_event AFTER UPDATE OF state ON deliveries
        WHEN NEW.state IS NOT OLD.state
    BEGIN
        INSERT INTO events (kind, ref, recipient, state)
            VALUES (3, NEW.out_seq, NEW.recipient, NEW.state);
    END;
    INSERT INTO events (kind, conv, ref)
        SELECT kind, conv, ref FROM (
            SELECT 1 AS kind, sender AS conv, seq AS ref, received_at_ms AS at FROM inbox
            UNION ALL
            SELECT 2, j.value, o.seq, o.created_at_ms
                FROM outbox o, json_each(o.recipients) j
        ) ORDER BY at, kind, ref;
    INSERT INTO bodies (rowid, body)
        SELECT e.seq, i.body FROM events e JOIN inbox i ON i.seq = e.ref WHERE e.kind = 1;
    INSERT INTO bodies (rowid, body)
        SELECT MIN(e.seq), o.body FROM events e JOIN outbox o ON o.seq = e.ref
        WHERE e.kind = 2 GROUP BY o.seq;",
];
