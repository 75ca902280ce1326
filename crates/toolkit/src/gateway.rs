//! Reading a running hourglass gateway over HTTP: `GET /metrics` and `GET /status`, with its
//! admin key when it has one, for `tune --gateway`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The most a document may weigh.
const MAX_BODY: usize = 64 << 20;

/// What a gateway says about itself.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `/metrics`, Prometheus text.
    pub metrics: String,
    /// `/status`, JSON.
    pub status: serde_json::Value,
}

/// Reads `/metrics` and `/status` of the gateway at `base` (`http://host:port`, a path prefix
/// allowed), sending `admin_key` as a bearer token; every failure says what to do.
pub async fn snapshot(
    base: &str,
    admin_key: Option<&str>,
    limit: Duration,
) -> Result<Snapshot, String> {
    let metrics = get(base, "/metrics", admin_key, limit).await?;
    let status_text = get(base, "/status", admin_key, limit).await?;
    let status = serde_json::from_str(&status_text)
        .map_err(|e| format!("{base}/status is not JSON ({e}): is this an hourglass gateway?"))?;
    Ok(Snapshot { metrics, status })
}

/// `GET base + path`, the body as text.
pub async fn get(
    base: &str,
    path: &str,
    admin_key: Option<&str>,
    limit: Duration,
) -> Result<String, String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let (uri, tls, host, port) = crate::diagnose::split_url(&url)?;
    let fetch = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut request = http::Request::get(uri.path_and_query().map_or(path, |p| p.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or("", |a| a.as_str()),
            )
            .header(http::header::USER_AGENT, "hourglass-tune");
        if let Some(key) = admin_key {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = if tls {
            let stream = tls_connect(tcp, &host).await?;
            send(TokioIo::new(stream), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{url}: the body did not arrive whole: {e}"))?
            .to_bytes();
        match status.as_u16() {
            200 => String::from_utf8(body.to_vec()).map_err(|_| format!("{url} is not text")),
            401 | 403 => Err(format!(
                "{url} answered {status}: the gateway has an admin key; put it in the environment variable --admin-key-env names (HOURGLASS_ADMIN_KEY by default)"
            )),
            404 => Err(format!(
                "{url} answered 404: is this an hourglass gateway (its base URL, without /v1)?"
            )),
            _ => Err(format!("{url} answered {status}")),
        }
    };
    tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| format!("{url} did not answer within {limit:?}"))?
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host} failed: {e}"))
}
