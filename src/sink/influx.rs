//! The InfluxDB writer: drains the store's outbox (the readings after this sink's
//! cursor) to the v2 (`/api/v2/write`) or v1 (`/write`) API, one gzip batch in flight at
//! a time so that the server's last-write-wins sees points in commit order. The cursor
//! moves only past what the server accepted or refused line by line (those are
//! dead-lettered), so an InfluxDB outage of hours loses nothing and blocks nobody: the
//! ingest keeps committing and acknowledging, and the outbox waits.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flate2::write::GzEncoder;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::policy::{classify, Verdict};
use super::schema;
use super::tail::{News, Tail};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::metrics::{Metrics, WriteErrorClass};
use crate::model::Reading;
use crate::store::Outbox as OutboxStore;
use crate::store::{
    hour_changed_by, on_blocking_thread, Cursor, DeadLetter, DeadLetterKind, HourlyLines, Pos,
    StoreConfig, StoreError,
};

/// This sink's name in the store's cursor table.
pub const SINK_NAME: &str = "influx";

/// A batch of at least `batch_max_lines / BURST_TAIL_SHARE` lines, or any batch within
/// a flush interval after a request that carried that many, is a burst's tail: sent
/// once the outbox has not grown for [`BURST_TAIL_LINGER`], without waiting for the
/// flush interval (which exists to gather a trickle into one request, not to delay the
/// end of a burst or a backlog).
const BURST_TAIL_SHARE: usize = 10;

/// Bytes reserved for one reading's line: a reading with both values, a device and a
/// long site id fits without growing the string.
const LINE_CAPACITY: usize = 128;
/// The in-memory tail holds up to this many requests' readings.
const TAIL_REQUESTS: usize = 4;
/// How long a burst's tail waits for more commits.
const BURST_TAIL_LINGER: Duration = Duration::from_millis(50);
/// Bytes counted against `batch_max_bytes` for a site-hour's line before it is made (at
/// send time): a line with both pollutants and a long site id is about this long.
const HOUR_LINE_BYTES: usize = 256;

/// One encoded outbox line, and the outbox it comes from. A derived line's place is
/// its seq in the derived outbox (writer 0).
#[derive(Debug, Clone)]
struct OutboxRow {
    pos: Pos,
    line: String,
    from: Outbox,
    /// Derived lines this one supersedes (older lines of the same point): done with it.
    also: Vec<i64>,
    /// A reading that is the first of the batch in its site-hour (whose line the batch
    /// therefore carries too).
    opens_hour: bool,
    /// A queued hourly line's site-hour: it goes as the hour is stored when the batch
    /// is sent (see [`hour_of_line`]).
    refresh: Option<(String, i64)>,
}

/// Which outbox a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbox {
    /// Readings after the cursor.
    Readings,
    /// The derived-series lines queued in the store (daily values; hourly values queued
    /// by `resend` or `dead-letters --requeue`).
    Derived,
    /// The hourly line of a site-hour the batch's readings add to, made from its stored
    /// aggregate when the batch is sent: nothing queued, so nothing to remove.
    Hourly,
}

/// What a delivery finished with: the readings' cursor past every reading written or
/// dead-lettered, the derived lines done (by seq: other instances may add lines with
/// lower seqs that commit later), and the dead letters (one table for both outboxes).
struct Done {
    readings: Cursor,
    derived: Vec<i64>,
    dead: Vec<DeadLetter>,
}

impl Done {
    /// `r` was written: it and the older lines of its point it stood for are done.
    fn through(&mut self, r: &OutboxRow) {
        match r.from {
            Outbox::Readings => self.readings.advance(r.pos),
            Outbox::Derived => {
                self.derived.push(r.pos.seq);
                self.derived.extend_from_slice(&r.also);
            }
            Outbox::Hourly => {}
        }
    }

    /// `r` was refused and dead-lettered: only it is done. The older lines of its point
    /// were not sent; they stay queued, and the next request sends the newest of them.
    /// (A refreshed hourly line stood for its older lines with the same text: they are
    /// done with it, or each would be refused again.)
    fn refused(&mut self, r: &OutboxRow) {
        match r.from {
            Outbox::Readings => self.readings.advance(r.pos),
            Outbox::Derived => {
                self.derived.push(r.pos.seq);
                if r.refresh.is_some() {
                    self.derived.extend_from_slice(&r.also);
                }
            }
            Outbox::Hourly => {}
        }
    }
}

/// Which write API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// InfluxDB 2.x/3.x and VictoriaMetrics: `/api/v2/write?org=&bucket=`, token auth.
    #[default]
    V2,
    /// InfluxDB 1.x: `/write?db=`, optional basic auth.
    V1,
}

/// Whether request bodies are gzipped. Compression buys bandwidth with CPU: worth it
/// over a network (line protocol shrinks ~5×), a pure cost to a server on this host,
/// where it was about 3 % of the instructions per reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gzip {
    /// Compress unless the URL's host is a loopback address or `localhost`.
    #[default]
    Auto,
    On,
    Off,
}

impl Gzip {
    /// Whether bodies sent to `url` are compressed.
    pub fn applies_to(self, url: &reqwest::Url) -> bool {
        match self {
            Gzip::On => true,
            Gzip::Off => false,
            Gzip::Auto => !url.host_str().is_some_and(is_loopback_host),
        }
    }
}

/// `127.0.0.0/8`, `[::1]`, `localhost` and its subdomains (RFC 6761).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

impl<'de> Deserialize<'de> for Gzip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Gzip::On),
            Raw::Bool(false) => Ok(Gzip::Off),
            Raw::Word(w) if w == "auto" => Ok(Gzip::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "gzip must be true, false or \"auto\", not {w:?}"
            ))),
        }
    }
}

