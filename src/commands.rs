//! The one-shot and demo commands, as library functions over a resolved [`Plan`]:
//! `main.rs` parses the command line and calls them. Each returns what it prints, or a
//! [`CommandError`] that says what to do.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use thiserror::Error;

use crate::aqi::index::TableSet;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::report::{self, Spec};
use crate::sim::{self, Replay, Simulator};
use crate::store::{Maintainer, Store, StoreError, StoreLock};

/// Why a command failed.
#[derive(Debug, Error)]
pub enum CommandError {
    /// The command line or config does not allow it; the message says what to give.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// Simulated HJ 212 devices got no answer for some frames.
    #[error("{0}")]
    Unanswered(String),
    /// The service under the demo stopped.
    #[error("the service stopped: {0}")]
    Service(String),
}

/// Output formats of the report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// `aq-ingest report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A configured [[target]] (default: the first one).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub target: Option<String>,
    /// A period instead of a target (inclusive local dates, YYYY-MM-DD).
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Report as of this date (default: today).
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// One site instead of the district.
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Compare two table sets day by day: "HJ 633-2012,HJ 633-2026".
    #[arg(long)]
    pub tables: Option<String>,
}

/// The good-day report from the store, as text, JSON or CSV.
pub fn report(plan: &Plan, args: ReportArgs, clock: &dyn Clock) -> Result<String, CommandError> {
    let as_of = args
        .as_of
        .unwrap_or_else(|| plan.aqi.zone().date_of(clock.now()));
    let (target, from, to) = match (args.from, args.to) {
        (Some(f), Some(t)) => (None, f, t),
        _ => {
            let t = plan
                .target(args.target.as_deref())
                .map_err(|e| CommandError::Usage(format!("{e}; give --from and --to")))?;
            (Some(t.clone()), t.from, t.to)
        }
    };
    let store = Store::open(&plan.store)?;
    let spec = Spec {
        from,
        to,
        as_of,
        site: args.site,
        target,
    };
    if let Some(list) = &args.tables {
        let (a, b) =
            TableSet::pair(list).map_err(|e| CommandError::Usage(format!("--tables: {e}")))?;
        let under = |t: TableSet| {
            let mut spec = spec.clone();
            if let Some(target) = &mut spec.target {
                target.tables = Some(t);
            }
            let aqi = crate::aqi::AqiConfig {
                tables: crate::aqi::index::Tables::Pinned(t),
                ..plan.aqi.clone()
            };
            report::build(&store, &aqi, spec)
        };
        let c = report::Compared {
            a: under(a)?,
            b: under(b)?,
        };
        return Ok(match args.format {
            Format::Table => c.to_table(),
            Format::Json => format!("{:#}\n", c.to_json()),
            Format::Csv => c.to_csv(),
        });
    }
    let r = report::build(&store, &plan.aqi, spec)?;
    Ok(match args.format {
        Format::Table => r.to_table(),
        Format::Json => format!("{:#}\n", r.to_json()),
        Format::Csv => r.to_csv(),
    })
}

/// The lines InfluxDB refused, per status and reason; with `requeue`, the refused ones
/// queued again. Safe while the service runs.
pub fn dead_letters(plan: &Plan, requeue: bool, clock: &dyn Clock) -> Result<String, CommandError> {
    let mut store = Maintainer::open(&plan.store)?;
    let mut out = String::new();
    let summary = store.reader().dead_letter_summary()?;
    if summary.is_empty() {
        out.push_str("no dead letters\n");
    }
    for c in &summary {
        out.push_str(&format!("{:>8}  {}  {}\n", c.count, c.kind, c.reason));
    }
    if requeue {
        let n = store.requeue_dead_letters(clock.now())?;
        out.push_str(&format!(
            "queued {n} refused lines again; the service sends them next\n"
        ));
    }
    Ok(out)
}

