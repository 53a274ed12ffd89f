//! Groups: named sets of recipients, kept by the local node.

use std::collections::HashSet;

use peerchat_db::rusqlite::{params, Connection, OptionalExtension};
use peerchat_proto::control::GroupInfo;
use peerchat_proto::Name;

use super::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group {0} already exists")]
    Exists(Name),
    #[error("no group named {0} (`chatctl group list` shows the groups)")]
    NotFound(Name),
    #[error("group {group} would have {members} members; the limit is {limit} (the most recipients of one message)")]
    TooLarge {
        group: Name,
        members: usize,
        limit: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<peerchat_db::rusqlite::Error> for GroupError {
    fn from(e: peerchat_db::rusqlite::Error) -> Self {
        GroupError::Store(e.into())
    }
}

fn exists(conn: &Connection, group: &Name) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM groups WHERE name = ?1")?
        .query_row(params![group.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

fn members(conn: &Connection, group: &Name) -> Result<Vec<Name>, StoreError> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT member FROM group_members WHERE group_name = ?1 ORDER BY member")?
        .query_map(params![group.as_str()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names
        .into_iter()
        .filter_map(|n| Name::new(n).ok())
        .collect())
}

/// Runs a group job, turning its typed error into the store's "rolled back" result while
/// keeping the group error for the caller.
async fn group_call<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&super::Batch) -> Result<T, GroupError> + Send + 'static,
) -> Result<T, GroupError> {
    // A database error inside the job is the store's (it fails the transaction); the group's
    // own refusals are answers, made before anything was written.
    let r = store
        .call(move |conn| match f(conn) {
            Err(GroupError::Store(e)) => Err(e),
            r => Ok(r),
        })
        .await
        .map_err(GroupError::Store)?;
    r
}

impl Store {
    pub async fn group_create(&self, group: Name, add: Vec<Name>) -> Result<GroupInfo, GroupError> {
        group_call(self, move |conn| {
            if exists(conn, &group)? {
                return Err(GroupError::Exists(group));
            }
            check_size(conn, &group, &add)?;
            conn.prepare_cached("INSERT INTO groups (name, created_at_ms) VALUES (?1, ?2)")?
                .execute(params![group.as_str(), peerchat_db::now_ms() as i64])?;
            insert_members(conn, &group, &add)?;
            Ok(GroupInfo {
                members: members(conn, &group)?,
                name: group,
            })
        })
        .await
    }

    pub async fn group_add(&self, group: Name, add: Vec<Name>) -> Result<GroupInfo, GroupError> {
        group_call(self, move |conn| {
            if !exists(conn, &group)? {
                return Err(GroupError::NotFound(group));
            }
            check_size(conn, &group, &add)?;
            insert_members(conn, &group, &add)?;
            Ok(GroupInfo {
                members: members(conn, &group)?,
                name: group,
            })
        })
        .await
    }

    pub async fn group_remove(
        &self,
        group: Name,
        remove: Vec<Name>,
    ) -> Result<GroupInfo, GroupError> {
        group_call(self, move |conn| {
            if !exists(conn, &group)? {
                return Err(GroupError::NotFound(group));
            }
            let mut del = conn.prepare_cached(
                "DELETE FROM group_members WHERE group_name = ?1 AND member = ?2",
            )?;
            for m in &remove {
                del.execute(params![group.as_str(), m.as_str()])?;
            }
            Ok(GroupInfo {
                members: members(conn, &group)?,
                name: group,
            })
        })
        .await
    }

    pub async fn group_delete(&self, group: Name) -> Result<(), GroupError> {
        group_call(self, move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM groups WHERE name = ?1")?
                .execute(params![group.as_str()])?;
            if n == 0 {
                return Err(GroupError::NotFound(group));
            }
            Ok(())
        })
        .await
    }

    pub async fn group_show(&self, group: Name) -> Result<GroupInfo, GroupError> {
        group_call(self, move |conn| {
            if !exists(conn, &group)? {
                return Err(GroupError::NotFound(group));
            }
            Ok(GroupInfo {
                members: members(conn, &group)?,
                name: group,
            })
        })
        .await
    }

    pub async fn group_list(&self) -> Result<Vec<GroupInfo>, GroupError> {
        group_call(self, |conn| {
            let names: Vec<String> = conn
                .prepare_cached("SELECT name FROM groups ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(names.len());
            for n in names.into_iter().filter_map(|n| Name::new(n).ok()) {
                out.push(GroupInfo {
                    members: members(conn, &n)?,
                    name: n,
                });
            }
            Ok(out)
        })
        .await
    }
}

/// Refuses (before anything is written) a change that would give `group` more members than one
/// message may have recipients: such a group could never be sent to.
fn check_size(conn: &Connection, group: &Name, add: &[Name]) -> Result<(), GroupError> {
    let limit = peerchat_proto::control::MAX_RECIPIENTS;
    let mut total: HashSet<Name> = members(conn, group)?.into_iter().collect();
    total.extend(add.iter().cloned());
    if total.len() > limit {
        return Err(GroupError::TooLarge {
            group: group.clone(),
            members: total.len(),
            limit,
        });
    }
    Ok(())
}

fn insert_members(conn: &Connection, group: &Name, add: &[Name]) -> Result<(), StoreError> {
    let mut ins = conn.prepare_cached(
        "INSERT OR IGNORE INTO group_members (group_name, member) VALUES (?1, ?2)",
    )?;
    for m in add {
        ins.execute(params![group.as_str(), m.as_str()])?;
    }
    Ok(())
}
