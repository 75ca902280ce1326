//! The server: client connections accepted on the serving threads (`lanes`; past
//! `server.max_connections` refused at once, here), and a graceful shutdown that stops
//! accepting, gives in-flight calls `server.shutdown_grace` to finish, and then ends the rest
//! with a `gateway_shutdown` error rather than a bare close.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::lanes::Lanes;

/// Answers a connection past `server.max_connections` with a 503 at once and closes it: a flood
/// is refused fast and visibly (a metric, and a warning at most once a second), never queued.
pub(crate) fn refuse(mut stream: tokio::net::TcpStream, gateway: &Gateway, max: usize) {
    use hourglass_engine::{CallError, Endpoint, ErrorCode};
    use tokio::io::AsyncWriteExt;
    if gateway.metrics.connection_refused() {
        tracing::warn!(
            max,
            "refusing client connections past server.max_connections"
        );
    }
    let error = CallError::before_attempts(
        ErrorCode::TooManyConnections,
        http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the gateway holds {max} client connections already (server.max_connections); retry shortly"
        ),
    );
    let body = Endpoint::Other.protocol().error_body(&error);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         x-should-retry: false\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tokio::spawn(async move {
        let answer = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), answer).await;
    });
}

/// Serves `listener` until `shutdown` resolves, then lets in-flight calls finish within the
/// grace period. Connections are accepted and served on `server.threads` threads (`lanes`; by
/// default one per CPU the process may use), the first accepting for all.
/// Returns how many connections were still open when the grace period ended, or why the serving
/// threads could not start (the system refused a thread, a runtime, or a handle on the socket).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<usize> {
    let threads = gateway
        .settings()
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    // Out of this runtime's reactor: the first lane registers a handle on it with its own.
    let listener = listener.into_std()?;
    let lanes = Lanes::start(&gateway, threads, &listener).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot start {threads} serving threads: {error}"),
        )
    })?;
    shutdown.await;
    drop(listener);
    Ok(lanes.drain().await)
}