/// The `[influx]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    #[serde(default)]
    pub api: Api,
    /// v2: organisation and bucket.
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub bucket: String,
    /// v1: database (and optional retention policy).
    #[serde(default)]
    pub database: String,
    pub retention_policy: Option<String>,
    /// v1: create the database when the server says it is missing.
    #[serde(default)]
    pub create_database: bool,
    /// Environment variable holding the v2 token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// v1: user name for basic auth; the password comes from `password_env`.
    pub username: Option<String>,
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// Measurement for readings.
    #[serde(default = "default_measurement")]
    pub measurement: String,
    /// Most lines per request (InfluxDB recommends 5000).
    #[serde(default = "default_batch_max_lines")]
    pub batch_max_lines: usize,
    /// Most uncompressed bytes per request.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A batch smaller than `batch_max_lines` waits at most this long for more lines.
    #[serde(default = "default_flush_interval_secs")]
    pub flush_interval_secs: f64,
    /// Per-request timeout.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Compress request bodies: `"auto"` (the default) unless the server is on this
    /// host, `true`, `false`.
    #[serde(default)]
    pub gzip: Gzip,
    /// Retry backoff bounds for failures without `Retry-After`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// At shutdown, keep writing the outbox for at most this long.
    #[serde(default = "default_shutdown_flush_secs")]
    pub shutdown_flush_secs: u64,
    /// Also write the derived series (`{measurement}_hourly`, `{measurement}_daily`).
    #[serde(default = "default_true")]
    pub derived: bool,
    /// How often the daily derived values are recomputed for the days that changed.
    #[serde(default = "default_derived_daily_interval_secs")]
    pub derived_daily_interval_secs: u64,
}

fn default_derived_daily_interval_secs() -> u64 {
    60
}

fn default_token_env() -> String {
    "AQ_INFLUX_TOKEN".into()
}
fn default_password_env() -> String {
    "AQ_INFLUX_PASSWORD".into()
}
fn default_measurement() -> String {
    super::schema::DEFAULT_MEASUREMENT.into()
}
fn default_batch_max_lines() -> usize {
    5000
}
fn default_batch_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_flush_interval_secs() -> f64 {
    1.0
}
fn default_request_timeout_secs() -> u64 {
    10
}
fn default_true() -> bool {
    true
}
fn default_retry_min_ms() -> u64 {
    200
}
fn default_retry_max_secs() -> u64 {
    60
}
fn default_shutdown_flush_secs() -> u64 {
    10
}

impl InfluxConfig {
    /// Every problem with this section, for `config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if reqwest::Url::parse(&self.url).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            p.push(format!(
                "influx.url {:?}: use http://host:port or https://…",
                self.url
            ));
        }
        match self.api {
            Api::V2 => {
                if self.bucket.is_empty() {
                    p.push("influx.bucket is required with api = \"v2\"".into());
                }
            }
            Api::V1 => {
                if self.database.is_empty() {
                    p.push("influx.database is required with api = \"v1\"".into());
                }
            }
        }
        if !(1..=100_000).contains(&self.batch_max_lines) {
            p.push("influx.batch_max_lines must be 1..=100000".into());
        }
        if self.batch_max_bytes < 1024 {
            p.push("influx.batch_max_bytes must be at least 1024".into());
        }
        if !(self.flush_interval_secs.is_finite() && self.flush_interval_secs >= 0.0) {
            p.push("influx.flush_interval_secs must be ≥ 0".into());
        }
        if self.derived_daily_interval_secs == 0 {
            p.push("influx.derived_daily_interval_secs must be ≥ 1".into());
        }
        if self.request_timeout_secs == 0 {
            p.push("influx.request_timeout_secs must be ≥ 1".into());
        }
        let m = &self.measurement;
        if m.is_empty()
            || m.starts_with('_')
            || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            p.push(format!(
                "influx.measurement {m:?}: use letters, digits and '_', not starting with '_'"
            ));
        }
        p
    }
}

/// Start-up failures of the sink.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What sending one chunk came to.
enum Sent {
    Verdict(Verdict, u16, String),
    Failed(WriteErrorClass, String),
}

/// The InfluxDB sink task.
pub struct InfluxSink {
    cfg: InfluxConfig,
    http: reqwest::Client,
    write_url: reqwest::Url,
    /// Its outbox, on its own connection; moved into blocking tasks and back.
    store: Option<OutboxStore>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    /// Current line cap: lowered when the server answers 413.
    max_lines: usize,
    /// Whether the last attempt failed (for logging state changes once, not per retry).
    failing: Option<WriteErrorClass>,
    /// Per writer, the last reading delivered or dead-lettered (mirrors the store's
    /// cursor).
    cursor: Cursor,
    /// Whether bodies are compressed (`cfg.gzip` decided for this URL).
    gzip: bool,
    /// The readings of the next batch, encoded (see [`InfluxSink::head`]).
    staged: Staged,
    /// What the latest commits appended, as the ingest handed it over.
    tail: Tail,
    /// Makes a site-hour's line (None: the derived series are off).
    hour_lines: Option<HourlyLines>,
    /// How a queued hourly line begins (`{measurement}_hourly,site=`), when the derived
    /// series are on and the measurement needs no escaping.
    hourly_prefix: Option<String>,
}

/// Readings' lines staged for the next request, the cursor after the last of them, and
/// the site-hours they add to (whose lines go with them).
struct Staged {
    rows: Vec<OutboxRow>,
    /// The rows' bytes, and [`HOUR_LINE_BYTES`] for each site-hour.
    bytes: usize,
    through: Cursor,
    hours: StagedHours,
    /// Whether a reading waiting after the staged ones did not fit under the caps.
    capped: bool,
}

impl Staged {
    fn at(cursor: Cursor) -> Staged {
        Staged {
            rows: Vec::new(),
            bytes: 0,
            through: cursor,
            hours: StagedHours::default(),
            capped: false,
        }
    }