/// Queues the whole store for InfluxDB again (a new or emptied database). Refused while
/// a service runs on the store: its writer keeps its cursor in memory.
pub fn resend(plan: &Plan, clock: &dyn Clock) -> Result<String, CommandError> {
    let influx = plan.influx.as_ref().ok_or_else(|| {
        CommandError::Usage("no [influx] section in the config: nothing to re-send to".into())
    })?;
    let line = plan.hour_lines();
    let _lock = StoreLock::acquire(&plan.store)?;
    let mut store = Maintainer::open(&plan.store)?;
    let r = store.resend(crate::sink::influx::SINK_NAME, line.as_ref(), clock.now())?;
    Ok(format!(
        "queued for {}: {} readings, {} hourly lines, {} site-days of daily values (with their district days); the service sends them when it starts\n",
        influx.url, r.readings, r.hourly_lines, r.site_days
    ))
}

/// `aq-ingest simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// What the devices speak: `json` (the service's JSON over MQTT) or `hj212`
    /// (HJ 212 CN=2011 frames: over TCP with --target, else over MQTT to --broker on
    /// `hj212/<site>/frames`).
    #[arg(long, default_value = "json", value_parser = ["json", "hj212"])]
    pub protocol: String,
    /// mqtt://host:port
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// HJ 212 over TCP: tcp://host:port of the service's `[hj212] listen`. Each site is
    /// one device on its own connection.
    #[arg(long)]
    pub target: Option<String>,
    /// HJ 212: the devices' CRC, `hj212` (the standard's Appendix A) or `modbus`.
    #[arg(long, default_value = "hj212", value_parser = ["hj212", "modbus"])]
    pub crc: String,
    /// HJ 212: the protocol version in the devices' Flag.
    #[arg(long = "hj212-version", default_value = "2017", value_parser = ["2005", "2017", "2025"])]
    pub hj212_version: String,
    /// HJ 212: the devices' PW.
    #[arg(long = "hj212-password", default_value = crate::sim::hj212::SIM_PASSWORD)]
    pub hj212_password: String,
    /// HJ 212 over TCP: frames a device sends before it waits for their answers.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// HJ 212 over TCP: a frame unanswered this long is sent again…
    #[arg(long, default_value_t = 10.0)]
    pub reply_timeout_secs: f64,
    /// … at most this many times, then given up (and the command fails).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// HJ 212 over TCP: at most this many frames per second per device (keep it under
    /// the service's `[hj212] max_frames_per_sec`).
    #[arg(long, default_value_t = 50.0)]
    pub device_rate: f64,
    #[arg(long, default_value_t = 10)]
    pub sites: usize,
    #[arg(long, default_value_t = 60)]
    pub interval_secs: u32,
    /// Historical mode: the first local date to replay (live mode without it).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Days to replay (historical) or to run (live).
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// Historical mode: simulated seconds per real second (default: as fast as possible).
    #[arg(long)]
    pub speed: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// At most this many messages per second (HJ 212 over TCP: frames per second, the
    /// whole fleet).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Readings per message (a device's batch upload; HJ 212 over MQTT: frames per
    /// message; HJ 212 over TCP: not used, one reading per frame).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// A plain-MQTT broker address and the plan's reading topic, for the simulator.
fn sim_target(plan: &Plan, url: &str) -> Result<sim::Target, CommandError> {
    let m = crate::source::mqtt::MqttConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    let a = m.broker().map_err(|e| CommandError::Usage(e.to_string()))?;
    if a.tls {
        return Err(CommandError::Usage(
            "the simulator speaks plain MQTT (mqtt://)".into(),
        ));
    }
    Ok(sim::Target {
        host: a.host,
        port: a.port,
        topic_filter: plan.reading_topic("+"),
    })
}

