//! The simulated server: its listener (TCP or in memory; HTTP/1.1, or HTTP/2 with prior knowledge),
//! one task per connection, the routes,
//! and the faults that act below HTTP — `reset` (an RST before any response byte) and
//! `blackhole` (a listener that stops completing TCP handshakes).
//!
//! # How `blackhole` works
//! The listener is switched to a backlog of zero and its accept queue is filled with one
//! connection of our own that is never accepted. Linux then drops every new SYN, so clients sit
//! in `SYN_SENT` until their own connect timeout fires — a real connect timeout, not a refusal.
//! Switching back restores the backlog and accepts (and closes) the filler.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::body::SimBody;
use crate::content::splitmix;
use crate::fault::{ErrorBody, Fault, FaultList, FaultSet};
use crate::model::ModelProfile;
use crate::plan::{self, Context};
use crate::render;
use crate::request::{self, Endpoint};

/// Largest request body the simulator reads (OpenAI accepts large multimodal prompts).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;
/// Backlog of a listener that is not blackholed.
const BACKLOG: i32 = 1024;

/// What one simulated upstream serves and how it misbehaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The upstream's name; faults with `upstream=NAME` apply only where it matches.
    pub name: String,
    /// The models it serves.
    pub models: Vec<ModelProfile>,
    /// Faults injected at random: each entry applies to a request with its probability.
    pub fault_mix: Vec<WeightedFaults>,
    /// Seed of every random draw; requests without `x-sim-seed` are numbered from it.
    pub seed: u64,
    /// Factor applied to every duration the latency model draws (not to fault durations).
    pub time_scale: f64,
    /// Start with the listener blackholed.
    pub blackhole: bool,
}

/// A fault (or list of faults) injected with a probability.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedFaults {
    /// The faults, in header grammar.
    pub faults: FaultList,
    /// Share of requests that get them, 0..=1; the entries of a mix add up to at most 1.
    pub probability: f64,
}

/// Counters of what a server has seen, for tests and the start-up banner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests received (each retry of a client counts).
    pub requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Requests that had at least one fault injected.
    pub faulted: u64,
}

/// A running simulated upstream. Dropping it stops the listener and closes its connections.
pub struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    config: ServerConfig,
    models: HashMap<String, ModelProfile>,
    models_body: Bytes,
    addr: Option<SocketAddr>,
    /// `http://host:port` of the server itself, for image URLs.
    origin: String,
    next_request: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    open_connections: AtomicU64,
    faulted: AtomicU64,
    blackhole: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
}

/// Per-connection control: a handler asks its connection to be reset.
struct Connection {
    reset: Notify,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "sim".to_owned(),
            models: ModelProfile::builtin(),
            fault_mix: Vec::new(),
            seed: 0,
            time_scale: 1.0,
            blackhole: false,
        }
    }
}

impl Server {
    /// Binds a TCP listener (port 0 picks a free port) and starts serving on it.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(config, Some(addr));
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Server {
            shared,
            accept: Some(accept),
        })
    }

    /// A server with no listener, reached only through [`Server::connect_in_memory`]; its timing
    /// then runs entirely on tokio's clock, so tests can pause it.
    pub fn in_memory(config: ServerConfig) -> Server {
        Server {
            shared: Shared::new(config, None),
            accept: None,
        }
    }

    /// Opens an in-memory connection to this server (also works for a TCP server). While the
    /// server is blackholed this waits, like a TCP connect whose SYN is dropped.
    pub async fn connect_in_memory(&self) -> DuplexStream {
        until(&mut self.shared.blackhole.subscribe(), false).await;
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_connection(self.shared.clone(), server, None));
        client
    }

    /// The TCP address, or `None` for an in-memory server.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.addr
    }

    /// The base URL an OpenAI SDK takes, e.g. `http://127.0.0.1:40123/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.shared.origin)
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The configuration it runs.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Counters of what it has seen so far.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            requests: s.requests.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
            open_connections: s.open_connections.load(Ordering::Relaxed),
            faulted: s.faulted.load(Ordering::Relaxed),
        }
    }

    /// Turns the blackhole on (new TCP handshakes never complete) or off.
    pub fn set_blackhole(&self, dark: bool) {
        self.shared.blackhole.send_replace(dark);
    }

    /// Whether the listener is blackholed now.
    pub fn is_blackholed(&self) -> bool {
        *self.shared.blackhole.borrow()
    }

    /// Stops the listener and closes every connection.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn new(config: ServerConfig, addr: Option<SocketAddr>) -> Arc<Shared> {
        let models: HashMap<_, _> = config
            .models
            .iter()
            .map(|m| (m.name.clone(), m.clone()))
            .collect();
        let models_body = render::models(config.models.iter().map(|m| m.name.as_str()));
        let origin = match addr {
            Some(addr) => format!("http://{addr}"),
            None => format!("http://{}.in-memory.invalid", config.name),
        };
        let (blackhole, _) = watch::channel(config.blackhole);
        let (shutdown, _) = watch::channel(false);
        Arc::new(Shared {
            config,
            models,
            models_body,
            addr,
            origin,
            next_request: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            blackhole,
            shutdown,
        })
    }

    /// Blackholes the listener, for `duration` or until the server stops.
    fn blackhole_for(self: &Arc<Self>, duration: Option<Duration>) {
        self.blackhole.send_replace(true);
        if let Some(duration) = duration {
            let shared = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                if let Some(shared) = shared.upgrade() {
                    shared.blackhole.send_replace(false);
                }
            });
        }
    }

    /// Waits until the server stops (forever, for a running server).
    async fn stopped(&self) {
        until(&mut self.shutdown.subscribe(), true).await;
    }

    /// The faults for one request: the header's if it has one, else a draw from the mix.
    fn faults(&self, header: Option<&FaultList>, rng: &mut fastrand::Rng) -> FaultSet {
        let name = &self.config.name;
        if let Some(list) = header {
            return list.select(name, rng);
        }
        if self.config.fault_mix.is_empty() {
            return FaultSet::default();
        }
        let mut draw = rng.f64();
        for entry in &self.config.fault_mix {
            if draw < entry.probability {
                return entry.faults.select(name, rng);
            }
            draw -= entry.probability;
        }
        FaultSet::default()
    }
}

