//! The accept loop: HTTP/1.1 connections with a header-read timeout, and a graceful shutdown that
//! stops accepting and gives in-flight calls `server.shutdown_grace` to finish.

use std::future::Future;
use std::sync::Arc;

use hourglass_config::ServerSettings;
use hourglass_engine::Engine;
use hourglass_observe::Metrics;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Builds a new engine from the configuration source (for reloads); an error says what is wrong.
pub type Reloader = Box<dyn Fn() -> Result<Arc<Engine>, String> + Send + Sync>;

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
    /// to it; on an error the current engine keeps serving. Returns the models now configured.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let reloader = self
            .reloader
            .as_ref()
            .ok_or("this gateway has no configuration file to reload")?;
        let engine = reloader()?;
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

/// Serves `listener` until `shutdown` resolves, then lets in-flight calls finish within the
/// grace period. Returns how many connections were still open when the grace period ended.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let gateway_for_conn = gateway.clone();
                    let service = service_fn(move |request| crate::routes::handle(gateway_for_conn.clone(), request));
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(gateway.settings.header_read_timeout)
                        .max_buf_size(gateway.settings.max_header_bytes)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    match tokio::time::timeout(gateway.settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}
