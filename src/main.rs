//! The `aq-ingest` command: parses the command line and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aq_ingest::clock::SystemClock;
use aq_ingest::config::{Config, LogFormat};
use aq_ingest::metrics::Metrics;
use clap::{Parser, Subcommand};

/// Air-quality reading ingest: MQTT → durable local store → InfluxDB.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file. Default: config/default.toml when present, else built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Check the config and print every problem found.
    CheckConfig,
    /// Print the good-day report from the local store.
    Report(ReportArgs),
    /// Publish simulated site readings to an MQTT broker.
    Simulate(SimulateArgs),
    /// Run the service with the simulator in-process: a half year of district data in
    /// `data/demo.db`, then the target report; the service keeps running (Ctrl-C stops).
    Demo(DemoArgs),
    /// Show the lines InfluxDB refused, per status and reason; `--requeue` queues them
    /// again (after the cause is fixed). Safe while the service runs.
    DeadLetters {
        #[arg(long)]
        requeue: bool,
    },
    /// Queue everything in the store for InfluxDB again (a new or emptied database):
    /// every reading, and the derived hourly and daily series. Stop the service first;
    /// the next start sends it all.
    Resend,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// mqtt://host:port
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    #[arg(long, default_value_t = 10)]
    sites: usize,
    #[arg(long, default_value_t = 60)]
    interval_secs: u32,
    /// Historical mode: the first local date to replay (live mode without it).
    #[arg(long)]
    from: Option<chrono::NaiveDate>,
    /// Days to replay (historical) or to run (live).
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Historical mode: simulated seconds per real second (default: as fast as possible).
    #[arg(long)]
    speed: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At most this many messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Readings per message (a device's batch upload).
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

#[derive(clap::Args)]
struct DemoArgs {
    #[arg(long, default_value_t = 10)]
    sites: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A configured [[target]] (default: the first one).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    target: Option<String>,
    /// A period instead of a target (inclusive local dates, YYYY-MM-DD).
    #[arg(long, requires = "to")]
    from: Option<chrono::NaiveDate>,
    #[arg(long, requires = "from")]
    to: Option<chrono::NaiveDate>,
    /// Report as of this date (default: today).
    #[arg(long)]
    as_of: Option<chrono::NaiveDate>,
    /// One site instead of the district.
    #[arg(long)]
    site: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

fn config_path(cli: Option<PathBuf>) -> Option<PathBuf> {
    cli.or_else(|| {
        let p = Path::new("config/default.toml");
        p.is_file().then(|| p.to_owned())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config_path(cli.config);
    let cfg = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aq-ingest: config error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Simulate(args) => {
            init_logging(&cfg);
            match tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(simulate(&cfg, args)))
            {
                Ok(n) => {
                    println!("published {n} messages");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("aq-ingest simulate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => {
            init_logging(&cfg);
            match tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(demo(cfg, args)))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("aq-ingest demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report(args) => printed("report", report(&cfg, args)),
        Command::DeadLetters { requeue } => printed("dead-letters", dead_letters(&cfg, requeue)),
        Command::Resend => printed("resend", resend(&cfg)),
        Command::CheckConfig => {
            println!(
                "config OK ({})",
                path.map_or("built-in defaults".into(), |p| p.display().to_string())
            );
            ExitCode::SUCCESS
        }
        Command::Serve => {
            init_logging(&cfg);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("aq-ingest: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(aq_ingest::app::run(
                cfg,
                Arc::new(SystemClock),
                Arc::new(Metrics::default()),
                shutdown_signal(),
            ));
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "aq-ingest failed");
                    eprintln!("aq-ingest: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn broker_addr(url: &str) -> Result<(String, u16), String> {
    let m = aq_ingest::source::mqtt::MqttConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    let a = m.broker().map_err(|e| e.to_string())?;
    if a.tls {
        return Err("the simulator speaks plain MQTT (mqtt://)".into());
    }
    Ok((a.host, a.port))
}

async fn simulate(cfg: &Config, a: SimulateArgs) -> Result<u64, String> {
    use aq_ingest::sim::{publish_history, Replay, Simulator};
    let (host, port) = broker_addr(&a.broker)?;
    let sim = Simulator {
        sites: a.sites,
        interval_secs: a.interval_secs.max(1),
        seed: a.seed,
        zone: cfg.aqi.zone(),
    };
    match a.from {
        Some(from) => publish_history(
            &sim,
            &host,
            port,
            &Replay {
                from,
                days: a.days,
                batch: a.batch,
                rate: a.rate,
                speed: a.speed,
            },
        )
        .await
        .map_err(|e| e.to_string()),
        None => simulate_live(&sim, &host, port, a.days).await,
    }
}

/// Live mode: every interval, one reading per site stamped with the current slot.
async fn simulate_live(
    sim: &aq_ingest::sim::Simulator,
    host: &str,
    port: u16,
    days: u32,
) -> Result<u64, String> {
    use aq_ingest::clock::Clock as _;
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut o = MqttOptions::new(format!("aq-sim-live-{}", sim.seed), host, port);
    o.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    // Drive the connection; rumqttc reconnects on the next poll after an error.
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    });
    let step = i64::from(sim.interval_secs) * 1000;
    let end = SystemClock.now().0 + i64::from(days) * 86_400_000;
    let mut sent = 0u64;
    loop {
        let now = SystemClock.now().0;
        let slot = (now / step + 1) * step;
        if slot > end {
            return Ok(sent);
        }
        tokio::time::sleep(std::time::Duration::from_millis((slot - now) as u64)).await;
        let date = sim.zone.date_of(aq_ingest::model::UnixMillis(slot));
        for s in 0..sim.sites {
            let day = sim.site_day(s, date);
            if let Some(r) = day.iter().find(|r| r.ts.0 == slot) {
                let topic = format!("aq/{}/readings", aq_ingest::sim::Simulator::site_id(s));
                client
                    .publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        sim.payload(std::slice::from_ref(r)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                sent += 1;
            }
        }
    }
}

async fn demo(mut cfg: Config, a: DemoArgs) -> Result<(), String> {
    use aq_ingest::sim::{publish_history, Replay, Simulator};
    use std::sync::atomic::Ordering;
    cfg.store.path = std::path::PathBuf::from("data/demo.db");
    cfg.broker.embedded = true;
    let target = cfg
        .target
        .first()
        .cloned()
        .ok_or("the config has no [[target]]")?;
    let metrics = Arc::new(Metrics::default());
    let (host, port) = broker_addr(&cfg.broker.client_url())?;
    let run = tokio::spawn(aq_ingest::app::run(
        cfg.clone(),
        Arc::new(SystemClock),
        Arc::clone(&metrics),
        shutdown_signal(),
    ));
    while !metrics.mqtt_subscribed.load(Ordering::Relaxed) {
        if run.is_finished() {
            return Err(match run.await {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "the service stopped".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sim = Simulator {
        sites: a.sites,
        interval_secs: 300,
        seed: a.seed,
        zone: cfg.aqi.zone(),
    };
    let t0 = std::time::Instant::now();
    let replay = Replay {
        from: target.from,
        days: target.days(),
        batch: 12,
        rate: None,
        speed: None,
    };
    let before = Metrics::get(&metrics.messages_acked);
    let sent = publish_history(&sim, &host, port, &replay)
        .await
        .map_err(|e| e.to_string())?;
    while Metrics::get(&metrics.messages_acked) < before + sent {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!(
        messages = sent,
        readings = Metrics::get(&metrics.readings_stored),
        secs = t0.elapsed().as_secs(),
        "demo: half year replayed"
    );
    let store = aq_ingest::store::Store::open(&cfg.store).map_err(|e| e.to_string())?;
    let spec = aq_ingest::report::Spec {
        from: target.from,
        to: target.to,
        as_of: target.to,
        site: None,
        target: Some(target),
    };
    let r = aq_ingest::report::build(&store, &cfg.aqi, spec).map_err(|e| e.to_string())?;
    println!("{}", r.to_table());
    println!("The service keeps running on the demo data (data/demo.db); Ctrl-C stops it.");
    run.await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))
}

/// A one-shot command's outcome: its text on stdout, or its error on stderr.
fn printed(command: &str, r: Result<String, String>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aq-ingest {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dead_letters(cfg: &Config, requeue: bool) -> Result<String, String> {
    use aq_ingest::clock::Clock as _;
    let mut store = aq_ingest::store::Store::open(&cfg.store).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let summary = store.dead_letter_summary().map_err(|e| e.to_string())?;
    if summary.is_empty() {
        out.push_str("no dead letters\n");
    }
    for c in &summary {
        out.push_str(&format!("{:>8}  {}  {}\n", c.count, c.kind, c.reason));
    }
    if requeue {
        let n = store
            .requeue_dead_letters(aq_ingest::clock::SystemClock.now())
            .map_err(|e| e.to_string())?;
        out.push_str(&format!(
            "queued {n} refused lines again; the service sends them next\n"
        ));
    }
    Ok(out)
}

fn resend(cfg: &Config) -> Result<String, String> {
    use aq_ingest::clock::Clock as _;
    let influx = cfg
        .influx
        .as_ref()
        .ok_or("no [influx] section in the config: nothing to re-send to")?;
    let mut cfg = cfg.clone();
    cfg.registry();
    let line: Option<aq_ingest::store::HourlyLines> = influx.derived.then(|| {
        let d = aq_ingest::derived::Derived::new(&influx.measurement, &cfg.aqi);
        Box::new(move |h: &aq_ingest::aqi::daily::SiteHour| d.hour_line(h)) as _
    });
    // Refused while a service runs on the store: its writer keeps its cursor in memory.
    let _lock = aq_ingest::store::StoreLock::acquire(&cfg.store).map_err(|e| e.to_string())?;
    let mut store = aq_ingest::store::Store::open(&cfg.store).map_err(|e| e.to_string())?;
    let r = store
        .resend(
            aq_ingest::sink::influx::SINK_NAME,
            line.as_ref(),
            aq_ingest::clock::SystemClock.now(),
        )
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "queued for {}: {} readings, {} hourly lines, {} site-days of daily values (with their district days); the service sends them when it starts\n",
        influx.url, r.readings, r.hourly_lines, r.site_days
    ))
}

fn report(cfg: &Config, args: ReportArgs) -> Result<String, String> {
    // Sites the registry keeps out of the district.
    let mut cfg = cfg.clone();
    cfg.registry();
    let cfg = &cfg;
    use aq_ingest::clock::Clock as _;
    let zone = cfg.aqi.zone();
    let as_of = args
        .as_of
        .unwrap_or_else(|| zone.date_of(SystemClock.now()));
    let target = match (&args.target, args.from) {
        (_, Some(_)) => None,
        (Some(name), None) => Some(
            cfg.target
                .iter()
                .find(|t| &t.name == name)
                .cloned()
                .ok_or_else(|| format!("no [[target]] named {name:?} in the config"))?,
        ),
        (None, None) => Some(
            cfg.target
                .first()
                .cloned()
                .ok_or("no [[target]] in the config; give --from and --to")?,
        ),
    };
    let (from, to) = match (&target, args.from, args.to) {
        (Some(t), _, _) => (t.from, t.to),
        (None, Some(f), Some(t)) => (f, t),
        _ => return Err("give --target, or --from and --to".into()),
    };
    let store = aq_ingest::store::Store::open(&cfg.store).map_err(|e| e.to_string())?;
    let spec = aq_ingest::report::Spec {
        from,
        to,
        as_of,
        site: args.site,
        target,
    };
    let r = aq_ingest::report::build(&store, &cfg.aqi, spec).map_err(|e| e.to_string())?;
    Ok(match args.format {
        Format::Table => r.to_table(),
        Format::Json => format!("{:#}\n", r.to_json()),
        Format::Csv => r.to_csv(),
    })
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rumqttd logs every connection at INFO, and a client that disconnects while its last
        // packet is routed as an ERROR (harmless); keep it to real warnings.
        tracing_subscriber::EnvFilter::new(format!(
            "{},rumqttd=warn,rumqttd::router::routing=off",
            cfg.log.level
        ))
    });
    // Colours only on a terminal: escape codes in a log file break grep and parsers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
