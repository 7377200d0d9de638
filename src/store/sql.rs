//! The store's one SQL surface over its two engines: an embedded SQLite file (the
//! one-command default) or a PostgreSQL server shared by several instances.
//!
//! Statements are written once, in the subset both engines speak (`?N` placeholders,
//! `ON CONFLICT`, `RETURNING`, `CAST(… AS BIGINT)`); [`Db`] turns `?N` into `$N` for
//! PostgreSQL and caches each statement's preparation on either engine. Where the
//! engines differ in substance (schema, the outbox's position, locking) the caller asks
//! [`Db::engine`] and says why. Values cross as [`Param`] (borrowed, no allocation)
//! and come back as [`Row`]s of owned [`Value`]s, or — on the hot paths (the outbox
//! read, the hourly upserts) — as a [`RowRef`] lent to a visitor ([`Db::each`]), which
//! copies no text. A statement run many times in a row goes through one [`Prepared`]
//! handle instead of a cache look-up per run.
//!
//! Transactions are explicit statements (`BEGIN …`/`COMMIT`) issued through the same
//! handle, guarded by [`Tx`] (rolled back when dropped uncommitted), so every role keeps
//! a plain `&self` store whatever the engine.

use std::cell::RefCell;
use std::collections::HashMap;

use super::StoreError;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Sqlite,
    Postgres,
}

/// One bound value. The arrays exist for PostgreSQL's one-statement batches
/// (`unnest`); SQLite refuses them.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Ints(&'a [i64]),
    OptInts(&'a [Option<i64>]),
    OptReals(&'a [Option<f64>]),
    Texts(&'a [&'a str]),
    OptTexts(&'a [Option<&'a str>]),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(v.into())
    }
}
impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}
impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// `p![a, b]`: a parameter list.
macro_rules! p {
    ($($x:expr),* $(,)?) => { &[$($crate::store::sql::Param::from($x)),*] };
}
pub(super) use p;

/// One column value read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row.
#[derive(Debug, Clone)]
pub(super) struct Row(pub(super) Vec<Value>);

/// Typed access to a row's columns, owned ([`Row`]) or lent ([`RowRef`]).
pub(super) trait Columns {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StoreError>;

    fn wrong(&self, i: usize, want: &str) -> StoreError {
        StoreError::Corrupt(format!("column {i} is not {want}: {:?}", self.cell(i).ok()))
    }

    fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(v)),
            _ => Err(self.wrong(i, "an integer")),
        }
    }

    fn i64(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_i64(i)?.ok_or_else(|| self.wrong(i, "an integer"))
    }

    fn opt_f64(&self, i: usize) -> Result<Option<f64>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Real(v) => Ok(Some(v)),
            // SQLite hands back a REAL that holds an integral value as stored.
            Cell::Int(v) => Ok(Some(v as f64)),
            _ => Err(self.wrong(i, "a number")),
        }
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v)),
            _ => Err(self.wrong(i, "text")),
        }
    }

    fn text(&self, i: usize) -> Result<&str, StoreError> {
        self.opt_text(i)?.ok_or_else(|| self.wrong(i, "text"))
    }

    fn opt_blob(&self, i: usize) -> Result<Option<&[u8]>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Blob(v) => Ok(Some(v)),
            _ => Err(self.wrong(i, "bytes")),
        }
    }
}

impl Columns for Row {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StoreError> {
        Ok(
            match self
                .0
                .get(i)
                .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))?
            {
                Value::Null => Cell::Null,
                Value::Int(v) => Cell::Int(*v),
                Value::Real(v) => Cell::Real(*v),
                Value::Text(v) => Cell::Text(v),
                Value::Blob(v) => Cell::Blob(v),
            },
        )
    }
}

/// One column value, borrowed from the engine's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl Cell<'_> {
    fn owned(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(v) => Value::Int(v),
            Cell::Real(v) => Value::Real(v),
            Cell::Text(v) => Value::Text(v.to_owned()),
            Cell::Blob(v) => Value::Blob(v.to_vec()),
        }
    }
}