/// Publishes simulated readings; returns the number of messages (HJ 212 over TCP:
/// frames answered).
pub async fn simulate(
    plan: &Plan,
    a: SimulateArgs,
    clock: &dyn Clock,
) -> Result<u64, CommandError> {
    use crate::decode::hj212::{CrcVariant, Version};
    use crate::sim::hj212::{self as sim_hj212, FrameOptions};

    let sim = Simulator {
        sites: a.sites,
        interval_secs: a.interval_secs.max(1),
        seed: a.seed,
        zone: plan.aqi.zone(),
    };
    let replay = a.from.map(|from| Replay {
        from,
        days: a.days,
        batch: a.batch,
        rate: a.rate,
        speed: a.speed,
    });
    let format = match a.protocol.as_str() {
        "hj212" => sim::Format::Hj212(FrameOptions {
            crc: CrcVariant::parse(&a.crc)
                .ok_or_else(|| CommandError::Usage(format!("--crc {}", a.crc)))?,
            version: match a.hj212_version.as_str() {
                "2005" => Version::Hjt2005,
                "2025" => Version::Hj2025,
                _ => Version::Hj2017,
            },
            password: a.hj212_password.clone(),
        }),
        _ => sim::Format::Json,
    };
    if let Some(target) = &a.target {
        let sim::Format::Hj212(frames) = format else {
            return Err(CommandError::Usage(
                "--target tcp://… is for HJ 212 devices: add --protocol hj212 (JSON goes to --broker)"
                    .into(),
            ));
        };
        return simulate_tcp(&sim, target, frames, replay.as_ref(), &a, clock).await;
    }
    let mut target = sim_target(plan, &a.broker)?;
    if matches!(format, sim::Format::Hj212(_)) {
        target.topic_filter = sim_hj212::MQTT_TOPIC_FILTER.to_owned();
    }
    match replay {
        Some(replay) => sim::publish_history_as(&sim, &target, &replay, &format)
            .await
            .map_err(|e| CommandError::Mqtt(e.to_string())),
        None => sim::publish_live_as(&sim, &target, a.days, clock, &format)
            .await
            .map_err(|e| CommandError::Mqtt(e.to_string())),
    }
}

/// HJ 212 devices over TCP: one connection per site; returns the frames answered.
async fn simulate_tcp(
    sim: &Simulator,
    target: &str,
    frames: crate::sim::hj212::FrameOptions,
    replay: Option<&Replay>,
    a: &SimulateArgs,
    clock: &dyn Clock,
) -> Result<u64, CommandError> {
    use crate::sim::hj212::{self as sim_hj212, DeviceConfig};
    let addr = sim_hj212::tcp_addr(target).map_err(CommandError::Usage)?;
    let cfg = DeviceConfig {
        frames,
        window: a.window.max(1),
        reply_timeout: Duration::from_secs_f64(a.reply_timeout_secs.max(0.001)),
        retries: a.retries,
        max_frames_per_sec: a.device_rate,
        ..DeviceConfig::default()
    };
    let report = match replay {
        Some(replay) => sim_hj212::publish_history_tcp(sim, &addr, replay, &cfg).await,
        None => sim_hj212::publish_live_tcp(sim, &addr, a.days, clock, &cfg).await,
    };
    tracing::info!(
        delivered = report.delivered,
        unanswered = report.unanswered,
        resent = report.resent,
        connections = report.connections,
        reply_crc_mismatch = report.reply_crc_mismatch,
        "simulate: HJ 212 devices done"
    );
    if report.unanswered > 0 {
        return Err(CommandError::Unanswered(format!(
            "{} HJ 212 frames got no CN=9014 answer after {} re-sends ({} answered)",
            report.unanswered, a.retries, report.delivered
        )));
    }
    Ok(report.delivered)
}

/// `aq-ingest demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 10)]
    pub sites: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The demo's own store (the service's is left alone).
    #[arg(long, default_value = "data/demo.db")]
    pub store: PathBuf,
}

/// The demo's sampling interval: 5-minute readings keep a half year for 10 sites at
/// ~520 000 readings, replayed in seconds.
pub const DEMO_INTERVAL_SECS: u32 = 300;

/// Readings per demo message: an hour of 5-minute readings, as a device uploads them.
pub const DEMO_BATCH: usize = 12;

