//! An upstream that offers HTTP/2 by ALPN gets one shared, multiplexed connection: many calls in
//! flight over one TLS connection, with the absolute URI HTTP/2 needs. Over loopback TLS, with a
//! test CA (the certificates in tests/data).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hourglass_config::Config;
use hourglass_engine::upstream::dial::NetworkDial;
use hourglass_engine::{Dial, Engine, ResponseBody};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::chat;

const SSE: &str = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                   data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\n\
                   data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                   data: [DONE]\n\n";

/// An HTTP/2-only TLS server that answers every chat call with a short stream; counts the TLS
/// connections it accepted and the requests that came as HTTP/2 with an authority.
/// A TLS acceptor for `localhost` (the test CA's leaf) offering `alpn`.
fn acceptor(alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
    let cert = rustls::pki_types::CertificateDer::from(include_bytes!("../data/leaf.der").to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        include_bytes!("../data/leaf.key.der").to_vec(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An engine with one upstream `h2` at `https://localhost:PORT/v1` (HTTP `auto`) serving model
/// `m`, dialed with the engine's own dialer trusting the test CA.
fn tls_engine(port: u16) -> Arc<Engine> {
    let base = format!("https://localhost:{port}/v1");
    let config = Config::from_toml(
        &format!(
            "[upstreams.h2]\nbase_url = \"{base}\"\n[models.m]\ntargets = [\"h2:gpt-4o-mini\"]\n"
        ),
        "t.toml",
        &|_| None,
    )
    .unwrap();
    Engine::new(config, test_ca_dial(&base)).unwrap()
}

/// The engine's own dialer for `base`, trusting the test CA instead of the Mozilla roots.
fn test_ca_dial(base: &str) -> HashMap<String, Arc<dyn Dial>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            include_bytes!("../data/ca.der").to_vec(),
        ))
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let dial = NetworkDial::new(&base.parse().unwrap(), &Arc::new(tls)).unwrap();
    [("h2".to_owned(), Arc::new(dial) as Arc<dyn Dial>)].into()
}

fn sse_response() -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Full::new(Bytes::from_static(SSE.as_bytes())))
        .unwrap()
}

