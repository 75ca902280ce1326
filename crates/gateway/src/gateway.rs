//! The gateway's state: the engine new calls go through (swapped whole on reload, with its
//! learned state carried over), the server settings and the metrics every engine reports into.

use std::sync::Arc;

use hourglass_config::ServerSettings;
use hourglass_engine::Engine;
use hourglass_observe::Metrics;

/// Builds the engine that follows the current one (passed in, so its state can be carried over)
/// from the configuration source again; an error says what is wrong.
pub type Reloader = Box<dyn Fn(&Engine) -> Result<Arc<Engine>, String> + Send + Sync>;

/// The gateway: its engine (swapped whole on reload), server settings and metrics.
pub struct Gateway {
    engine: std::sync::RwLock<Arc<Engine>>,
    /// Limits of the HTTP server (not reloaded: a new address or limit needs a restart).
    pub settings: ServerSettings,
    /// The metrics `GET /metrics` exposes (the engines' observer).
    pub metrics: Arc<Metrics>,
    reloader: Option<Reloader>,
}

impl Gateway {
    /// A gateway in front of `engine`, observing its calls into fresh metrics.
    pub fn new(engine: Arc<Engine>, settings: ServerSettings) -> Gateway {
        let metrics = Arc::new(Metrics::with_models(
            engine.config().models.iter().map(|m| m.name.as_str()),
        ));
        // An engine observed already (shared by two gateways) keeps its first observer.
        let _ = engine.set_observer(metrics.clone());
        Gateway {
            engine: std::sync::RwLock::new(engine),
            settings,
            metrics,
            reloader: None,
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

    /// Builds an engine from the configuration source again and, if it is valid, sends new calls
    /// to it (health and the retry budget carry over, see [`Engine::reload`]); on an error the
    /// current engine keeps serving. Returns the models now configured.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let reloader = self
            .reloader
            .as_ref()
            .ok_or("this gateway has no configuration file to reload")?;
        let engine = reloader(&self.engine())?;
        let _ = engine.set_observer(self.metrics.clone());
        let models = engine
            .config()
            .models
            .iter()
            .map(|m| m.name.clone())
            .collect();
        *self
            .engine
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = engine;
        tracing::info!(?models, "configuration reloaded");
        Ok(models)
    }
}
