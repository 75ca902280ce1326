//! One attempt: a connection (pooled or new), the request written, the response head awaited,
//! and for a stream the wait for the first meaningful token — the commit point. Every wait is
//! bounded by the phase's deadline (capped by the attempt's and the call's). A failure before the
//! commit point returns to the loop, which may try again; at the commit point the rest of the
//! stream is handed to `commit`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hourglass_config::Upstream;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::attempts::Context;
use crate::deadlines::AttemptDeadlines;
use crate::describe::Describer;
use crate::error::{AttemptRecord, Failure, FailureKind, Phase};
use crate::health::Lease;
use crate::request::CallRequest;
use crate::stream::assemble::Assembler;
use crate::stream::content::{self, Signal};
use crate::stream::sse::Scanner;
use crate::upstream::{Connection, RequestBody, Timeline, drive};
use crate::{Engine, Response, ResponseBody, commit};

/// Largest non-streaming body read into memory before it is sent on.
const MAX_WHOLE_BODY: usize = 256 * 1024 * 1024;
/// Largest error body kept from an upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where an attempt goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub upstream: usize,
    pub name: String,
    pub model: String,
    pub tier: u32,
    pub weight: u32,
}

/// How far an attempt got, kept up to date so a failure can say where it happened.
struct Progress {
    phase: Phase,
    timeline: Timeline,
    status: Option<u16>,
}

pub(crate) async fn run(
    engine: &Arc<Engine>,
    request: &CallRequest,
    target: &Target,
    n: u32,
    ctx: &Context<'_>,
    lease: &mut Option<Lease>,
) -> Result<Response, (Failure, AttemptRecord)> {
    let start = Instant::now();
    let deadlines = ctx.deadlines.attempt(n, start);
    let mut progress = Progress {
        phase: Phase::Connect,
        timeline: Timeline::new(start),
        status: None,
    };
    let result = attempt(
        engine,
        request,
        target,
        &deadlines,
        &mut progress,
        ctx,
        lease,
    )
    .await;
    let record = |outcome| AttemptRecord {
        upstream: target.name.clone(),
        model: target.model.clone(),
        phase: progress.phase,
        elapsed: start.elapsed(),
        outcome,
        status: progress.status,
    };
    match result {
        Ok(mut response) => {
            response.trail = vec![record("ok")];
            response.timeline = Some(progress.timeline);
            Ok(response)
        }
        Err(kind) => {
            let record = record(kind.code());
            tracing::debug!(upstream = %target.name, code = kind.code(), phase = progress.phase.name(), "attempt failed");
            Err((
                Failure {
                    kind,
                    phase: progress.phase,
                },
                record,
            ))
        }
    }
}