    /// Lines the request will carry for what is staged.
    fn lines(&self) -> usize {
        self.rows.len() + self.hours.order.len()
    }
}

/// The site-hours of the staged readings, in the order they first appear.
#[derive(Default)]
struct StagedHours {
    order: Vec<(String, i64)>,
    /// Per site, its hours in `order`: looked up with the reading's `&str`, no
    /// allocation per reading.
    of_site: std::collections::HashMap<String, Vec<i64>, std::hash::BuildHasherDefault<Fnv>>,
}

impl StagedHours {
    /// Whether `(site, hour)` is staged.
    fn has(&self, site: &str, hour: i64) -> bool {
        self.of_site.get(site).is_some_and(|h| h.contains(&hour))
    }

    /// Adds `(site, hour)`, which is not staged yet.
    fn add(&mut self, site: &str, hour: i64) {
        match self.of_site.get_mut(site) {
            Some(hours) => hours.push(hour),
            None => {
                self.of_site.insert(site.to_owned(), vec![hour]);
            }
        }
        self.order.push((site.to_owned(), hour));
    }

    /// Keeps the first `n` site-hours.
    fn truncate(&mut self, n: usize) {
        for (site, hour) in self.order.drain(n.min(self.order.len())..) {
            if let Some(hours) = self.of_site.get_mut(&site) {
                hours.retain(|h| *h != hour);
                if hours.is_empty() {
                    self.of_site.remove(&site);
                }
            }
        }
    }
}

