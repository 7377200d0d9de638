//! The store: the durable buffer that makes acks safe, the outbox the sinks drain
//! (`outbox`: readings after each sink's cursor), and the series analysts query. Two
//! engines behind one surface ([`sql`]): an embedded SQLite file (the one-command
//! default, one service per file) or a PostgreSQL server shared by several instances
//! (`[store] backend = "postgres"`).
//!
//! Roles are types, each on its own connection: the [`Writer`] (the ingest) is the only
//! handle that commits readings and their hourly aggregates; an [`Outbox`] per sink
//! reads what is pending and moves that sink's cursor; the [`Maintainer`]
//! (housekeeping, operator commands) refreshes the day caches, prunes and requeues; a
//! plain [`Store`] (the API, reports) only queries. SQLite's WAL mode lets them read
//! while the writer commits and `busy_timeout` serialises their short writes; on
//! PostgreSQL every instance has its own writer and the rows' unique keys decide.
//! [`on_blocking_thread`] is the one way async code runs a store call.

mod daily;
mod district;
mod hourly;
pub use hourly::hour_changed_by;
mod lock;
mod outbox;
mod postgres_schema;
mod queries;
mod readings;
pub mod roles;
mod schema;
pub(crate) mod sql;

pub use daily::DayRows;
pub use lock::StoreLock;
pub use outbox::{Cursor, DeadLetter, DeadLetterCount, DeadLetterKind, Outbox, Pos, Resend};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::model::{Reading, UnixMillis};
use crate::reject::Rejection;
use sql::{p, Begin, Columns, Db, Engine};

/// How long a connection waits for another's write lock before failing. Sink writes are
/// a few ms; this only has to cover a checkpoint on a slow disk.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite page cache per connection, in KiB.
const CACHE_KIB: i64 = 64 * 1024;

/// SQLite page cache of each of the API's read connections, in KiB: several of them
/// side by side must not multiply the service's memory.
const READER_CACHE_KIB: i64 = 8 * 1024;

/// WAL size, in 4 KiB pages, that triggers an automatic checkpoint (SQLite's default is
/// 1000). About 40 MiB of WAL at most between checkpoints.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// Most rejects kept, whatever their age: a device flooding garbage must not fill the disk.
pub const MAX_REJECT_ROWS: i64 = 100_000;

/// How often a PostgreSQL commit that lost a deadlock or a serialization conflict to
/// another instance is tried again before the error goes to the caller (which keeps
/// its messages unacknowledged and retries later).
const PG_CONFLICT_RETRIES: u32 = 5;

/// How long connecting to PostgreSQL may take before it counts as down.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's `synchronous` setting, named for what it guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=FULL`: a commit is on disk when it returns (survives power loss).
    #[default]
    PowerLoss,
    /// `synchronous=NORMAL`: a commit survives a crash of the process but the last
    /// commits before a power loss may roll back. Faster on slow disks.
    ProcessCrash,
}

/// The store's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// An embedded SQLite file (`path`): no server, one service per file.
    #[default]
    Sqlite,
    /// A PostgreSQL server (`url`): several instances share it.
    Postgres,
}

/// The store's own config (`[store]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The engine.
    #[serde(default)]
    pub backend: Backend,
    /// SQLite: the database file; its directory is created when missing.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// PostgreSQL: the connection, as a URL (`postgres://aq@db.example:5432/aq`) or
    /// `key=value` pairs. No password here: see `password_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: the environment variable that holds the password (when the server
    /// asks for one).
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// Readings and rejects older than this many days are pruned; readings older than
    /// this are refused on the way in. 0 (the default) keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// What a commit survives (SQLite; a PostgreSQL commit is as durable as the
    /// server's `fsync`/`synchronous_commit`).
    #[serde(default)]
    pub durability: Durability,
}

fn default_path() -> PathBuf {
    PathBuf::from("data/aq-ingest.db")
}

fn default_password_env() -> String {
    "AQ_STORE_PASSWORD".to_owned()
}

fn default_retention_days() -> u32 {
    // Keep everything: the bureau's targets and annual means look back years (the
    // district's reference period is 2016), and a minute-cadence site is ~25 MB a year.
    0
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::default(),
            path: default_path(),
            url: None,
            password_env: default_password_env(),
            retention_days: default_retention_days(),
            durability: Durability::default(),
        }
    }
}