async fn attempt(
    engine: &Arc<Engine>,
    request: &CallRequest,
    target: &Target,
    d: &AttemptDeadlines,
    progress: &mut Progress,
    ctx: &Context<'_>,
    lease: &mut Option<Lease>,
) -> Result<Response, FailureKind> {
    let upstream = &engine.config.upstreams[target.upstream];
    let body = if target.model.is_empty() {
        request.body.clone()
    } else {
        request.body_for(&target.model)
    };
    // A non-streaming chat call is streamed from the upstream when the policy says so, so that
    // first_token and idle protect it too; the client still gets one JSON body.
    // Not when the body asks for what the assembler does not rebuild (log probabilities, audio).
    let assemble = !request.stream
        && request.endpoint == crate::Endpoint::Chat
        && ctx.route.policy.stream_upstream
        && memchr::memmem::find(&request.body, b"logprobs").is_none()
        && memchr::memmem::find(&request.body, b"\"audio\"").is_none();
    let body = if assemble {
        Bytes::from(crate::stream::assemble::streaming_body(&body).map_err(FailureKind::Malformed)?)
    } else {
        body
    };
    let mut redialed = false;
    let (mut connection, response) = loop {
        progress.phase = Phase::Connect;
        let connect = d.connect();
        let mut connection =
            match timeout_at(connect.at, engine.upstreams.connect(target.upstream)).await {
                Err(_) => return Err(FailureKind::Timeout(connect.limit)),
                Ok(connection) => connection?,
            };
        let connected = Instant::now();
        progress.timeline.connected = Some(connected);
        progress.timeline.reused = connection.reused;

        progress.phase = Phase::Write;
        let (http_request, mut written) =
            build(request, upstream, body.clone(), connection.is_h2())?;
        let result = {
            let send = connection.send(http_request);
            tokio::pin!(send);
            let write = d.write(connected);
            let early = tokio::select! {
                biased;
                result = &mut send => Some(result),
                _ = &mut written => None,
                _ = sleep_until(write.at) => return Err(FailureKind::Timeout(write.limit)),
            };
            let sent = Instant::now();
            progress.timeline.written = Some(sent);
            progress.phase = Phase::FirstByte;
            match early {
                Some(result) => result,
                None => {
                    let head = d.headers(sent, request.stream || assemble);
                    match timeout_at(head.at, &mut send).await {
                        Err(_) => return Err(FailureKind::Timeout(head.limit)),
                        Ok(result) => result,
                    }
                }
            }
        };
        match result {
            Ok(response) => break (connection, response),
            // A pooled connection the server had already closed: dial afresh, once, uncounted.
            Err(e)
                if connection.reused
                    && !redialed
                    && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
            {
                redialed = true;
            }
            Err(e) => return Err(hyper_failure(&e)),
        }
    };
    let headers_at = Instant::now();
    progress.timeline.headers = Some(headers_at);
    let status = response.status();
    progress.status = Some(status.as_u16());
    let (parts, mut body) = response.into_parts();

    if !status.is_success() {
        let retry_after = crate::retry::retry_after(&parts.headers);
        let body = read_capped(&mut connection, &mut body, MAX_ERROR_BODY, d.end.at).await;
        return Err(FailureKind::Status {
            status: status.as_u16(),
            retry_after,
            body,
        });
    }

    let event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut headers = response_headers(&parts.headers, &target.name);

    if (request.stream || assemble) && event_stream {
        progress.phase = Phase::FirstToken;
        let sent = progress.timeline.written.unwrap_or(headers_at);
        let mut scanner = Scanner::new();
        let mut held: Vec<Bytes> = Vec::new();
        let mut ended = false;
        let mut finished = !content::needs_finish_reason(request.endpoint);
        // A non-streaming client's answer is assembled from the whole stream before anything is
        // sent, so every failure up to its end can still be retried.
        let mut assembler = assemble.then(Assembler::new);
        let mut last_content: Option<Instant> = None;
        loop {
            let wait = match last_content {
                None => d.first_token(sent),
                Some(last) => d.idle(last),
            };
            let frame =
                match timeout_at(wait.at, drive(&mut connection.driver(), body.frame())).await {
                    Err(_) => return Err(FailureKind::Timeout(wait.limit)),
                    Ok(frame) => frame,
                };
            let data = match frame {
                None if ended => break,
                None => return Err(FailureKind::Cut),
                Some(Err(e)) => {
                    return Err(if ended {
                        FailureKind::Cut
                    } else {
                        body_failure(&e)
                    });
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let mut committed = false;
            let mut failure = None;
            scanner
                .push(&data, |event| {
                    let signal = content::classify(request.endpoint, event);
                    if let (
                        Some(assembler),
                        Signal::Nothing | Signal::Content | Signal::Finish { .. },
                    ) = (assembler.as_mut(), &signal)
                        && let Some(data) = event.data.as_deref()
                        && let Err(message) = assembler.push(data)
                    {
                        failure.get_or_insert(FailureKind::Malformed(message));
                    }
                    match signal {
                        Signal::Nothing => {}
                        Signal::Content => committed = true,
                        Signal::Finish { content } => {
                            committed |= content;
                            finished = true;
                        }
                        Signal::End if finished => ended = true,
                        Signal::End => {
                            failure.get_or_insert(FailureKind::Truncated);
                        }
                        Signal::UpstreamError(message) => {
                            failure.get_or_insert(FailureKind::Status {
                                status: 500,
                                retry_after: None,
                                body: Bytes::from(message),
                            });
                        }
                        Signal::Malformed(message) => {
                            failure.get_or_insert(FailureKind::Malformed(message));
                        }
                    }
                })
                .map_err(FailureKind::Malformed)?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            if committed {
                let now = Instant::now();
                if last_content.is_none() {
                    progress.timeline.first_token = Some(now);
                    progress.phase = Phase::Body;
                }
                last_content = Some(now);
            }
            if !assemble {
                held.push(data);
            }
            if ended || (committed && !assemble) {
                break;
            }
        }
        if let Some(assembler) = assembler {
            progress.phase = Phase::Done;
            engine.upstreams.release(connection);
            let whole = Bytes::from(
                serde_json::to_vec(&assembler.finish()).expect("a json value serializes"),
            );
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(
                "server-timing",
                header_value(&progress.timeline.server_timing()),
            );
            return Ok(Response {
                status,
                headers,
                body: ResponseBody::Full(whole),
                trail: Vec::new(),
                timeline: None,
            });
        }
        progress
            .timeline
            .first_token
            .get_or_insert_with(Instant::now);
        progress.phase = Phase::Body;
        headers.insert(
            "server-timing",
            header_value(&progress.timeline.server_timing()),
        );
        let describer = Describer::new(ctx);
        // The stream's health verdict comes at its end: the lease goes with it.
        if let (Some(lease), Some(written), Some(first)) = (
            lease.as_ref(),
            progress.timeline.written,
            progress.timeline.first_token,
        ) {
            lease.first_token(first.saturating_duration_since(written));
        }
        let stream = commit::Handover {
            model: ctx.route.name.clone(),
            lease: lease.take(),
            engine: engine.clone(),
            connection,
            body,
            scanner,
            held,
            deadlines: *d,
            endpoint: request.endpoint,
            ended,
            finish_seen: finished,
            upstream: target.clone(),
            describer,
        };
        return Ok(Response {
            status,
            headers,
            body: ResponseBody::Stream(Box::new(commit::CommittedStream::new(stream))),
            trail: Vec::new(),
            timeline: None,
        });
    }

    progress.phase = Phase::Body;
    let mut whole = BytesMut::new();
    let mut last = Instant::now();
    loop {
        let idle = d.idle(last);
        let frame = match timeout_at(idle.at, drive(&mut connection.driver(), body.frame())).await {
            Err(_) => return Err(FailureKind::Timeout(idle.limit)),
            Ok(frame) => frame,
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(body_failure(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if whole.len() + data.len() > MAX_WHOLE_BODY {
                        return Err(FailureKind::Malformed(format!(
                            "the response is larger than {} MiB",
                            MAX_WHOLE_BODY >> 20
                        )));
                    }
                    whole.extend_from_slice(&data);
                    last = Instant::now();
                }
            }
        }
    }
    let whole = whole.freeze();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&whole) {
        return Err(FailureKind::Malformed(format!(
            "the response body is not valid JSON: {e}"
        )));
    }
    progress.phase = Phase::Done;
    engine.upstreams.release(connection);
    headers.insert(
        "server-timing",
        header_value(&progress.timeline.server_timing()),
    );
    Ok(Response {
        status,
        headers,
        body: ResponseBody::Full(whole),
        trail: Vec::new(),
        timeline: None,
    })
}

/// Whether `name` is listed in the message's `Connection` header: such headers are hop-by-hop
/// by declaration (RFC 9110 §7.6.1) and stop at the gateway.
fn named_by_connection(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(name))
}