impl InfluxSink {
    /// A sink on `store_cfg`'s outbox; with `hour_lines`, each request also carries the
    /// current line of every site-hour its readings add to.
    pub fn new(
        cfg: InfluxConfig,
        store_cfg: &StoreConfig,
        hour_lines: Option<HourlyLines>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SinkError> {
        let store = OutboxStore::open(store_cfg, SINK_NAME)?;
        let cursor = store.cursor()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.request_timeout_secs.min(5)))
            .build()?;
        let write_url = write_url(&cfg);
        let gzip = cfg.gzip.applies_to(&write_url);
        let prefix = hour_lines
            .as_ref()
            .and_then(|_| hourly_prefix(&cfg.measurement));
        Ok(InfluxSink {
            gzip,
            staged: Staged::at(cursor.clone()),
            // A few requests' worth: enough to carry a live stream, bounded in an outage.
            tail: Tail::new(TAIL_REQUESTS * cfg.batch_max_lines),
            backoff: Backoff::new(
                Duration::from_millis(cfg.retry_min_ms.max(1)),
                Duration::from_secs(cfg.retry_max_secs.max(1)),
            ),
            max_lines: cfg.batch_max_lines,
            cfg,
            http,
            write_url,
            store: Some(store),
            metrics,
            clock,
            failing: None,
            cursor,
            hourly_prefix: prefix,
            hour_lines,
        })
    }

    /// Runs until `nudges` closes (the ingest stage has finished), then writes what is
    /// left for at most `shutdown_flush_secs` and logs what is still pending.
    ///
    /// `nudges` carries "new rows committed" hints, with what the commit appended when
    /// the ingest could hand it over (`sink::tail`); the outbox itself is the truth.
    pub async fn run(mut self, nudges: &mut mpsc::Receiver<News>) -> Result<(), SinkError> {
        let flush_interval = Duration::from_secs_f64(self.cfg.flush_interval_secs);
        let shutdown_flush = Duration::from_secs(self.cfg.shutdown_flush_secs);
        let mut open = true;
        let mut last_send = Instant::now();
        let mut last_stats = Instant::now() - Duration::from_secs(3600);
        let mut shutdown_deadline: Option<Instant> = None;
        // Lines waiting at the last look, and when they last grew; whether the last
        // request was a burst's (then what follows it soon is a burst's tail).
        let (mut waiting, mut grown_at, mut last_burst) = (0, Instant::now(), false);
        loop {
            if last_stats.elapsed() >= Duration::from_secs(5) {
                self.update_stats().await?;
                last_stats = Instant::now();
            }
            if let Some(d) = shutdown_deadline {
                if Instant::now() >= d {
                    break;
                }
            }
            self.take_news(nudges);
            let rows = self.head().await?;
            let lines = rows.len() + self.staged.lines();
            if lines > waiting {
                grown_at = Instant::now();
            }
            waiting = lines;
            // Full also when the next reading did not fit (it would bring its hour's line
            // too): waiting could not make the batch any larger.
            let full = lines >= self.max_lines || self.staged.capped;
            let burst_tail =
                is_burst_tail(lines, self.max_lines, last_burst, last_send, flush_interval);
            let settled = burst_tail && grown_at.elapsed() >= BURST_TAIL_LINGER;
            if lines == 0 || (!full && !settled && open && last_send.elapsed() < flush_interval) {
                if !open {
                    break;
                }
                let wait = idle_wait(lines == 0, burst_tail, flush_interval, last_send, grown_at);
                tokio::select! {
                    n = nudges.recv() => match n {
                        Some(news) => self.tail.take(news),
                        None => {
                            open = false;
                            shutdown_deadline = Some(Instant::now() + shutdown_flush);
                        }
                    },
                    _ = tokio::time::sleep(wait) => {
                        if lines == 0 { last_send = Instant::now() - flush_interval; }
                    }
                }
                continue;
            }
            waiting = 0;
            last_burst = lines * BURST_TAIL_SHARE >= self.max_lines;
            last_send = Instant::now();
            let batch = self.take_batch(rows).await?;
            let retry = self.deliver(batch).await?;
            self.unstage();
            if let Some(delay) = retry {
                let (open, deadline) = (&mut open, &mut shutdown_deadline);
                back_off(
                    delay,
                    shutdown_flush,
                    nudges,
                    &mut self.tail,
                    open,
                    deadline,
                )
                .await;
            }
        }
        self.update_stats().await?;
        let pending = self.metrics.outbox_depth.load(Ordering::Relaxed);
        if pending > 0 {
            warn!(pending_lines = pending, "influx: lines still in the outbox at shutdown; they are kept and sent at the next start");
        } else {
            info!("influx: outbox empty at shutdown");
        }
        Ok(())
    }

    /// Keeps what the commits since the last look handed over (see `sink::tail`).
    fn take_news(&mut self, nudges: &mut mpsc::Receiver<News>) {
        while let Ok(news) = nudges.try_recv() {
            self.tail.take(news);
        }
    }

    async fn with_store<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut OutboxStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let store = self
            .store
            .take()
            .expect("the outbox is returned after every use");
        let (store, r) = on_blocking_thread(store, f).await?;
        self.store = Some(store);
        Ok(r?)
    }

    /// The next batch: the derived lines queued (daily values, few), then readings after
    /// the cursor with their site-hours' lines (made in [`InfluxSink::take_batch`]),
    /// within the line and byte caps — one request for all, so that the derived series
    /// do not halve the readings' throughput with requests of their own.
    ///
    /// The readings' lines are staged: a batch that waits for more lines keeps what it
    /// has encoded, and the next look only adds what follows (from the in-memory tail
    /// when it can, else from the outbox). The derived lines are read afresh each time
    /// (on PostgreSQL another instance may add one with a lower seq that commits later).
    async fn head(&mut self) -> Result<Vec<OutboxRow>, SinkError> {
        let lines = self.max_lines;
        let derived = self.with_store(move |s| s.derived_head(lines)).await?;
        let mut bytes = 0;
        let mut rows = Vec::with_capacity(derived.len() + self.staged.rows.len());
        for (seq, line, also) in newest_per_point(derived) {
            if !rows.is_empty() && bytes + line.len() > self.cfg.batch_max_bytes {
                self.unstage();
                return Ok(rows);
            }
            let refresh = self
                .hourly_prefix
                .as_deref()
                .and_then(|p| hour_of_line(&line, p));
            // A refreshed line is made when sent: counted as a staged hour's is.
            bytes += match refresh {
                Some(_) => line.len().max(HOUR_LINE_BYTES),
                None => line.len(),
            };
            rows.push(OutboxRow {
                pos: Pos { writer: 0, seq },
                line,
                from: Outbox::Derived,
                also,
                opens_hour: false,
                refresh,
            });
        }
        let room = self.max_lines.saturating_sub(rows.len());
        self.fit_staged(room, self.cfg.batch_max_bytes.saturating_sub(bytes));
        let staged = self.staged.lines();
        if staged < room && bytes + self.staged.bytes < self.cfg.batch_max_bytes {
            let need_one = rows.is_empty() && staged == 0;
            self.stage_more(room - staged, bytes, need_one).await?;
        }
        Ok(rows)
    }

    /// Drops staged readings beyond `lines` lines and `bytes` bytes with their
    /// site-hours' lines (the room left beside the derived lines, or a line cap lowered
    /// after a 413), keeping at least one reading.
    fn fit_staged(&mut self, lines: usize, bytes: usize) {
        let st = &mut self.staged;
        let (mut keep, mut kept_lines, mut kept_bytes, mut kept_hours) = (0, 0, 0, 0);
        for r in &st.rows {
            let (l, b) = row_cost(r);
            if keep > 0 && (kept_lines + l > lines || kept_bytes + b > bytes) {
                break;
            }
            keep += 1;
            kept_lines += l;
            kept_bytes += b;
            kept_hours += usize::from(r.opens_hour);
        }
        if keep < st.rows.len() {
            st.capped = true;
            st.rows.truncate(keep);
            st.hours.truncate(kept_hours);
            st.bytes = kept_bytes;
            st.through = self.cursor.clone();
            for r in &st.rows {
                st.through.advance(r.pos);
            }
        }
    }

    /// Forgets the staged lines (they are read again from the cursor).
    fn unstage(&mut self) {
        self.staged = Staged::at(self.cursor.clone());
    }

    /// Takes the batch: `rows` (the derived lines [`head`] returned), the lines of the
    /// staged readings' site-hours as stored now, and the staged readings. Read now, a
    /// site-hour's line includes every reading committed so far: the last request that
    /// carries a reading of it carries its final value.
    ///
    /// A queued hourly line (`resend`, `dead-letters --requeue`, or an older version's
    /// per-commit line on a shared store) goes as its hour is stored now too: a line
    /// queued with an older value and sent after a newer one would otherwise overwrite
    /// it in InfluxDB, for good once the hour gets no more readings.
    async fn take_batch(&mut self, mut rows: Vec<OutboxRow>) -> Result<Vec<OutboxRow>, SinkError> {
        let staged = std::mem::replace(&mut self.staged, Staged::at(self.cursor.clone()));
        let staged_hours = staged.hours.order.len();
        let mut keys = staged.hours.order;
        keys.extend(rows.iter().filter_map(|r| r.refresh.clone()));
        if self.hour_lines.is_some() && !keys.is_empty() {
            let (hours, keys) = self
                .with_store(move |s| Ok((s.site_hours(&keys)?, keys)))
                .await?;
            let make = self.hour_lines.as_ref().expect("checked above");
            let mut now: std::collections::HashMap<(&str, i64), String> = hours
                .iter()
                .filter_map(|h| Some(((h.site.as_str(), h.hour.0), make(h)?)))
                .collect();
            // A queued line covers its hour: a staged reading's hour already queued is
            // not sent twice.
            for r in &mut rows {
                if let Some((site, hour)) = &r.refresh {
                    if let Some(line) = now.remove(&(site.as_str(), *hour)) {
                        r.line = line;
                    }
                }
            }
            // Collected first: `now`'s keys are borrowed with `rows`' refreshes above.
            let lines: Vec<String> = keys[..staged_hours]
                .iter()
                .filter_map(|(site, hour)| now.remove(&(site.as_str(), *hour)))
                .collect();
            rows.extend(lines.into_iter().map(|line| OutboxRow {
                pos: Pos::default(),
                line,
                from: Outbox::Hourly,
                also: Vec::new(),
                opens_hour: false,
                refresh: None,
            }));
        }
        rows.extend(staged.rows);
        Ok(rows)
    }

    /// Stages more readings after the staged ones, encoded, within `max` more lines
    /// (a reading's and, for the first reading of a site-hour, that hour's) and the
    /// byte cap counting `bytes` taken by derived lines (at least one reading when
    /// `need_one` and any is waiting).
    // Long because the staging closure's caps and its fallback to the outbox read best
    // together.
    async fn stage_more(
        &mut self,
        max: usize,
        bytes: usize,
        need_one: bool,
    ) -> Result<(), SinkError> {
        let derived_bytes = bytes;
        let cap = self.cfg.batch_max_bytes;
        let measurement = &self.cfg.measurement;
        let with_hours = self.hour_lines.is_some();
        let st = &mut self.staged;
        let mut bytes = bytes + st.bytes;
        let mut lines_left = max;
        // Where to go on from (the closure below moves `st.through` along).
        let from = st.through.clone();
        let mut unencodable = Vec::new();
        // Encodes one reading onto the staged lines; false once a cap is reached.
        let mut stage = |pos: Pos, reading: &Reading| -> bool {
            let mut line = String::with_capacity(LINE_CAPACITY);
            match schema::encode_reading(reading, measurement, &mut line) {
                Ok(()) => {
                    let hour = hour_changed_by(reading)
                        .filter(|h| with_hours && !st.hours.has(reading.site.as_str(), h.0));
                    let row = OutboxRow {
                        pos,
                        line,
                        from: Outbox::Readings,
                        also: Vec::new(),
                        opens_hour: hour.is_some(),
                        refresh: None,
                    };
                    let (l, b) = row_cost(&row);
                    let first = st.rows.is_empty() && need_one;
                    if !first && (l > lines_left || bytes + b > cap) {
                        st.capped = true;
                        return false;
                    }
                    lines_left = lines_left.saturating_sub(l);
                    bytes += b;
                    st.bytes += b;
                    st.through.advance(pos);
                    if let Some(h) = hour {
                        st.hours.add(reading.site.as_str(), h.0);
                    }
                    st.rows.push(row);
                    true
                }
                // Validation makes this unreachable; if it ever happens the reading is
                // kept in the store and the operator sees it in dead_letters. (Its
                // site-hour's line then goes with the hour's next reading, or by
                // `resend`.)
                Err(e) => {
                    unencodable.push((
                        pos,
                        DeadLetter {
                            seq: pos.seq,
                            kind: DeadLetterKind::Unencodable,
                            reason: e.to_string(),
                            line: format!("{:?}", schema::reading_point(reading, measurement)),
                        },
                    ));
                    false
                }
            }
        };
        // The tail holds the rows right after the staged ones: no store read.
        if self.tail.after(from.of(0), max, &mut stage).is_none() {
            let after = from;
            let pending = {
                let store = self
                    .store
                    .take()
                    .expect("the outbox is returned after every use");
                let (store, r) = on_blocking_thread(store, move |s| s.pending(&after, max)).await?;
                self.store = Some(store);
                r?
            };
            for (pos, reading) in &pending {
                if !stage(*pos, reading) {
                    break;
                }
            }
        }
        if !unencodable.is_empty() && self.staged.rows.is_empty() {
            // The bad reading is the first after the cursor: dead-letter it and go on.
            let mut through = self.cursor.clone();
            through.advance(unencodable[0].0);
            Metrics::add(&self.metrics.lines_dead_lettered, 1);
            self.advance(through, vec![unencodable.swap_remove(0).1])
                .await?;
            self.unstage();
            return Box::pin(self.stage_more(max, derived_bytes, need_one)).await;
        }
        Ok(())
    }

    async fn advance(&mut self, through: Cursor, dead: Vec<DeadLetter>) -> Result<(), SinkError> {
        let now = self.clock.now();
        let cursor = through.clone();
        self.with_store(move |s| s.advance_durable(&cursor, &dead, now))
            .await?;
        self.cursor = through;
        Ok(())
    }

    async fn update_stats(&mut self) -> Result<(), SinkError> {
        let cursor = self.cursor.clone();
        let (depth, oldest) = self.with_store(move |s| s.pending_stats(&cursor)).await?;
        let age = oldest.map_or(0, |t| ((self.clock.now().0 - t.0).max(0) / 1000) as u64);
        self.metrics.outbox_depth.store(depth, Ordering::Relaxed);
        self.metrics
            .outbox_oldest_age_secs
            .store(age, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `rows`, bisecting on refusals and splitting on 413, in order. Moves the
    /// cursor past the readings written or dead-lettered, and removes the derived lines
    /// done, in one transaction. Returns the delay before the next attempt when the
    /// server could not take the rest now.
    async fn deliver(&mut self, rows: Vec<OutboxRow>) -> Result<Option<Duration>, SinkError> {
        let mut stack = vec![rows];
        // Chunks finish strictly in order (left halves first), so every line up to the
        // last one of a written or dead-lettered chunk is done, per outbox.
        let mut done = Done {
            readings: self.cursor.clone(),
            derived: Vec::new(),
            dead: Vec::new(),
        };
        let mut retry = None;
        while let Some(chunk) = stack.pop() {
            match self.send(&chunk).await {
                Sent::Verdict(Verdict::Written, _, _) => {
                    Metrics::add(&self.metrics.lines_written, chunk.len() as u64);
                    for r in &chunk {
                        done.through(r);
                        Metrics::add(&self.metrics.lines_superseded, r.also.len() as u64);
                    }
                    self.recovered();
                }
                Sent::Verdict(v @ (Verdict::Refused | Verdict::TooLarge), status, body) => {
                    let class = if v == Verdict::TooLarge {
                        // Remember: later batches start no larger than what was refused.
                        self.max_lines = (chunk.len() / 2).max(1);
                        WriteErrorClass::TooLarge
                    } else {
                        WriteErrorClass::Rejected
                    };
                    self.metrics.write_error(class);
                    if chunk.len() == 1 {
                        warn!(status, reason = %body, line = %chunk[0].line.trim_end(), "influx: server refused a line; dead-lettered");
                        Metrics::add(&self.metrics.lines_dead_lettered, 1);
                        done.refused(&chunk[0]);
                        done.dead.push(DeadLetter {
                            seq: chunk[0].pos.seq,
                            kind: DeadLetterKind::Refused { status },
                            reason: body,
                            line: chunk[0].line.clone(),
                        });
                    } else {
                        let mut left = chunk;
                        let right = left.split_off(left.len() / 2);
                        // Pop order keeps commit order: left half first.
                        stack.push(right);
                        stack.push(left);
                    }
                }
                Sent::Verdict(Verdict::Retry { class, after }, status, body) => {
                    self.failed(class, &format!("HTTP {status}: {body}"));
                    retry = Some(after.unwrap_or_else(|| self.backoff.next_delay()));
                    break;
                }
                Sent::Failed(class, msg) => {
                    self.failed(class, &msg);
                    retry = Some(self.backoff.next_delay());
                    break;
                }
            }
        }
        let moved = self.cursor.behind(&done.readings);
        if moved || !done.derived.is_empty() {
            let (now, dead, derived) = (self.clock.now(), done.dead, done.derived);
            let readings = moved.then(|| done.readings.clone());
            self.with_store(move |s| s.done_durable(readings.as_ref(), &derived, &dead, now))
                .await?;
            if moved {
                self.cursor = done.readings;
            }
        }
        Ok(retry)
    }

    fn recovered(&mut self) {
        self.backoff.reset();
        if let Some(class) = self.failing.take() {
            info!(after = class.as_str(), "influx: writes succeed again");
        }
        self.metrics.sink_failing.store(false, Ordering::Relaxed);
    }

    fn failed(&mut self, class: WriteErrorClass, msg: &str) {
        self.metrics.write_error(class);
        self.metrics.sink_failing.store(true, Ordering::Relaxed);
        // Log a change of state once; a server down for hours must not flood the log.
        if self.failing != Some(class) {
            self.failing = Some(class);
            match class {
                WriteErrorClass::Auth | WriteErrorClass::NotFound => {
                    error!(class = class.as_str(), error = %msg, "influx: writes refused; readings are kept in the outbox until an operator fixes this")
                }
                _ => {
                    warn!(class = class.as_str(), error = %msg, "influx: writes failing; readings are kept in the outbox and retried")
                }
            }
        }
    }

    async fn send(&mut self, chunk: &[OutboxRow]) -> Sent {
        let mut body = Vec::with_capacity(chunk.iter().map(|r| r.line.len()).sum());
        for r in chunk {
            body.extend_from_slice(r.line.as_bytes());
        }
        let mut req = self
            .http
            .post(self.write_url.clone())
            .header("Content-Type", "text/plain; charset=utf-8");
        if self.gzip {
            let mut enc = GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            if enc.write_all(&body).is_ok() {
                if let Ok(gz) = enc.finish() {
                    body = gz;
                    req = req.header("Content-Encoding", "gzip");
                }
            }
        }
        req = match self.cfg.api {
            Api::V2 => {
                let token = std::env::var(&self.cfg.token_env).unwrap_or_default();
                if token.is_empty() {
                    req
                } else {
                    req.header("Authorization", format!("Token {token}"))
                }
            }
            Api::V1 => match &self.cfg.username {
                Some(u) => req.basic_auth(u, std::env::var(&self.cfg.password_env).ok()),
                None => req,
            },
        };
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let class = if e.is_timeout() {
                    WriteErrorClass::Timeout
                } else {
                    WriteErrorClass::Network
                };
                return Sent::Failed(class, e.to_string());
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let verdict = classify(status, retry_after.as_deref(), chrono::Utc::now());
        let text = if verdict == Verdict::Written {
            String::new()
        } else {
            // Bounded: a hostile or broken server cannot make us buffer a huge body.
            let body = resp.text().await.unwrap_or_default();
            body.chars().take(300).collect()
        };
        if self.cfg.api == Api::V1
            && self.cfg.create_database
            && status == 404
            && text.contains("database not found")
        {
            self.create_database().await;
        }
        Sent::Verdict(verdict, status, text)
    }

    async fn create_database(&mut self) {
        let mut url = self.write_url.clone();
        url.set_path(&format!("{}query", base_path(&self.cfg.url)));
        url.set_query(None);
        let q = format!(
            "CREATE DATABASE \"{}\"",
            self.cfg.database.replace('"', "\\\"")
        );
        let mut req = self.http.post(url).query(&[("q", q.as_str())]);
        if let Some(u) = &self.cfg.username {
            req = req.basic_auth(u, std::env::var(&self.cfg.password_env).ok());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                info!(database = %self.cfg.database, "influx: created the database")
            }
            Ok(r) => warn!(
                status = r.status().as_u16(),
                "influx: CREATE DATABASE failed"
            ),
            Err(e) => warn!(error = %e, "influx: CREATE DATABASE failed"),
        }
    }
}