impl StoreConfig {
    /// A PostgreSQL store at `url`.
    pub fn postgres(url: &str) -> StoreConfig {
        StoreConfig {
            backend: Backend::Postgres,
            url: Some(url.to_owned()),
            ..StoreConfig::default()
        }
    }

    /// What a log line or an error calls this store: the SQLite file, or the
    /// PostgreSQL server without credentials.
    pub fn describe(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.path.display().to_string(),
            Backend::Postgres => match self.pg_config() {
                Ok(c) => format!(
                    "postgres {:?} database {}",
                    c.get_hosts(),
                    c.get_dbname().unwrap_or("(default)")
                ),
                Err(e) => format!("postgres ({e})"),
            },
        }
    }

    /// [`StoreConfig::pg_config`] for the asynchronous client (the role locks).
    fn pg_async_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let url = self.url.as_deref().ok_or(StoreError::NoUrl)?;
        let mut c: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::BadUrl(e.to_string()))?;
        if let Ok(pw) = std::env::var(&self.password_env) {
            c.password(pw);
        }
        c.application_name("aq-ingest (role lock)");
        c.connect_timeout(PG_CONNECT_TIMEOUT);
        c.keepalives(true);
        c.keepalives_idle(Duration::from_secs(10));
        Ok(c)
    }

    /// The PostgreSQL connection settings, the password from the environment.
    fn pg_config(&self) -> Result<postgres::Config, StoreError> {
        let url = self.url.as_deref().ok_or(StoreError::NoUrl)?;
        let mut c: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::BadUrl(e.to_string()))?;
        if c.get_password().is_some() {
            return Err(StoreError::BadUrl(format!(
                "the URL carries a password; put it in the environment variable {} instead",
                self.password_env
            )));
        }
        if let Ok(pw) = std::env::var(&self.password_env) {
            c.password(pw);
        }
        c.application_name("aq-ingest");
        c.connect_timeout(PG_CONNECT_TIMEOUT);
        c.keepalives(true);
        c.keepalives_idle(Duration::from_secs(10));
        Ok(c)
    }
}

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store schema version {found} is newer than this build knows ({known}); upgrade aq-ingest"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("migration to schema version {version} failed: {source}")]
    Migration {
        version: usize,
        source: Box<StoreError>,
    },
    #[error("the store {store} is in use by another aq-ingest service (it holds {lock}); one service per store — stop it first")]
    InUse { store: PathBuf, lock: PathBuf },
    #[error("cannot lock the store with {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store holds an invalid row: {0}")]
    Corrupt(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("[store] backend = \"postgres\" needs url")]
    NoUrl,
    #[error("[store] url: {0}")]
    BadUrl(String),
    #[error(
        "the connection to PostgreSQL was lost inside a transaction (rolled back by the server)"
    )]
    ConnectionLost,
    #[error("the PostgreSQL server is a read-only standby; point [store] url at the primary")]
    ReadOnly,
    #[error("role lock on {store}: {source}")]
    RoleLock {
        store: String,
        source: tokio_postgres::Error,
    },
}

impl StoreError {
    /// A conflict with another instance's transaction (deadlock, serialization
    /// failure, a unique key taken concurrently): the same transaction may succeed
    /// when run again.
    fn is_conflict(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            StoreError::Postgres(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            _ => false,
        }
    }
}

/// One refused payload or reading to record.
#[derive(Debug, Clone)]
pub struct RejectRecord {
    pub rejection: Rejection,
    pub topic: String,
    pub excerpt: String,
}

/// What one batch commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    pub stored: u64,
    pub duplicates: u64,
}

/// What one batch commit did, with the site-hours it changed (their aggregates after
/// the commit) when asked for (`watch`: the alerts).
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub outcome: CommitOutcome,
    pub hours: Vec<crate::aqi::daily::SiteHour>,
    /// Where the new readings went in the outbox, when that is known exactly (SQLite),
    /// for the sink's in-memory tail (`sink::tail`).
    pub appended: Option<Appended>,
}

/// The readings a commit inserted and their seqs: the `i`-th reading given to the
/// commit is new when `inserted[i]`, and the new ones have seqs `first_seq`,
/// `first_seq + 1`, … in that order.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    pub first_seq: i64,
    /// New readings (the `true`s of `inserted`).
    pub count: usize,
    pub inserted: Vec<bool>,
}