/// Headers a client sends that are not passed upstream.
fn dropped_request_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "accept-encoding"
            | "expect"
    ) || name.starts_with("x-hourglass-")
}

/// The upstream request for `request`: the path under the base URL, the client's headers less
/// hop-by-hop ones, the upstream's own headers and key.
pub(crate) fn build(
    request: &CallRequest,
    upstream: &Upstream,
    body: Bytes,
    h2: bool,
) -> Result<
    (
        http::Request<RequestBody>,
        tokio::sync::oneshot::Receiver<()>,
    ),
    FailureKind,
> {
    let prefix = upstream.base_url.path().trim_end_matches('/');
    // HTTP/2 carries the scheme and authority as pseudo-headers: it needs the absolute URI.
    let uri = match (
        h2,
        upstream.base_url.scheme_str(),
        upstream.base_url.authority(),
    ) {
        (true, Some(scheme), Some(authority)) => {
            format!("{scheme}://{authority}{prefix}{}", request.path)
        }
        _ => format!("{prefix}{}", request.path),
    };
    let (body, written) = RequestBody::new(body);
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(uri);
    let headers = builder.headers_mut().expect("a fresh builder has headers");
    for (name, value) in &request.headers {
        if dropped_request_header(name.as_str())
            || named_by_connection(&request.headers, name.as_str())
            || (upstream.api_key.is_some() && name == header::AUTHORIZATION)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(authority) = upstream.base_url.authority()
        && !h2
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(key) = &upstream.api_key {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                FailureKind::Malformed("the API key is not a valid header value".to_owned())
            })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let request = builder
        .body(body)
        .map_err(|e| FailureKind::Malformed(format!("cannot build the upstream request: {e}")))?;
    Ok((request, written))
}

/// The upstream's headers as sent to the client, less hop-by-hop ones, plus `x-hourglass-upstream`.
fn response_headers(upstream: &HeaderMap, name: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 3);
    for (key, value) in upstream {
        if matches!(
            key.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "trailer"
                | "upgrade"
                | "proxy-connection"
                | "proxy-authenticate"
        ) || named_by_connection(upstream, key.as_str())
        {
            continue;
        }
        headers.append(key.clone(), value.clone());
    }
    headers.insert("x-hourglass-upstream", header_value(name));
    headers
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

async fn read_capped(
    connection: &mut Connection,
    body: &mut hyper::body::Incoming,
    cap: usize,
    until: Instant,
) -> Bytes {
    let mut out = BytesMut::new();
    while out.len() < cap {
        match timeout_at(until, drive(&mut connection.driver(), body.frame())).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data[..data.len().min(cap - out.len())]);
                }
            }
            _ => break,
        }
    }
    out.freeze()
}

fn hyper_failure(error: &hyper::Error) -> FailureKind {
    if error.is_parse() || error.is_parse_status() {
        FailureKind::Malformed(format!("the response is not valid HTTP: {error}"))
    } else {
        FailureKind::Closed(source_text(error))
    }
}

fn body_failure(error: &hyper::Error) -> FailureKind {
    if error.is_parse() {
        FailureKind::Malformed(source_text(error))
    } else {
        FailureKind::Cut
    }
}

fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
