//! The `aq-ingest` command: parses the command line, loads and resolves the config, and
//! calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aq_ingest::clock::SystemClock;
use aq_ingest::commands::{self, DemoArgs, ReportArgs, SimulateArgs};
use aq_ingest::config::{Config, LogFormat};
use aq_ingest::metrics::Metrics;
use aq_ingest::plan::Plan;
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
    /// Check the config (and the site registry it names) and print every problem found.
    CheckConfig,
    /// Print the good-day report from the local store.
    Report(ReportArgs),
    /// Publish simulated site readings to an MQTT broker.
    Simulate(SimulateArgs),
    /// Run the service with the simulator in-process: a half year of district data in
    /// its own store, then the target report; the service keeps running (Ctrl-C stops).
    Demo(DemoArgs),
    /// Show the lines InfluxDB refused, per status and reason; `--requeue` queues them
    /// again (after the cause is fixed). Safe while the service runs.
    DeadLetters {
        #[arg(long)]
        requeue: bool,
    },
    /// Client identities in the site registry: add one or rotate its secret.
    #[command(subcommand)]
    Device(commands::DeviceCommand),
    /// Write a mosquitto password file and ACL from the registry into DIR.
    BrokerConfig {
        #[arg(long, value_name = "DIR")]
        mosquitto: PathBuf,
    },
    /// Queue everything in the store for InfluxDB again (a new or emptied database):
    /// every reading, and the derived hourly and daily series. Stop the service first;
    /// the next start sends it all.
    Resend,
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
    let origin = path
        .as_ref()
        .map_or("built-in defaults".into(), |p| p.display().to_string());
    let (plan, warnings) = match Config::load(path.as_deref()).and_then(|c| {
        let w = c.warnings();
        Plan::resolve(c, &origin).map(|p| (p, w))
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("aq-ingest: config error: {e}");
            return ExitCode::from(2);
        }
    };
    let clock = SystemClock;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("config OK ({origin})");
            for w in &warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Command::Report(args) => printed("report", commands::report(&plan, args, &clock)),
        Command::DeadLetters { requeue } => printed(
            "dead-letters",
            commands::dead_letters(&plan, requeue, &clock),
        ),
        Command::Resend => printed("resend", commands::resend(&plan, &clock)),
        Command::Device(cmd) => printed("device", commands::device(&plan, cmd)),
        Command::BrokerConfig { mosquitto } => {
            printed("broker-config", commands::broker_config(&plan, &mosquitto))
        }
        Command::Simulate(args) => {
            init_logging(&plan);
            let r = runtime().and_then(|rt| {
                rt.block_on(commands::simulate(&plan, args, &clock))
                    .map_err(|e| e.to_string())
            });
            printed("simulate", r.map(|n| format!("published {n} messages\n")))
        }
        Command::Demo(args) => {
            init_logging(&plan);
            let r = runtime().and_then(|rt| {
                rt.block_on(commands::demo(
                    plan,
                    args,
                    Arc::new(SystemClock),
                    shutdown_signal(),
                    |text| println!("{text}"),
                ))
                .map_err(|e| e.to_string())
            });
            printed("demo", r.map(|()| String::new()))
        }
        Command::Serve => {
            init_logging(&plan);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            let r = runtime().and_then(|rt| {
                rt.block_on(aq_ingest::app::serve(
                    plan,
                    Arc::new(SystemClock),
                    Arc::new(Metrics::default()),
                    shutdown_signal(),
                ))
                .map_err(|e| {
                    tracing::error!(error = %format!("{e:#}"), "aq-ingest failed");
                    format!("{e:#}")
                })
            });
            printed("serve", r.map(|()| String::new()))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))
}

/// A command's outcome: its text on stdout, or its error on stderr.
fn printed<E: std::fmt::Display>(command: &str, r: Result<String, E>) -> ExitCode {
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

fn init_logging(plan: &Plan) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&plan.log.level));
    // Colours only on a terminal: escape codes in a log file break grep and parsers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match plan.log.format {
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
