//! Opening connections to an upstream: DNS, TCP and TLS for real networks, or any transport a
//! caller supplies (the in-memory simulator in tests and in zero-configuration mode). Errors are
//! classified here, where the cause is still known: a name that does not resolve, a refusal, an
//! unreachable network, a failed TLS handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::FailureKind;

/// A byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed connection.
pub type BoxIo = Box<dyn Io>;

/// A boxed future that can be sent between threads.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Opens connections to one upstream.
pub trait Dial: Send + Sync + 'static {
    /// Opens a new connection (DNS, TCP and TLS included).
    fn dial(&self) -> BoxFuture<Result<BoxIo, FailureKind>>;
}

/// A dialer made of a closure, for transports the engine does not know (e.g. in memory).
pub struct DialFn<F>(pub F);

impl<F> Dial for DialFn<F>
where
    F: Fn() -> BoxFuture<Result<BoxIo, FailureKind>> + Send + Sync + 'static,
{
    fn dial(&self) -> BoxFuture<Result<BoxIo, FailureKind>> {
        (self.0)()
    }
}

/// Dials a host and port over TCP, with TLS when `tls` is set.
pub struct NetworkDial {
    host: String,
    port: u16,
    tls: Option<(
        rustls::pki_types::ServerName<'static>,
        Arc<rustls::ClientConfig>,
    )>,
}

impl NetworkDial {
    /// A dialer for `uri`'s host and port (TLS for `https`).
    pub fn new(
        uri: &http::Uri,
        tls_config: &Arc<rustls::ClientConfig>,
    ) -> Result<NetworkDial, String> {
        let host = uri
            .host()
            .ok_or("the base URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))?;
            Some((name, tls_config.clone()))
        } else {
            None
        };
        Ok(NetworkDial { host, port, tls })
    }
}

impl Dial for NetworkDial {
    fn dial(&self) -> BoxFuture<Result<BoxIo, FailureKind>> {
        let host = self.host.clone();
        let port = self.port;
        let tls = self.tls.clone();
        Box::pin(async move {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| FailureKind::Dns(format!("{host}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(FailureKind::Dns(format!("{host} has no address")));
            }
            let mut last = None;
            let mut stream = None;
            for addr in &addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some((addr, e)),
                }
            }
            let stream = match (stream, last) {
                (Some(stream), _) => stream,
                (None, Some((addr, e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(FailureKind::Refused(format!("{addr}: {e}")));
                }
                (None, Some((addr, e))) => {
                    return Err(FailureKind::ConnectFailed(format!("{addr}: {e}")));
                }
                (None, None) => return Err(FailureKind::Dns(format!("{host} has no address"))),
            };
            let _ = stream.set_nodelay(true);
            match tls {
                None => Ok(Box::new(stream) as BoxIo),
                Some((name, config)) => {
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let tls = connector
                        .connect(name, stream)
                        .await
                        .map_err(|e| FailureKind::Tls(e.to_string()))?;
                    Ok(Box::new(tls) as BoxIo)
                }
            }
        })
    }
}

/// The TLS client configuration: ring, the Mozilla roots, HTTP/1.1 by ALPN.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
