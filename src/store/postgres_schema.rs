//! The PostgreSQL schema: the SQLite schema's tables with PostgreSQL's types, plus
//! what several instances need (`writers`, a per-writer sink cursor), and the views
//! analysts query. Versioned in `aq_schema`; instances starting together migrate one
//! at a time under a transaction-scoped advisory lock. Append a migration; never edit
//! one that has shipped.

use super::sql::{p, Begin, Columns, Db};
use super::StoreError;

/// The advisory lock key that serialises migrations ("aqschema" as bytes).
const MIGRATION_LOCK: i64 = 0x6171_7363_6865_6d61;

/// Each entry moves the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store has after its migration 5, and the views.
    r#"
    -- Every writer session that ever committed readings: a sink's position is per
    -- writer (see store/outbox.rs).
    CREATE TABLE writers (
        id          BIGSERIAL PRIMARY KEY,
        started     TIMESTAMPTZ NOT NULL DEFAULT now(),
        backend_pid INTEGER     NOT NULL DEFAULT pg_backend_pid()
    );

    CREATE TABLE readings (
        seq           BIGSERIAL PRIMARY KEY,
        site          TEXT    NOT NULL,
        ts_ms         BIGINT  NOT NULL,
        period        BIGINT  NOT NULL,  -- 0 sample, 1 hourly mean, 2 daily mean
        device        TEXT,
        flag          TEXT    NOT NULL,  -- HJ 212-2017 flag letter
        pm25          DOUBLE PRECISION,  -- µg/m³
        pm10          DOUBLE PRECISION,  -- µg/m³
        interval_secs BIGINT,
        received_ms   BIGINT  NOT NULL,
        writer        BIGINT  NOT NULL REFERENCES writers (id)
    );
    -- A reading's identity, unique across every instance.
    CREATE UNIQUE INDEX readings_identity ON readings (site, ts_ms, period);
    -- The outbox: each writer's rows after a sink's mark for it.
    CREATE INDEX readings_outbox ON readings (writer, seq);

    CREATE TABLE sink_cursors (
        sink   TEXT   NOT NULL,
        writer BIGINT NOT NULL,
        seq    BIGINT NOT NULL,
        PRIMARY KEY (sink, writer)
    );

    CREATE TABLE dead_letters (
        id      BIGSERIAL PRIMARY KEY,
        at_ms   BIGINT NOT NULL,
        status  BIGINT NOT NULL,
        reason  TEXT   NOT NULL,
        line    TEXT   NOT NULL
    );

    CREATE TABLE rejects (
        id      BIGSERIAL PRIMARY KEY,
        at_ms   BIGINT NOT NULL,
        reason  TEXT   NOT NULL,
        topic   TEXT   NOT NULL,
        detail  TEXT   NOT NULL,
        excerpt TEXT   NOT NULL
    );
    CREATE INDEX rejects_at ON rejects (at_ms);

    CREATE TABLE hourly (
        site    TEXT   NOT NULL,
        hour_ms BIGINT NOT NULL,
        n25     BIGINT NOT NULL DEFAULT 0,
        sum25   BIGINT NOT NULL DEFAULT 0,
        cov25   BIGINT NOT NULL DEFAULT 0,
        nd25    BIGINT NOT NULL DEFAULT 0,
        dev25   BIGINT,
        n10     BIGINT NOT NULL DEFAULT 0,
        sum10   BIGINT NOT NULL DEFAULT 0,
        cov10   BIGINT NOT NULL DEFAULT 0,
        nd10    BIGINT NOT NULL DEFAULT 0,
        dev10   BIGINT,
        PRIMARY KEY (site, hour_ms)
    );
    CREATE INDEX hourly_hour ON hourly (hour_ms);

    CREATE TABLE dirty_days (
        site    TEXT   NOT NULL,
        utc_day BIGINT NOT NULL,
        PRIMARY KEY (site, utc_day)
    );
    CREATE TABLE site_daily (
        day   BIGINT NOT NULL,
        site  TEXT   NOT NULL,
        h25   BIGINT NOT NULL,
        num25 BIGINT,
        den25 BIGINT,
        h10   BIGINT NOT NULL,
        num10 BIGINT,
        den10 BIGINT,
        PRIMARY KEY (day, site)
    );
    CREATE TABLE daily_cache_key (
        id  BIGINT PRIMARY KEY CHECK (id = 1),
        key TEXT   NOT NULL
    );
    CREATE TABLE derived_pending (
        day  BIGINT NOT NULL,
        site TEXT   NOT NULL,
        PRIMARY KEY (day, site)
    );
    CREATE TABLE derived_outbox (
        seq        BIGSERIAL PRIMARY KEY,
        line       TEXT   NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE district_daily (
        day       BIGINT PRIMARY KEY,
        n25       BIGINT NOT NULL,
        h25       BIGINT NOT NULL,
        mean25    BYTEA,
        n10       BIGINT NOT NULL,
        h10       BIGINT NOT NULL,
        mean10    BYTEA,
        -- The exact means above as µg/m³, for analysts (the service reads the exact ones).
        mean25_ug DOUBLE PRECISION,
        mean10_ug DOUBLE PRECISION
    );
    CREATE TABLE district_cache_key (
        id  BIGINT PRIMARY KEY CHECK (id = 1),
        key TEXT   NOT NULL
    );

    -- The analysts' views: stable names and columns whatever the tables become.
    CREATE VIEW aq_readings AS
    SELECT site, to_timestamp(ts_ms / 1000.0) AS time,
           CASE period WHEN 0 THEN 'sample' WHEN 1 THEN 'hour' ELSE 'day' END AS period,
           device, flag, pm25, pm10, interval_secs,
           to_timestamp(received_ms / 1000.0) AS received
    FROM readings;

    CREATE VIEW aq_hourly AS
    SELECT site, to_timestamp(hour_ms / 1000.0) AS hour,
           CASE WHEN n25 > 0 THEN sum25 / 1000.0 / n25 END AS pm25_sample_mean,
           n25 AS pm25_samples, dev25 / 1000.0 AS pm25_device_mean,
           CASE WHEN n10 > 0 THEN sum10 / 1000.0 / n10 END AS pm10_sample_mean,
           n10 AS pm10_samples, dev10 / 1000.0 AS pm10_device_mean
    FROM hourly;

    CREATE VIEW aq_site_daily AS
    SELECT DATE '1970-01-01' + CAST(day AS INTEGER) AS day, site,
           h25 AS pm25_valid_hours,
           CASE WHEN den25 > 0 THEN num25 / 1000.0 / den25 END AS pm25_mean,
           h10 AS pm10_valid_hours,
           CASE WHEN den10 > 0 THEN num10 / 1000.0 / den10 END AS pm10_mean
    FROM site_daily;

    -- The district's days as cached by the last refresh (the sites counted, the most
    -- valid hours of a counted site, the mean of the counted sites' daily means). The
    -- minimum-sites rule and the classes are applied by the service (`report`, the API).
    CREATE VIEW aq_district_daily AS
    SELECT DATE '1970-01-01' + CAST(day AS INTEGER) AS day,
           n25 AS pm25_sites, h25 AS pm25_max_valid_hours, mean25_ug AS pm25_mean,
           n10 AS pm10_sites, h10 AS pm10_max_valid_hours, mean10_ug AS pm10_mean
    FROM district_daily;
    "#,
];

/// Applies pending migrations, one instance at a time.
pub(super) fn migrate(db: &Db) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let tx = db.begin(Begin::Write)?;
    // Held until COMMIT: a second instance waits here, then finds the schema current.
    tx.exec("SELECT pg_advisory_xact_lock(?1)", p![MIGRATION_LOCK])?;
    tx.batch("CREATE TABLE IF NOT EXISTS aq_schema (version BIGINT NOT NULL)")?;
    let found = tx
        .row("SELECT max(version) FROM aq_schema", p![])?
        .map_or(Ok(None), |r| r.opt_i64(0))?
        .unwrap_or(0);
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch(sql).map_err(|source| StoreError::Migration {
            version: i + 1,
            source: Box::new(source),
        })?;
    }
    if found < known {
        tx.exec("DELETE FROM aq_schema", p![])?;
        tx.exec("INSERT INTO aq_schema (version) VALUES (?1)", p![known])?;
    }
    tx.commit()
}