/// Waits until a watched flag has `value` (forever if its sender is gone without it).
async fn until(flag: &mut watch::Receiver<bool>, value: bool) {
    if flag.wait_for(|now| *now == value).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut dark = shared.blackhole.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let is_dark = *dark.borrow_and_update();
        if is_dark {
            let fillers = go_dark(&listener).await;
            tokio::select! {
                _ = until(&mut dark, false) => {}
                _ = until(&mut shutdown, true) => return,
            }
            if let Err(error) = socket2::SockRef::from(&listener).listen(BACKLOG) {
                tracing::warn!(%error, "could not restore the listener's backlog after a blackhole");
            }
            drop(fillers);
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_tcp(shared.clone(), stream));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = dark.changed() => {}
            _ = until(&mut shutdown, true) => return,
        }
    }
}

/// Makes the listener drop SYNs: backlog 0 and an accept queue kept full by our own connections.
async fn go_dark(listener: &TcpListener) -> Vec<TcpStream> {
    let mut fillers = Vec::new();
    let Ok(addr) = listener.local_addr() else {
        return fillers;
    };
    if let Err(error) = socket2::SockRef::from(listener).listen(0) {
        tracing::warn!(%error, "could not shrink the backlog for a blackhole");
        return fillers;
    }
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    // The first filler fills the queue; the next one times out, which proves the queue is full.
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(target)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    fillers
}

async fn serve_tcp(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, kept here, lets a `reset` fault set SO_LINGER=0 after hyper
    // has taken the stream: the RST goes out when the last handle closes.
    let (stream, handle) = match stream.into_std().and_then(|s| Ok((s.try_clone()?, s))) {
        Ok((std, handle)) => match TcpStream::from_std(std) {
            Ok(stream) => (stream, Some(handle)),
            Err(_) => return,
        },
        Err(_) => return,
    };
    serve_connection(shared, stream, handle).await;
}

async fn serve_connection<I>(shared: Arc<Shared>, io: I, socket: Option<std::net::TcpStream>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.connections.fetch_add(1, Ordering::Relaxed);
    shared.open_connections.fetch_add(1, Ordering::Relaxed);
    let connection = Arc::new(Connection {
        reset: Notify::new(),
    });
    let service = {
        let shared = shared.clone();
        let connection = connection.clone();
        service_fn(move |request| handle(shared.clone(), connection.clone(), request))
    };
    // HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when the client opens with its preface.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = serving => {}
        _ = connection.reset.notified() => {
            if let Some(socket) = &socket {
                let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
            }
        }
        _ = shared.stopped() => {}
    }
    drop(socket);
    shared.open_connections.fetch_sub(1, Ordering::Relaxed);
}

