//! The gateway's state: the engine new calls go through and the configuration it runs — the
//! server settings included — swapped whole on reload (with the engine's learned state carried
//! over), and the metrics every engine reports into.

use std::ops::Deref;
use std::sync::Arc;

use hourglass_config::ServerSettings;
use hourglass_engine::Engine;
use hourglass_observe::Metrics;

/// Builds the engine that follows the current one (passed in, so its state can be carried over)
/// from the configuration source again; an error says what is wrong.
pub type Reloader = Box<dyn Fn(&Engine) -> Result<Arc<Engine>, String> + Send + Sync>;

/// The gateway: its engine (swapped whole on reload) and metrics.
pub struct Gateway {
    engine: std::sync::RwLock<Arc<Engine>>,
    /// The metrics `GET /metrics` exposes (the engines' observer).
    pub metrics: Arc<Metrics>,
    reloader: Option<Reloader>,
    /// Told when the shutdown grace period has run out.
    pub(crate) stopping: crate::stopping::Stopping,
}

/// The server settings in effect: the `[server]` table of the configuration the current engine
/// runs (keys, limits and timeouts reload with it; the listen address needs a restart).
pub struct Settings(Arc<Engine>);

impl Deref for Settings {
    type Target = ServerSettings;

    fn deref(&self) -> &ServerSettings {
        &self.0.config().server
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
        Gateway {
            engine: std::sync::RwLock::new(engine),
            metrics,
            reloader: None,
            stopping: crate::stopping::Stopping::default(),
        }
    }

    /// The same gateway, able to reload its configuration with `reloader`.
    pub fn with_reloader(mut self, reloader: Reloader) -> Gateway {
        self.reloader = Some(reloader);
        self
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
    /// error the current engine keeps serving. A new listen address is reported as not applied.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let reloader = self
            .reloader
            .as_ref()
            .ok_or("this gateway has no configuration file to reload")?;
        let current = self.engine();
        let engine = reloader(&current)?;
        let _ = engine.set_observer(self.metrics.clone());
        let models = engine
            .config()
            .models
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let (was, now) = (
            current.config().server.listen,
            engine.config().server.listen,
        );
        let not_applied = if was == now {
            Vec::new()
        } else {
            vec![format!(
                "server.listen = {now} needs a restart; the gateway still listens on {was}"
            )]
        };
        *self
            .engine
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = engine;
        tracing::info!(?models, ?not_applied, "configuration reloaded");
        Ok(Reloaded {
            models,
            not_applied,
        })
    }
}
