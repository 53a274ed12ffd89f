//! What a job runs with: the connection, inside its batch's transaction, and the statements
//! that stay prepared for the whole batch.
//!
//! Under load one batch holds hundreds of `send` jobs, each running the same two inserts.
//! rusqlite's `prepare_cached` hashes the SQL text, copies it into a new key and relinks its
//! LRU list on every checkout and return: about 1,700 instructions a statement, 7 % of the
//! sender's CPU per message (callgrind). [`Batch::kept`] checks a statement out once per batch
//! and finds it again by the address of its `&'static str`.

use std::cell::{OnceCell, RefCell, RefMut};
use std::ops::{Deref, DerefMut};

use peerchat_db::rusqlite::{CachedStatement, Connection, Statement};

use super::StoreError;

/// Statements kept per batch (the hot path needs two; more just use rusqlite's cache).
const SLOTS: usize = 4;

pub struct Batch<'c> {
    conn: &'c Connection,
    kept: [OnceCell<Kept<'c>>; SLOTS],
}

struct Kept<'c> {
    sql: &'static str,
    stmt: RefCell<CachedStatement<'c>>,
}

impl<'c> Batch<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Batch {
            conn,
            kept: Default::default(),
        }
    }

    /// `sql` prepared, checked out of rusqlite's cache once for the whole batch. `sql` should be
    /// a `static` (a `const` may have a new address at each use): it is recognised by its
    /// address, and a miss only costs a trip through the cache. A statement already in use (the same
    /// constant twice at once) or one more than there are slots comes from the cache instead.
    pub fn kept<'b>(&'b self, sql: &'static str) -> Result<Stmt<'b, 'c>, StoreError> {
        for slot in &self.kept {
            match slot.get() {
                Some(k) if std::ptr::eq(k.sql, sql) => {
                    if let Ok(stmt) = k.stmt.try_borrow_mut() {
                        return Ok(Stmt::Kept(stmt));
                    }
                    break;
                }
                Some(_) => continue,
                None => {
                    let stmt = RefCell::new(self.conn.prepare_cached(sql)?);
                    if slot.set(Kept { sql, stmt }).is_err() {
                        break; // cannot happen: the slot was empty just now
                    }
                    if let Some(Ok(stmt)) = slot.get().map(|k| k.stmt.try_borrow_mut()) {
                        return Ok(Stmt::Kept(stmt));
                    }
                    break;
                }
            }
        }
        Ok(Stmt::Cached(self.conn.prepare_cached(sql)?))
    }
}

impl Deref for Batch<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// A statement from [`Batch::kept`].
pub enum Stmt<'b, 'c> {
    Kept(RefMut<'b, CachedStatement<'c>>),
    Cached(CachedStatement<'c>),
}

impl<'c> Deref for Stmt<'_, 'c> {
    type Target = Statement<'c>;
    fn deref(&self) -> &Statement<'c> {
        match self {
            Stmt::Kept(s) => s,
            Stmt::Cached(s) => s,
        }
    }
}

impl<'c> DerefMut for Stmt<'_, 'c> {
    fn deref_mut(&mut self) -> &mut Statement<'c> {
        match self {
            Stmt::Kept(s) => s,
            Stmt::Cached(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_statement_is_reused_and_nested_use_still_works() {
        static SQL: &str = "SELECT ?1 + 1";
        let conn = Connection::open_in_memory().expect("db");
        let batch = Batch::new(&conn);
        for i in 0..3i64 {
            let mut s = batch.kept(SQL).expect("prepare");
            let v: i64 = s.query_row([i], |r| r.get(0)).expect("row");
            assert_eq!(v, i + 1);
            assert!(matches!(s, Stmt::Kept(_)));
        }
        // The same statement twice at once: the second comes from rusqlite's cache.
        let outer = batch.kept(SQL).expect("outer");
        let mut inner = batch.kept(SQL).expect("inner");
        assert!(matches!(inner, Stmt::Cached(_)));
        assert_eq!(
            inner
                .query_row([1i64], |r| r.get::<_, i64>(0))
                .expect("row"),
            2
        );
        drop(outer);
    }
}
