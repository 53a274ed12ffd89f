//! `conversations`: every conversation with its newest entry, unread count and members.

use peerchat_db::rusqlite::{params, Connection};
use peerchat_proto::control::{ConvKey, Entry};
use peerchat_proto::Name;

use super::{entries, group_members, read_up_to, unread_above};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct ConvSummary {
    pub with: ConvKey,
    pub members: Vec<Name>,
    pub last: Option<Entry>,
    pub unread: u64,
    pub read_up_to: i64,
}

impl Store {
    /// The `limit` most recently active conversations, then this node's groups without
    /// messages (by name).
    pub async fn conversations(
        &self,
        limit: u32,
        me: Name,
    ) -> Result<Vec<ConvSummary>, StoreError> {
        self.call(move |conn| conversations(conn, limit, &me)).await
    }
}

fn conversations(conn: &Connection, limit: u32, me: &Name) -> Result<Vec<ConvSummary>, StoreError> {
    let newest: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT conv, MAX(seq) FROM events WHERE conv IS NOT NULL AND kind <= 2
             GROUP BY conv ORDER BY 2 DESC LIMIT ?1",
        )?
        .query_map(params![i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(newest.len());
    for (conv, pos) in newest {
        let Ok(with) = ConvKey::parse(&conv) else {
            continue;
        };
        let (kind, seq): (i64, i64) = conn
            .prepare_cached("SELECT kind, ref FROM events WHERE seq = ?1")?
            .query_row(params![pos], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let last = entries::load(conn, pos, kind, seq, me)?;
        out.push(summary(conn, with, &conv, last, me)?);
    }
    let groups: Vec<String> = conn
        .prepare_cached("SELECT name FROM groups ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for g in groups {
        if out.len() >= limit as usize {
            break;
        }
        let Ok(name) = Name::new(g) else { continue };
        let with = ConvKey::group(me.clone(), name);
        let conv = with.to_string();
        if !out.iter().any(|s| s.with == with) {
            out.push(summary(conn, with, &conv, None, me)?);
        }
    }
    Ok(out)
}

fn summary(
    conn: &Connection,
    with: ConvKey,
    conv: &str,
    last: Option<Entry>,
    me: &Name,
) -> Result<ConvSummary, StoreError> {
    let members = match &with {
        ConvKey::Peer(p) => vec![p.clone()],
        ConvKey::Group {
            owner: Some(o),
            name,
        } => group_members(conn, o, name, me)?,
        ConvKey::Group { owner: None, .. } => Vec::new(),
    };
    let read_up_to = read_up_to(conn, conv)?;
    Ok(ConvSummary {
        members,
        last,
        unread: unread_above(conn, conv, read_up_to)?,
        read_up_to,
        with,
    })
}
