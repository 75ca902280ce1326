//! The gateway's state: the engine new calls go through and the configuration it runs — the
//! server settings included — swapped whole on reload (with the engine's learned state carried
//! over), the metrics every engine reports into, and the background jobs service.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hourglass_config::ServerSettings;
use hourglass_engine::Engine;
use hourglass_jobs::{EngineSource, Jobs};
use hourglass_observe::Metrics;

/// Builds the engine that follows the current one (passed in, so its state can be carried over)
/// from the configuration source again; an error says what is wrong.
pub type Reloader = Box<dyn Fn(&Engine) -> Result<Arc<Engine>, String> + Send + Sync>;

/// The gateway: its engine (swapped whole on reload) and metrics.
pub struct Gateway {
    engine: Arc<std::sync::RwLock<Arc<Engine>>>,
    /// How many times a reload swapped the engine: a connection keeps the engine its last
    /// request read until this moves on (see [`Connected`]).
    generation: AtomicU64,
    /// The metrics `GET /metrics` exposes (the engines' observer).
    pub metrics: Arc<Metrics>,
    /// Background calls, when the gateway takes them.
    pub jobs: Option<Arc<Jobs>>,
    reloader: Option<Reloader>,
    /// Told when the shutdown grace period has run out.
    pub(crate) stopping: crate::stopping::Stopping,
    /// Client limits' counters: in this process, or shared through Redis.
    pub limits: Arc<hourglass_cluster::limits::Limits>,
    /// What it shares with other replicas through Redis, when configured.
    pub cluster: Option<Cluster>,
    /// When it was made: a replica waits `cluster.wait_for_stores` from then for its stores
    /// before it is ready without them.
    pub(crate) started: tokio::time::Instant,
    /// The runtime it was made on: a reloaded engine's background tasks (health checks, pool
    /// sweeps) start there, not on the serving thread that took `POST /admin/reload`.
    home: Option<tokio::runtime::Handle>,
    /// The settings only a restart applies, as the gateway started with them.
    restart_only: RestartOnly,
}

/// The settings only a restart applies, as the gateway started with them: a reload is told
/// which it did not apply against these, not against the last reload's file (which may have
/// asked for a change that was not applied either).
struct RestartOnly {
    listen: std::net::SocketAddr,
    threads: Option<usize>,
    jobs: hourglass_config::JobsSettings,
    cluster: hourglass_config::ClusterSettings,
}

/// What a gateway shares with other replicas through Redis.
pub struct Cluster {
    /// The link to Redis.
    pub link: Arc<hourglass_cluster::link::Link>,
    /// Cool-downs published and heard.
    pub cooldowns: hourglass_cluster::cooldowns::Cooldowns,
    /// This instance's name.
    pub instance: String,
}

/// The server settings in effect: the `[server]` table of the configuration the current engine
/// runs (keys, limits and timeouts reload with it; the listen address and `threads` need a
/// restart).
pub struct Settings(Arc<Engine>);

impl Settings {
    /// The engine these settings are of: the one a call that read them goes through.
    pub fn into_engine(self) -> Arc<Engine> {
        self.0
    }
}

impl Deref for Settings {
    type Target = ServerSettings;

    fn deref(&self) -> &ServerSettings {
        &self.0.config().server
    }
}

/// The engine a call goes through, as the connection it came on holds it: see [`Connected`].
pub(crate) type HeldEngine = Arc<Arc<Engine>>;

/// The gateway as one client connection's requests reach it. Each request clones this, a count
/// only that connection's thread writes, rather than the gateway and its engine, whose counts
/// (and the engine's lock) every serving thread wrote on every request: their cache lines moved
/// between the cores call after call. It keeps the engine its last request read, and reads it
/// again once a reload has swapped it: a call still runs on the engine in effect when it
/// arrived, and keeps it to its end.
pub(crate) struct Connected {
    /// The gateway.
    pub(crate) gateway: Arc<Gateway>,
    /// The engine read last, with the gateway's generation it was read at.
    engine: Mutex<(u64, HeldEngine)>,
}

impl Connected {
    /// `gateway` for a connection that has just arrived.
    pub(crate) fn new(gateway: Arc<Gateway>) -> Connected {
        let generation = gateway.generation.load(Ordering::Acquire);
        let engine = Arc::new(gateway.engine());
        Connected {
            gateway,
            engine: Mutex::new((generation, engine)),
        }
    }