async fn h2_server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let acceptor = acceptor(b"h2");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, good) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (conns, good_requests) = (connections.clone(), good.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let good = good_requests.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let good = good.clone();
                    async move {
                        if request.version() == http::Version::HTTP_2
                            && request.uri().authority().is_some()
                            && request.uri().path() == "/v1/chat/completions"
                        {
                            good.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = request.into_body().collect().await;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(Full::new(Bytes::from_static(SSE.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, connections, good)
}

#[tokio::test]
async fn an_upstream_offering_http2_gets_one_multiplexed_connection() {
    let (port, connections, good) = h2_server().await;
    let engine = tls_engine(port);

    // One call opens the connection; twenty at once then share it.
    let first = engine.call(chat("m", true, None)).await.unwrap();
    assert!(first.timeline.is_some_and(|t| !t.reused));
    drop(first);
    let mut calls = Vec::new();
    for _ in 0..20 {
        let engine = engine.clone();
        calls.push(tokio::spawn(async move {
            let response = engine.call(chat("m", true, None)).await.unwrap();
            let reused = response.timeline.unwrap().reused;
            let ResponseBody::Stream(stream) = response.body else {
                panic!("a stream")
            };
            let body = stream.collect().await.unwrap().to_bytes();
            (reused, String::from_utf8(body.to_vec()).unwrap())
        }));
    }
    for call in calls {
        let (reused, body) = call.await.unwrap();
        assert!(reused, "the shared HTTP/2 connection");
        assert!(
            body.contains("hello") && body.ends_with("data: [DONE]\n\n"),
            "{body}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one TLS connection for 21 calls"
    );
    assert_eq!(
        good.load(Ordering::SeqCst),
        21,
        "every request was HTTP/2 with an authority"
    );
}

/// `http = "2"` over `http://`: HTTP/2 with prior knowledge (h2c) to the simulator over loopback,
/// each connection carrying at most `http2_max_streams` calls — the 26th call in flight opens a
/// third connection instead of queueing behind the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_http2_opens_another_connection_when_one_is_full() {
    let sim = hourglass_sim::Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        hourglass_sim::ServerConfig {
            name: "s".into(),
            ..hourglass_sim::ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let config = Config::from_toml(
        &format!(
            "[upstreams.s]\nbase_url = \"{}\"\nhttp = \"2\"\nhttp2_max_streams = 10\n[models.m]\ntargets = [\"s:sim-instant\"]\n",
            sim.base_url()
        ),
        "t.toml",
        &|_| None,
    )
    .unwrap();
    let engine = Engine::new(config, HashMap::new()).unwrap();
    // Each stream pauses after its first chunk, so all 25 are in flight at once.
    let mut calls = Vec::new();
    for _ in 0..25 {
        let engine = engine.clone();
        calls.push(tokio::spawn(async move {
            let request = chat("m", true, Some("stall;after_chunks=1;for=1s"));
            let response = engine.call(request).await.unwrap();
            let ResponseBody::Stream(stream) = response.body else {
                panic!("a stream")
            };
            let body = stream.collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }));
    }
    for call in calls {
        let body = call.await.unwrap();
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    assert_eq!(sim.stats().requests, 25);
    assert_eq!(
        sim.stats().connections,
        3,
        "25 calls in flight at 10 per connection"
    );
    assert_eq!(engine.h2_connections(), vec![3]);
    // Later calls share the open connections.
    for _ in 0..5 {
        let response = engine.call(chat("m", false, None)).await.unwrap();
        assert!(response.timeline.unwrap().reused);
    }
    assert_eq!(sim.stats().connections, 3);
}

/// After a burst, the extra HTTP/2 connections it opened close once idle for `SPARE_H2_EXPIRY`;
/// the last one stays for `IDLE_EXPIRY`, ready for the next call (in memory, paused clock).
#[tokio::test(start_paused = true)]
async fn a_bursts_extra_http2_connections_close_soon_after_it() {
    let setup = crate::support::setup_raw(
        &["s"],
        // No health checks: they would keep the last connection busy, and so open.
        "[health_check]\nmode = \"off\"\n[upstreams.s]\nbase_url = \"http://s.invalid/v1\"\nhttp = \"2\"\nhttp2_max_streams = 10\n[models.m]\ntargets = [\"s:sim-instant\"]\n",
    );
    let engine = setup.engine.clone();
    let mut calls = Vec::new();
    for _ in 0..25 {
        let engine = engine.clone();
        calls.push(tokio::spawn(async move {
            let request = chat("m", true, Some("stall;after_chunks=1;for=1s"));
            let ResponseBody::Stream(stream) = engine.call(request).await.unwrap().body else {
                panic!("a stream")
            };
            stream.collect().await.unwrap().to_bytes()
        }));
    }
    for call in calls {
        assert!(call.await.unwrap().ends_with(b"data: [DONE]\n\n"));
    }
    assert_eq!(engine.h2_connections(), vec![3]);
    let _background = engine.spawn_background();
    // The first sweep (15 s) finds all three idle longer than SPARE_H2_EXPIRY: two go.
    tokio::time::sleep(std::time::Duration::from_secs(16)).await;
    assert_eq!(engine.h2_connections(), vec![1]);
    // The last one goes after IDLE_EXPIRY (60 s) without a call.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(engine.h2_connections(), vec![0]);
    assert_eq!(setup.sims["s"].stats().connections, 3);
}

/// An upstream that negotiated HTTP/2 and later answers ALPN with http/1.1 (a new deployment):
/// its calls go back to pooled HTTP/1.1 connections, not to one new connection each.
#[tokio::test]
async fn an_upstream_that_stops_offering_http2_gets_pooled_http1_again() {
    let (h2, h1) = (acceptor(b"h2"), acceptor(b"http/1.1"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let acceptor = if first { h2.clone() } else { h1.clone() };
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, Infallible>(sse_response())
                    });
                if first {
                    // The HTTP/2 deployment goes away shortly after its first answer.
                    let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service);
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(200), serving).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    let engine = tls_engine(port);
    let whole = |engine: Arc<Engine>| async move {
        let response = engine.call(chat("m", false, None)).await.unwrap();
        response.timeline.unwrap().reused
    };
    assert!(!whole(engine.clone()).await, "the HTTP/2 connection");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(engine.h2_connections(), vec![0], "the server closed it");
    assert!(
        !whole(engine.clone()).await,
        "a new connection, HTTP/1.1 now"
    );
    for _ in 0..3 {
        assert!(
            whole(engine.clone()).await,
            "the pooled HTTP/1.1 connection"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
