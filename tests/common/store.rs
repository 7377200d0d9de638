//! The store a test runs the service on, SQLite or PostgreSQL, and the checks the
//! tests make on it, written once: a test body takes a [`TestStore`] and runs under
//! both (`…_sqlite` / `…_postgres` wrappers), so the backends are held to the same
//! assertions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pg::Postgres;

/// The store of one test.
pub enum TestStore {
    /// `aq.db` in the test's directory.
    Sqlite(PathBuf),
    /// A private PostgreSQL server.
    Postgres(Postgres),
}

impl TestStore {
    pub fn sqlite(dir: &Path) -> TestStore {
        TestStore::Sqlite(dir.join("aq.db"))
    }

    pub fn postgres() -> TestStore {
        TestStore::Postgres(Postgres::start())
    }

    /// The `[store]` section.
    pub fn toml(&self) -> String {
        match self {
            TestStore::Sqlite(p) => format!(
                "[store]\npath = \"{}\"\ndurability = \"process_crash\"\n",
                p.display()
            ),
            TestStore::Postgres(pg) => {
                format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", pg.url())
            }
        }
    }

    /// A query's rows as strings (NULL as "NULL"), in the query's order.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            TestStore::Sqlite(p) => {
                if !p.exists() {
                    return Vec::new();
                }
                let c = rusqlite::Connection::open(p).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        String::from_utf8_lossy(t).into_owned()
                                    }
                                    rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .unwrap();
                rows.map(Result::unwrap).collect()
            }
            TestStore::Postgres(pg) => pg
                .query(sql)
                .iter()
                .map(|r| (0..r.len()).map(|i| pg_text(r, i)).collect())
                .collect(),
        }
    }

    /// A single integer (`SELECT count(*) …`); 0 before the store exists.
    pub fn count(&self, sql: &str) -> i64 {
        self.rows(sql).first().map_or(0, |r| r[0].parse().unwrap())
    }

    /// Readings the InfluxDB sink has not delivered yet.
    pub fn outbox_depth(&self) -> i64 {
        self.count(match self {
            TestStore::Sqlite(_) => super::OUTBOX_DEPTH,
            TestStore::Postgres(_) => {
                "SELECT count(*) FROM readings r WHERE r.seq > coalesce((SELECT c.seq
                 FROM sink_cursors c WHERE c.sink = 'influx' AND c.writer = r.writer), 0)"
            }
        })
    }
}

/// A PostgreSQL value as text, by the column's type (the store's columns are BIGINT,
/// DOUBLE PRECISION, TEXT and BYTEA).
fn pg_text(r: &postgres::Row, i: usize) -> String {
    use postgres::types::Type;
    let ty = r.columns()[i].type_().clone();
    let s = if ty == Type::INT8 {
        r.get::<_, Option<i64>>(i).map(|v| v.to_string())
    } else if ty == Type::INT4 {
        r.get::<_, Option<i32>>(i).map(|v| v.to_string())
    } else if ty == Type::FLOAT8 {
        r.get::<_, Option<f64>>(i).map(|v| v.to_string())
    } else if ty == Type::TEXT {
        r.get::<_, Option<String>>(i)
    } else if ty == Type::BYTEA {
        r.get::<_, Option<Vec<u8>>>(i).map(|b| format!("{b:?}"))
    } else {
        panic!("column {i} has type {ty}, which the checks do not read")
    };
    s.unwrap_or_else(|| "NULL".to_owned())
}
