//! `history`: one conversation's entries, both directions, paged by position both ways.

use peerchat_db::rusqlite::{params, Connection};
use peerchat_proto::control::{ConvKey, Entry, MAX_MESSAGES_BYTES};
use peerchat_proto::Name;

use super::{entries, read_up_to};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// Oldest first.
    pub entries: Vec<Entry>,
    /// The first entry's position, when older entries exist.
    pub older: Option<i64>,
    /// The last entry's position, when newer entries exist.
    pub newer: Option<i64>,
    pub read_up_to: i64,
}

/// Which page: the newest, the one before a position, or the one after it.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    Newest,
    Before(i64),
    After(i64),
}

impl Store {
    /// A page of `conv` (resolved) of at most `limit` entries.
    pub async fn history(
        &self,
        conv: ConvKey,
        page: Page,
        limit: u32,
        me: Name,
    ) -> Result<HistoryPage, StoreError> {
        self.call(move |conn| history(conn, &conv.to_string(), page, limit, &me))
            .await
    }
}

fn history(
    conn: &Connection,
    conv: &str,
    page: Page,
    limit: u32,
    me: &Name,
) -> Result<HistoryPage, StoreError> {
    let limit = i64::from(limit);
    let rows: Vec<(i64, i64, i64)> = match page {
        Page::After(after) => conn
            .prepare_cached(
                "SELECT seq, kind, ref FROM events WHERE conv = ?1 AND kind <= 2 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![conv, after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?,
        Page::Newest | Page::Before(_) => {
            let before = match page {
                Page::Before(b) => b,
                _ => i64::MAX,
            };
            let mut v: Vec<(i64, i64, i64)> = conn
                .prepare_cached(
                    "SELECT seq, kind, ref FROM events WHERE conv = ?1 AND kind <= 2 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3",
                )?
                .query_map(params![conv, before, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            v.reverse();
            v
        }
    };
    // Cut at MAX_MESSAGES_BYTES of bodies, keeping the side the page grows from.
    let mut out: Vec<Entry> = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    let newest_first = !matches!(page, Page::After(_));
    let ordered: Box<dyn Iterator<Item = &(i64, i64, i64)>> = if newest_first {
        Box::new(rows.iter().rev())
    } else {
        Box::new(rows.iter())
    };
    for &(pos, kind, seq) in ordered {
        let Some(e) = entries::load(conn, pos, kind, seq, me)? else {
            continue;
        };
        bytes += e.body.len();
        if bytes > MAX_MESSAGES_BYTES && !out.is_empty() {
            break;
        }
        out.push(e);
    }
    if newest_first {
        out.reverse();
    }
    let exists = |sql: &str, pos: i64| -> Result<bool, StoreError> {
        Ok(conn
            .prepare_cached(sql)?
            .query_row(params![conv, pos], |r| r.get(0))?)
    };
    // Bounds from the rows read (not the entries kept), so a page of vanished messages still
    // moves the cursor.
    let (first, last) = match (out.first(), out.last()) {
        (Some(f), Some(l)) => (f.pos, l.pos),
        _ => match page {
            Page::Before(b) => (b, b - 1),
            Page::After(a) => (a + 1, a),
            Page::Newest => (i64::MAX, 0),
        },
    };
    let older = exists(
        "SELECT EXISTS (SELECT 1 FROM events WHERE conv = ?1 AND kind <= 2 AND seq < ?2)",
        first,
    )?
    .then_some(first);
    let newer = exists(
        "SELECT EXISTS (SELECT 1 FROM events WHERE conv = ?1 AND kind <= 2 AND seq > ?2)",
        last,
    )?
    .then_some(last);
    Ok(HistoryPage {
        entries: out,
        older: older.filter(|_| first != i64::MAX),
        newer,
        read_up_to: read_up_to(conn, conv)?,
    })
}
