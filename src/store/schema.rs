//! Versioned migrations, applied in order and recorded in `PRAGMA user_version`. Add a
//! migration by appending to [`MIGRATIONS`]; never edit one that has shipped.

/// Each entry moves the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: readings, outbox, dead letters, rejects.
    r#"
    -- Identity is (site, ts_ms, period): a redelivered reading hits the primary key and
    -- is ignored. WITHOUT ROWID keeps the table clustered on that key, which is also the
    -- order every query reads it in.
    CREATE TABLE readings (
        site          TEXT    NOT NULL,
        ts_ms         INTEGER NOT NULL,
        period        INTEGER NOT NULL,  -- 0 sample, 1 hourly mean
        device        TEXT,
        flag          TEXT    NOT NULL,  -- HJ 212-2017 flag letter
        pm25          REAL,              -- µg/m³
        pm10          REAL,              -- µg/m³
        interval_secs INTEGER,
        received_ms   INTEGER NOT NULL,
        PRIMARY KEY (site, ts_ms, period)
    ) WITHOUT ROWID;

    -- Lines waiting for the InfluxDB sink, in commit order. A row is deleted when the
    -- server has accepted it (or dead-lettered it), so the table is the sink's queue.
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        line       TEXT    NOT NULL,
        created_ms INTEGER NOT NULL
    );

    -- Lines the server refused one by one after bisection; kept for an operator.
    CREATE TABLE dead_letters (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        status  INTEGER NOT NULL,
        reason  TEXT    NOT NULL,
        line    TEXT    NOT NULL
    );

    -- Refused payloads and readings, so an operator can see what devices send wrong.
    CREATE TABLE rejects (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        reason  TEXT    NOT NULL,
        topic   TEXT    NOT NULL,
        detail  TEXT    NOT NULL,
        excerpt TEXT    NOT NULL
    );
    CREATE INDEX rejects_at ON rejects (at_ms);
    "#,
];
