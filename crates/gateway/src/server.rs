//! The accept loop: HTTP/1.1 connections with a header-read timeout (past
//! `server.max_connections` refused at once), each request handed to the routes, and a graceful
//! shutdown that stops accepting, gives in-flight calls `server.shutdown_grace` to finish, and
//! then ends the rest with a `gateway_shutdown` error rather than a bare close.

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::wakes::SelfWakesInPlace;

/// A client connection counted open until it ends.
struct OpenConnection(Arc<Gateway>);

impl OpenConnection {
    /// Counts a new connection in, unless `max` are open already.
    fn admit(gateway: &Arc<Gateway>, max: usize) -> Option<OpenConnection> {
        gateway
            .metrics
            .connection_opened(max)
            .then(|| OpenConnection(gateway.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// Answers a connection past `server.max_connections` with a 503 at once and closes it: a flood
/// is refused fast and visibly (a metric, and a warning at most once a second), never queued.
fn refuse(mut stream: tokio::net::TcpStream, gateway: &Gateway, max: usize) {
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
                    // Each connection takes the settings in effect when it arrives.
                    let settings = gateway.settings();
                    let Some(open) = OpenConnection::admit(&gateway, settings.max_connections) else {
                        refuse(stream, &gateway, settings.max_connections);
                        continue;
                    };
                    let gateway_for_conn = gateway.clone();
                    // Boxed: hyper keeps room for one in-flight request's future for as long as
                    // the connection lives; a box makes that room a pointer, so a streamed answer
                    // does not hold the finished handler's ~9 KB (docs/benchmarks.md).
                    let service = service_fn(move |request| {
                        Box::pin(crate::routes::handle(gateway_for_conn.clone(), request))
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(settings.header_read_timeout)
                        .max_buf_size(settings.max_header_bytes)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = SelfWakesInPlace::new(graceful.watch(connection));
                    tokio::spawn(async move {
                        let _ = connection.await;
                        drop(open);
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
    let draining = graceful.shutdown();
    tokio::pin!(draining);
    let grace = gateway.settings().shutdown_grace;
    if tokio::time::timeout(grace, &mut draining).await.is_ok() {
        return 0;
    }
    // The grace period ran out: every call and stream still running ends with a
    // `gateway_shutdown` error in its protocol's shape, given a moment to be written.
    gateway.stopping.now();
    let _ = tokio::time::timeout(FAREWELL, &mut draining).await;
    open
}

/// How long calls and streams still running at the end of the grace period get to write their
/// `gateway_shutdown` error.
const FAREWELL: std::time::Duration = std::time::Duration::from_millis(500);
