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
        Command::Report(args) => match report(&cfg, args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("aq-ingest report: {e}");
                ExitCode::FAILURE
            }
        },
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

fn report(cfg: &Config, args: ReportArgs) -> Result<String, String> {
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
    let mut store = aq_ingest::store::Store::open(&cfg.store).map_err(|e| e.to_string())?;
    let spec = aq_ingest::report::Spec {
        from,
        to,
        as_of,
        site: args.site,
        target,
    };
    let r = aq_ingest::report::build(&mut store, &cfg.aqi, spec).map_err(|e| e.to_string())?;
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
