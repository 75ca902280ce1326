//! The accept loop: HTTP/1.1 connections with a header-read timeout, each request handed to the
//! routes, and a graceful shutdown that stops accepting and gives in-flight calls
//! `server.shutdown_grace` to finish.

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::gateway::Gateway;

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
                    let gateway_for_conn = gateway.clone();
                    let service = service_fn(move |request| crate::routes::handle(gateway_for_conn.clone(), request));
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(settings.header_read_timeout)
                        .max_buf_size(settings.max_header_bytes)
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
    match tokio::time::timeout(gateway.settings().shutdown_grace, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}