/// A result row lent to a visitor (see [`Db::each`]): the same typed accessors as
/// [`Row`], without copying the row first.
pub(super) enum RowRef<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl RowRef<'_> {
    fn width(&self) -> usize {
        match self {
            RowRef::Lite(r) => r.as_ref().column_count(),
            RowRef::Pg(r) => r.len(),
        }
    }

    /// The row, copied.
    pub(super) fn to_owned(&self) -> Result<Row, StoreError> {
        (0..self.width())
            .map(|i| self.cell(i).map(Cell::owned))
            .collect::<Result<_, _>>()
            .map(Row)
    }
}

impl Columns for RowRef<'_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StoreError> {
        match *self {
            RowRef::Lite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) => Cell::Text(std::str::from_utf8(t).map_err(|_| {
                        StoreError::Corrupt(format!("column {i} is not UTF-8 text"))
                    })?),
                    ValueRef::Blob(b) => Cell::Blob(b),
                })
            }
            RowRef::Pg(r) => pg_cell(r, i),
        }
    }
}

/// A statement prepared once and run many times (a batch's inserts), on either engine.
pub(super) enum Prepared<'a> {
    Lite(rusqlite::CachedStatement<'a>),
    Pg(&'a RefCell<Pg>, postgres::Statement),
}

impl Prepared<'_> {
    /// Executes the statement once; returns the rows it changed.
    pub(super) fn exec(&mut self, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match self {
            Prepared::Lite(stmt) => {
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Prepared::Pg(pg, stmt) => {
                let refs = pg_params(params);
                Ok(pg.borrow_mut().client().execute(&*stmt, &refs)?)
            }
        }
    }

    /// Runs the statement once, lending each result row to `f`.
    pub(super) fn each(
        &mut self,
        params: &[Param<'_>],
        mut f: impl FnMut(&RowRef<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Prepared::Lite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(r) = rows.next()? {
                    f(&RowRef::Lite(r))?;
                }
                Ok(())
            }
            Prepared::Pg(pg, stmt) => {
                let refs = pg_params(params);
                let rows = pg.borrow_mut().client().query(&*stmt, &refs)?;
                rows.iter().try_for_each(|r| f(&RowRef::Pg(r)))
            }
        }
    }
}

/// A PostgreSQL connection, its prepared statements, and what it needs to come back
/// after the server went away.
pub(super) struct Pg {
    /// Always `Some` but while being dropped (see the `Drop` impl).
    client: Option<postgres::Client>,
    config: postgres::Config,
    stmts: HashMap<String, postgres::Statement>,
    /// Inside BEGIN … COMMIT: a lost connection is then an error, never a silent
    /// reconnect (the rest of the transaction would run outside it).
    in_tx: bool,
    /// Counts the sessions this client has had (1 for the first): a reconnection is a
    /// new session, which some callers must know (a writer's id is per session).
    session: u64,
}

/// A connection to either engine.
pub(super) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

/// The store's connection. `&self` everywhere: SQLite's connection is used through
/// shared references; PostgreSQL's client sits in a `RefCell` (a store handle lives on
/// one thread at a time).
pub(super) struct Db {
    pub(super) conn: Conn,
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Begin {
    /// Reads and writes; SQLite takes the write lock at the first write.
    Write,
    /// Reads and writes; SQLite takes the write lock now (no other writer until we
    /// commit). PostgreSQL's row locks already order concurrent writers.
    Exclusive,
    /// One consistent snapshot for several reads (PostgreSQL: REPEATABLE READ).
    Snapshot,
}

/// Turns `?N` placeholders into PostgreSQL's `$N`.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl Db {
    pub(super) fn sqlite(conn: rusqlite::Connection) -> Db {
        Db {
            conn: Conn::Sqlite(conn),
        }
    }

    /// Connects to PostgreSQL.
    pub(super) fn postgres(config: postgres::Config) -> Result<Db, StoreError> {
        let client = config.connect(postgres::NoTls)?;
        Ok(Db {
            conn: Conn::Postgres(Box::new(RefCell::new(Pg {
                client: Some(client),
                config,
                stmts: HashMap::new(),
                in_tx: false,
                session: 1,
            }))),
        })
    }

    pub(super) fn engine(&self) -> Engine {
        match self.conn {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// PostgreSQL: the current session's number (None on SQLite).
    pub(super) fn session(&self) -> Option<u64> {
        match &self.conn {
            Conn::Sqlite(_) => None,
            Conn::Postgres(pg) => Some(pg.borrow().session),
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the file).
    pub(super) fn sqlite_conn(&self) -> Option<&rusqlite::Connection> {
        match &self.conn {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// Runs statements with no parameters and no results (schema, transaction control).
    pub(super) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Sqlite(c) => c.execute_batch(sql)?,
            Conn::Postgres(pg) => pg.borrow_mut().live()?.client().batch_execute(sql)?,
        }
        Ok(())
    }

    /// Prepares `sql` (cached per connection) for running once or many times.
    pub(super) fn prepare(&self, sql: &str) -> Result<Prepared<'_>, StoreError> {
        match &self.conn {
            Conn::Sqlite(c) => Ok(Prepared::Lite(c.prepare_cached(sql)?)),
            Conn::Postgres(pg) => {
                let stmt = pg.borrow_mut().statement(sql)?;
                Ok(Prepared::Pg(pg, stmt))
            }
        }
    }

    /// Executes one statement; returns the rows it changed.
    pub(super) fn exec(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.prepare(sql)?.exec(params)
    }

    /// Runs one query, lending each row to `f` (no copy of the row).
    pub(super) fn each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnMut(&RowRef<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.prepare(sql)?.each(params, f)
    }

    /// Runs one query; returns its rows.
    pub(super) fn rows(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(r.to_owned()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, if any.
    pub(super) fn row(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// BEGIN, COMMIT or ROLLBACK. On PostgreSQL a ROLLBACK on a lost connection is
    /// done (the server rolled back), and a COMMIT on one fails.
    fn control(&self, sql: &str, entering: bool) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                if !entering && pg.client().is_closed() {
                    pg.in_tx = false;
                    return match sql {
                        "ROLLBACK" => Ok(()),
                        _ => Err(StoreError::ConnectionLost),
                    };
                }
                let r = pg.live()?.client().batch_execute(sql);
                pg.in_tx = entering && r.is_ok();
                Ok(r?)
            }
        }
    }

    /// Starts a transaction; it rolls back unless [`Tx::commit`]ted.
    pub(super) fn begin(&self, how: Begin) -> Result<Tx<'_>, StoreError> {
        let sql = match (self.engine(), how) {
            (Engine::Sqlite, Begin::Exclusive) => "BEGIN IMMEDIATE",
            (Engine::Sqlite, _) => "BEGIN",
            (Engine::Postgres, Begin::Snapshot) => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            }
            (Engine::Postgres, _) => "BEGIN",
        };
        self.control(sql, true)?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// An open transaction on a [`Db`]; statements go through the `Db` itself.
pub(super) struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Tx<'_> {
    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        self.db.control("COMMIT", false)
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves a broken connection, which the next use reports.
            let _ = self.db.control("ROLLBACK", false);
        }
    }
}

