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
const EXIT_POOR: u8 = 3;

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
    after_help = "Exit status: 0 when every phase completed, 3 when one failed (the verdict names it), 1 on errors."
)]
struct DiagnoseArgs {
    /// Base URL of the API, e.g. https://api.openai.com/v1
    url: String,
    /// Model of the tiny streamed completion that measures first token and gaps
    #[arg(long, short = 'm', value_name = "M", default_value = "gpt-4o-mini")]
    model: String,
    /// Stop after TLS: no completion (for endpoints that are not an AI API)
    #[arg(long)]
    no_completion: bool,
    /// Extra request header of the completion, `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Environment variable holding the API key (sent as a bearer token)
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Limit of each network step: DNS, each TCP connect, the TLS handshake
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_elapsed)]
    step_timeout: std::time::Duration,
    /// Limit of the completion
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_elapsed)]
    timeout: std::time::Duration,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    after_help = "Without --from: the built-in priors of each --model's family. Rules: docs/toolkit.md."
)]
struct TuneArgs {
    /// Results saved by `hourglass probe --save FILE`
    #[arg(long, value_name = "FILE", conflicts_with = "gateway")]
    from: Option<PathBuf>,
    /// A running gateway's latency histograms (arrives with the observability work)
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// Only these models (repeatable); without --from, the models to give priors for
    #[arg(long = "model", short = 'm', value_name = "M")]
    models: Vec<String>,
    /// How patient the caller is (default: the model family's)
    #[arg(long, value_name = "S", value_parser = ["realtime", "content", "reasoning", "image"])]
    scenario: Option<String>,
    /// The smallest read/idle timeout of any proxy on the path (e.g. 60s for nginx's default)
    #[arg(long, value_name = "DURATION", value_parser = parse_elapsed)]
    middlebox: Option<std::time::Duration>,
    /// The longest answer (output tokens) your calls expect; default: the longest the probe saw
    #[arg(long, value_name = "N")]
    output_tokens: Option<u32>,
    /// What to print
    #[arg(long, value_name = "F", default_value = "all", value_parser = ["all", "table", "toml", "python", "node", "curl", "json"])]
    format: String,
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
        Command::Diagnose(args) => run(diagnose(args)),
        Command::Explain(args) => explain(args),
        Command::Tune(args) => tune(args),
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

async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    use hourglass_toolkit::diagnose::{self, DiagnoseOptions};
    let mut headers = http::HeaderMap::new();
    for (name, value) in args.headers {
        headers.append(name, value);
    }
    let proxy_env = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .into_iter()
    .filter_map(|name| {
        env_var(name)
            .filter(|v| !v.is_empty())
            .map(|v| (name.to_owned(), v))
    })
    .collect();
    let options = DiagnoseOptions {
        model: (!args.no_completion).then_some(args.model),
        api_key: env_var(&args.api_key_env),
        headers,
        step_timeout: args.step_timeout,
        call_timeout: args.timeout,
        proxy_env,
    };
    let found = diagnose::diagnose(&args.url, &options)
        .await
        .map_err(anyhow::Error::msg)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", diagnose::render(&found));
    }
    Ok(if found.verdict.phase == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_POOR)
    })
}

fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    use hourglass_toolkit::tune::{self, TuneOptions};
    if let Some(url) = &args.gateway {
        anyhow::bail!(
            "--gateway {url}: the gateway does not expose latency histograms yet (they arrive with the observability work); \
             run `hourglass probe URL --save results.json` and `hourglass tune --from results.json`"
        );
    }
    let scenario = args.scenario.as_deref().map(|s| match s {
        "realtime" => hourglass_config::Scenario::Realtime,
        "reasoning" => hourglass_config::Scenario::Reasoning,
        "image" => hourglass_config::Scenario::Image,
        _ => hourglass_config::Scenario::Content,
    });
    let options = TuneOptions {
        scenario,
        middlebox: args.middlebox,
        output_tokens: args.output_tokens,
    };
    let mut tunings = match &args.from {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read --from {}", path.display()))?;
            let report: hourglass_toolkit::probe::Report = serde_json::from_slice(&text)
                .with_context(|| {
                    format!(
                        "{} is not a `hourglass probe --save` results file",
                        path.display()
                    )
                })?;
            if report.version != hourglass_toolkit::probe::RESULTS_VERSION {
                anyhow::bail!(
                    "{}: results version {} is not {}; probe again with this hourglass",
                    path.display(),
                    report.version,
                    hourglass_toolkit::probe::RESULTS_VERSION
                );
            }
            tune::from_report(&report, &options)
        }
        None if args.models.is_empty() => anyhow::bail!(
            "give --from RESULTS (from `hourglass probe --save`) or at least one --model for the built-in priors"
        ),
        None => args
            .models
            .iter()
            .map(|m| tune::from_priors(m, &options))
            .collect(),
    };
    if args.from.is_some() && !args.models.is_empty() {
        tunings.retain(|t| args.models.contains(&t.model));
        if tunings.is_empty() {
            anyhow::bail!("none of the --model names is in the results");
        }
    }
    let out = match args.format.as_str() {
        "table" => tune::render_table(&tunings),
        "toml" => tune::render_toml(&tunings),
        "python" => tunings
            .iter()
            .map(tune::render_python)
            .collect::<Vec<_>>()
            .join("\n"),
        "node" => tunings
            .iter()
            .map(tune::render_node)
            .collect::<Vec<_>>()
            .join("\n"),
        "curl" => tunings
            .iter()
            .map(tune::render_curl)
            .collect::<Vec<_>>()
            .join("\n"),
        "json" => serde_json::to_string_pretty(&tunings)? + "\n",
        _ => {
            let mut all = tune::render_table(&tunings);
            all.push_str("== hourglass (TOML) ==\n");
            all.push_str(&tune::render_toml(&tunings));
            for t in &tunings {
                all.push_str("\n== OpenAI Python SDK ==\n");
                all.push_str(&tune::render_python(t));
                all.push_str("\n== OpenAI Node SDK ==\n");
                all.push_str(&tune::render_node(t));
                all.push_str("\n== curl ==\n");
                all.push_str(&tune::render_curl(t));
            }
            all
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
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
