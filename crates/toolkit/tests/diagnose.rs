//! `diagnose` over loopback against a real `hourglass sim` listener (and a TLS listener with a
//! self-signed certificate): each injected failure must be found in its phase, on its side.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

use std::sync::Arc;
use std::time::Duration;

use hourglass_sim::{Server, ServerConfig};
use hourglass_toolkit::diagnose::{DiagnoseOptions, diagnose};

fn options(fault: Option<&str>) -> DiagnoseOptions {
    let mut headers = http::HeaderMap::new();
    if let Some(fault) = fault {
        headers.insert("x-sim-fault", fault.parse().unwrap());
    }
    DiagnoseOptions {
        model: Some("gpt-4o-mini".to_owned()),
        api_key: None,
        headers,
        step_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_secs(1),
        proxy_env: Vec::new(),
        api: None,
    }
}

async fn sim() -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_healthy_endpoint_shows_every_phase() {
    let sim = sim().await;
    let port = sim.local_addr().unwrap().port();
    let mut options = options(None);
    options.proxy_env = vec![
        (
            "HTTPS_PROXY".into(),
            "http://me:secret@proxy.corp:3128".into(),
        ),
        ("NO_PROXY".into(), ".internal,localhost".into()),
    ];
    let d = diagnose(&format!("http://localhost:{port}/v1"), &options)
        .await
        .unwrap();
    assert!(d.dns_ms.is_some(), "localhost is looked up");
    assert!(
        d.addresses.iter().any(|a| a == "127.0.0.1"),
        "{:?}",
        d.addresses
    );
    assert!(
        d.tcp
            .iter()
            .any(|t| t.connect_ms.is_some() && t.family == "ipv4"),
        "{:?}",
        d.tcp
    );
    let call = d.call.as_ref().unwrap();
    assert!(call.sample.ok, "{:?}", call.sample);
    // gpt-4o-mini in the simulator: first token median 0.45 s, p99 1.5 s; gaps ~11 ms.
    let first_token = call.sample.first_token_ms.unwrap();
    assert!((50.0..1600.0).contains(&first_token), "{first_token}");
    assert!(call.gap_p50_ms.unwrap() < 50.0);
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("ok", "none")
    );
    assert!(
        d.proxies.iter().all(|p| !p.contains("secret")),
        "{:?}",
        d.proxies
    );
    assert!(
        d.proxies
            .iter()
            .any(|p| p.contains("`localhost` is in NO_PROXY"))
    );
}

#[tokio::test]
async fn a_hung_server_is_the_servers_fault_at_first_byte() {
    let sim = sim().await;
    let url = sim.base_url();
    let d = diagnose(&url, &options(Some("hang"))).await.unwrap();
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("first_byte", "server"),
        "{:?}",
        d.verdict
    );
    let total = d.call.unwrap().sample.total_ms;
    assert!(
        (950.0..1500.0).contains(&total),
        "the call timeout fired at {total} ms"
    );

    let d = diagnose(&url, &options(Some("stall;after_chunks=2;for=60s")))
        .await
        .unwrap();
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("stream", "server"),
        "{:?}",
        d.verdict
    );

    let d = diagnose(&url, &options(Some("status;code=503")))
        .await
        .unwrap();
    assert_eq!(d.verdict.side.name(), "server");
    assert!(d.verdict.summary.contains("503"), "{:?}", d.verdict);
    let d = diagnose(&url, &options(Some("status;code=401")))
        .await
        .unwrap();
    assert_eq!(d.verdict.side.name(), "client_config", "{:?}", d.verdict);
}

#[tokio::test]
async fn refused_and_blackholed_ports_are_told_apart() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let d = diagnose(&format!("http://127.0.0.1:{port}/v1"), &options(None))
        .await
        .unwrap();
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("tcp", "server"),
        "{:?}",
        d.verdict
    );
    assert!(d.tcp[0].error.as_deref().unwrap().contains("refused"));

    let sim = sim().await;
    sim.set_blackhole(true);
    tokio::time::sleep(Duration::from_millis(300)).await; // the filler connection takes the queue
    let d = diagnose(&sim.base_url(), &options(None)).await.unwrap();
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("tcp", "network"),
        "{:?}",
        d.verdict
    );
    assert!(d.tcp[0].error.as_deref().unwrap().contains("timed out"));
    assert!(d.call.is_none());
}

#[tokio::test]
async fn an_untrusted_certificate_is_shown_and_named() {
    let cert = rustls::pki_types::CertificateDer::from(include_bytes!("data/cert.der").to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        include_bytes!("data/key.der").to_vec(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _tls = acceptor.accept(socket).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let mut options = options(None);
    options.model = None;
    let d = diagnose(&format!("https://127.0.0.1:{port}/v1"), &options)
        .await
        .unwrap();
    let tls = d.tls.unwrap();
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(
        tls.subject.as_deref(),
        Some("CN=hourglass-test.local, O=hourglass tests")
    );
    assert!(tls.days_left.unwrap() > 30_000);
    assert!(!tls.trusted);
    // Self-signed (and marked a CA by openssl): webpki refuses it as the server's certificate.
    assert!(
        tls.error
            .as_deref()
            .unwrap()
            .contains("invalid peer certificate"),
        "{:?}",
        tls.error
    );
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("tls", "client_config")
    );
    assert!(d.verdict.summary.contains("hourglass-test.local"));
    server.abort();
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_the_networks_fault_at_dns() {
    let mut options = options(None);
    options.step_timeout = Duration::from_secs(3);
    let d = diagnose("https://no-such-host.invalid/v1", &options)
        .await
        .unwrap();
    assert_eq!(
        (d.verdict.phase.name(), d.verdict.side.name()),
        ("dns", "network"),
        "{:?}",
        d.verdict
    );
    assert!(d.tcp.is_empty());
}

#[tokio::test]
async fn a_bad_url_is_an_error_that_says_so() {
    let e = diagnose("ftp://x/v1", &options(None)).await.unwrap_err();
    assert!(e.contains("http:// or https://"), "{e}");
}

/// Anthropic's Messages API, phase by phase: a healthy stream completes, an overloaded one (529,
/// Anthropic's `overloaded_error`) is the server's fault at first byte.
#[tokio::test]
async fn anthropics_api_is_diagnosed_phase_by_phase() {
    let sim = sim().await;
    let url = format!("http://127.0.0.1:{}/v1", sim.local_addr().unwrap().port());
    let mut healthy = options(None);
    healthy.model = Some("claude-4-sonnet".to_owned());
    healthy.api = Some(hourglass_config::WireFormat::Anthropic);
    healthy.call_timeout = Duration::from_secs(20);
    let d = diagnose(&url, &healthy).await.unwrap();
    let call = d.call.as_ref().expect("the completion ran");
    assert!(call.sample.ok, "{:?}", call.sample);
    assert!(call.sample.first_token_ms.is_some());
    let mut overloaded = options(Some("status;code=529"));
    overloaded.model = Some("claude-4-sonnet".to_owned());
    overloaded.api = Some(hourglass_config::WireFormat::Anthropic);
    let d = diagnose(&url, &overloaded).await.unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["verdict"]["phase"], "first_byte", "{json}");
    assert_eq!(json["verdict"]["side"], "server", "{json}");
    assert!(d.verdict.summary.contains("529"), "{}", d.verdict.summary);
}