/// The path prefix of the base URL, ending in `/` (InfluxDB behind a reverse proxy
/// under a path).
fn base_path(url: &str) -> String {
    let p = reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    if p.ends_with('/') {
        p
    } else {
        format!("{p}/")
    }
}

/// The write endpoint with its query string. Timestamps are milliseconds.
pub fn write_url(cfg: &InfluxConfig) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&cfg.url).expect("validated in config");
    match cfg.api {
        Api::V2 => {
            url.set_path(&format!("{}api/v2/write", base_path(&cfg.url)));
            url.query_pairs_mut()
                .clear()
                .append_pair("org", &cfg.org)
                .append_pair("bucket", &cfg.bucket)
                .append_pair("precision", "ms")
                // VictoriaMetrics ignores org and bucket but files points under `db`.
                .append_pair("db", &cfg.bucket);
        }
        Api::V1 => {
            url.set_path(&format!("{}write", base_path(&cfg.url)));
            let mut q = url.query_pairs_mut();
            q.clear()
                .append_pair("db", &cfg.database)
                .append_pair("precision", "ms");
            if let Some(rp) = &cfg.retention_policy {
                q.append_pair("rp", rp);
            }
        }
    }
    url
}

/// Waits out a retry `delay` (cut short by the shutdown deadline), taking the news
/// meanwhile (the tail keeps what fits under its cap), and noticing the shutdown (`open`
/// turns false, the deadline is set `shutdown_flush` from then). Not a method: the
/// sink is not `Sync`, so its run future may not hold `&self` across an await.
async fn back_off(
    delay: Duration,
    shutdown_flush: Duration,
    nudges: &mut mpsc::Receiver<News>,
    tail: &mut Tail,
    open: &mut bool,
    shutdown_deadline: &mut Option<Instant>,
) {
    let until = Instant::now() + delay;
    let until = shutdown_deadline.map_or(until, |d| until.min(d));
    loop {
        tokio::select! {
            n = nudges.recv(), if *open => match n {
                Some(news) => tail.take(news),
                None => {
                    *open = false;
                    *shutdown_deadline = Some(Instant::now() + shutdown_flush);
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
}

/// The queued derived lines to send: of several lines for one point (series and
/// timestamp) — a site-day's line after each refresh that changed it, an hour's lines
/// queued by `resend` and again by `dead-letters --requeue` — only the newest, carrying
/// the older ones' seqs so that they are removed with it. InfluxDB keeps the last write
/// of a point, so the server ends the same with fewer lines to parse. In seq order.
pub fn newest_per_point(rows: Vec<(i64, String)>) -> Vec<(i64, String, Vec<i64>)> {
    // For each row, the row that stands for its point: the newest with the same one.
    let mut owner: Vec<usize> = (0..rows.len()).collect();
    {
        let mut newest: std::collections::HashMap<_, _, std::hash::BuildHasherDefault<Fnv>> =
            std::collections::HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (i, (_, line)) in rows.iter().enumerate().rev() {
            if let Some(point) = point_of(line) {
                owner[i] = *newest.entry(point).or_insert(i);
            }
        }
    }
    let mut out: Vec<(i64, String, Vec<i64>)> = Vec::with_capacity(rows.len());
    let mut slot = vec![usize::MAX; rows.len()];
    let mut superseded = Vec::new();
    for (i, (seq, line)) in rows.into_iter().enumerate() {
        if owner[i] == i {
            slot[i] = out.len();
            out.push((seq, line, Vec::new()));
        } else {
            superseded.push((owner[i], seq));
        }
    }
    for (o, seq) in superseded {
        out[slot[o]].2.push(seq);
    }
    out
}

/// How the hourly lines of `measurement` begin, up to the site; None when the name needs
/// escaping in line protocol (its queued lines then go as they are).
fn hourly_prefix(measurement: &str) -> Option<String> {
    let mut escaped = String::new();
    super::line_protocol::push_measurement(measurement, &mut escaped);
    (escaped == measurement).then(|| format!("{measurement}_hourly,site="))
}

/// The site-hour of a queued hourly line (`{prefix}{site} {fields} {hour_ms}`), when it
/// is one. Site ids need no escaping (letters, digits, `-`, `_`, `.`).
fn hour_of_line(line: &str, prefix: &str) -> Option<(String, i64)> {
    let rest = line.strip_prefix(prefix)?;
    let (site, rest) = rest.split_once(' ')?;
    let ts = rest.trim_end().rsplit(' ').next()?.parse().ok()?;
    crate::model::SiteId::parse(site).ok()?;
    Some((site.to_owned(), ts))
}

/// The lines and the bytes (counted against the caps) a staged reading brings: its own,
/// and its site-hour's when it is the first of it.
fn row_cost(r: &OutboxRow) -> (usize, usize) {
    if r.opens_hour {
        (2, r.line.len() + HOUR_LINE_BYTES)
    } else {
        (1, r.line.len())
    }
}

/// FNV-1a: the points' keys are short and ours (no untrusted input to flood a table
/// with), so a hash that costs a few instructions a byte does; SipHash cost twice that.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A line's point: its series (measurement and tags, up to the first unescaped space)
/// and its timestamp. None for a line without a timestamp.
fn point_of(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_end();
    let b = line.as_bytes();
    let first = line.find(' ')?;
    // The first space ends the series unless escaped (a tag value with a space).
    let series_end = if !line[..first].contains('\\') {
        first
    } else {
        let mut i = 0;
        loop {
            match b.get(i)? {
                b'\\' => i += 2,
                b' ' => break i,
                _ => i += 1,
            }
        }
    };
    let ts_start = line.rfind(' ')? + 1;
    let ts = &line[ts_start..];
    let digits = ts.strip_prefix('-').unwrap_or(ts);
    (ts_start > series_end + 1 && !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()))
        .then(|| (&line[..series_end], ts))
}

/// Whether `lines` waiting are a burst's tail (or a backlog's), which goes once the
/// outbox has stopped growing for a moment: a tenth of a batch or more, or anything
/// within a flush interval after a request that large (`last_burst`). A trickle of
/// readings (small batches, the last request small or long ago) still waits for the
/// flush interval to fill a batch.
fn is_burst_tail(
    lines: usize,
    max_lines: usize,
    last_burst: bool,
    last_send: Instant,
    flush_interval: Duration,
) -> bool {
    (last_burst && last_send.elapsed() < flush_interval) || lines * BURST_TAIL_SHARE >= max_lines
}

/// How long the writer waits for more rows before looking again: no longer than the
/// flush interval after the last send, nor (in a burst's tail) than the linger after the
/// outbox last grew. Idle, it looks again after a flush interval: the derived series are
/// written by a timer that does not nudge.
fn idle_wait(
    nothing_waiting: bool,
    burst_tail: bool,
    flush_interval: Duration,
    last_send: Instant,
    grown_at: Instant,
) -> Duration {
    if nothing_waiting {
        flush_interval.max(Duration::from_millis(100))
    } else if burst_tail {
        flush_interval
            .saturating_sub(last_send.elapsed())
            .min(BURST_TAIL_LINGER.saturating_sub(grown_at.elapsed()))
    } else {
        flush_interval.saturating_sub(last_send.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_hourly_line_names_its_site_hour() {
        let p = hourly_prefix("pm").unwrap();
        let line = "pm_hourly,site=s-1.a pm10=1.5,pm10_valid=false,pm10_samples=3i 1470009600000\n";
        assert_eq!(
            hour_of_line(line, &p),
            Some(("s-1.a".to_owned(), 1_470_009_600_000))
        );
        // Not an hourly line of this measurement, or not one at all: sent as it is.
        for other in [
            "pm_daily,scope=site,site=s1,tables=HJ\\ 633-2012 aqi=50i 1470009600000\n",
            "pmx_hourly,site=s1 pm10=1 1470009600000\n",
            "pm_hourly,site=s1 pm10=1\n",
            "pm_hourly,site=s\\ 1 pm10=1 1470009600000\n",
        ] {
            assert_eq!(hour_of_line(other, &p), None, "{other}");
        }
        assert_eq!(hourly_prefix("p m"), None, "a name that needs escaping");
    }

    #[test]
    fn a_point_is_its_series_and_timestamp() {
        assert_eq!(
            point_of("pm_hourly,site=a\\ b pm10=1.5,pm10_valid=true 3600000\n"),
            Some(("pm_hourly,site=a\\ b", "3600000"))
        );
        assert_eq!(point_of("m f=1"), None, "no timestamp");
        assert_eq!(
            point_of("m f=\"a 1\""),
            None,
            "a string field is no timestamp"
        );
        assert_eq!(point_of("m f=1 -5"), Some(("m", "-5")));
    }

    #[test]
    fn only_the_newest_line_of_a_point_is_sent_and_it_carries_the_older_seqs() {
        let rows = vec![
            (10, "h,site=a v=1 100\n".to_string()),
            (11, "h,site=b v=1 100\n".to_string()),
            (12, "h,site=a v=2 100\n".to_string()),
            (13, "h,site=a v=3 200\n".to_string()),
            (14, "no timestamp\n".to_string()),
            (15, "h,site=a v=4 100\n".to_string()),
        ];
        let out = newest_per_point(rows);
        let got: Vec<(i64, &str, Vec<i64>)> = out
            .iter()
            .map(|(s, l, a)| (*s, l.trim_end(), a.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (11, "h,site=b v=1 100", vec![]),
                (13, "h,site=a v=3 200", vec![]),
                (14, "no timestamp", vec![]),
                (15, "h,site=a v=4 100", vec![10, 12]),
            ]
        );
    }

    fn cfg(toml_text: &str) -> InfluxConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn write_urls() {
        let v2 = cfg(r#"url = "http://h:8086"
org = "erqi"
bucket = "air quality""#);
        assert_eq!(
            write_url(&v2).as_str(),
            "http://h:8086/api/v2/write?org=erqi&bucket=air+quality&precision=ms&db=air+quality"
        );
        let v1 = cfg(r#"url = "http://h:8086/influx/"
api = "v1"
database = "aq"
retention_policy = "autogen""#);
        assert_eq!(
            write_url(&v1).as_str(),
            "http://h:8086/influx/write?db=aq&precision=ms&rp=autogen"
        );
    }

    #[test]
    fn problems_are_all_reported() {
        let bad = cfg(r#"url = "ftp://x"
api = "v1"
batch_max_lines = 0
measurement = "_pm""#);
        let p = bad.problems();
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn gzip_auto_compresses_unless_the_server_is_on_this_host() {
        let on = |url: &str, gzip: &str| {
            let c = cfg(&format!("url = \"{url}\"\nbucket = \"aq\"\n{gzip}"));
            c.gzip.applies_to(&write_url(&c))
        };
        for local in [
            "http://127.0.0.1:8086",
            "http://127.3.2.1:8086",
            "http://[::1]:8086",
            "http://localhost:8086",
            "http://LocalHost:8086",
            "http://influx.localhost",
        ] {
            assert!(!on(local, ""), "{local}");
            assert!(on(local, "gzip = true"), "{local}");
        }
        for remote in [
            "http://10.0.0.5:8086",
            "https://influx.example.cn",
            "http://[2001:db8::1]",
        ] {
            assert!(on(remote, ""), "{remote}");
            assert!(on(remote, "gzip = \"auto\""), "{remote}");
            assert!(!on(remote, "gzip = false"), "{remote}");
        }
        let bad: Result<InfluxConfig, _> = toml::from_str("url = \"http://h\"\ngzip = \"yes\"");
        assert!(bad.unwrap_err().to_string().contains("gzip must be"));
    }
}
