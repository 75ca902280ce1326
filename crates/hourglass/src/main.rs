//! The `hourglass` command: parses the command line and hands each subcommand to the crate that
//! owns it. No logic of its own beyond printing what was started and mapping errors to exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::sync::Arc;

use hourglass_engine::error::FailureKind;
use hourglass_engine::{BoxFuture, BoxIo, Dial, DialFn, Engine};
use hourglass_gateway::Gateway;
use hourglass_sim::{Scenario, Server, ServerConfig, scenario::UpstreamSpec};

/// Prints a line to stdout, ignoring a closed stdout: a server must not die because whoever read
/// its banner went away (`hourglass serve | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit status of `probe` and `diagnose` when a verdict is poor or a phase failed (1 is an
/// error, 2 a usage error).
pub(crate) const EXIT_POOR: u8 = 3;

mod tools;

use tools::{DiagnoseArgs, ExplainArgs, ProbeArgs, TuneArgs};

#[derive(Parser)]
#[command(
    name = "hourglass",
    version,
    about = "Make calls to AI model APIs survive timeouts: a gateway, a toolkit and a simulator",
    after_help = "Logs go to stderr; set HOURGLASS_LOG (e.g. `debug` or `hourglass_sim=debug`) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as JSON objects (one per line, for log shippers)
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: an OpenAI-compatible proxy with per-phase timeouts, retries and failover
    Serve(ServeArgs),
    /// Check a configuration file and print the effective policy of every model
    Config(ConfigArgs),
    /// Health-check endpoints and profile their latency by phase, with a verdict per model
    Probe(ProbeArgs),
    /// Show where the time of a call goes: DNS, TCP, TLS, first byte, first token, and whose fault
    Diagnose(DiagnoseArgs),
    /// Explain a timeout or connection error message: the failed phase, probable causes, the fix
    Explain(ExplainArgs),
    /// Derive timeouts and retries per model from measured latencies (or the family's priors)
    Tune(TuneArgs),
    /// Run a fault-injecting simulator of an OpenAI-compatible API server
    Sim(SimArgs),
}

#[derive(Args)]
#[command(
    after_help = "Without --config: an `openai` upstream from OPENAI_API_KEY / OPENAI_BASE_URL, or else the\n\
                        embedded simulator as upstream `sim`. See docs/config.md and examples/hourglass.toml."
)]
struct ServeArgs {
    /// Configuration file (TOML)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen; default 127.0.0.1:8787)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE and print every model's targets and effective timeouts and retries, with
    /// where each value came from
    Check {
        /// Configuration file (TOML)
        file: PathBuf,
    },
}

