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

/// Exit status of `probe` when a verdict is poor (1 is an error, 2 a usage error).
const EXIT_POOR: u8 = 3;

/// Exit status of a command that is not built yet (the same as a usage error).
const EXIT_NOT_BUILT: u8 = 2;

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
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: an OpenAI-compatible proxy with per-phase timeouts, retries and failover
    Serve(ServeArgs),
    /// Check a configuration file and print the effective policy of every model
    Config(ConfigArgs),
    /// Health-check endpoints and profile their latency by phase, with a verdict per model
    Probe(ProbeArgs),
    /// Show where the time of a call goes: DNS, TCP, TLS, first byte, first token (not built yet)
    Diagnose(NotBuilt),
    /// Explain a timeout or connection error message: the failed phase, probable causes, the fix
    Explain(ExplainArgs),
    /// Derive timeout and retry settings from measured latencies (not built yet)
    Tune(NotBuilt),
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

/// Arguments of a command that is not built yet: accepted and ignored.
#[derive(Args)]
struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 when every verdict is good or excellent, 3 when one is poor, 1 on errors.\n\
                  Metric definitions and thresholds: docs/toolkit.md. Results saved with --save feed `hourglass tune --from`."
)]
struct ProbeArgs {
    /// Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    url: Option<String>,
    /// Probe every upstream of this configuration file instead, with its timeouts and keys
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Model to call (repeat for several); default: the models the configuration routes to each
    /// upstream, or gpt-4o-mini for a URL
    #[arg(long = "model", short = 'm', value_name = "M")]
    models: Vec<String>,
    /// Calls per endpoint and model
    #[arg(short = 'n', long = "requests", value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    n: u32,
    /// Calls in flight at once
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Stream the answers: measures first token and inter-token gaps
    #[arg(long)]
    stream: bool,
    /// max_tokens of each call
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_tokens: u32,
    /// The user message sent
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "Count from 1 to 20, separated by spaces."
    )]
    prompt: String,
    /// Extra request header, `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Environment variable holding the API key for a URL (sent as a bearer token)
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Overall timeout of each call (default: the model family's, as the gateway runs it)
    #[arg(long, value_name = "DURATION", value_parser = parse_elapsed)]
    timeout: Option<std::time::Duration>,
    /// Print JSON (the same document --save writes)
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV, one row per endpoint and model
    #[arg(long)]
    csv: bool,
    /// Also write the results (JSON) to FILE, for `hourglass tune --from FILE`
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
}

fn parse_header(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header; write `Name: value`"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
    let value = http::HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("the value of header `{name}` has characters a header cannot carry")
    })?;
    Ok((name, value))
}

#[derive(Args)]
#[command(
    after_help = "Reads many messages (one per line) from --file or from stdin (MESSAGE `-` or absent), \
                  and then ends with a summary by class. Classes and examples: docs/errors.md."
)]
struct ExplainArgs {
    /// The error message, quoted; `-` or nothing reads one message per line from stdin
    message: Option<String>,
    /// The model that was called (reasoning and image models wait longer)
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// How long the call ran before it failed, e.g. 60s, 2m, 100 (seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_elapsed)]
    elapsed: Option<std::time::Duration>,
    /// A log file: every non-empty line is a message
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    file: Option<PathBuf>,
    /// Print JSON: one object, or one object per line when reading many
    #[arg(long)]
    json: bool,
}

fn parse_elapsed(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration of zero seconds or more"));
    }
    hourglass_config::duration::parse(text)
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
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => run(serve(args)),
        Command::Config(ConfigArgs {
            command: ConfigCommand::Check { file },
        }) => config_check(&file),
        Command::Probe(args) => run(probe(args)),
        Command::Diagnose(_) => not_built("diagnose", "the toolkit"),
        Command::Explain(args) => explain(args),
        Command::Tune(_) => not_built("tune", "the toolkit"),
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

