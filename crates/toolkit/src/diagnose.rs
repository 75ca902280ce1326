//! `hourglass diagnose`: where the time of a call to one URL goes, phase by phase — DNS (every
//! address), TCP to each address, TLS (version, ALPN, certificate), and for AI endpoints a tiny
//! streamed completion made with the engine (first byte, first token, gaps) — then a verdict
//! that names the failing phase and whether the network, the server or the client's
//! configuration is at fault, with the fix.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use hourglass_engine::{ErrorCode, Phase};

use crate::probe::{self, Options};

/// What to check and how long to wait.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// The model of the streamed test completion; `None` skips it.
    pub model: Option<String>,
    /// The API key sent with the completion.
    pub api_key: Option<String>,
    /// Extra headers of the completion.
    pub headers: http::HeaderMap,
    /// Limit of each network step (DNS, one TCP connect, the TLS handshake).
    pub step_timeout: Duration,
    /// Limit of the whole test completion.
    pub call_timeout: Duration,
    /// The proxy variables in effect (name, value), read by the caller from the environment.
    pub proxy_env: Vec<(String, String)>,
    /// The API of the test completion (`None`: Anthropic's on anthropic.com, else OpenAI's).
    pub api: Option<hourglass_config::WireFormat>,
}

/// One address and how connecting to it went.
#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    /// The address.
    pub address: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Connect time (ms) when it connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The TLS handshake and the certificate the server presented.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TlsResult {
    /// Handshake time (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<f64>,
    /// `TLSv1.3`, `TLSv1.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The protocol agreed by ALPN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The certificate's subject (CN and O).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When it expires (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Days until it expires (negative: expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// Whether the chain verified against the Mozilla roots for this host name.
    pub trusted: bool,
    /// Why it did not verify, or why the handshake failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The streamed test completion.
#[derive(Debug, Clone, Serialize)]
pub struct CallResult {
    /// The model.
    pub model: String,
    /// The measurements, as `probe` takes them.
    pub sample: probe::Sample,
    /// Inter-token gaps p50/max (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_p50_ms: Option<f64>,
}

/// The step a verdict names: `ok` when every one passed, else the first that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every step passed.
    Ok,
    /// Resolving the host name.
    Dns,
    /// Opening a TCP connection.
    Tcp,
    /// The TLS handshake.
    Tls,
    /// Waiting for the response headers.
    FirstByte,
    /// Waiting for the first token.
    FirstToken,
    /// The stream after its first token.
    Stream,
}

/// Whose side a failure is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Nothing failed.
    None,
    /// The network between this machine and the API.
    Network,
    /// The API's server.
    Server,
    /// This client's own settings (key, URL, model, trust).
    ClientConfig,
}

impl Step {
    /// Every step, as docs/toolkit.md lists them.
    pub const ALL: [Step; 7] = [
        Step::Ok,
        Step::Dns,
        Step::Tcp,
        Step::Tls,
        Step::FirstByte,
        Step::FirstToken,
        Step::Stream,
    ];

    /// Its name in the report and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Ok => "ok",
            Step::Dns => "dns",
            Step::Tcp => "tcp",
            Step::Tls => "tls",
            Step::FirstByte => "first_byte",
            Step::FirstToken => "first_token",
            Step::Stream => "stream",
        }
    }
}

impl Side {
    /// Every side, as docs/toolkit.md lists them.
    pub const ALL: [Side; 4] = [Side::None, Side::Network, Side::Server, Side::ClientConfig];