#[derive(Args)]
#[command(
    after_help = "Faults per request: send header `x-sim-fault`, e.g. `stall;after_chunks=3;for=30s`.\n\
                        See docs/sim.md for every fault kind, the scenario file and the built-in models."
)]
struct SimArgs {
    /// Address to listen on (one simulated upstream named `sim`, serving every built-in model)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8700",
        conflicts_with = "scenario"
    )]
    listen: SocketAddr,
    /// Scenario file (TOML): several upstreams with their own models, latencies and fault mixes
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Multiply every simulated latency by F (e.g. 0.01 runs a 90 s reasoning call in 0.9 s);
    /// durations written in fault headers are taken literally
    #[arg(long, value_name = "F", value_parser = parse_time_scale, allow_negative_numbers = true)]
    time_scale: Option<f64>,
    /// Seed of every random draw, for reproducible runs
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor.is_finite() && factor > 0.0 => Ok(factor),
        _ => Err(format!(
            "`{text}` is not a factor above 0; write e.g. 1, 0.1 or 0.01"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format == "json");
    let result = match cli.command {
        Command::Serve(args) => run(serve(args)),
        Command::Config(ConfigArgs {
            command: ConfigCommand::Check { file },
        }) => config_check(&file),
        Command::Probe(args) => run(tools::probe(args)),
        Command::Diagnose(args) => run(tools::diagnose(args)),
        Command::Explain(args) => tools::explain(args),
        Command::Tune(args) => tools::tune(args),
        Command::Sim(args) => run(sim(args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hourglass: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = std::env::var("HOURGLASS_LOG")
        .ok()
        .and_then(|text| text.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

fn run(
    job: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(job)
}

pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = hourglass_config::Config::load(file, &env_var)?;
    print!("{}", config.render_check());
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut dials: HashMap<String, Arc<dyn Dial>> = HashMap::new();
    let (mut config, note) = match &args.config {
        Some(path) => (hourglass_config::Config::load(path, &env_var)?, None),
        None => match hourglass_config::Config::from_env(&env_var)? {
            Some(config) => (
                config,
                Some("no --config: upstream `openai` from OPENAI_API_KEY / OPENAI_BASE_URL"),
            ),
            None => {
                let simulator = Arc::new(Server::in_memory(ServerConfig::default()));
                let dial = DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
                    let simulator = simulator.clone();
                    Box::pin(
                        async move { Ok(Box::new(simulator.connect_in_memory().await) as BoxIo) },
                    )
                });
                dials.insert("sim".to_owned(), Arc::new(dial));
                (
                    hourglass_config::Config::single_upstream(
                        "sim",
                        "http://sim.in-memory.invalid/v1",
                    ),
                    Some(
                        "no --config and no OPENAI_API_KEY / OPENAI_BASE_URL: serving the embedded simulator as upstream `sim` (docs/sim.md); x-sim-fault headers reach it",
                    ),
                )
            }
        },
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let listen = config.server.listen;
    if !listen.ip().is_loopback()
        && config.server.client_keys.is_empty()
        && !config.server.allow_unauthenticated
    {
        anyhow::bail!(
            "refusing to serve on {listen} without client keys: anyone who can reach it could spend the upstreams' keys. \
             Set server.client_keys_env, listen on 127.0.0.1, or set server.allow_unauthenticated = true to serve open on purpose"
        );
    }
    let settings = config.server.clone();
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.name, u.base_url))
        .collect();
    let engine = Engine::new(config, dials).map_err(anyhow::Error::msg)?;
    // Active health checks run for as long as the engine does ([health_check]).
    let _health_checks = engine.spawn_health_checks();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen / --listen)"))?;
    let local = listener.local_addr()?;
    if let Some(note) = note {
        say!("hourglass serve: {note}");
    }
    say!(
        "hourglass serve: listening on http://{local}/v1; upstreams: {}",
        upstreams.join(", ")
    );
    say!(
        "hourglass serve: try\n  curl http://{local}/v1/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );
    let mut gateway = Gateway::new(engine, settings);
    if let Some(path) = args.config.clone() {
        // SIGHUP or POST /admin/reload read the file again; a bad file leaves the old engine.
        gateway = gateway.with_reloader(Box::new(move || {
            let config =
                hourglass_config::Config::load(&path, &env_var).map_err(|e| e.to_string())?;
            let engine = Engine::new(config, HashMap::new())?;
            let _health_checks = engine.spawn_health_checks();
            Ok(engine)
        }));
    }
    let gateway = Arc::new(gateway);
    #[cfg(unix)]
    if args.config.is_some() {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hangups.recv().await.is_some() {
                match gateway.reload() {
                    Ok(models) => say!(
                        "hourglass serve: reloaded the configuration; models: {}",
                        models.join(", ")
                    ),
                    Err(error) => tracing::error!(
                        "the configuration was not reloaded (the old one keeps serving): {error}"
                    ),
                }
            }
        });
    }
    let open = hourglass_gateway::serve(listener, gateway, shutdown_signal()).await;
    if open > 0 {
        say!(
            "hourglass serve: stopped; {open} connections were still open after server.shutdown_grace"
        );
    } else {
        say!("hourglass serve: stopped");
    }
    Ok(ExitCode::SUCCESS)
}

async fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario {
            seed: 0,
            time_scale: 1.0,
            upstreams: vec![UpstreamSpec {
                listen: args.listen,
                config: ServerConfig::default(),
            }],
        },
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    scenario = scenario.with_seed(seed);
    if let Some(time_scale) = args.time_scale {
        scenario = scenario.with_time_scale(time_scale);
    }
    let servers: Vec<Server> = scenario.start().await?;
    for server in &servers {
        let config = server.config();
        let mut notes = vec![format!("{} models", config.models.len())];
        if !config.fault_mix.is_empty() {
            let share: f64 = config.fault_mix.iter().map(|f| f.probability).sum();
            notes.push(format!("faults on {:.1}% of requests", share * 100.0));
        }
        if config.blackhole {
            notes.push("blackholed: connects time out".to_owned());
        }
        say!(
            "hourglass sim: upstream `{}` listening on {} ({})",
            server.name(),
            server.base_url(),
            notes.join(", ")
        );
    }
    say!(
        "hourglass sim: seed {}, time scale {}; try\n  curl {}/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        scenario.seed,
        scenario.time_scale,
        servers[0].base_url()
    );
    shutdown_signal().await;
    say!("hourglass sim: stopping");
    drop(servers);
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
