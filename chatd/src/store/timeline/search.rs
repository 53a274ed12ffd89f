//! `search`: bodies containing a text, through the FTS5 trigram index (`bodies`, rowid = the
//! message's first timeline position).

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::{ConvKey, SearchHit};
use peerchat_proto::Name;

use super::{entries, OUT};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    /// Resolved.
    pub with: Option<ConvKey>,
    pub from: Option<Name>,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: u32,
}

/// Index rows read per round, and at most per request (filters may reject most of them; the
/// reply's `older` then lets the client go on).
const ROUND: i64 = 256;
const MAX_SCANNED: usize = 10_000;

impl Store {
    /// Hits, newest first, and the `before` of the next page when there may be more.
    pub async fn search(
        &self,
        q: SearchQuery,
        me: Name,
    ) -> Result<(Vec<SearchHit>, Option<i64>), StoreError> {
        self.call(move |conn| search(conn, &q, &me)).await
    }
}

/// The FTS5 query for `text`: one phrase (a trigram phrase matches the substring), or, for
/// texts under three characters, which have no trigram, a LIKE pattern (a scan of the index's
/// copy of the bodies).
fn matcher(text: &str) -> (&'static str, String) {
    if text.chars().count() >= 3 {
        (
            "SELECT rowid FROM bodies WHERE bodies MATCH ?1 AND rowid < ?2 AND rowid > ?3
             ORDER BY rowid DESC LIMIT ?4",
            format!("\"{}\"", text.replace('"', "\"\"")),
        )
    } else {
        let escaped: String = text
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        (
            "SELECT rowid FROM bodies WHERE body LIKE ?1 ESCAPE '\\' AND rowid < ?2 AND rowid > ?3
             ORDER BY rowid DESC LIMIT ?4",
            format!("%{escaped}%"),
        )
    }
}

fn search(
    conn: &Connection,
    q: &SearchQuery,
    me: &Name,
) -> Result<(Vec<SearchHit>, Option<i64>), StoreError> {
    let (sql, pattern) = matcher(&q.text);
    let mut before = q.before.unwrap_or(i64::MAX);
    let after = q.after.unwrap_or(0);
    let mut hits = Vec::new();
    let mut scanned = 0;
    loop {
        let rows: Vec<i64> = conn
            .prepare_cached(sql)?
            .query_map(params![pattern, before, after, ROUND], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let exhausted = (rows.len() as i64) < ROUND;
        for pos in rows {
            scanned += 1;
            before = pos;
            if let Some(hit) = hit(conn, pos, q, me)? {
                hits.push(hit);
                if hits.len() >= q.limit as usize {
                    return Ok((hits, Some(pos)));
                }
            }
        }
        if exhausted {
            return Ok((hits, None));
        }
        if scanned >= MAX_SCANNED {
            return Ok((hits, Some(before)));
        }
    }
}

/// The hit at index position `pos`, if it passes the filters.
fn hit(
    conn: &Connection,
    pos: i64,
    q: &SearchQuery,
    me: &Name,
) -> Result<Option<SearchHit>, StoreError> {
    let row: Option<(i64, String, i64)> = conn
        .prepare_cached("SELECT kind, conv, ref FROM events WHERE seq = ?1")?
        .query_row(params![pos], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((kind, conv, seq)) = row else {
        return Ok(None);
    };
    let Ok(first) = ConvKey::parse(&conv) else {
        return Ok(None);
    };
    let (with, pos) = match &q.with {
        None => (first, pos),
        Some(w) if *w == first => (first, pos),
        // A sent message filed under several peers: its entry in the wanted one, if any.
        Some(w @ ConvKey::Peer(_)) if kind == OUT && !first.is_group() => {
            let other: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM events WHERE conv = ?1 AND kind <= 2 AND seq > ?2
                     AND kind = 2 AND ref = ?3 ORDER BY seq LIMIT 1",
                )?
                .query_row(params![w.to_string(), pos, seq], |r| r.get(0))
                .optional()?;
            match other {
                Some(p) => (w.clone(), p),
                None => return Ok(None),
            }
        }
        Some(_) => return Ok(None),
    };
    let Some(entry) = entries::load(conn, pos, kind, seq, me)? else {
        return Ok(None);
    };
    if q.from.as_ref().is_some_and(|f| *f != entry.from) {
        return Ok(None);
    }
    Ok(Some(SearchHit { with, entry }))
}