    /// Its name in the report and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Side::None => "none",
            Side::Network => "network",
            Side::Server => "server",
            Side::ClientConfig => "client_config",
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl Serialize for Side {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The verdict: the first failing phase, whose side it is on, and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `ok`, or the phase that failed.
    pub phase: Step,
    /// Whose side the failure is on.
    pub side: Side,
    /// What was found.
    pub summary: String,
    /// What to do.
    pub fix: String,
}

/// Everything `diagnose` found.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The URL.
    pub url: String,
    /// Host and port.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Proxy variables in effect, credentials hidden, and whether this host bypasses them.
    pub proxies: Vec<String>,
    /// DNS time (ms); `None` for an IP literal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ms: Option<f64>,
    /// Every address the name resolved to.
    pub addresses: Vec<String>,
    /// A DNS failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_error: Option<String>,
    /// TCP connect to each address.
    pub tcp: Vec<TcpResult>,
    /// TLS, for https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsResult>,
    /// The streamed completion, for AI endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallResult>,
    /// The verdict.
    pub verdict: Verdict,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// An http(s) URL's parts: the URI, whether it is https, the host (an IPv6 address without its
/// brackets) and the port; an error that says what is wrong with it otherwise.
pub(crate) fn split_url(url: &str) -> Result<(http::Uri, bool, String, u16), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL; write e.g. https://api.openai.com/v1"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((uri, https, host, port))
}

/// Runs every step against `url` (a base URL such as `https://api.openai.com/v1`).
pub async fn diagnose(url: &str, options: &DiagnoseOptions) -> Result<Diagnosis, String> {
    let (_, https, host, port) = split_url(url)?;
    let mut d = Diagnosis {
        url: url.to_owned(),
        host: host.clone(),
        port,
        proxies: proxies(&options.proxy_env, &host),
        dns_ms: None,
        addresses: Vec::new(),
        dns_error: None,
        tcp: Vec::new(),
        tls: None,
        call: None,
        verdict: Verdict {
            phase: Step::Ok,
            side: Side::None,
            summary: String::new(),
            fix: String::new(),
        },
    };

    // DNS: every address.
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let start = Instant::now();
        match timeout(
            options.step_timeout,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        {
            Err(_) => {
                d.dns_error = Some(format!("no answer within {:?}", options.step_timeout));
                Vec::new()
            }
            Ok(Err(e)) => {
                d.dns_error = Some(e.to_string());
                Vec::new()
            }
            Ok(Ok(found)) => {
                d.dns_ms = Some(ms(start.elapsed()));
                found.collect()
            }
        }
    };
    d.addresses = addrs.iter().map(|a| a.ip().to_string()).collect();
    if addrs.is_empty() {
        d.verdict = Verdict {
            phase: Step::Dns,
            side: Side::Network,
            summary: format!("`{host}` does not resolve: {}", d.dns_error.clone().unwrap_or_else(|| "no addresses".into())),
            fix: "check the host name in the URL, then this machine's resolver (/etc/resolv.conf, VPN, container DNS)".into(),
        };
        return Ok(d);
    }

    // TCP to every address; the first that connects carries TLS.
    let mut first: Option<TcpStream> = None;
    for addr in &addrs {
        let start = Instant::now();
        let result = timeout(options.step_timeout, TcpStream::connect(addr)).await;
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        let (connect_ms, error) = match result {
            Ok(Ok(stream)) => {
                let took = ms(start.elapsed());
                if first.is_none() {
                    first = Some(stream);
                }
                (Some(took), None)
            }
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!(
                    "timed out after {:?} (no answer to SYN)",
                    options.step_timeout
                )),
            ),
        };
        d.tcp.push(TcpResult {
            address: addr.to_string(),
            family,
            connect_ms,
            error,
        });
    }
    let Some(stream) = first else {
        let refused = d
            .tcp
            .iter()
            .all(|t| t.error.as_deref().is_some_and(|e| e.contains("refused")));
        let timed_out = d
            .tcp
            .iter()
            .any(|t| t.error.as_deref().is_some_and(|e| e.contains("timed out")));
        d.verdict = if refused {
            Verdict {
                phase: Step::Tcp,
                side: Side::Server,
                summary: format!("every address refused port {port}: nothing listens there"),
                fix: "start the service, or fix the port in the URL (a local proxy or sidecar may be down)".into(),
            }
        } else if timed_out {
            Verdict {
                phase: Step::Tcp,
                side: Side::Network,
                summary: format!("connecting to port {port} timed out: packets are dropped on the way"),
                fix: "check firewalls, security groups and routes to these addresses; on IPv6-less networks prefer IPv4".into(),
            }
        } else {
            Verdict {
                phase: Step::Tcp,
                side: Side::Network,
                summary: "no address could be reached".into(),
                fix: "check routes and interfaces (unreachable network or host)".into(),
            }
        };
        return Ok(d);
    };

    if https {
        let tls = handshake(stream, &host, options.step_timeout).await;
        let failed = tls.handshake_ms.is_none();
        let untrusted = !tls.trusted;
        let error = tls.error.clone().unwrap_or_default();
        d.tls = Some(tls);
        if failed {
            d.verdict = Verdict {
                phase: Step::Tls,
                side: if error.contains("timed out") { Side::Network } else { Side::ClientConfig },
                summary: format!("the TLS handshake failed: {error}"),
                fix: "check that the port speaks TLS (https on a plain-HTTP port fails like this) and whether a proxy intercepts TLS".into(),
            };
            return Ok(d);
        }
        if untrusted {
            let subject = d
                .tls
                .as_ref()
                .and_then(|t| t.subject.clone())
                .unwrap_or_default();
            d.verdict = Verdict {
                phase: Step::Tls,
                side: Side::ClientConfig,
                summary: format!("the certificate ({subject}) is not trusted for `{host}`: {error}"),
                fix: "an intercepting proxy or a private CA: install its CA (Python SSL_CERT_FILE, Node NODE_EXTRA_CA_CERTS); if it expired or names another host, the server must fix it".into(),
            };
            // Go on: the endpoint itself may still be measured by clients that trust it.
        }
    } else {
        drop(stream);
    }

    if let Some(model) = &options.model {
        let call_options = Options {
            n: 1,
            concurrency: 1,
            stream: true,
            max_tokens: 16,
            prompt: "Say hi.".to_owned(),
            headers: options.headers.clone(),
            timeout: Some(options.call_timeout),
            api: options.api,
        };
        if d.verdict.phase == Step::Ok {
            let targets = probe::targets_for_url(
                url,
                options.api_key.clone(),
                std::slice::from_ref(model),
                &call_options,
                None,
            )?;
            let sample = probe::measure(&targets[0], &call_options).await;
            let gap_p50_ms = crate::stats::Summary::of(&sample.gaps_ms).map(|s| s.p50);
            d.verdict = call_verdict(&sample, model);
            d.call = Some(CallResult {
                model: model.clone(),
                sample,
                gap_p50_ms,
            });
        }
    }
    if d.verdict.phase == Step::Ok {
        d.verdict.summary = "every phase completed".into();
        d.verdict.fix = "nothing to fix; `hourglass probe` profiles latency over many calls".into();
    }
    Ok(d)
}

