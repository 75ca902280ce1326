//! The toolkit's commands as the command line sees them: their arguments, reading inputs
//! (stdin, files, the environment), printing, and exit statuses. What they compute lives in
//! `hourglass_toolkit`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::{EXIT_POOR, env_var};

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 when every verdict is good or excellent, 3 when one is poor, 1 on errors.\n\
                  Metric definitions and thresholds: docs/toolkit.md. Results saved with --save feed `hourglass tune --from`."
)]
pub struct ProbeArgs {
    /// Base URL of an OpenAI-compatible API (https://api.openai.com/v1) or of Anthropic's
    /// (https://api.anthropic.com/v1)
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    url: Option<String>,
    /// Probe every upstream of this configuration file instead, with its timeouts and keys
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Model to call (repeat for several); default: the models the configuration routes to each
    /// upstream, or for a URL gpt-4o-mini (claude-haiku-4-5 for Anthropic's API)
    #[arg(long = "model", short = 'm', value_name = "M")]
    models: Vec<String>,
    /// The API to call: OpenAI's chat completions or Anthropic's Messages (default: what the
    /// upstream speaks; for a URL, anthropic on anthropic.com, else openai)
    #[arg(long, value_name = "API", value_parser = ["openai", "anthropic"])]
    api: Option<String>,
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
    /// Environment variable holding the API key for a URL (a bearer token; `x-api-key` for
    /// Anthropic's API) [default: OPENAI_API_KEY, or ANTHROPIC_API_KEY for Anthropic's API]
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
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
pub struct DiagnoseArgs {
    /// Base URL of the API, e.g. https://api.openai.com/v1 or https://api.anthropic.com/v1
    url: String,
    /// Model of the tiny streamed completion that measures first token and gaps [default:
    /// gpt-4o-mini, or claude-haiku-4-5 for Anthropic's API]
    #[arg(long, short = 'm', value_name = "M")]
    model: Option<String>,
    /// The API of the completion: OpenAI's chat completions or Anthropic's Messages (default:
    /// anthropic on anthropic.com, else openai)
    #[arg(long, value_name = "API", value_parser = ["openai", "anthropic"])]
    api: Option<String>,
    /// Stop after TLS: no completion (for endpoints that are not an AI API)
    #[arg(long)]
    no_completion: bool,
    /// Extra request header of the completion, `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Environment variable holding the API key (a bearer token; `x-api-key` for Anthropic's
    /// API) [default: OPENAI_API_KEY, or ANTHROPIC_API_KEY for Anthropic's API]
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
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
pub struct TuneArgs {
    /// Results saved by `hourglass probe --save FILE`
    #[arg(long, value_name = "FILE", conflicts_with = "gateway")]
    from: Option<PathBuf>,
    /// A running gateway (its base URL, e.g. http://127.0.0.1:8787): tune from its /metrics
    /// histograms and /status windows, what production traffic measured
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// Environment variable holding the gateway's admin key (sent as a bearer token)
    #[arg(
        long,
        value_name = "VAR",
        default_value = "HOURGLASS_ADMIN_KEY",
        requires = "gateway"
    )]
    admin_key_env: String,
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
pub struct ExplainArgs {
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

/// The API asked for with `--api`, or the one `url` speaks by default.
fn api_for(asked: Option<&str>, url: &str) -> hourglass_config::WireFormat {
    asked
        .and_then(hourglass_config::WireFormat::from_name)
        .unwrap_or_else(|| hourglass_toolkit::probe::api_of_url(url))
}

/// The environment variable of the API key and the model a URL is called with by default.
fn defaults_for(api: hourglass_config::WireFormat) -> (&'static str, &'static str) {
    match api {
        hourglass_config::WireFormat::Anthropic => ("ANTHROPIC_API_KEY", "claude-haiku-4-5"),
        hourglass_config::WireFormat::OpenAi => ("OPENAI_API_KEY", "gpt-4o-mini"),
    }
}

pub fn parse_elapsed(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration of zero seconds or more"));
    }
    hourglass_config::duration::parse(text)
}

pub async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
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
        api: args
            .api
            .as_deref()
            .and_then(hourglass_config::WireFormat::from_name),
    };
    let targets = match (&args.config, &args.url) {
        (Some(path), _) => {
            let config = hourglass_config::Config::load(path, &env_var)?;
            probe::targets_for_config(&config, &args.models, &options, HashMap::new())
                .map_err(anyhow::Error::msg)?
        }
        (None, Some(url)) => {
            let (key_env, model) = defaults_for(api_for(args.api.as_deref(), url));
            let models = if args.models.is_empty() {
                vec![model.to_owned()]
            } else {
                args.models.clone()
            };
            let key = env_var(args.api_key_env.as_deref().unwrap_or(key_env));
            probe::targets_for_url(url, key, &models, &options, None)
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

pub async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
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
    let api = api_for(args.api.as_deref(), &args.url);
    let (key_env, model) = defaults_for(api);
    let options = DiagnoseOptions {
        model: (!args.no_completion).then(|| args.model.unwrap_or_else(|| model.to_owned())),
        api_key: env_var(args.api_key_env.as_deref().unwrap_or(key_env)),
        api: Some(api),
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
    Ok(
        if found.verdict.phase == hourglass_toolkit::diagnose::Step::Ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_POOR)
        },
    )
}

pub async fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    use hourglass_toolkit::tune::{self, TuneOptions};
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
    let mut tunings = match (&args.from, &args.gateway) {
        (_, Some(url)) => {
            let key = crate::env_var(&args.admin_key_env).filter(|k| !k.is_empty());
            let snapshot = hourglass_toolkit::gateway::snapshot(
                url,
                key.as_deref(),
                std::time::Duration::from_secs(30),
            )
            .await
            .map_err(|e| anyhow::anyhow!("--gateway: {e}"))?;
            tune::from_gateway(
                &snapshot.metrics,
                &snapshot.status,
                url.trim_end_matches('/'),
                &args.models,
                &options,
            )
            .map_err(|e| anyhow::anyhow!("--gateway: {e}"))?
        }
        (Some(path), None) => {
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
        (None, None) if args.models.is_empty() => anyhow::bail!(
            "give --from RESULTS (from `hourglass probe --save`), --gateway URL (a running gateway), or at least one --model for the built-in priors"
        ),
        (None, None) => args
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

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
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
