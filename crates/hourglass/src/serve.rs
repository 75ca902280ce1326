//! `hourglass serve`: where the configuration comes from (a file, the environment, or the
//! embedded simulator), the refusal to serve a public address without client keys, the engine
//! and its health checks, reloads (SIGHUP, `POST /admin/reload`) and the graceful stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use hourglass_engine::error::FailureKind;
use hourglass_engine::{BoxFuture, BoxIo, Dial, DialFn, Engine};
use hourglass_gateway::Gateway;
use hourglass_jobs::Jobs;
use hourglass_sim::{Server, ServerConfig};

use crate::env_var;

#[derive(Args)]
#[command(
    after_help = "Without --config: an `openai` upstream from OPENAI_API_KEY / OPENAI_BASE_URL and an\n\
                        `anthropic` one from ANTHROPIC_API_KEY (docs/anthropic.md), or else the embedded simulator\n\
                        as upstream `sim`. See docs/config.md and examples/hourglass.toml."
)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen; default 127.0.0.1:8787)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the background jobs' store (overrides jobs.data_dir; default
    /// $XDG_DATA_HOME/hourglass, else ~/.local/share/hourglass)
    #[arg(long, value_name = "DIR", env = "HOURGLASS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Where the jobs' store lives when neither `--data-dir` nor `jobs.data_dir` says: the
/// platform's data directory (XDG), else the working directory's `hourglass-data`.
pub(crate) fn default_data_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty());
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty());
    match (xdg, home) {
        (Some(xdg), _) => PathBuf::from(xdg).join("hourglass"),
        (None, Some(home)) => PathBuf::from(home).join(".local/share/hourglass"),
        (None, None) => PathBuf::from("hourglass-data"),
    }
}