/// The verdict of the streamed completion.
fn call_verdict(s: &probe::Sample, model: &str) -> Verdict {
    if s.ok {
        return Verdict {
            phase: Step::Ok,
            side: Side::None,
            summary: String::new(),
            fix: String::new(),
        };
    }
    let code = s.code.map_or("unknown", ErrorCode::name);
    let status = s.status.unwrap_or(0);
    use ErrorCode::{AttemptTimeout, DeadlineExceeded, FirstByteTimeout, FirstTokenTimeout};
    let (phase, side, summary, fix): (Step, Side, String, String) = match (s.code, s.phase, status) {
        (_, _, 401 | 403) => (Step::FirstByte, Side::ClientConfig, format!("the API refused the key (HTTP {status})"), "set the right API key (--api-key-env names the variable)".into()),
        (_, _, 404) => (Step::FirstByte, Side::ClientConfig, format!("HTTP 404: the base URL's path or the model `{model}` is wrong"), "check that the URL ends where the API's /v1 is, and the model name".into()),
        (_, _, 400) => (Step::FirstByte, Side::ClientConfig, "HTTP 400: the API rejected the test request".into(), "check the model name; some APIs need other parameters".into()),
        (_, _, 429) => (Step::FirstByte, Side::Server, "HTTP 429: rate limited or out of quota".into(), "wait, lower the rate, or check the account's quota".into()),
        (_, _, 500..=599) => (Step::FirstByte, Side::Server, format!("HTTP {status}: the server failed"), "retry later or fail over; the server is at fault".into()),
        (Some(FirstByteTimeout | FirstTokenTimeout | DeadlineExceeded | AttemptTimeout), Some(Phase::FirstByte), _) => (
            Step::FirstByte, Side::Server,
            "the network is fine (connected) but the server sent no response headers in time".into(),
            "the server is overloaded or hung: retry later, fail over, or raise the first-byte timeout for slow models".into(),
        ),
        (Some(FirstTokenTimeout | DeadlineExceeded | AttemptTimeout), Some(Phase::FirstToken), _) => (
            Step::FirstToken, Side::Server,
            "headers came but no token in time: the model is queued or thinking".into(),
            "for reasoning models allow longer to the first token; otherwise the server is overloaded".into(),
        ),
        (_, Some(Phase::Connect), _) => (
            Step::Tcp, Side::Network,
            format!("the completion could not connect ({code}), though the first connect worked: the host accepts connections only intermittently"),
            "check the host's load and connection limits, and any firewall rate limits on new connections".into(),
        ),
        (_, Some(Phase::Body), _) => (
            Step::Stream, Side::Server,
            format!("the stream started and then failed ({code}): it stalled or was cut mid-answer"),
            "retry; if it recurs at a fixed duration, a proxy on the path cuts long streams".into(),
        ),
        (Some(ErrorCode::UpstreamClosed), _, _) => (Step::FirstByte, Side::Server, "the server closed the connection without answering".into(), "a crashing server or a proxy cutting the connection: check the server's logs".into()),
        (Some(ErrorCode::UpstreamMalformed), _, _) => (Step::FirstByte, Side::Server, "the answer is not OpenAI-shaped JSON/SSE (a proxy's page?)".into(), "check that the URL points at the API itself, not a web page or portal".into()),
        _ => (Step::FirstByte, Side::Server, format!("the call failed: {code} in {}", s.phase.map_or("unknown", Phase::name)), "run `hourglass explain` on the error".into()),
    };
    Verdict {
        phase,
        side,
        summary,
        fix,
    }
}

