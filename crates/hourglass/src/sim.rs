//! `hourglass sim`: one simulated upstream, or a scenario of several, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hourglass_sim::{Scenario, Server, ServerConfig, scenario::UpstreamSpec};

use crate::serve::shutdown_signal;

#[derive(Args)]
#[command(
    after_help = "Faults per request: send header `x-sim-fault`, e.g. `stall;after_chunks=3;for=30s`.\n\
                        See docs/sim.md for every fault kind, the scenario file and the built-in models."
)]
pub(crate) struct SimArgs {
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

pub(crate) async fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
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