fn json_response(status: StatusCode, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in Anthropic's shape (for `/v1/messages`) or OpenAI's (everything else).
fn error_for(
    endpoint: Option<Endpoint>,
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<SimBody> {
    if endpoint == Some(Endpoint::Messages) {
        return json_response(status, render::anthropic_error(status.as_u16(), message));
    }
    error_response(status, message, param, code)
}

fn error_response(
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<SimBody> {
    let (kind, default_code) = render::error_kind(status.as_u16());
    json_response(
        status,
        render::error(message, kind, param, code.or(default_code)),
    )
}

/// The response to an injected `status` or `rate_limit` fault (in `endpoint`'s error shape).
fn fault_status(fault: &Fault, endpoint: Option<Endpoint>) -> Option<Response<SimBody>> {
    let (code, retry_after, retry_after_ms, body) = match *fault {
        Fault::Status {
            code,
            retry_after,
            retry_after_ms,
            body,
        } => (code, retry_after, retry_after_ms, body),
        Fault::RateLimit {
            retry_after,
            retry_after_ms,
        } => (429, retry_after, retry_after_ms, ErrorBody::Json),
        _ => return None,
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let message = format!("simulated fault `{fault}`: {reason}");
    let mut response = match body {
        ErrorBody::Json => error_for(endpoint, status, &message, None, None),
        ErrorBody::Html => {
            let mut response = json_response(status, render::html_page(code, reason));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
        ErrorBody::Empty => {
            let mut response = Response::new(SimBody::full(Bytes::new()));
            *response.status_mut() = status;
            response
        }
    };
    let headers = response.headers_mut();
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(millis) = retry_after_ms {
        headers.insert("retry-after-ms", HeaderValue::from(millis));
    }
    Some(response)
}

async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let route = route(&parts.method, parts.uri.path());
    let route = match route {
        Ok(route) => route,
        Err(response) => return Ok(*response),
    };

    let fault_list = match parts.headers.get("x-sim-fault").map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => match FaultList::parse(text) {
            Ok(list) => Some(list),
            Err(error) => {
                let message = format!("bad x-sim-fault header: {error}");
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    &message,
                    Some("x-sim-fault"),
                    Some("invalid_fault"),
                ));
            }
        },
        Some(Err(_)) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "bad x-sim-fault header: not visible ASCII",
                Some("x-sim-fault"),
                Some("invalid_fault"),
            ));
        }
    };
    let seed = match parts
        .headers
        .get("x-sim-seed")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
    {
        None => splitmix(
            shared.config.seed
                ^ shared
                    .next_request
                    .fetch_add(1, Ordering::Relaxed)
                    .rotate_left(17),
        ),
        Some(Some(seed)) => seed,
        Some(None) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "bad x-sim-seed header: write a whole number from 0 to 2^64-1",
                Some("x-sim-seed"),
                Some("invalid_seed"),
            ));
        }
    };

    // Read the whole request first: every fault acts after the request was received.
    let bytes = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let message = format!("could not read the request body: {error}");
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                &message,
                None,
                None,
            ));
        }
    };

    let mut fault_rng = fastrand::Rng::with_seed(splitmix(seed ^ 0xfa17));
    let faults = shared.faults(fault_list.as_ref(), &mut fault_rng);
    if !faults.is_empty() {
        shared.faulted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(upstream = %shared.config.name, path = parts.uri.path(), ?faults, "injecting faults");
    }
    if let Some(delay) = faults.delay_headers {
        tokio::time::sleep(delay).await;
    }
    if let Some(outcome) = &faults.outcome {
        match outcome {
            Fault::Hang => shared.stopped().await,
            Fault::Reset => {
                connection.reset.notify_one();
                shared.stopped().await;
            }
            Fault::Blackhole { duration } => {
                shared.blackhole_for(*duration);
                shared.stopped().await;
            }
            status => {
                let endpoint = match &route {
                    Route::Generate(endpoint) => Some(*endpoint),
                    Route::CountTokens => Some(Endpoint::Messages),
                    _ => None,
                };
                if let Some(response) = fault_status(status, endpoint) {
                    return Ok(response);
                }
            }
        }
        return Ok(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the simulator is shutting down",
            None,
            None,
        ));
    }

    let endpoint = match route {
        Route::Health => {
            return Ok(json_response(
                StatusCode::OK,
                Bytes::from_static(b"{\"status\":\"ok\"}"),
            ));
        }
        Route::Models => return Ok(json_response(StatusCode::OK, shared.models_body.clone())),
        Route::Image => {
            let mut response = Response::new(SimBody::full(Bytes::from_static(render::PNG)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            return Ok(response);
        }
        Route::CountTokens => return Ok(count_tokens(&bytes)),
        Route::Generate(endpoint) => endpoint,
    };
    Ok(generate(&shared, endpoint, &bytes, &faults, seed).await)
}

/// `{"input_tokens": N}` for a Messages request body (no `max_tokens` needed), counted as
/// [`request::parse`] counts a prompt; errors in Anthropic's shape.
fn count_tokens(bytes: &Bytes) -> Response<SimBody> {
    match request::parse(Endpoint::Chat, bytes) {
        Ok(parsed) => json_response(
            StatusCode::OK,
            Bytes::from(format!("{{\"input_tokens\":{}}}", parsed.prompt_tokens)),
        ),
        Err(bad) => error_for(
            Some(Endpoint::Messages),
            StatusCode::BAD_REQUEST,
            &bad.message,
            bad.param.as_deref(),
            None,
        ),
    }
}

async fn generate(
    shared: &Shared,
    endpoint: Endpoint,
    bytes: &Bytes,
    faults: &FaultSet,
    seed: u64,
) -> Response<SimBody> {
    let parsed = match request::parse(endpoint, bytes) {
        Ok(parsed) => parsed,
        Err(bad) => {
            return error_for(
                Some(endpoint),
                StatusCode::BAD_REQUEST,
                &bad.message,
                bad.param.as_deref(),
                None,
            );
        }
    };
    let Some(model) = shared.models.get(&parsed.model) else {
        let message = format!(
            "The model `{}` does not exist or you do not have access to it. This simulator serves: {}",
            parsed.model,
            shared
                .config
                .models
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return error_for(
            Some(endpoint),
            StatusCode::NOT_FOUND,
            &message,
            Some("model"),
            Some("model_not_found"),
        );
    };
    if !serves(model, endpoint) {
        let message = format!(
            "model `{}` is a {} model and is not served on this endpoint",
            model.name,
            model.kind.name()
        );
        return error_for(
            Some(endpoint),
            StatusCode::BAD_REQUEST,
            &message,
            Some("model"),
            Some("model_not_supported"),
        );
    }
    let ctx = Context {
        endpoint,
        model,
        time_scale: shared.config.time_scale,
        seed,
        prompt_tokens: parsed.prompt_tokens,
        base_url: &shared.origin,
    };
    let plan = plan::plan(&parsed, faults, &ctx);
    if !plan.head_delay.is_zero() {
        tokio::time::sleep(plan.head_delay).await;
    }
    let mut response = Response::new(SimBody::new(plan.body, plan.content_length));
    let headers = response.headers_mut();
    if plan.streaming {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&format!("req_sim{seed:016x}")) {
        headers.insert("x-request-id", value);
    }
    response
}

fn serves(model: &ModelProfile, endpoint: Endpoint) -> bool {
    use crate::ModelKind::*;
    match endpoint {
        _ if model.kind == Any => true,
        Endpoint::Chat | Endpoint::Completions | Endpoint::Responses => model.kind.generates_text(),
        Endpoint::Embeddings => model.kind == Embedding,
        Endpoint::Images => model.kind == Image,
        Endpoint::Messages => model.kind.generates_text(),
    }
}

enum Route {
    Health,
    Models,
    Image,
    /// Anthropic's `/v1/messages/count_tokens`: the prompt's tokens, as a Message would count them.
    CountTokens,
    Generate(Endpoint),
}

/// Finds the route of a request, or the error response for a path or method it does not serve.
fn route(method: &Method, path: &str) -> Result<Route, Box<Response<SimBody>>> {
    let (route, allowed) = match path.trim_end_matches('/') {
        "/health" => (Route::Health, Method::GET),
        "/v1/models" => (Route::Models, Method::GET),
        "/sim/image.png" => (Route::Image, Method::GET),
        "/v1/chat/completions" => (Route::Generate(Endpoint::Chat), Method::POST),
        "/v1/completions" => (Route::Generate(Endpoint::Completions), Method::POST),
        "/v1/responses" => (Route::Generate(Endpoint::Responses), Method::POST),
        "/v1/embeddings" => (Route::Generate(Endpoint::Embeddings), Method::POST),
        "/v1/images/generations" => (Route::Generate(Endpoint::Images), Method::POST),
        "/v1/messages" => (Route::Generate(Endpoint::Messages), Method::POST),
        "/v1/messages/count_tokens" => (Route::CountTokens, Method::POST),
        _ => {
            let message = format!("Invalid URL ({method} {path})");
            return Err(Box::new(error_response(
                StatusCode::NOT_FOUND,
                &message,
                None,
                None,
            )));
        }
    };
    if *method != allowed {
        let message = format!("{method} is not allowed on {path}; use {allowed}");
        let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, &message, None, None);
        if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return Err(Box::new(response));
    }
    Ok(route)
}