/// The proxy variables in effect (credentials hidden), and whether `host` bypasses them.
fn proxies(env: &[(String, String)], host: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut no_proxy = None;
    for (name, value) in env {
        if name.eq_ignore_ascii_case("no_proxy") {
            no_proxy = Some(value.clone());
            out.push(format!("{name}={value}"));
        } else {
            out.push(format!("{name}={}", hide_credentials(value)));
        }
    }
    if out.is_empty() {
        return out;
    }
    let bypass = no_proxy.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .any(|entry| {
                entry == "*"
                    || host == entry.trim_start_matches('.')
                    || host.ends_with(&format!(".{}", entry.trim_start_matches('.')))
            })
    });
    out.push(if bypass {
        format!("`{host}` is in NO_PROXY: clients connect directly")
    } else {
        format!("clients that honour these (curl, httpx, requests, Node with a proxy agent) reach `{host}` through the proxy; hourglass and this test connect directly")
    });
    out
}

fn hide_credentials(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &value[..scheme + 3], &value[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &value[at + 1..]),
        _ => value.to_owned(),
    }
}

/// Verifies with the Mozilla roots but records the outcome instead of failing, so an untrusted
/// certificate can still be shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    outcome: Mutex<Option<Result<(), String>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ())
            .map_err(|e| e.to_string());
        *self.outcome.lock().expect("never poisoned") = Some(result);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn handshake(stream: TcpStream, host: &str, limit: Duration) -> TlsResult {
    let mut result = TlsResult::default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let inner =
        match rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
        {
            Ok(inner) => inner,
            Err(e) => {
                result.error = Some(e.to_string());
                return result;
            }
        };
    let recording = Arc::new(Recording {
        inner,
        outcome: Mutex::new(None),
    });
    let mut config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(recording.clone())
            .with_no_client_auth(),
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        result.error = Some(format!("`{host}` is not a valid TLS server name"));
        return result;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let start = Instant::now();
    let tls = match timeout(limit, connector.connect(name, stream)).await {
        Err(_) => {
            result.error = Some(format!("the handshake timed out after {limit:?}"));
            return result;
        }
        Ok(Err(e)) => {
            result.error = Some(e.to_string());
            return result;
        }
        Ok(Ok(tls)) => tls,
    };
    result.handshake_ms = Some(ms(start.elapsed()));
    let (_, connection) = tls.get_ref();
    result.version = connection.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    });
    result.alpn = connection
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    if let Some(cert) = connection.peer_certificates().and_then(|c| c.first())
        && let Some(info) = crate::x509::read(cert.as_ref())
    {
        result.subject = Some(info.subject);
        result.issuer = Some(info.issuer);
        result.days_left = Some(
            info.not_after
                .duration_since(jiff::Timestamp::now())
                .as_hours()
                / 24,
        );
        result.not_after = Some(info.not_after.strftime("%Y-%m-%d %H:%M:%S UTC").to_string());
    }
    match recording.outcome.lock().expect("never poisoned").take() {
        Some(Ok(())) => result.trusted = true,
        Some(Err(e)) => result.error = Some(e),
        None => result.error = Some("the certificate was not checked".into()),
    }
    result
}