/// Runs the service with the simulator in-process: the first target's period replayed
/// into the demo store through the embedded broker, then the target report; the service
/// keeps running until `shutdown`.
pub async fn demo(
    mut plan: Plan,
    a: DemoArgs,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    print: impl Fn(&str),
) -> Result<(), CommandError> {
    let target = plan
        .target(None)
        .map_err(|e| CommandError::Usage(e.to_string()))?
        .clone();
    plan.store.path = a.store.clone();
    let broker = plan.broker.clone().ok_or_else(|| {
        CommandError::Usage(
            "the demo runs on the embedded broker: set [broker] embedded = true".into(),
        )
    })?;
    let metrics = Arc::new(Metrics::default());
    let sim_to = sim_target(&plan, &broker.client_url())?;
    let service = tokio::spawn(crate::app::serve(
        plan.clone(),
        Arc::clone(&clock),
        Arc::clone(&metrics),
        shutdown,
    ));
    let subscribed = {
        let m = Arc::clone(&metrics);
        move || m.mqtt_subscribed.load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_for_service(&service, subscribed).await?;
    let sim = Simulator {
        sites: a.sites,
        interval_secs: DEMO_INTERVAL_SECS,
        seed: a.seed,
        zone: plan.aqi.zone(),
    };
    let t0 = std::time::Instant::now();
    let replay = Replay {
        from: target.from,
        days: target.days(),
        batch: DEMO_BATCH,
        rate: None,
        speed: None,
    };
    let before = Metrics::get(&metrics.messages_acked);
    let sent = sim::publish_history(&sim, &sim_to, &replay)
        .await
        .map_err(|e| CommandError::Mqtt(e.to_string()))?;
    let acked = {
        let m = Arc::clone(&metrics);
        move || Metrics::get(&m.messages_acked) >= before + sent
    };
    wait_for_service(&service, acked).await?;
    tracing::info!(
        messages = sent,
        readings = Metrics::get(&metrics.readings_stored),
        secs = t0.elapsed().as_secs(),
        "demo: half year replayed"
    );
    let store = Store::open(&plan.store)?;
    let spec = Spec {
        from: target.from,
        to: target.to,
        as_of: target.to,
        site: None,
        target: Some(target),
    };
    print(&report::build(&store, &plan.aqi, spec)?.to_table());
    print(&format!(
        "The service keeps running on the demo data ({}); Ctrl-C stops it.",
        a.store.display()
    ));
    match service.await {
        Ok(r) => r.map_err(|e| CommandError::Service(format!("{e:#}"))),
        Err(e) => Err(CommandError::Service(e.to_string())),
    }
}

/// How often the demo looks at the service's counters while it waits on them.
const DEMO_POLL: Duration = Duration::from_millis(20);

/// Waits until `done` holds, failing if the service stops first. The counters are the
/// service's own account (subscribed, messages acknowledged after their commit).
async fn wait_for_service(
    service: &tokio::task::JoinHandle<anyhow::Result<()>>,
    done: impl Fn() -> bool,
) -> Result<(), CommandError> {
    while !done() {
        if service.is_finished() {
            return Err(CommandError::Service(
                "it exited during the demo (see the log above)".into(),
            ));
        }
        tokio::time::sleep(DEMO_POLL).await;
    }
    Ok(())
}

/// `aq-ingest device …`: client identities in the site registry.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Add a device (or a reader) and print its secret, once.
    Add {
        id: String,
        /// A site it may write (repeat for several).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// `reader`: may subscribe to alerts, publish nothing.
        #[arg(long)]
        reader: bool,
    },
    /// Give a device a new secret and print it, once (the old one stops working at
    /// the next start of the service).
    Rotate { id: String },
}

/// Adds or rotates a client identity in the registry file; returns the text to print
/// (the secret, shown this once: the file keeps only its hash).
pub fn device(plan: &Plan, cmd: DeviceCommand) -> Result<String, CommandError> {
    let path = &plan.sites_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CommandError::Usage(format!("{}: {e}", path.display()))),
    };
    let random = |e: getrandom::Error| CommandError::Usage(format!("no random source: {e}"));
    let secret = crate::credentials::new_secret().map_err(random)?;
    let hash = crate::credentials::hash(&secret).map_err(random)?;
    let (id, new_text) = match cmd {
        DeviceCommand::Add { id, sites, reader } => {
            if plan.registry.device(&id).is_some() {
                return Err(CommandError::Usage(format!(
                    "device {id} is already registered: use `device rotate {id}`"
                )));
            }
            if let Err(e) = crate::model::SiteId::parse(&id) {
                return Err(CommandError::Usage(format!(
                    "device id {id:?}: {}",
                    e.as_str()
                )));
            }
            if !reader && sites.is_empty() {
                return Err(CommandError::Usage(
                    "give the site(s) it writes: --site ID".into(),
                ));
            }
            let sites: Vec<String> = sites.iter().map(|s| format!("{s:?}")).collect();
            let block = format!(
                "\n[[device]]\nid = {id:?}\nsites = [{}]\nrole = \"{}\"\nsecret = \"{hash}\"\n",
                sites.join(", "),
                if reader { "reader" } else { "device" }
            );
            (id, format!("{text}{block}"))
        }
        DeviceCommand::Rotate { id } => {
            let t = replace_secret(&text, &id, &hash).ok_or_else(|| {
                CommandError::Usage(format!(
                    "no [[device]] {id:?} with a secret in {}",
                    path.display()
                ))
            })?;
            (id, t)
        }
    };
    // Checked before it is written: a registry the service would refuse is never left.
    crate::sites::Registry::parse(&new_text, crate::sites::Unregistered::Accept)
        .map_err(|p| CommandError::Usage(p.join("; ")))?;
    std::fs::write(path, new_text)
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    Ok(format!(
        "device {id}: secret {secret}\n(shown once: {} keeps only its hash; the device logs in with user name {id} and this password; restart the service to apply)\n",
        path.display()
    ))
}

