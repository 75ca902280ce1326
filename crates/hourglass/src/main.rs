//! The `hourglass` command: parses the command line and hands each subcommand to the crate that
//! owns it. No logic of its own beyond printing what was started and mapping errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

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

mod allocator; // jemalloc, which returns a flood's memory
mod log_fields; // the text log's fields, without fmt where the default only copies
mod log_time; // the log's timestamps, the second formatted once a second
mod log_writer; // log lines written to stderr by a thread of their own
mod open_files; // the open-file limit, raised to the hard one for serve and sim
mod serve; // the gateway: configuration source, engine, reloads, graceful stop
mod sim; // the simulator
mod tools; // probe, diagnose, explain, tune

use serve::ServeArgs;
use sim::SimArgs;
use tools::{DiagnoseArgs, ExplainArgs, ProbeArgs, TuneArgs};

#[derive(Parser)]
#[command(
    name = "hourglass",
    version,
    about = "Make calls to AI model APIs survive timeouts: a gateway, a toolkit and a simulator",
    after_help = "Logs go to stderr; set HOURGLASS_LOG (e.g. `debug` or `hourglass_sim=debug`) for more.\n\
                  The tools (probe, diagnose, explain, tune) print only their report unless -v."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as JSON objects (one per line, for log shippers)
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log the engine's work (one line per call, health changes) from the tools too; `serve` and
    /// `sim` always do
    #[arg(short, long, global = true)]
    verbose: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A tool's output is its report: the engine's own lines only when asked for.
    let quiet = !cli.verbose && !matches!(cli.command, Command::Serve(_) | Command::Sim(_));
    // Held until the command ends: dropping it writes out the lines still queued.
    let log = init_logging(cli.log_format == "json", quiet);
    if matches!(cli.command, Command::Serve(_) | Command::Sim(_)) {
        allocator::return_memory_while_idle();
        open_files::raise();
    }
    let result = match cli.command {
        Command::Serve(args) => run(serve::serve(args)),
        Command::Config(ConfigArgs {
            command: ConfigCommand::Check { file },
        }) => config_check(&file),
        Command::Probe(args) => run(tools::probe(args)),
        Command::Diagnose(args) => run(tools::diagnose(args)),
        Command::Explain(args) => tools::explain(args),
        Command::Tune(args) => run(tools::tune(args)),
        Command::Sim(args) => run(sim::sim(args)),
    };
    // The log's last lines before anything printed after them.
    drop(log);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hourglass: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `HOURGLASS_LOG`'s levels, else info (warnings only when `quiet`), written
/// by a thread of its own (`log_writer`).
fn init_logging(json: bool, quiet: bool) -> log_writer::Guard {
    let level = if quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let chosen = std::env::var("HOURGLASS_LOG").ok().and_then(|text| {
        let filter = text.parse::<tracing_subscriber::filter::Targets>().ok()?;
        // `target[{field}]=level` decides by an event's fields, which `would_enable` (below)
        // does not look at: with such a directive, the call line is left to the filter.
        Some((filter, text.contains('[')))
    });
    let (filter, by_fields) = chosen.unwrap_or_else(|| {
        let default = tracing_subscriber::filter::Targets::new().with_default(level);
        (default, false)
    });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let call_lines_shown = !by_fields
        && filter.would_enable(hourglass_engine::CALL_LINE_TARGET, &tracing::Level::INFO);
    let registry = tracing_subscriber::registry().with(filter);
    let (writer, guard) = log_writer::spawn(std::io::stderr());
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_timer(log_time::SecondsCached)
                    .with_writer(writer),
            )
            .init();
    } else {
        // Colour only for a person at a terminal: a file or a pipe gets plain text.
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !colour && call_lines_shown {
            let direct = log_fields::CallLines::new(log_time::SecondsCached, writer.clone());
            // Installed once, here, before any call: a second install cannot happen.
            let _ =
                hourglass_engine::write_call_lines_with(Box::new(move |line| direct.write(line)));
        }
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(log_fields::PlainFields)
                    .event_format(log_fields::PlainLine::new(log_time::SecondsCached))
                    .with_ansi(colour)
                    .with_writer(writer),
            )
            .init();
    }
    guard
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