/// The report a person reads.
pub fn render(d: &Diagnosis) -> String {
    let mut out = format!("diagnose {}\n", d.url);
    if !d.proxies.is_empty() {
        out.push_str("  proxy env   ");
        out.push_str(&d.proxies.join("\n              "));
        out.push('\n');
    }
    match (&d.dns_error, d.dns_ms) {
        (Some(e), _) => out.push_str(&format!("  dns         {} FAILED: {e}\n", d.host)),
        (None, Some(t)) => out.push_str(&format!(
            "  dns         {} → {} in {}\n",
            d.host,
            d.addresses.join(", "),
            probe::human_ms(t)
        )),
        (None, None) => out.push_str(&format!(
            "  dns         {} (an address: no lookup)\n",
            d.host
        )),
    }
    for t in &d.tcp {
        match (&t.error, t.connect_ms) {
            (Some(e), _) => out.push_str(&format!(
                "  tcp         {} ({}) FAILED: {e}\n",
                t.address, t.family
            )),
            (None, Some(ms)) => out.push_str(&format!(
                "  tcp         {} ({}) connected in {}\n",
                t.address,
                t.family,
                probe::human_ms(ms)
            )),
            _ => {}
        }
    }
    if let Some(tls) = &d.tls {
        match tls.handshake_ms {
            None => out.push_str(&format!(
                "  tls         FAILED: {}\n",
                tls.error.clone().unwrap_or_default()
            )),
            Some(t) => {
                out.push_str(&format!(
                    "  tls         {} alpn {} in {}\n",
                    tls.version.clone().unwrap_or_default(),
                    tls.alpn.clone().unwrap_or_else(|| "none".into()),
                    probe::human_ms(t)
                ));
                out.push_str(&format!(
                    "  certificate {} (issuer {}), expires {} ({} days), {}\n",
                    tls.subject.clone().unwrap_or_default(),
                    tls.issuer.clone().unwrap_or_default(),
                    tls.not_after.clone().unwrap_or_default(),
                    tls.days_left.unwrap_or_default(),
                    if tls.trusted {
                        "trusted".to_owned()
                    } else {
                        format!("NOT TRUSTED: {}", tls.error.clone().unwrap_or_default())
                    }
                ));
            }
        }
    }
    if let Some(call) = &d.call {
        let s = &call.sample;
        let f = |v: Option<f64>| v.map_or("-".to_owned(), probe::human_ms);
        out.push_str(&format!(
            "  completion  {} (streamed): connect {}, first byte {}, first token {}, gap p50 {} max {}, total {}{}\n",
            call.model,
            f(s.connect_ms),
            f(s.first_byte_ms),
            f(s.first_token_ms),
            f(call.gap_p50_ms),
            f(s.max_gap_ms),
            probe::human_ms(s.total_ms),
            if s.ok { String::new() } else { format!(" — FAILED: {} in {}", s.code.map_or("unknown", |c| c.name()), s.phase.map_or("unknown", |p| p.name())) }
        ));
    }
    out.push_str(&format!(
        "verdict: {} ({}): {}\n  fix: {}\n",
        d.verdict.phase.name(),
        d.verdict.side.name().replace('_', " "),
        d.verdict.summary,
        d.verdict.fix
    ));
    out
}
