//! The outbox's shared statements: the ones built from the pending-floor fragments below, and
//! the hot-path ones schema-bench times (their text must stay as it is: the benchmarks compare it).

/// The recipient's (`?1`) floor, 0 without a row.
macro_rules! floor_of {
    () => {
        "COALESCE((SELECT seq FROM pending_floor WHERE recipient = ?1), 0)"
    };
}

/// The condition every query for one recipient's (`?1`) pending rows starts with: above its
/// floor, so that SQLite scans the primary key from there (see the module docs).
macro_rules! above_floor {
    () => {
        concat!("out_seq > ", floor_of!())
    };
}

/// A recipient's next pending messages after `?2` (and above its floor), oldest first.
pub(in crate::store) const TAKE_BATCH: &str = concat!(
    "SELECT o.seq, o.msg_id, o.recipients, o.body, o.created_at_ms, o.conv
     FROM deliveries d JOIN outbox o ON o.seq = d.out_seq
     WHERE d.recipient = ?1
       AND d.out_seq > MAX(?2, ",
    floor_of!(),
    ")
       AND d.state IN ('queued','sent') AND d.final = 0
     ORDER BY d.out_seq LIMIT ?3"
);

/// Whether recipient `?1` has a pending row (above its floor).
pub(in crate::store) const HAS_PENDING: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE recipient = ?1 AND ",
    above_floor!(),
    " AND state IN ('queued','sent') AND final = 0)"
);

/// A new outgoing message. `?5`: the seq high-water mark (see `SeqHighWater`), normally 0: the next rowid.
/// (The statements marked public are timed by schema-bench.)
pub static INSERT_OUTBOX: &str = "INSERT INTO outbox (seq, msg_id, recipients, body, created_at_ms)
     VALUES (CASE WHEN ?5 > 0 THEN MAX(?5, (SELECT COALESCE(MAX(seq), 0) FROM outbox)) + 1 END,
             ?1, ?2, ?3, ?4)";

/// One recipient's delivery row of a new message.
pub static INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (out_seq, recipient, state, last_error, updated_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)";

/// The statement that moves recipient `?1`'s floor to just below its first pending row with
/// `out_seq > $start`, or to the newest row of any recipient when it has none.
macro_rules! advance_floor_sql {
    ($start:expr) => {
        concat!(
            "INSERT INTO pending_floor (recipient, seq)
             SELECT ?1, COALESCE(
                 (SELECT out_seq - 1 FROM deliveries WHERE recipient = ?1 AND out_seq > ",
            $start,
            " AND state IN ('queued','sent') AND final = 0
                  ORDER BY out_seq LIMIT 1),
                 (SELECT MAX(out_seq) FROM deliveries),
                 0)
             WHERE true
             ON CONFLICT (recipient) DO UPDATE SET seq = MAX(seq, excluded.seq)"
        )
    };
}

/// `advance_floor`'s statement (`?1`: the recipient).
pub(in crate::store) const ADVANCE_FLOOR: &str = advance_floor_sql!(floor_of!());

/// A window of acks (`?1` the recipient, seqs `?2` to `?3`, `?4` now): every pending row of the
/// recipient in the range becomes `delivered`.
pub const DELIVERED_RANGE: &str = "UPDATE deliveries SET state = 'delivered', updated_at_ms = ?4,
            attempts = attempts + (state = 'queued')
     WHERE recipient = ?1 AND out_seq BETWEEN ?2 AND ?3
       AND state IN ('queued','sent') AND final = 0";

/// [`ADVANCE_FLOOR`] right after [`DELIVERED_RANGE`] (seqs `?2` to `?3`), in the same job: that
/// update ended every pending row of the recipient in the range; valid only then. If nothing
/// was pending below `?2` either (the floor is at `?2 - 1` or above), nothing is pending up to
/// `?3`, and the scan starts there instead of rereading the rows just updated (≈ 1,000
/// instructions per message). Otherwise it is [`ADVANCE_FLOOR`].
pub const ADVANCE_FLOOR_PAST: &str = advance_floor_sql!(concat!(
    "(SELECT CASE WHEN f >= ?2 - 1 THEN MAX(f, ?3) ELSE f END FROM (SELECT ",
    floor_of!(),
    " AS f))"
));

/// A link failed: recipient `?1`'s pending rows go back to `queued` with error `?2` at `?3`
/// (see `Store::note_link_failure`).
pub(in crate::store) const REQUEUE_PENDING: &str = concat!(
    "UPDATE deliveries SET attempts = attempts + (state = 'queued'), state = 'queued',
                            last_error = ?2, updated_at_ms = ?3
                     WHERE recipient = ?1 AND ",
    above_floor!(),
    " AND state IN ('queued','sent') AND final = 0"
);

/// Recipient `?1`'s pending rows accepted before `?2` become `failed` with error `?3` at `?4`
/// (see `Store::expire`).
pub(in crate::store) const EXPIRE_PENDING: &str = concat!(
    "UPDATE deliveries SET state = 'failed', last_error = ?3, updated_at_ms = ?4
                         WHERE recipient = ?1 AND ",
    above_floor!(),
    " AND state IN ('queued','sent') AND final = 0
                           AND out_seq IN (SELECT seq FROM outbox WHERE created_at_ms < ?2)"
);

/// A recipient's first message (`?1` the recipient, `?2` the message's seq) gives it a pending
/// floor right below it (see `insert_deliveries`).
pub(super) const FIRST_FLOOR: &str =
    "INSERT INTO pending_floor (recipient, seq) VALUES (?1, ?2 - 1)
                             ON CONFLICT (recipient) DO NOTHING";