impl Pg {
    /// The client, reconnected first when the server closed the last one (a restart of
    /// PostgreSQL, a network cut): the caller's statement then runs on a new session.
    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("the client is only taken when dropped")
    }

    fn live(&mut self) -> Result<&mut Pg, StoreError> {
        if self.client().is_closed() {
            if self.in_tx {
                return Err(StoreError::ConnectionLost);
            }
            self.client = Some(self.config.connect(postgres::NoTls)?);
            self.stmts.clear();
            self.session += 1;
        }
        Ok(self)
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        self.live()?;
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client().prepare(&dollar_placeholders(sql))?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

impl Drop for Pg {
    /// The synchronous client closes its connection by blocking on its own runtime,
    /// which panics on an async worker thread: inside a tokio runtime the close goes to
    /// a blocking thread (store handles end where their stage ends, often async code).
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(v) => ValueRef::Text(v.as_bytes()),
            Param::Blob(v) => ValueRef::Blob(v),
            Param::Ints(_)
            | Param::OptInts(_)
            | Param::OptReals(_)
            | Param::Texts(_)
            | Param::OptTexts(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "an array parameter is PostgreSQL's (unnest); SQLite has none".into(),
                ))
            }
        }))
    }
}

fn pg_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// Reads one column of a PostgreSQL row by the column's own type.
fn pg_cell(r: &postgres::Row, i: usize) -> Result<Cell<'_>, StoreError> {
    use postgres::types::Type;
    let col = r
        .columns()
        .get(i)
        .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))?;
    let ty = col.type_();
    let v = if *ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
    } else if *ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into()))
    } else if *ty == Type::INT2 {
        r.try_get::<_, Option<i16>>(i)?.map(|v| Cell::Int(v.into()))
    } else if *ty == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)?
            .map(|v| Cell::Int(v.into()))
    } else if *ty == Type::FLOAT8 {
        r.try_get::<_, Option<f64>>(i)?.map(Cell::Real)
    } else if *ty == Type::BYTEA {
        r.try_get::<_, Option<&[u8]>>(i)?.map(Cell::Blob)
    } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
        r.try_get::<_, Option<&str>>(i)?.map(Cell::Text)
    } else {
        return Err(StoreError::Corrupt(format!(
            "column {} has type {ty}, which the store never selects",
            col.name()
        )));
    };
    Ok(v.unwrap_or(Cell::Null))
}

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        // Each value in the parameter's declared type (the statement's inference), so a
        // statement is written once for both engines.
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Param::Int(v) if *ty == Type::FLOAT8 => (v as f64).to_sql(ty, out),
            Param::Int(v) => v.to_sql(ty, out),
            Param::Real(v) => v.to_sql(ty, out),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Blob(v) => v.to_sql(ty, out),
            Param::Ints(v) => v.to_sql(ty, out),
            Param::OptInts(v) => v.to_sql(ty, out),
            Param::OptReals(v) => v.to_sql(ty, out),
            Param::Texts(v) => v.to_sql(ty, out),
            Param::OptTexts(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            dollar_placeholders("SELECT ?1, ?12 FROM t WHERE a = ?2 AND b <> '?'"),
            "SELECT $1, $12 FROM t WHERE a = $2 AND b <> '?'"
        );
    }

    #[test]
    fn sqlite_rows_come_back_typed() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let rows = db
            .rows(
                "SELECT ?1, ?2, ?3, ?4, ?5",
                p![7i64, 1.5f64, "x", None::<i64>, &b"ab"[..]],
            )
            .unwrap();
        let r = &rows[0];
        assert_eq!(r.i64(0).unwrap(), 7);
        assert_eq!(r.opt_f64(1).unwrap(), Some(1.5));
        assert_eq!(r.text(2).unwrap(), "x");
        assert_eq!(r.opt_i64(3).unwrap(), None);
        assert_eq!(r.opt_blob(4).unwrap(), Some(&b"ab"[..]));
        assert!(r.text(0).is_err(), "an integer is not text");
    }

    #[test]
    fn an_uncommitted_transaction_rolls_back() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (x INTEGER)").unwrap();
        {
            let tx = db.begin(Begin::Write).unwrap();
            tx.exec("INSERT INTO t VALUES (?1)", p![1i64]).unwrap();
        }
        let tx = db.begin(Begin::Write).unwrap();
        tx.exec("INSERT INTO t VALUES (?1)", p![2i64]).unwrap();
        tx.commit().unwrap();
        let n = db
            .row("SELECT count(*), max(x) FROM t", p![])
            .unwrap()
            .unwrap();
        assert_eq!((n.i64(0).unwrap(), n.i64(1).unwrap()), (1, 2));
    }
}