/// A handle on the store: one connection, for the roles that read, refresh the day
/// caches, drain an outbox or prune. Readings are committed by a [`Writer`] only.
pub struct Store {
    db: Db,
}

/// Turns a site-hour's aggregate into derived-series lines.
pub type HourlyLines = Box<dyn Fn(&crate::aqi::daily::SiteHour) -> Option<String> + Send>;

/// Runs `f` with `handle` on a blocking thread (store calls block) and gives the handle
/// back with the result. The one `spawn_blocking` round trip of the async stages.
pub async fn on_blocking_thread<H, T>(
    mut handle: H,
    f: impl FnOnce(&mut H) -> T + Send + 'static,
) -> Result<(H, T), tokio::task::JoinError>
where
    H: Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(&mut handle);
        (handle, r)
    })
    .await
}

/// Opens a store handle on a blocking thread: opening may connect to PostgreSQL,
/// whose synchronous client must not block an async worker.
pub async fn open_blocking<H: Send + 'static>(
    open: impl FnOnce() -> Result<H, StoreError> + Send + 'static,
) -> Result<H, StoreError> {
    match tokio::task::spawn_blocking(open).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Housekeeping's and the operator's handle: refreshes the site and district day
/// caches and emits the derived daily series, prunes past retention, and queues lines
/// again (`dead-letters --requeue`, `resend`). The only handle outside the crate that
/// writes anything but readings and a sink's cursor.
pub struct Maintainer {
    store: Store,
}

impl Maintainer {
    /// Opens the store for maintenance.
    pub fn open(cfg: &StoreConfig) -> Result<Maintainer, StoreError> {
        Ok(Maintainer {
            store: Store::open(cfg)?,
        })
    }

    /// Recomputes the site and district days touched since the last refresh; returns
    /// how many site-days it wrote.
    pub fn refresh_daily(&mut self, aqi: &crate::aqi::AqiConfig) -> Result<usize, StoreError> {
        self.store.refresh_daily(aqi)
    }

    /// See [`Store::emit_derived_days`].
    pub fn emit_derived_days(
        &mut self,
        now: UnixMillis,
        make: impl FnOnce(&[(chrono::NaiveDate, String)], &DayRows) -> Vec<String>,
    ) -> Result<usize, StoreError> {
        self.store.emit_derived_days(now, make)
    }

    /// See [`Store::prune`].
    pub fn prune(
        &mut self,
        cutoff: Option<UnixMillis>,
        unsent_for: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.store.prune(cutoff, unsent_for)
    }

    /// Queues the server-refused dead letters again; returns how many.
    pub fn requeue_dead_letters(&mut self, now: UnixMillis) -> Result<u64, StoreError> {
        self.store.requeue_dead_letters(now)
    }

    /// See [`Store::resend`].
    pub fn resend(
        &mut self,
        sink: &str,
        hour_line: Option<&HourlyLines>,
        now: UnixMillis,
    ) -> Result<Resend, StoreError> {
        self.store.resend(sink, hour_line, now)
    }

    /// The read side of the same connection.
    pub fn reader(&self) -> &Store {
        &self.store
    }

    /// See [`Store::shrink_memory`].
    pub fn shrink_memory(&self) -> Result<(), StoreError> {
        self.store.shrink_memory()
    }
}

/// The ingest's handle: the only one that commits readings, the hourly aggregates they
/// change and rejects, all in one transaction. (A sink sends the hourly lines of the
/// readings it sends, read from the aggregates then: the commit queues none.)
pub struct Writer {
    store: Store,
    /// PostgreSQL: this writer's id in `writers` and the session it was registered on.
    /// A sink's position is per writer (see [`Cursor`]), which is exact only while a
    /// writer's commits are sequential; a commit in flight when a connection died may
    /// still land after the next session's, so each session takes a new id.
    pg_writer: Option<(u64, i64)>,
}

impl Writer {
    /// Opens the store for writing (creating it and migrating when needed).
    pub fn open(cfg: &StoreConfig) -> Result<Writer, StoreError> {
        Ok(Writer {
            store: Store::open(cfg)?,
            pg_writer: None,
        })
    }

    /// Commits readings (ignoring those already stored), the hourly aggregates they
    /// change and rejects in one transaction. Durable per [`Durability`] when it
    /// returns: only then may the messages they came from be acknowledged.
    pub fn commit_batch_durable(
        &mut self,
        readings: &[Reading],
        rejects: &[RejectRecord],
        now: UnixMillis,
    ) -> Result<CommitOutcome, StoreError> {
        Ok(self.commit_batch(readings, rejects, now, false)?.outcome)
    }

    /// [`Writer::commit_batch_durable`], also returning what the commit appended and,
    /// with `watch`, the site-hours it changed (for alerts; reading them back costs a
    /// few thousand instructions a site-hour, so only when asked). On PostgreSQL a
    /// transaction that lost a deadlock or a serialization conflict to another instance
    /// runs again (it changed nothing).
    pub fn commit_batch(
        &mut self,
        readings: &[Reading],
        rejects: &[RejectRecord],
        now: UnixMillis,
        watch: bool,
    ) -> Result<Committed, StoreError> {
        let mut attempt = 0;
        loop {
            match self
                .store
                .commit(readings, rejects, watch, &mut self.pg_writer, now)
            {
                Err(e) if e.is_conflict() && attempt < PG_CONFLICT_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }

    /// The store underneath, for checks in tests and for one-shot commands that write
    /// and then read on the same connection.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Store {
    /// Opens the store, creating it (SQLite) and applying pending migrations.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let mut store = match cfg.backend {
            Backend::Sqlite => Store {
                db: Db::sqlite(open_sqlite(cfg)?),
            },
            Backend::Postgres => Store {
                db: Db::postgres(cfg.pg_config()?)?,
            },
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens a connection for queries only (the API's pool): like [`Store::open`], with
    /// a smaller SQLite page cache, since several of them live side by side and the
    /// kernel's page cache holds the file anyway.
    pub fn open_reader(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let store = Store::open(cfg)?;
        if let Some(c) = store.db.sqlite_conn() {
            c.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
        }
        Ok(store)
    }

    /// Returns this connection's cached pages to the allocator. A connection that
    /// wakes on a timer (housekeeping) would otherwise hold up to `CACHE_KIB` between
    /// ticks for nothing. (PostgreSQL's cache is the server's.)
    pub fn shrink_memory(&self) -> Result<(), StoreError> {
        if let Some(c) = self.db.sqlite_conn() {
            c.execute_batch("PRAGMA shrink_memory")?;
        }
        Ok(())
    }

    /// The SQLite database file (None on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        self.db.sqlite_conn().and_then(|c| c.path()).map(Path::new)
    }

    /// Applies pending migrations.
    fn migrate(&mut self) -> Result<(), StoreError> {
        match self.db.engine() {
            Engine::Sqlite => self.migrate_sqlite(),
            Engine::Postgres => postgres_schema::migrate(&self.db),
        }
    }

    /// SQLite's migrations, recorded in `PRAGMA user_version`. An up-to-date store is
    /// only read: every stage opens its own connection at start while others may
    /// already write, and a deferred transaction that upgrades to a write after
    /// another connection's commit fails at once in WAL mode (`SQLITE_BUSY_SNAPSHOT`,
    /// no busy wait). A migration takes the write lock up front (`BEGIN IMMEDIATE`,
    /// which does wait its turn).
    fn migrate_sqlite(&mut self) -> Result<(), StoreError> {
        let known = schema::MIGRATIONS.len() as i64;
        let conn = self.db.sqlite_conn().expect("sqlite");
        let version = |c: &rusqlite::Connection| -> Result<i64, StoreError> {
            Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)
        };
        if version(conn)? == known {
            return Ok(());
        }
        let tx = self.db.begin(Begin::Exclusive)?;
        let found = version(conn)?;
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch(sql).map_err(|source| StoreError::Migration {
                version: i + 1,
                source: Box::new(source),
            })?;
        }
        conn.pragma_update(None, "user_version", known)?;
        tx.commit()
    }

    /// The commit behind [`Writer`]; in-crate tests call it through
    /// [`Store::commit_batch_durable`]. `pg_writer` is the writer's PostgreSQL id and
    /// the session it was registered on (see [`Writer`]); a commit on another session
    /// registers a new id inside its own transaction, kept only when it commits.
    // Long because the statement, its parameters and the outcome count read best in
    // one place.
    fn commit(
        &mut self,
        readings: &[Reading],
        rejects: &[RejectRecord],
        watch: bool,
        pg_writer: &mut Option<(u64, i64)>,
        now: UnixMillis,
    ) -> Result<Committed, StoreError> {
        let engine = self.db.engine();
        // The write lock up front: the commit reads (the last seq) before it writes, and
        // a deferred transaction whose snapshot another connection's commit (the sink
        // moving its cursor) made stale fails at its first write at once, without the
        // busy wait — a spurious failed commit, retried after a backoff.
        let tx = self.db.begin(Begin::Exclusive)?;
        // After BEGIN: a reconnection happens there, never inside the transaction.
        let (writer, registered) = match (tx.session(), *pg_writer) {
            (None, _) => (0, None),
            (Some(now_on), Some((on, id))) if on == now_on => (id, None),
            (Some(now_on), _) => {
                let id = outbox::register_writer(&tx)?;
                (id, Some((now_on, id)))
            }
        };
        let mut out = CommitOutcome::default();
        // PostgreSQL: another instance may insert the same identities concurrently;
        // both insert in key order, so one waits for the other instead of deadlocking.
        let mut order: Vec<&Reading> = readings.iter().collect();
        if engine == Engine::Postgres {
            order.sort_by(|a, b| {
                (a.site.as_str(), a.ts.0, a.period.code()).cmp(&(
                    b.site.as_str(),
                    b.ts.0,
                    b.period.code(),
                ))
            });
        }
        let mut hours = hourly::Batch::default();
        // SQLite: one writer, and AUTOINCREMENT gives the rows of the batch seqs above
        // the last one it ever handed out (`sqlite_sequence`), increasing in insertion
        // order. A row skipped as a duplicate uses up a seq too, so only when the seqs
        // used are exactly as many as the rows inserted (a commit without duplicates)
        // are the new rows `before + 1 ..= after` in batch order.
        let max_seq = |tx: &Db| -> Result<i64, StoreError> {
            let mut m = 0;
            tx.each(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'readings'), 0)",
                p![],
                |r| {
                    m = r.i64(0)?;
                    Ok(())
                },
            )?;
            Ok(m)
        };
        let before = match engine {
            Engine::Sqlite => Some(max_seq(&tx)?),
            Engine::Postgres => None,
        };
        let new = readings::insert(&tx, &order, writer, now)?;
        for (r, &new) in order.iter().zip(&new) {
            if new {
                out.stored += 1;
                hours.add(r);
            } else {
                out.duplicates += 1;
            }
        }
        let touched = hours.apply(&tx, watch)?;
        for r in rejects {
            tx.exec(
                "INSERT INTO rejects (at_ms, reason, topic, detail, excerpt)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                p![
                    now.0,
                    r.rejection.reason.as_str(),
                    &r.topic,
                    &r.rejection.detail,
                    &r.excerpt
                ],
            )?;
        }
        let appended = match before {
            Some(before) if max_seq(&tx)? - before == out.stored as i64 => Some(Appended {
                first_seq: before + 1,
                count: out.stored as usize,
                inserted: new,
            }),
            _ => None,
        };
        tx.commit()?;
        if registered.is_some() {
            *pg_writer = registered;
        }
        Ok(Committed {
            outcome: out,
            hours: touched,
            appended,
        })
    }

    /// A commit, for the crate's own tests of the roles that read what a writer
    /// committed.
    #[cfg(test)]
    pub(crate) fn commit_batch_durable(
        &mut self,
        readings: &[Reading],
        rejects: &[RejectRecord],
        now: UnixMillis,
    ) -> Result<CommitOutcome, StoreError> {
        Ok(self
            .commit(readings, rejects, false, &mut None, now)?
            .outcome)
    }

    /// Deletes readings and rejects older than `cutoff` (when there is one), and rejects
    /// beyond [`MAX_REJECT_ROWS`]. Returns the number of readings deleted. With
    /// `unsent_for: Some(sink)`, readings that sink has not delivered yet are kept
    /// whatever their age: the store is the sink's buffer, and an outage longer than
    /// the retention must not lose them.
    pub(crate) fn prune(
        &mut self,
        cutoff: Option<UnixMillis>,
        unsent_for: Option<&str>,
    ) -> Result<u64, StoreError> {
        let tx = self.db.begin(Begin::Write)?;
        let mut n = 0;
        if let Some(cutoff) = cutoff {
            n = tx.exec(
                outbox::prune_readings_sql(tx.engine()),
                p![cutoff.0, unsent_for],
            )?;
            tx.exec("DELETE FROM rejects WHERE at_ms < ?1", p![cutoff.0])?;
        }
        tx.exec(
            "DELETE FROM rejects WHERE id <= (SELECT max(id) FROM rejects) - ?1",
            p![MAX_REJECT_ROWS],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Number of stored readings.
    pub fn reading_count(&self) -> Result<u64, StoreError> {
        let r = self.db.row("SELECT count(*) FROM readings", p![])?;
        Ok(r.map_or(Ok(0), |r| r.i64(0))? as u64)
    }

    /// The latest stored reading time of a site, if any.
    pub fn last_reading(&self, site: &str) -> Result<Option<UnixMillis>, StoreError> {
        let r = self
            .db
            .row("SELECT max(ts_ms) FROM readings WHERE site = ?1", p![site])?;
        Ok(match r {
            Some(r) => r.opt_i64(0)?.map(UnixMillis),
            None => None,
        })
    }
}

#[cfg(test)]
impl Store {
    /// The SQLite connection underneath, for tests that look behind the store's back.
    pub(crate) fn sqlite(&self) -> &rusqlite::Connection {
        self.db.sqlite_conn().expect("an SQLite store")
    }
}

/// Opens (creating when missing) an SQLite store file with the store's settings.
fn open_sqlite(cfg: &StoreConfig) -> Result<rusqlite::Connection, StoreError> {
    if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let open_err = |source| StoreError::Open {
        path: cfg.path.clone(),
        source,
    };
    let conn = rusqlite::Connection::open(&cfg.path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    let sync = match cfg.durability {
        Durability::PowerLoss => "FULL",
        Durability::ProcessCrash => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(open_err)?;
    // Every commit rewrites the current identity-index page of each site it touches.
    // A page cache that holds the hot pages saves re-reading
    // them through the kernel, and a longer WAL between checkpoints writes each hot
    // page to the database file once per checkpoint instead of once per 1000 frames.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(open_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .map_err(open_err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, SiteId};
    use crate::reject::RejectReason;

    fn reading(site: &str, ts: i64, pm10: f64) -> Reading {
        Reading {
            site: SiteId::parse(site).unwrap(),
            device: None,
            ts: UnixMillis(ts),
            period: Period::Sample,
            flag: Flag::Normal,
            pm25: None,
            pm10: Some(MicrogramsPerCubicMetre::new(pm10).unwrap()),
            interval_secs: None,
        }
    }

    /// The SQLite cursor (one writer, 0) at `seq`.
    fn at(seq: i64) -> Cursor {
        let mut c = Cursor::default();
        if seq > 0 {
            c.advance(Pos { writer: 0, seq });
        }
        c
    }

    fn at0() -> Cursor {
        Cursor::default()
    }

    pub(super) fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&StoreConfig {
            path: dir.path().join("sub/aq.db"),
            ..StoreConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn redelivered_readings_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let now = UnixMillis(1);
        let a = s
            .commit_batch_durable(
                &[reading("a", 1000, 5.0), reading("b", 1000, 6.0)],
                &[],
                now,
            )
            .unwrap();
        assert_eq!(
            a,
            CommitOutcome {
                stored: 2,
                duplicates: 0
            }
        );
        // Same identity, different value: the first one stays.
        let b = s
            .commit_batch_durable(
                &[reading("a", 1000, 9.0), reading("a", 2000, 7.0)],
                &[],
                now,
            )
            .unwrap();
        assert_eq!(
            b,
            CommitOutcome {
                stored: 1,
                duplicates: 1
            }
        );
        assert_eq!(s.reading_count().unwrap(), 3);
        // Duplicates take no place in the outbox.
        assert_eq!(s.pending_stats(&at(0)).unwrap().0, 3);
        let seqs: Vec<i64> = s
            .pending(&at(0), 10)
            .unwrap()
            .iter()
            .map(|p| p.0.seq)
            .collect();
        assert_eq!(seqs.len(), 3);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "commit order: {seqs:?}"
        );
        let v: f64 = s
            .sqlite()
            .query_row(
                "SELECT pm10 FROM readings WHERE site='a' AND ts_ms=1000",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 5.0);
    }

    #[test]
    fn a_chunk_with_duplicates_stores_only_the_new_readings() {
        // More than one multi-row chunk, with redeliveries scattered through it: the
        // chunks holding one go row by row; the counts and the hours say exactly which
        // readings were new.
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let at = |i: i64| reading("a", 1_470_009_600_000 + i * 1000, 10.0);
        let first: Vec<_> = (0..100).filter(|i| i % 7 == 0).map(at).collect();
        s.commit_batch_durable(&first, &[], UnixMillis(1)).unwrap();
        // 0..200, with reading 130 twice in the chunk 128..191 (no other redelivery).
        let mut all: Vec<_> = (0..200).map(at).collect();
        all.insert(131, at(130));
        let out = s.commit_batch_durable(&all, &[], UnixMillis(2)).unwrap();
        assert_eq!(
            out,
            CommitOutcome {
                stored: 200 - first.len() as u64,
                duplicates: first.len() as u64 + 1
            }
        );
        assert_eq!(s.reading_count().unwrap(), 200);
        let hours = s
            .hours(UnixMillis(0), UnixMillis(i64::MAX), Some("a"))
            .unwrap();
        assert_eq!(
            hours[0].pm10.n, 200,
            "each reading counted once in its hour"
        );
        let seqs: Vec<i64> = s
            .pending(&at0(), 1000)
            .unwrap()
            .iter()
            .map(|p| p.0.seq)
            .collect();
        assert_eq!(seqs.len(), 200);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn outbox_pages_in_commit_order_and_the_cursor_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(&dir);
            let batch: Vec<_> = (0..10)
                .map(|i| reading("a", 10_000 - i * 1000, i as f64))
                .collect();
            s.commit_batch_durable(&batch, &[], UnixMillis(5)).unwrap();
            let head = s.pending(&s.cursor("influx").unwrap(), 4).unwrap();
            assert_eq!(head.len(), 4);
            assert_eq!(head[0].1, batch[0]);
            assert_eq!(head[3].1, batch[3]);
            let dead = DeadLetter {
                seq: head[2].0.seq,
                kind: DeadLetterKind::Refused { status: 400 },
                reason: "bad".into(),
                line: "x".into(),
            };
            s.advance_durable("influx", &at(head[3].0.seq), &[dead], UnixMillis(6))
                .unwrap();
            // A cursor never moves back.
            s.advance_durable("influx", &at(1), &[], UnixMillis(6))
                .unwrap();
        }
        let mut s = open(&dir);
        let cursor = s.cursor("influx").unwrap();
        assert_eq!(cursor, at(4));
        assert_eq!(s.pending_stats(&cursor).unwrap(), (6, Some(UnixMillis(5))));
        assert_eq!(s.cursor("other").unwrap(), Cursor::default());
        let dead: String = s
            .sqlite()
            .query_row("SELECT line FROM dead_letters", [], |r| r.get(0))
            .unwrap();
        assert_eq!(dead, "x");
        // New readings continue the sequence after a reopen.
        s.commit_batch_durable(&[reading("b", 1, 1.0)], &[], UnixMillis(7))
            .unwrap();
        let last = s.pending(&cursor, 100).unwrap().last().unwrap().clone();
        assert!(last.0.seq > 10);
        assert_eq!(last.1, reading("b", 1, 1.0));
    }

    #[test]
    fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(&dir);
            let rej = RejectRecord {
                rejection: Rejection::new(RejectReason::BadJson, "x"),
                topic: "aq/a/readings".into(),
                excerpt: "{".into(),
            };
            s.commit_batch_durable(&[reading("a", 1, 1.0)], &[rej], UnixMillis(1))
                .unwrap();
        }
        let s = open(&dir);
        assert_eq!(s.reading_count().unwrap(), 1);
        let v: i64 = s
            .sqlite()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, schema::MIGRATIONS.len());
        assert_eq!(s.last_reading("a").unwrap(), Some(UnixMillis(1)));
    }

    #[test]
    fn opening_beside_a_busy_writer_never_fails() {
        // Every stage opens its own connection at start while the writer (or
        // housekeeping) may already commit: an open must not turn into a write that
        // fails at once with SQLITE_BUSY_SNAPSHOT.
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("aq.db"),
            durability: Durability::ProcessCrash,
            ..StoreConfig::default()
        };
        let mut w = Writer::open(&cfg).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut t = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    t += 1000;
                    w.commit_batch_durable(&[reading("a", t, 1.0)], &[], UnixMillis(0))
                        .unwrap();
                }
                t / 1000
            })
        };
        for _ in 0..300 {
            Store::open(&cfg).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0, "the writer committed meanwhile");
    }

    #[test]
    fn a_device_s_daily_value_is_stored_but_enters_no_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let mut day = reading("a", 1_470_009_600_000, 80.0);
        day.period = Period::Day;
        let sample = reading("a", 1_470_009_600_000, 40.0);
        let out = s
            .commit_batch_durable(&[day, sample], &[], UnixMillis(1))
            .unwrap();
        assert_eq!(out.stored, 2, "same time, other period: both kept");
        let hours = s
            .hours(UnixMillis(0), UnixMillis(i64::MAX), Some("a"))
            .unwrap();
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].pm10.n, 1, "only the sample is in the hour");
    }

    #[test]
    fn prune_drops_old_readings_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        s.commit_batch_durable(
            &[reading("a", 1000, 1.0), reading("a", 5000, 1.0)],
            &[],
            UnixMillis(1),
        )
        .unwrap();
        assert_eq!(s.prune(None, None).unwrap(), 0);
        assert_eq!(s.prune(Some(UnixMillis(2000)), None).unwrap(), 1);
        assert_eq!(s.reading_count().unwrap(), 1);
    }

    #[test]
    fn refused_lines_can_be_queued_again_but_unencodable_readings_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let http400 = DeadLetterKind::Refused { status: 400 };
        let refused = |seq: i64, line: &str, kind: DeadLetterKind| DeadLetter {
            seq,
            kind,
            reason: "field type conflict".into(),
            line: line.into(),
        };
        s.advance_durable(
            "influx",
            &at(3),
            &[
                refused(1, "pm,site=a pm10=1 1000\n", http400),
                refused(2, "Point { .. }", DeadLetterKind::Unencodable),
                refused(3, "pm,site=b pm10=2 1000\n", http400),
            ],
            UnixMillis(1),
        )
        .unwrap();
        let summary: Vec<_> = s
            .dead_letter_summary()
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.reason, c.count))
            .collect();
        assert_eq!(
            summary,
            vec![
                (http400, "field type conflict".to_string(), 2),
                (
                    DeadLetterKind::Unencodable,
                    "field type conflict".to_string(),
                    1
                )
            ]
        );
        assert_eq!(s.requeue_dead_letters(UnixMillis(2)).unwrap(), 2);
        let queued: Vec<String> = s
            .derived_head(10)
            .unwrap()
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(
            queued,
            vec!["pm,site=a pm10=1 1000\n", "pm,site=b pm10=2 1000\n"]
        );
        assert_eq!(
            s.dead_letter_summary().unwrap().len(),
            1,
            "the unencodable one stays"
        );
        assert_eq!(s.requeue_dead_letters(UnixMillis(3)).unwrap(), 0);
    }

    #[test]
    fn prune_keeps_old_readings_a_sink_has_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        s.commit_batch_durable(
            &[
                reading("a", 1000, 1.0),
                reading("b", 1000, 1.0),
                reading("a", 9000, 1.0),
            ],
            &[],
            UnixMillis(1),
        )
        .unwrap();
        // The sink is down: nothing delivered, nothing pruned however old.
        assert_eq!(s.prune(Some(UnixMillis(5000)), Some("influx")).unwrap(), 0);
        // It delivered the first reading: only that one may go.
        s.advance_durable("influx", &at(1), &[], UnixMillis(1))
            .unwrap();
        assert_eq!(s.prune(Some(UnixMillis(5000)), Some("influx")).unwrap(), 1);
        assert_eq!(s.reading_count().unwrap(), 2);
        assert_eq!(
            s.pending(&at(1), 10).unwrap().len(),
            2,
            "the undelivered stay queued"
        );
    }
}