/// The registry text with `id`'s `secret = …` line replaced.
fn replace_secret(text: &str, id: &str, hash: &str) -> Option<String> {
    let mut out = Vec::new();
    let (mut in_block, mut done) = (false, false);
    let want = format!("id = {id:?}");
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("[[") {
            in_block = false;
        }
        if t == want {
            in_block = true;
        }
        if in_block && !done && t.starts_with("secret") {
            out.push(format!("secret = \"{hash}\""));
            done = true;
            continue;
        }
        out.push(line.to_owned());
    }
    done.then(|| out.join("\n") + "\n")
}

/// Writes a mosquitto password file and ACL from the registry into `dir`, so that a
/// production mosquitto enforces what the embedded broker does: each device writes
/// only its own sites' reading topics, readers read alerts, the service (`[mqtt]
/// username`, its password from the environment) reads readings and writes alerts.
pub fn broker_config(plan: &Plan, dir: &std::path::Path) -> Result<String, CommandError> {
    let io = |e: std::io::Error| CommandError::Usage(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut passwd = String::new();
    let mut acl = String::from(
        "# Written by `aq-ingest broker-config --mosquitto`; regenerate, do not edit.\n",
    );
    let alerts = plan
        .alerts
        .as_ref()
        .map_or("aq/alerts", |a| a.topic.as_str());
    if let Some(user) = &plan.mqtt.username {
        let pass = std::env::var(&plan.mqtt.password_env).unwrap_or_default();
        if pass.is_empty() {
            return Err(CommandError::Usage(format!(
                "[mqtt] username {user} needs its password in ${}",
                plan.mqtt.password_env
            )));
        }
        let hash =
            crate::credentials::hash(&pass).map_err(|e| CommandError::Usage(e.to_string()))?;
        passwd.push_str(&format!("{user}:{hash}\n"));
        acl.push_str(&format!("\nuser {user}\n"));
        for f in &plan.mqtt.topics {
            acl.push_str(&format!("topic read {f}\n"));
        }
        acl.push_str(&format!("topic write {alerts}/#\n"));
    }
    let mut n = 0;
    for d in plan.registry.devices() {
        // Certificate-only identities have no password line (mosquitto:
        // `use_identity_as_username true`), but their ACL all the same.
        if let Some(hash) = &d.secret {
            passwd.push_str(&format!("{}:{hash}\n", d.id));
        }
        acl.push_str(&format!("\nuser {}\n", d.id));
        match d.role {
            crate::sites::Role::Reader => acl.push_str(&format!("topic read {alerts}/#\n")),
            crate::sites::Role::Device => {
                for site in &d.sites {
                    for f in &plan.mqtt.topics {
                        if f.contains('+') {
                            acl.push_str(&format!("topic write {}\n", f.replacen('+', site, 1)));
                        }
                    }
                }
            }
        }
        n += 1;
    }
    std::fs::write(dir.join("passwd"), passwd).map_err(io)?;
    std::fs::write(dir.join("acl"), acl).map_err(io)?;
    Ok(format!(
        "wrote {0}/passwd ({n} identities{1}) and {0}/acl; in mosquitto.conf: password_file {0}/passwd, acl_file {0}/acl, allow_anonymous false\n",
        dir.display(),
        if plan.mqtt.username.is_some() { " and the service" } else { "" }
    ))
}