    /// The engine new calls go through (the one the last request read, unless a reload has
    /// swapped it since).
    pub(crate) fn engine(&self) -> HeldEngine {
        let generation = self.gateway.generation.load(Ordering::Acquire);
        let mut held = (self.engine.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.0 != generation {
            *held = (generation, Arc::new(self.gateway.engine()));
        }
        held.1.clone()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// The models now configured.
    pub models: Vec<String>,
    /// Settings that changed in the file but need a restart, each with why.
    pub not_applied: Vec<String>,
}

impl Gateway {
    /// A gateway in front of `engine`, observing its calls into fresh metrics; its server
    /// settings are `engine`'s configuration's.
    pub fn new(engine: Arc<Engine>) -> Gateway {
        let metrics = Arc::new(Metrics::with_models(
            engine.config().models.iter().map(|m| m.name.as_str()),
        ));
        // An engine observed already (shared by two gateways) keeps its first observer.
        let _ = engine.set_observer(metrics.clone());
        let config = engine.config();
        let restart_only = RestartOnly {
            listen: config.server.listen,
            threads: config.server.threads,
            jobs: config.jobs.clone(),
            cluster: config.cluster.clone(),
        };
        Gateway {
            restart_only,
            engine: Arc::new(std::sync::RwLock::new(engine)),
            generation: AtomicU64::new(0),
            metrics,
            jobs: None,
            reloader: None,
            stopping: crate::stopping::Stopping::default(),
            started: tokio::time::Instant::now(),
            limits: Arc::new(hourglass_cluster::limits::Limits::local(
                hourglass_cluster::limits::wall_clock(),
            )),
            cluster: None,
            home: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The same gateway, sharing cool-downs and client limits with other replicas through
    /// `link` as `instance`: cool-downs its engines learn are published, others' applied.
    pub fn with_redis(
        mut self,
        link: Arc<hourglass_cluster::link::Link>,
        instance: &str,
    ) -> Gateway {
        let holder = hourglass_cluster::holder(instance);
        let cooldowns = hourglass_cluster::cooldowns::Cooldowns::start(
            link.clone(),
            holder.clone(),
            self.engine_source(),
        );
        self.engine().health().set_cooldown_sink(cooldowns.sink());
        self.limits = Arc::new(hourglass_cluster::limits::Limits::shared(
            hourglass_cluster::limits::wall_clock(),
            link.clone(),
            holder,
        ));
        self.cluster = Some(Cluster {
            link,
            cooldowns,
            instance: instance.to_owned(),
        });
        self
    }

    /// Whether an orchestrator may send it traffic (`/health/ready`): its stores — the job
    /// store, Redis — have answered once, or it waited `cluster.wait_for_stores` for them and
    /// runs without (synchronous calls need neither; a store that goes away later does not make
    /// it unready: jobs answer 503 and cool-downs and limits are this replica's own meanwhile);
    /// with the reason.
    pub fn readiness(&self) -> (bool, &'static str) {
        let waited = self.started.elapsed() >= self.engine().config().cluster.wait_for_stores;
        let redis = self
            .cluster
            .as_ref()
            .map(|c| (c.link.answered_once(), c.link.is_up()));
        if let Some((false, _)) = redis {
            return if waited {
                (
                    true,
                    "ready without Redis (cool-downs and client limits are this replica's own until it answers)",
                )
            } else {
                (false, "waiting for Redis (cluster.wait_for_stores)")
            };
        }
        let Some(jobs) = &self.jobs else {
            return (true, "ready");
        };
        match (jobs.opened(), jobs.reachable()) {
            (true, true) if redis.is_none_or(|(_, up)| up) => (true, "ready"),
            (true, true) => (
                true,
                "ready; Redis does not answer (cool-downs and client limits are this replica's own until it does)",
            ),
            (true, false) => (
                true,
                "ready; its job store does not answer (background jobs answer 503 until it does)",
            ),
            (false, _) if waited => (
                true,
                "ready without its job store (background jobs answer 503 until it answers)",
            ),
            (false, _) => (false, "waiting for its job store (cluster.wait_for_stores)"),
        }
    }

    /// The same gateway, able to reload its configuration with `reloader`.
    pub fn with_reloader(mut self, reloader: Reloader) -> Gateway {
        self.reloader = Some(reloader);
        self
    }

    /// The same gateway, taking background calls with `jobs` (made with
    /// [`Gateway::engine_source`], so jobs run on the engine new calls go through).
    pub fn with_jobs(mut self, jobs: Jobs) -> Gateway {
        self.jobs = Some(Arc::new(jobs));
        self
    }

    /// The engine a job starts on: the current one, read when the job starts.
    pub fn engine_source(&self) -> EngineSource {
        let engine = self.engine.clone();
        Arc::new(move || {
            engine
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    /// The engine new calls go through. A call keeps the engine it started with, so a reload
    /// never changes the policy of a call in flight.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The server settings in effect now.
    pub fn settings(&self) -> Settings {
        Settings(self.engine())
    }

    /// Builds an engine from the configuration source again and, if it is valid, sends new calls
    /// to it (health and the retry budget carry over, see [`Engine::reload`]) and applies its
    /// `[server]` settings — keys, limits, timeouts — to new requests and connections; on an
    /// error the current engine keeps serving. A new listen address or thread count is reported
    /// as not applied.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let reloader = self
            .reloader
            .as_ref()
            .ok_or("this gateway has no configuration file to reload")?;
        let current = self.engine();
        let _home = self.home.as_ref().map(tokio::runtime::Handle::enter);
        let engine = reloader(&current)?;
        let _ = engine.set_observer(self.metrics.clone());
        let models = engine
            .config()
            .models
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let running = &self.restart_only;
        let (was, now) = (running.listen, engine.config().server.listen);
        let mut not_applied = Vec::new();
        if was != now {
            not_applied.push(format!(
                "server.listen = {now} needs a restart; the gateway still listens on {was}"
            ));
        }
        let (was, now) = (running.threads, engine.config().server.threads);
        if was != now {
            let count = |threads: Option<usize>| {
                threads.map_or("one per CPU".to_owned(), |n| n.to_string())
            };
            not_applied.push(format!(
                "server.threads changed from {} to {}: that needs a restart; the serving threads stay",
                count(was),
                count(now)
            ));
        }
        if running.cluster != engine.config().cluster {
            not_applied.push(
                "[cluster] changed: the shared job store, the instance's name and its leases need a restart; the running ones stay".to_owned(),
            );
        }
        if running.jobs != engine.config().jobs {
            not_applied.push(
                "[jobs] changed: the job store, its limits and webhooks need a restart; the running ones stay".to_owned(),
            );
        }
        {
            let mut current =
                (self.engine.write()).unwrap_or_else(std::sync::PoisonError::into_inner);
            *current = engine;
            // Under the lock: a connection that reads the new generation finds the new engine.
            self.generation.fetch_add(1, Ordering::Release);
        }
        tracing::info!(?models, ?not_applied, "configuration reloaded");
        Ok(Reloaded {
            models,
            not_applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[tokio::test]
    async fn a_connection_keeps_the_engine_its_last_request_read_until_a_reload() {
        let engine = |url: &str| {
            let config = hourglass_config::Config::single_upstream("local", url);
            Engine::new(config, HashMap::new()).unwrap()
        };
        let gateway = Gateway::new(engine("http://127.0.0.1:9/v1"))
            .with_reloader(Box::new(move |_| Ok(engine("http://127.0.0.1:10/v1"))));
        let gateway = Arc::new(gateway);
        let connected = Connected::new(gateway.clone());
        let first = connected.engine();
        assert!(Arc::ptr_eq(&first, &connected.engine()), "read once, kept");
        assert!(Arc::ptr_eq(&*first, &gateway.engine()));

        gateway.reload().unwrap();
        let next = connected.engine();
        assert!(
            Arc::ptr_eq(&*next, &gateway.engine()),
            "the next request on the connection goes through the reloaded engine"
        );
        assert!(!Arc::ptr_eq(&*next, &*first));
        let url = |e: &Engine| e.config().upstreams[0].base_url.to_string();
        assert_eq!(
            url(&first),
            "http://127.0.0.1:9/v1",
            "a call in flight keeps its own"
        );
        assert_eq!(url(&next), "http://127.0.0.1:10/v1");
    }
}
