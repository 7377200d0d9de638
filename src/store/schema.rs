//! Versioned migrations, applied in order and recorded in `PRAGMA user_version`. Add a
//! migration by appending to [`MIGRATIONS`]; never edit one that has shipped.

/// Each entry moves the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: readings (which double as the sink's outbox), sink cursors, dead letters, rejects.
    r#"
    -- Rows are clustered in commit order (seq): inserts append, and the sinks' outbox
    -- is "readings with seq above my cursor", a cheap range scan with no second copy.
    -- AUTOINCREMENT: a seq is never reused, even after pruning, so no cursor skips one.
    CREATE TABLE readings (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        site          TEXT    NOT NULL,
        ts_ms         INTEGER NOT NULL,
        period        INTEGER NOT NULL,  -- 0 sample, 1 hourly mean
        device        TEXT,
        flag          TEXT    NOT NULL,  -- HJ 212-2017 flag letter
        pm25          REAL,              -- µg/m³
        pm10          REAL,              -- µg/m³
        interval_secs INTEGER,
        received_ms   INTEGER NOT NULL
    );
    -- Identity: a redelivered or re-uploaded reading hits this index and is ignored. It
    -- also serves every per-site time-range query.
    CREATE UNIQUE INDEX readings_identity ON readings (site, ts_ms, period);

    -- How far each sink has delivered (or dead-lettered): the highest seq done.
    CREATE TABLE sink_cursors (
        sink TEXT    PRIMARY KEY,
        seq  INTEGER NOT NULL
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
    // 2: hourly aggregates per site (UTC hour buckets; every supported time zone is a
    // whole-hour offset, so they are local hours too), maintained in the same
    // transaction as the readings, and backfilled from the readings already stored.
    // Per pollutant: normal-flag samples (count, sum in milli-µg/m³, seconds covered by
    // samples that state their interval, count of those that do not), and the device's
    // own normal-flag hourly mean.
    r#"
    CREATE TABLE hourly (
        site    TEXT    NOT NULL,
        hour_ms INTEGER NOT NULL,
        n25     INTEGER NOT NULL DEFAULT 0,
        sum25   INTEGER NOT NULL DEFAULT 0,
        cov25   INTEGER NOT NULL DEFAULT 0,
        nd25    INTEGER NOT NULL DEFAULT 0,
        dev25   INTEGER,
        n10     INTEGER NOT NULL DEFAULT 0,
        sum10   INTEGER NOT NULL DEFAULT 0,
        cov10   INTEGER NOT NULL DEFAULT 0,
        nd10    INTEGER NOT NULL DEFAULT 0,
        dev10   INTEGER,
        PRIMARY KEY (site, hour_ms)
    ) WITHOUT ROWID;
    CREATE INDEX hourly_hour ON hourly (hour_ms);

    INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10)
    SELECT site, (ts_ms / 3600000) * 3600000,
        sum(period = 0 AND flag = 'N' AND pm25 IS NOT NULL),
        sum(CASE WHEN period = 0 AND flag = 'N' AND pm25 IS NOT NULL THEN CAST(round(pm25 * 1000) AS INTEGER) ELSE 0 END),
        sum(CASE WHEN period = 0 AND flag = 'N' AND pm25 IS NOT NULL AND interval_secs IS NOT NULL THEN min(interval_secs, 3600) ELSE 0 END),
        sum(period = 0 AND flag = 'N' AND pm25 IS NOT NULL AND interval_secs IS NULL),
        max(CASE WHEN period = 1 AND flag = 'N' AND pm25 IS NOT NULL THEN CAST(round(pm25 * 1000) AS INTEGER) END),
        sum(period = 0 AND flag = 'N' AND pm10 IS NOT NULL),
        sum(CASE WHEN period = 0 AND flag = 'N' AND pm10 IS NOT NULL THEN CAST(round(pm10 * 1000) AS INTEGER) ELSE 0 END),
        sum(CASE WHEN period = 0 AND flag = 'N' AND pm10 IS NOT NULL AND interval_secs IS NOT NULL THEN min(interval_secs, 3600) ELSE 0 END),
        sum(period = 0 AND flag = 'N' AND pm10 IS NOT NULL AND interval_secs IS NULL),
        max(CASE WHEN period = 1 AND flag = 'N' AND pm10 IS NOT NULL THEN CAST(round(pm10 * 1000) AS INTEGER) END)
    FROM readings
    GROUP BY site, ts_ms / 3600000;
    "#,
    // 3: daily values per site, a cache refreshed on read. Each commit marks the UTC
    // days it touched in `dirty_days` (cheap); a report recomputes the local days those
    // overlap from the hourly aggregates and reads the rest from `site_daily`. The
    // cache key records the rules the values were computed with (zone, cadence), so a
    // config change rebuilds it.
    r#"
    CREATE TABLE dirty_days (
        site    TEXT    NOT NULL,
        utc_day INTEGER NOT NULL,
        PRIMARY KEY (site, utc_day)
    ) WITHOUT ROWID;
    CREATE TABLE site_daily (
        day   INTEGER NOT NULL,  -- local day number since 1970-01-01
        site  TEXT    NOT NULL,
        h25   INTEGER NOT NULL,  -- valid hours
        num25 INTEGER,           -- valid daily mean, milli-µg/m³, as num / den
        den25 INTEGER,
        h10   INTEGER NOT NULL,
        num10 INTEGER,
        den10 INTEGER,
        PRIMARY KEY (day, site)
    ) WITHOUT ROWID;
    CREATE TABLE daily_cache_key (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        key TEXT NOT NULL
    );
    INSERT INTO dirty_days SELECT DISTINCT site, hour_ms / 86400000 FROM hourly;
    "#,
    // 4: derived series for the sinks: hourly means (emitted with each commit) and
    // daily values (emitted for the site-days each refresh recomputed). Lines carry
    // deterministic timestamps, so a re-emitted value overwrites in InfluxDB.
    r#"
    CREATE TABLE derived_pending (
        day  INTEGER NOT NULL,
        site TEXT    NOT NULL,
        PRIMARY KEY (day, site)
    ) WITHOUT ROWID;
    CREATE TABLE derived_outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        line       TEXT    NOT NULL,
        created_ms INTEGER NOT NULL
    );
    "#,
    // 5: the district's daily values, a cache over `site_daily` refreshed with it, so a
    // half-year target report reads 184 rows instead of 238 × 184. Per pollutant: the
    // counted sites with a valid daily value, the most valid hours of a counted site,
    // and the exact mean of those values (numerator and denominator as 16-byte
    // little-endian i128s: a mean of 238 fractions can outgrow 64 bits). The key
    // records the site cache's rules plus the district exclusion list; the
    // minimum-sites rule is applied on read.
    r#"
    CREATE TABLE district_daily (
        day    INTEGER PRIMARY KEY,  -- local day number since 1970-01-01
        n25    INTEGER NOT NULL,
        h25    INTEGER NOT NULL,
        mean25 BLOB,
        n10    INTEGER NOT NULL,
        h10    INTEGER NOT NULL,
        mean10 BLOB
    );
    CREATE TABLE district_cache_key (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        key TEXT NOT NULL
    );
    "#,
    // 6: the district means as µg/m³ beside the exact ones, for analysts who query the
    // store directly (the service reads the exact ones). Filled at the next refresh.
    r#"
    ALTER TABLE district_daily ADD COLUMN mean25_ug REAL;
    ALTER TABLE district_daily ADD COLUMN mean10_ug REAL;
    "#,
    // 7: the hourly aggregates clustered by hour, then site (they were by site, then
    // hour). A commit adds to the current hour of every site it has readings of: keyed
    // by site first, each of those rows sits on its site's own page once a store has a
    // few days, and the commit rewrites (WAL frame, checkpoint) one 4 KiB page per site;
    // keyed by hour first, one hour's rows of all sites share a few pages. Per-site
    // reads go through `hourly_site`, which changes only when a site-hour is new.
    // (PostgreSQL keeps its layout: an update there writes a new row version in the
    // heap, which is in insertion order already.)
    r#"
    CREATE TABLE hourly_by_hour (
        site    TEXT    NOT NULL,
        hour_ms INTEGER NOT NULL,
        n25     INTEGER NOT NULL DEFAULT 0,
        sum25   INTEGER NOT NULL DEFAULT 0,
        cov25   INTEGER NOT NULL DEFAULT 0,
        nd25    INTEGER NOT NULL DEFAULT 0,
        dev25   INTEGER,
        n10     INTEGER NOT NULL DEFAULT 0,
        sum10   INTEGER NOT NULL DEFAULT 0,
        cov10   INTEGER NOT NULL DEFAULT 0,
        nd10    INTEGER NOT NULL DEFAULT 0,
        dev10   INTEGER,
        PRIMARY KEY (hour_ms, site)
    ) WITHOUT ROWID;
    INSERT INTO hourly_by_hour (site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10)
    SELECT site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10
    FROM hourly ORDER BY hour_ms, site;
    DROP TABLE hourly;
    -- Legacy rename: an analyst's view over `hourly` would otherwise make the rename
    -- fail (SQLite re-checks every view against the schema without the dropped table);
    -- with it, such a view reads the new table by its name. (Triggers on `hourly` go
    -- with the old table.)
    PRAGMA legacy_alter_table = ON;
    ALTER TABLE hourly_by_hour RENAME TO hourly;
    PRAGMA legacy_alter_table = OFF;
    CREATE INDEX hourly_site ON hourly (site, hour_ms);
    "#,
];
