//! Opening connections to an upstream: DNS, TCP and TLS for real networks, or any transport a
//! caller supplies (the in-memory simulator in tests and in zero-configuration mode). Errors are
//! classified here, where the cause is still known: a name that does not resolve, a refusal, an
//! unreachable network, a failed TLS handshake.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::FailureKind;
use hourglass_config::HttpVersion;

/// A byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The stream as `Any`, to ask a TLS stream what ALPN agreed.
    fn as_any(&self) -> &dyn std::any::Any;
}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The protocol the server chose by ALPN, for a TLS stream (`Some(b"")` when it chose none);
/// `None` for a plain stream.
pub fn alpn(io: &BoxIo) -> Option<Vec<u8>> {
    (**io)
        .as_any()
        .downcast_ref::<tokio_rustls::client::TlsStream<TcpStream>>()
        .map(|tls| tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec())
}

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

/// How long a DNS answer is used before it is refreshed (getaddrinfo does not tell the record's
/// TTL; 30 s is a common one for API endpoints).
pub const DNS_FRESH: Duration = Duration::from_secs(30);
/// How long a stale answer is still used while refreshes fail (serve-stale, RFC 8767's spirit).
pub const DNS_STALE: Duration = Duration::from_secs(300);

/// A resolver function: host and port to addresses.
pub type Lookup =
    Arc<dyn Fn(String, u16) -> BoxFuture<std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver (getaddrinfo on a blocking thread).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|addrs| addrs.collect())
        })
    })
}

/// One host's addresses, kept off the call path: answered from the cache while fresh, answered
/// stale and refreshed in the background after [`DNS_FRESH`], resolved inline only the first time
/// (or after [`DNS_STALE`] of failed refreshes).
pub struct DnsCache {
    host: String,
    port: u16,
    lookup: Lookup,
    entry: Mutex<Option<(Vec<SocketAddr>, Instant)>>,
    refreshing: Arc<AtomicBool>,
}

impl DnsCache {
    /// A cache for `host:port` resolved with `lookup`.
    pub fn new(host: String, port: u16, lookup: Lookup) -> Arc<DnsCache> {
        Arc::new(DnsCache {
            host,
            port,
            lookup,
            entry: Mutex::new(None),
            refreshing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The addresses of the host.
    pub async fn resolve(self: &Arc<Self>) -> Result<Vec<SocketAddr>, FailureKind> {
        let now = crate::clock::now();
        let cached = self
            .entry
            .lock()
            .expect("the dns lock is never poisoned")
            .clone();
        if let Some((addrs, at)) = cached {
            let age = now.saturating_duration_since(at);
            if age < DNS_FRESH {
                return Ok(addrs);
            }
            if age < DNS_STALE {
                self.refresh_in_background();
                return Ok(addrs);
            }
        }
        self.lookup_now().await
    }

    async fn lookup_now(&self) -> Result<Vec<SocketAddr>, FailureKind> {
        let addrs = (self.lookup)(self.host.clone(), self.port)
            .await
            .map_err(|e| FailureKind::Dns(format!("{}: {e}", self.host)))?;
        if addrs.is_empty() {
            return Err(FailureKind::Dns(format!("{} has no address", self.host)));
        }
        *self.entry.lock().expect("the dns lock is never poisoned") =
            Some((addrs.clone(), crate::clock::now()));
        Ok(addrs)
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            // A failed refresh keeps the stale answer until DNS_STALE.
            let _ = cache.lookup_now().await;
            cache.refreshing.store(false, Ordering::Release);
        });
    }
}

/// Dials a host and port over TCP, with TLS when `tls` is set.
pub struct NetworkDial {
    host: String,
    dns: Arc<DnsCache>,
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
        let dns = DnsCache::new(host.clone(), port, system_lookup());
        Ok(NetworkDial { host, dns, tls })
    }
}

impl Dial for NetworkDial {
    fn dial(&self) -> BoxFuture<Result<BoxIo, FailureKind>> {
        let host = self.host.clone();
        let dns = self.dns.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let addrs = dns.resolve().await?;
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

/// The TLS client configuration: ring, the Mozilla roots, HTTP/2 or HTTP/1.1 by ALPN.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    tls_config_for(HttpVersion::Auto)
}

/// The TLS client configuration offering by ALPN what `http` allows.
pub fn tls_config_for(http: HttpVersion) -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match http {
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A resolver that takes 200 ms, counts its lookups, and fails once `fail` is set.
    fn slow(count: Arc<AtomicUsize>, fail: Arc<AtomicBool>) -> Lookup {
        Arc::new(move |_host, port| {
            let count = count.clone();
            let fail = fail.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                count.fetch_add(1, Ordering::SeqCst);
                if fail.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other("SERVFAIL"));
                }
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_resolver_is_paid_once_then_refreshed_off_the_call_path() {
        let (count, fail) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let cache = DnsCache::new("api.x".into(), 443, slow(count.clone(), fail.clone()));
        let start = Instant::now();
        cache.resolve().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "the first lookup is inline"
        );
        let start = Instant::now();
        cache.resolve().await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "fresh: from the cache");
        // Stale: answered at once, refreshed in the background (one refresh for many calls).
        tokio::time::sleep(DNS_FRESH).await;
        let start = Instant::now();
        for _ in 0..5 {
            cache.resolve().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Refreshes failing: the stale answer is served until DNS_STALE, then the error shows.
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(DNS_FRESH).await;
        assert!(cache.resolve().await.is_ok());
        tokio::time::sleep(DNS_STALE).await;
        assert!(matches!(cache.resolve().await, Err(FailureKind::Dns(_))));
    }
}