/// This instance's name: `cluster.instance`, else the host's (a pod's name under Kubernetes).
fn instance_name(cluster: &hourglass_config::ClusterSettings) -> String {
    if let Some(name) = &cluster.instance {
        return name.clone();
    }
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "hourglass".to_owned())
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut dials: HashMap<String, Arc<dyn Dial>> = HashMap::new();
    let (mut config, note) = match &args.config {
        Some(path) => (hourglass_config::Config::load(path, &env_var)?, None),
        None => match hourglass_config::Config::from_env(&env_var)? {
            Some(config) => {
                let names: Vec<String> = config
                    .upstreams
                    .iter()
                    .map(|u| format!("`{}`", u.name))
                    .collect();
                let note = format!(
                    "no --config: {} from {}",
                    names.join(" and "),
                    config.origin
                );
                (config, Some(note))
            }
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
                        "no --config and no OPENAI_API_KEY / OPENAI_BASE_URL / ANTHROPIC_API_KEY: serving the embedded simulator as upstream `sim` (docs/sim.md); x-sim-fault headers reach it"
                            .to_owned(),
                    ),
                )
            }
        },
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.jobs.data_dir = Some(dir.clone());
    }
    let listen = config.server.listen;
    let open_files = crate::open_files::limit();
    if let Some(shortfall) = crate::open_files::shortfall(open_files, config.server.max_connections)
    {
        tracing::warn!("open files: {shortfall}");
    }
    let jobs_settings = config.jobs.clone();
    let cluster = config.cluster.clone();
    refuse_open_public_address(&config).map_err(anyhow::Error::msg)?;
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.name, u.base_url))
        .collect();
    let engine = Engine::new(config, dials).map_err(anyhow::Error::msg)?;
    // Health checks and the idle-pool sweep run for as long as the engine does.
    let _background = engine.spawn_background();
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
    let mut gateway = Gateway::new(engine);
    if jobs_settings.enabled {
        let clock = hourglass_jobs::ids::wall_clock();
        let jobs = match &cluster.postgres_url {
            Some(url) => {
                let url = url.expose().to_owned();
                let instance = instance_name(&cluster);
                let (pool, lease) = (cluster.postgres_pool, cluster.job_lease);
                let described = format!("PostgreSQL (instance {instance})");
                let open: hourglass_jobs::Opener = Arc::new(move || {
                    let (url, instance) = (url.clone(), instance.clone());
                    Box::pin(async move {
                        let store =
                            hourglass_jobs::store::Postgres::connect(&url, pool, &instance, lease)
                                .await?;
                        Ok(Arc::new(store) as Arc<dyn hourglass_jobs::store::Store>)
                    })
                });
                Jobs::remote(
                    jobs_settings,
                    described,
                    open,
                    gateway.engine_source(),
                    clock,
                )
            }
            None => Jobs::new(
                jobs_settings,
                default_data_dir(),
                gateway.engine_source(),
                clock,
            ),
        };
        match jobs.start().await {
            Ok(()) => say!(
                "hourglass serve: background jobs are kept in {}",
                jobs.stats().store
            ),
            // Synchronous calls do not need the store: serve them, and say why jobs cannot run.
            // A shared store is tried again at each submission and by `/health/ready`.
            Err(error) => tracing::error!("background jobs are unavailable: {}", error.message),
        }
        gateway = gateway.with_jobs(jobs);
    }
    if let Some(url) = &cluster.redis_url {
        let link = hourglass_cluster::link::Link::open(url.expose()).map_err(anyhow::Error::msg)?;
        say!(
            "hourglass serve: sharing cool-downs and client limits through Redis at {}",
            link.describe()
        );
        gateway = gateway.with_redis(Arc::new(link), &instance_name(&cluster));
    }
    if let Some(path) = args.config.clone() {
        // SIGHUP or POST /admin/reload read the file again; a bad file leaves the old engine.
        // `--listen` still wins over the file's address.
        let listen_flag = args.listen;
        let data_dir_flag = args.data_dir.clone();
        gateway = gateway.with_reloader(Box::new(move |current: &Engine| {
            let mut config =
                hourglass_config::Config::load(&path, &env_var).map_err(|e| e.to_string())?;
            if let Some(listen) = listen_flag {
                config.server.listen = listen;
            }
            if let Some(dir) = &data_dir_flag {
                config.jobs.data_dir = Some(dir.clone());
            }
            // The address does not move until a restart: judge the keys against the one in use
            // (not the last reload's, which may have asked for another in vain).
            let mut serving = config.clone();
            serving.server.listen = listen;
            refuse_open_public_address(&serving)?;
            let engine = current.reload(config, HashMap::new())?;
            let _background = engine.spawn_background();
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
                    Ok(reloaded) => {
                        say!(
                            "hourglass serve: reloaded the configuration; models: {}",
                            reloaded.models.join(", ")
                        );
                        for setting in reloaded.not_applied {
                            tracing::warn!("not applied by the reload: {setting}");
                        }
                    }
                    Err(error) => tracing::error!(
                        "the configuration was not reloaded (the old one keeps serving): {error}"
                    ),
                }
            }
        });
    }
    let open = hourglass_gateway::serve(listener, gateway, shutdown_signal()).await?;
    if open > 0 {
        say!(
            "hourglass serve: stopped; {open} connections were still open after server.shutdown_grace"
        );
    } else {
        say!("hourglass serve: stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a configuration that would serve a non-loopback address without client keys (unless
/// `server.allow_unauthenticated` says so on purpose): at start, and on every reload.
fn refuse_open_public_address(config: &hourglass_config::Config) -> Result<(), String> {
    let server = &config.server;
    if server.listen.ip().is_loopback()
        || !server.client_keys.is_empty()
        || server.allow_unauthenticated
    {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {} without client keys: anyone who can reach it could spend the upstreams' keys. \
         Set server.client_keys_env, listen on 127.0.0.1, or set server.allow_unauthenticated = true to serve open on purpose",
        server.listen
    ))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_client_keys_or_an_explicit_opt_out() {
        let mut config = hourglass_config::Config::single_upstream("sim", "http://127.0.0.1:9/v1");
        assert!(refuse_open_public_address(&config).is_ok(), "loopback");
        config.server.listen = "0.0.0.0:8787".parse().unwrap();
        let refused = refuse_open_public_address(&config).unwrap_err();
        assert!(refused.contains("without client keys"), "{refused}");
        config.server.allow_unauthenticated = true;
        assert!(refuse_open_public_address(&config).is_ok(), "on purpose");
    }
}