fn not_built(command: &str, arrives_with: &str) -> anyhow::Result<ExitCode> {
    eprintln!(
        "hourglass {command} is not built yet; it arrives with {arrives_with}. \
         `hourglass serve` and `hourglass sim` work today (see README.md)."
    );
    Ok(ExitCode::from(EXIT_NOT_BUILT))
}

fn init_logging() {
    let filter = std::env::var("HOURGLASS_LOG")
        .ok()
        .and_then(|text| text.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
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

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = hourglass_config::Config::load(file, &env_var)?;
    print!("{}", config.render_check());
    Ok(ExitCode::SUCCESS)
}

async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    use hourglass_toolkit::probe::{self, Options, Report, Verdict};
    let mut headers = http::HeaderMap::new();
    for (name, value) in args.headers {
        headers.append(name, value);
    }
    let options = Options {
        n: args.n as usize,
        concurrency: args.concurrency as usize,
        stream: args.stream,
        max_tokens: args.max_tokens,
        prompt: args.prompt,
        headers,
        timeout: args.timeout,
    };
    let targets = match (&args.config, &args.url) {
        (Some(path), _) => {
            let config = hourglass_config::Config::load(path, &env_var)?;
            probe::targets_for_config(&config, &args.models, &options, HashMap::new())
                .map_err(anyhow::Error::msg)?
        }
        (None, Some(url)) => {
            let models = if args.models.is_empty() {
                vec!["gpt-4o-mini".to_owned()]
            } else {
                args.models.clone()
            };
            probe::targets_for_url(url, env_var(&args.api_key_env), &models, &options, None)
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?
        }
        (None, None) => anyhow::bail!("give a URL or --config FILE"),
    };
    let total = targets.len() * options.n;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let tick = || {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if bar {
            let width = 30;
            let filled = n * width / total.max(1);
            eprint!(
                "\rprobing [{}{}] {n}/{total}",
                "#".repeat(filled),
                "-".repeat(width - filled)
            );
            if n == total {
                eprintln!();
            }
        }
    };
    let mut results = Vec::with_capacity(targets.len());
    for target in &targets {
        results.push(probe::probe(target, &options, &tick).await);
    }
    let report = Report {
        version: probe::RESULTS_VERSION,
        results,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.save {
        std::fs::write(path, &json)
            .with_context(|| format!("cannot write --save {}", path.display()))?;
    }
    if args.json {
        say!("{json}");
    } else if args.csv {
        print!("{}", probe::render_csv(&report));
    } else {
        print!("{}", probe::render_table(&report));
    }
    let poor = report.results.iter().any(|r| r.verdict == Verdict::Poor);
    Ok(if poor {
        ExitCode::from(EXIT_POOR)
    } else {
        ExitCode::SUCCESS
    })
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    use hourglass_toolkit::explain::{self, Class};
    use std::io::{IsTerminal as _, Read as _};
    let many = match (&args.file, args.message.as_deref()) {
        (Some(path), _) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --file {}", path.display()))?,
        ),
        (None, Some("-")) | (None, None) => {
            if args.message.is_none() && std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "give a message to explain, e.g. hourglass explain \"net/http: timeout awaiting response headers\", or pipe a log into it"
                );
            }
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            Some(bytes)
        }
        (None, Some(_)) => None,
    };
    let model = args.model.as_deref();
    if let Some(bytes) = many {
        // Logs carry stray bytes; a line that is not UTF-8 is explained as far as it reads.
        let text = String::from_utf8_lossy(&bytes);
        let (out, _) = explain::explain_lines(&text, model, args.elapsed, args.json);
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let message = args.message.unwrap_or_default();
    let explanation = explain::explain(&message, model, args.elapsed);
    if args.json {
        say!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explain::render(&explanation));
    }
    Ok(if explanation.class == Class::Unknown {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
    let settings = config.server.clone();
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.name, u.base_url))
        .collect();
    let engine = Engine::new(config, dials).map_err(anyhow::Error::msg)?;
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
    let gateway = Arc::new(Gateway { engine, settings });
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
