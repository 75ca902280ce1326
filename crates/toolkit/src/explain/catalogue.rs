//! The catalogue: error texts of every common layer between a program and an AI API, each with the
//! class and phase it means, the cause it points at and the fix in that layer's own terms, and real
//! examples that the tests classify. The first pattern that matches wins, so the table runs from
//! the most specific (hourglass's own codes, wrappers that quote other errors, DNS inside a dial
//! error) to the most generic (a bare "timed out").

use super::class::Class;

/// Where in a call the failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before anything was sent (a client-side check).
    BeforeSend,
    /// Resolving the host name.
    Dns,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Waiting for a connection from the client's pool.
    Pool,
    /// Sending the request.
    Write,
    /// Waiting for the response headers.
    FirstByte,
    /// Waiting for the first token of a stream.
    FirstToken,
    /// Reading the body or the stream.
    Stream,
    /// A response (an error status) arrived.
    Response,
    /// Any phase: an overall clock.
    Any,
}

impl Phase {
    /// Every phase, in the order a call meets them.
    pub const ALL: [Phase; 11] = [
        Phase::BeforeSend,
        Phase::Dns,
        Phase::Connect,
        Phase::Tls,
        Phase::Pool,
        Phase::Write,
        Phase::FirstByte,
        Phase::FirstToken,
        Phase::Stream,
        Phase::Response,
        Phase::Any,
    ];

    /// The phase's name, as `--json` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::BeforeSend => "before_send",
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Pool => "pool",
            Phase::Write => "write",
            Phase::FirstByte => "first_byte",
            Phase::FirstToken => "first_token",
            Phase::Stream => "stream",
            Phase::Response => "response",
            Phase::Any => "any",
        }
    }
}

/// One known error text.
#[derive(Debug)]
pub struct Pattern {
    /// A stable name: `layer.what`.
    pub id: &'static str,
    /// Who prints it.
    pub layer: &'static str,
    /// What it means.
    pub class: Class,
    /// Where the call was.
    pub phase: Phase,
    /// The regular expression (case-insensitive unless it says otherwise).
    pub regex: &'static str,
    /// The most likely cause, specific to this message.
    pub cause: &'static str,
    /// The fix, in this layer's own terms.
    pub fix: &'static str,
    /// Real messages it must match (the tests check each).
    pub examples: &'static [&'static str],
    /// Whether this pattern wraps other errors: a message it matches is searched again for the
    /// wrapped cause.
    pub wraps: bool,
}

macro_rules! p {
    ($id:literal, $layer:literal, $class:ident, $phase:ident, $regex:literal,
     $cause:literal, $fix:literal, [$($example:literal),+ $(,)?]) => {
        Pattern {
            id: $id,
            layer: $layer,
            class: Class::$class,
            phase: Phase::$phase,
            regex: $regex,
            cause: $cause,
            fix: $fix,
            examples: &[$($example),+],
            wraps: false,
        }
    };
    (wraps $id:literal, $layer:literal, $class:ident, $phase:ident, $regex:literal,
     $cause:literal, $fix:literal, [$($example:literal),+ $(,)?]) => {
        Pattern {
            id: $id,
            layer: $layer,
            class: Class::$class,
            phase: Phase::$phase,
            regex: $regex,
            cause: $cause,
            fix: $fix,
            examples: &[$($example),+],
            wraps: true,
        }
    };
}

/// Every pattern, most specific first.
pub static PATTERNS: &[Pattern] = &[
    // ---- hourglass's own error codes (docs/errors.md) ------------------------------------------
    p!(
        "hourglass.dns_failure",
        "hourglass",
        Dns,
        Dns,
        r#"(?-i)\bdns_failure\b"#,
        "the upstream's host name in base_url does not resolve from the gateway",
        "fix `upstreams.NAME.base_url` or the gateway host's DNS",
        [
            r#"{"error":{"code":"dns_failure","message":"upstream `east`: api.nowhere.invalid: failed to lookup address"}}"#
        ]
    ),
    p!(
        "hourglass.connect_refused",
        "hourglass",
        ConnRefused,
        Connect,
        r#"\bconnect_refused\b|\bconnect_failed\b"#,
        "nothing listens at the upstream's address, or it is unreachable from the gateway",
        "check `upstreams.NAME.base_url`; list a second upstream in the model's targets so calls fail over",
        [
            r#""code": "connect_refused""#,
            "connect_failed: 10.0.0.9:443: No route to host"
        ]
    ),
    p!(
        "hourglass.connect_timeout",
        "hourglass",
        TcpConnectTimeout,
        Connect,
        r#"\bconnect_timeout\b"#,
        "the upstream did not complete the TCP/TLS handshake within timeouts.connect",
        "keep `timeouts.connect` short (the default is 5 s) and add a fallback upstream",
        [r#"{"error":{"code":"connect_timeout","type":"timeout_error"}}"#]
    ),
    p!(
        "hourglass.tls_failure",
        "hourglass",
        TlsError,
        Tls,
        r#"\btls_failure\b"#,
        "the TLS handshake with the upstream failed",
        "check the upstream's scheme and port; run `hourglass diagnose` on its base_url",
        [r#""code":"tls_failure""#]
    ),
    p!(
        "hourglass.write_timeout",
        "hourglass",
        WriteTimeout,
        Write,
        r#""code"\s*:\s*"write_timeout"|hourglass[^\n]*\bwrite_timeout\b|timeouts\.write\b"#,
        "the request body was not taken by the upstream within timeouts.write",
        "raise `timeouts.write` for large uploads",
        [r#"{"error":{"code":"write_timeout"}}"#]
    ),
    p!(
        "hourglass.first_byte_timeout",
        "hourglass",
        FirstByteTimeout,
        FirstByte,
        r#""code"\s*:\s*"first_byte_timeout"|timeouts\.first_byte\b"#,
        "the upstream sent no response headers within timeouts.first_byte",
        "turn on `stream_upstream` for chat models so first_token guards the wait, or raise `timeouts.first_byte` to the model's p99 (`hourglass tune`)",
        [r#"{"error":{"code":"first_byte_timeout","type":"timeout_error"}}"#]
    ),
    p!(
        "hourglass.first_token_timeout",
        "hourglass",
        FirstByteTimeout,
        FirstToken,
        r#"\bfirst_token_timeout\b|timeouts\.first_token\b"#,
        "the upstream answered but produced no content within timeouts.first_token",
        "for reasoning models raise `timeouts.first_token` (or set `family = \"reasoning\"`); heartbeats keep proxies from cutting the wait",
        [
            r#"{"error":{"message":"no content within timeouts.first_token (20s)","code":"first_token_timeout"}}"#
        ]
    ),
    p!(
        "hourglass.idle_timeout",
        "hourglass",
        IdleStreamStall,
        Stream,
        r#"\bidle_timeout\b|timeouts\.idle\b"#,
        "the stream stalled between tokens for longer than timeouts.idle",
        "nothing to raise unless the model pauses legitimately: hourglass retried or failed over before commit",
        [r#"event: error\ndata: {"error":{"code":"idle_timeout"}}"#]
    ),
    p!(
        "hourglass.deadline",
        "hourglass",
        TotalDeadline,
        Any,
        r#"(?-i)\battempt_timeout\b|\bdeadline_exceeded\b|timeouts\.(total|attempt)\b"#,
        "the call's total (or one attempt's) time ran out",
        "raise `timeouts.total` / `timeouts.attempt`, or send a longer `x-hourglass-timeout`",
        [
            r#"{"error":{"code":"deadline_exceeded"}}"#,
            "attempt_timeout after 60s"
        ]
    ),
    p!(
        "hourglass.upstream_closed",
        "hourglass",
        PeerClosed,
        FirstByte,
        r#"\bupstream_closed\b|\bupstream_cut\b|\bupstream_truncated\b"#,
        "the upstream closed the connection before the response was complete",
        "hourglass retries this before commit; after commit the client sees an SSE error event: retry the call",
        [
            r#""code":"upstream_closed""#,
            r#""code":"upstream_cut""#,
            r#""code":"upstream_truncated""#
        ]
    ),
    p!(
        "hourglass.rate_limited",
        "hourglass",
        Upstream429,
        Response,
        r#""code"\s*:\s*"rate_limited"|\bretry_budget_exhausted\b"#,
        "the upstream rate-limited the call (or hourglass's retry budget is spent)",
        "add upstreams or keys to the model's targets; see `retry_budget` in docs/config.md",
        [
            r#"{"error":{"code":"rate_limited"}}"#,
            "retry_budget_exhausted"
        ]
    ),
    p!(
        "hourglass.upstream_status",
        "hourglass",
        Upstream5xx,
        Response,
        r#""code"\s*:\s*"(upstream_status|upstream_malformed)""#,
        "the upstream answered with an error status or an unparseable body",
        "read `upstream_error` in the error body; a proxy's HTML page means a middlebox answered",
        [r#"{"error":{"code":"upstream_status"}}"#]
    ),
    p!(
        "hourglass.request_timeout",
        "hourglass",
        WriteTimeout,
        Write,
        r#""code"\s*:\s*"request_timeout"[\s\S]*"hourglass"|"hourglass"[\s\S]*"code"\s*:\s*"request_timeout""#,
        "the client sent its request body to the gateway too slowly (server.body_read_timeout)",
        "send the body at once (a stalled upload, a slow link or a slowloris); raise `server.body_read_timeout` only for huge uploads on slow links",
        [
            r#"{"error":{"code":"request_timeout","message":"the request body did not arrive within 30s (server.body_read_timeout)","hourglass":{"attempts":[]}}}"#
        ]
    ),
    p!(
        "hourglass.refused",
        "hourglass",
        ClientError,
        BeforeSend,
        r#""code"\s*:\s*"(no_route|bad_request|request_too_large|headers_too_large|not_found|unauthorized|invalid_api_key|bad_config)"[\s\S]*"hourglass"|"hourglass"[\s\S]*"code"\s*:\s*"(no_route|bad_request|request_too_large|headers_too_large|not_found|unauthorized|invalid_api_key|bad_config)""#,
        "the gateway refused the request before calling any upstream: its message says what is wrong",
        "fix what the message names: the model (`no_route`, see `GET /v1/models`), the body or a header (`bad_request`), the size (`request_too_large`), the path (`not_found`: base_url must end in /v1), the client or admin key (`invalid_api_key`, `unauthorized`), or the configuration file (`bad_config`: `hourglass config check FILE`)",
        [
            r#"{"error":{"code":"no_route","message":"no upstream serves model `gpt-9`","hourglass":{"attempts":[]}}}"#,
            r#"{"error":{"code":"invalid_api_key","hourglass":{"diagnosis":"the gateway has client keys"}}}"#,
            r#"{"error":{"hourglass":{"attempts":[]},"code":"bad_config"}}"#
        ]
    ),
    p!(
        "hourglass.too_many_connections",
        "hourglass",
        Upstream429,
        BeforeSend,
        r#""code"\s*:\s*"too_many_connections""#,
        "the gateway already holds server.max_connections client connections: a flood, or a limit too small for the load",
        "retry after a moment (the answer says Retry-After: 1); raise `server.max_connections` and the open-file limit if the load is real",
        [
            r#"{"error":{"code":"too_many_connections","message":"the gateway holds 16384 client connections already"}}"#
        ]
    ),
    p!(
        "hourglass.gateway_shutdown",
        "hourglass",
        PeerClosed,
        Any,
        r#""code"\s*:\s*"gateway_shutdown""#,
        "the gateway was stopping (a deploy or restart) and its shutdown grace period ran out before the answer ended",
        "retry the call; raise `server.shutdown_grace` above your longest calls, or drain the instance from the load balancer before stopping it",
        [
            r#"data: {"error":{"code":"gateway_shutdown","message":"the gateway stopped before the answer ended"}}"#
        ]
    ),
    p!(
        "hourglass.gateway_restarted",
        "hourglass",
        PeerClosed,
        Any,
        r#""code"\s*:\s*"gateway_restarted""#,
        "the gateway stopped (a crash or a restart) after this background job's answer had begun; the job ended rather than splicing a second answer onto the first",
        "submit the job again; run the gateway under a supervisor and drain it before deploys so running jobs finish within `server.shutdown_grace`",
        [
            r#"{"error":{"code":"gateway_restarted","message":"the gateway stopped after 12 event(s) of this job's answer were stored"}}"#
        ]
    ),
    p!(
        "hourglass.jobs",
        "hourglass",
        ClientError,
        BeforeSend,
        r#""code"\s*:\s*"(job_not_found|job_cancelled)""#,
        "a background job's id is unknown to this key (mistyped, another key's, or past `jobs.retention`), or the job was cancelled before it ended",
        "check the id and the key that made the job; results are kept for `jobs.retention` (default a day); a cancelled job has no answer: submit it again",
        [
            r#"{"error":{"code":"job_not_found","message":"no background job or response `job_1` belongs to this key"}}"#,
            r#"{"error":{"code":"job_cancelled"}}"#
        ]
    ),
    p!(
        "hourglass.too_many_jobs",
        "hourglass",
        Upstream429,
        BeforeSend,
        r#""code"\s*:\s*"too_many_jobs""#,
        "the gateway's queue of background jobs is full (`jobs.max_queued`), or its store is past `jobs.max_store_size`",
        "retry after Retry-After; raise `jobs.max_queued` / `jobs.max_running` if the upstreams can take more",
        [
            r#"{"error":{"code":"too_many_jobs","message":"1000 background jobs are waiting already"}}"#
        ]
    ),
    p!(
        "hourglass.client_rate_limited",
        "hourglass",
        Upstream429,
        BeforeSend,
        r#""code"\s*:\s*"client_rate_limited""#,
        "the gateway refused the call: the client's key is past one of its `[client_limits]` (requests or tokens per minute, or calls at once)",
        "wait for Retry-After (the `x-hourglass-limit` header names the limit), spread the calls over time, or raise `client_limits.*` for this gateway",
        [
            r#"{"error":{"code":"client_rate_limited","message":"this key started 600 requests in the last minute (client_limits.requests_per_minute = 600)"}}"#
        ]
    ),
    p!(
        "hourglass.jobs_unavailable",
        "hourglass",
        Upstream5xx,
        BeforeSend,
        r#""code"\s*:\s*"jobs_unavailable""#,
        "the gateway's store of background jobs cannot be opened or written",
        "check `jobs.data_dir` (permissions, free disk, another gateway holding jobs.redb); synchronous calls are unaffected",
        [
            r#"{"error":{"code":"jobs_unavailable","message":"the job store failed opening: Database already open"}}"#
        ]
    ),
    // ---- wrappers that quote another error ----------------------------------------------------
    p!(wraps "oneapi.do_request_failed", "one-api / new-api", Wrapper, Any,
       r#"do request failed|do_request_failed"#,
       "one-api's relay could not complete the request to the channel; the Go error after `do request failed:` is the cause",
       "read the quoted Go error; raise one-api's RELAY_TIMEOUT (seconds, 0 = none) if it is Client.Timeout",
       [r#"{"error":{"message":"do request failed: Post \"https://api.x.com/v1/chat/completions\": EOF","type":"one_api_error","code":"do_request_failed"}}"#]),
    p!(
        "oneapi.status_429",
        "one-api / new-api",
        Upstream429,
        Response,
        r#"bad_response_status_code[^\n]*"param"\s*:\s*"429""#,
        "the channel behind one-api answered 429",
        "add channels or keys; one-api's automatic channel disable may also be tripping",
        [r#"{"error":{"type":"upstream_error","code":"bad_response_status_code","param":"429"}}"#]
    ),
    p!(
        "oneapi.bad_status",
        "one-api / new-api",
        Upstream5xx,
        Response,
        r#"bad_response_status_code"#,
        "the channel behind one-api answered with an error status",
        "check the channel's status in the one-api console; the param field holds the status",
        [r#"{"error":{"type":"upstream_error","code":"bad_response_status_code","param":"502"}}"#]
    ),
    p!(
        "oneapi.saturated",
        "new-api",
        Upstream429,
        Response,
        r#"上游负载已饱和|负载已饱和"#,
        "new-api's channel group is saturated",
        "add channels to the group or lower concurrency",
        ["当前分组上游负载已饱和，请稍后再试"]
    ),
    p!(
        "oneapi.no_channel",
        "one-api / new-api",
        Wrapper,
        BeforeSend,
        r#"no available channel|无可用渠道|没有可用的渠道"#,
        "no enabled channel serves the model in the token's group (often after automatic disabling on errors)",
        "re-enable or add a channel for the model; look at why the channel was disabled",
        [
            "当前分组 default 下对于模型 gpt-4o 无可用渠道",
            "no available channel for model gpt-4o"
        ]
    ),
    p!(
        "litellm.timeout",
        "LiteLLM",
        TotalDeadline,
        Any,
        r#"litellm\.(exceptions\.)?Timeout|litellm\.Timeout"#,
        "LiteLLM's request timeout (600 s by default, `timeout` / `request_timeout`) fired",
        "set `timeout` per model in litellm's config (litellm_params.timeout) or `request_timeout` in router_settings",
        ["litellm.exceptions.Timeout: litellm.Timeout: APITimeoutError - Request timed out."]
    ),
    p!(
        "litellm.rate_limit",
        "LiteLLM",
        Upstream429,
        Response,
        r#"litellm\.(exceptions\.)?RateLimitError|No deployments available for selected model"#,
        "the provider rate-limited LiteLLM, or every deployment is cooling down after failures",
        "add deployments; tune `allowed_fails` and `cooldown_time` in router_settings",
        [
            "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached",
            "No deployments available for selected model, Try again in 60 seconds"
        ]
    ),
    p!(
        "litellm.server_error",
        "LiteLLM",
        Upstream5xx,
        Response,
        r#"litellm\.(exceptions\.)?(InternalServerError|ServiceUnavailableError|BadGatewayError)"#,
        "the provider behind LiteLLM answered with a server error",
        "configure fallbacks in router_settings",
        ["litellm.ServiceUnavailableError: OpenAIException - Service Unavailable"]
    ),
    p!(wraps "litellm.connection", "LiteLLM", Wrapper, Any,
       r#"litellm\.(exceptions\.)?APIConnectionError"#,
       "LiteLLM could not reach the provider; the provider exception follows in the message",
       "read the provider exception text after the dash and explain that",
       ["litellm.APIConnectionError: APIConnectionError: OpenAIException - Connection error."]),
    // ---- the SDKs of OpenAI and Anthropic (Python and Node) -----------------------------------
    p!(
        "anthropic.streaming_required",
        "Anthropic SDK",
        TotalDeadline,
        BeforeSend,
        r#"Streaming is required for operations that may take longer than 10 minutes"#,
        "the SDK estimates from max_tokens that a non-streaming call could exceed its 10-minute limit and refuses to send it",
        "use `client.messages.stream(...)` (or `stream=True`), or pass an explicit `timeout=` to the call",
        ["Streaming is required for operations that may take longer than 10 minutes."]
    ),
    // Claude Code prints its API failures as `API Error: …`, and counts its own retries (10).
    p!(
        "claude_code.timeout",
        "Claude Code",
        FirstByteTimeout,
        FirstByte,
        r#"API Error:?\s*\(?Request timed out|Request timed out\.?\)?\s*·?\s*Retrying in \d+ ?\w*.*attempt \d+/\d+"#,
        "Claude Code's timer (API_TIMEOUT_MS, 600 s by default) fired before the answer's first bytes; it retries up to 10 times, paying for each attempt",
        "stream through a gateway that fails over before the first token and keeps the stream alive with `ping`s (ANTHROPIC_BASE_URL=http://127.0.0.1:8787 with hourglass, docs/anthropic.md); raise API_TIMEOUT_MS only if the model itself is that slow",
        [
            "API Error: Request timed out.",
            "API Error (Request timed out.) · Retrying in 5 seconds… (attempt 3/10)"
        ]
    ),
    p!(wraps "claude_code.connection", "Claude Code", Wrapper, Any,
       r#"API Error:?\s*\(?Connection error"#,
       "Claude Code wraps any failure before a response (DNS, refused, TLS, reset, a proxy) in this message",
       "check ANTHROPIC_BASE_URL and any HTTPS_PROXY; run `hourglass diagnose` against the base URL",
       ["API Error: Connection error.", "API Error (Connection error.) · Retrying in 2 seconds… (attempt 1/10)"]),
    p!(
        "anthropic.sdk_timeout",
        "Anthropic SDK",
        FirstByteTimeout,
        FirstByte,
        r#"Request timed out or interrupted"#,
        "the Anthropic SDK's timeout (10 minutes by default, less for non-streamed calls with a large max_tokens) fired, or the connection dropped, before the answer came",
        "stream (`client.messages.stream(...)`), or pass `timeout=`; behind hourglass a stream fails over before its first token and is kept alive by `ping` events",
        [
            "anthropic.APITimeoutError: Request timed out or interrupted. This could be due to a network timeout, dropped connection, or request cancellation. See https://docs.anthropic.com/en/api/errors#long-requests for more details."
        ]
    ),
    p!(
        "anthropic.timeout_error",
        "Anthropic API",
        FirstByteTimeout,
        Response,
        r#"'type': 'timeout_error'|"type":\s*"timeout_error"\s*,\s*"message"|Error code: 504"#,
        "Anthropic's API (or a gateway in front of it) timed the request out before the answer was ready (HTTP 504 `timeout_error`)",
        "stream long requests (`stream=True`): a stream's first token comes long before a whole answer; retry once with backoff",
        [
            "anthropic.APIStatusError: Error code: 504 - {'type': 'error', 'error': {'type': 'timeout_error', 'message': 'Request timed out'}}"
        ]
    ),
    p!(
        "anthropic.api_error",
        "Anthropic API",
        Upstream5xx,
        Response,
        r#"'type': 'api_error'|"type":\s*"api_error""#,
        "Anthropic's API had an internal error (HTTP 500 `api_error`), or sent one as an `error` event in the middle of a stream",
        "retry with backoff (the SDK's `max_retries`); a stream that failed mid-answer must be asked again",
        [
            "anthropic.InternalServerError: Error code: 500 - {'type': 'error', 'error': {'type': 'api_error', 'message': 'Internal server error'}}"
        ]
    ),
    p!(
        "openai_node.headers_timeout",
        "OpenAI Node SDK (fetch/undici)",
        FirstByteTimeout,
        FirstByte,
        r#"fetch timed out waiting for response headers"#,
        "Node's fetch (undici) gave up waiting for headers at its own 300 s headersTimeout, below the SDK's timeout",
        "pass `fetchOptions: { dispatcher: new Agent({ headersTimeout: 0, bodyTimeout: 0 }) }` (undici) and let the SDK's `timeout` govern",
        ["Request timed out. Node.js fetch timed out waiting for response headers"]
    ),
    p!(
        "openai.timeout",
        "OpenAI / Anthropic SDK",
        FirstByteTimeout,
        FirstByte,
        r#"APITimeoutError|^\W*Request timed out\.?\W*$"#,
        "the SDK's timeout (600 s by default; httpx read timeout in Python) fired, usually waiting for a non-streamed answer",
        "Python: `OpenAI(timeout=httpx.Timeout(120, connect=5))` or `stream=True`; Node: `new OpenAI({ timeout: 120_000 })`; `max_retries` retries it",
        [
            "openai.APITimeoutError: Request timed out.",
            "Request timed out."
        ]
    ),
    p!(wraps "openai.connection_error", "OpenAI / Anthropic SDK", Wrapper, Any,
       r#"APIConnectionError|^\W*Connection error\.?\W*$"#,
       "the SDK wraps any failure before a response (DNS, refused, TLS, reset) in this message",
       "Python: print `e.__cause__` (the httpx error); Node: print `err.cause` (the fetch/undici error)",
       ["openai.APIConnectionError: Connection error.", "Connection error."]),
    p!(
        "openai.aborted",
        "OpenAI / Anthropic SDK",
        ClientCancel,
        Any,
        r#"APIUserAbortError|Request was aborted"#,
        "the caller aborted the request (AbortSignal or task cancellation)",
        "check which AbortController or timeout aborted it",
        [
            "Request was aborted.",
            "APIUserAbortError: Request was aborted."
        ]
    ),
    p!(
        "openai.stream_error",
        "OpenAI / Anthropic SDK",
        Upstream5xx,
        Stream,
        r#"An error occurred during streaming"#,
        "the API sent an error event in the middle of a stream",
        "retry the call; the partial answer cannot be resumed",
        ["An error occurred during streaming"]
    ),
    p!(
        "api.client_error",
        "OpenAI / Anthropic / OpenAI-compatible API",
        ClientError,
        Response,
        r#"BadRequestError|AuthenticationError|PermissionDeniedError|NotFoundError|UnprocessableEntityError|ConflictError|invalid_request_error|authentication_error|permission_error|not_found_error|context_length_exceeded|maximum context length|model_not_found|does not exist or you do not have access|Incorrect API key|invalid x-api-key|\b(?:Error code|status(?: code)?):?\s*4(?:0[0-7]|1[0-7]|2[0-8]|3\d)\b"#,
        "the API refused the request as it is: a bad parameter, too long a prompt, an unknown model, a missing or wrong key",
        "fix the request (the message names the field); retrying the same request cannot help, and a gateway must not fail it over",
        [
            "openai.BadRequestError: Error code: 400 - {'error': {'message': 'Invalid value for temperature', 'type': 'invalid_request_error'}}",
            "anthropic.AuthenticationError: Error code: 401 - {'type': 'error', 'error': {'type': 'authentication_error', 'message': 'invalid x-api-key'}}",
            "NotFoundError: 404 The model `gpt-5-turbo` does not exist or you do not have access to it."
        ]
    ),
    p!(
        "openai.quota",
        "OpenAI API",
        Upstream429,
        Response,
        r#"insufficient_quota|exceeded your current quota"#,
        "the account's credit or monthly quota is used up: retrying cannot help",
        "add credit or raise the usage limit; do not retry this 429",
        [
            "Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and billing details.', 'type': 'insufficient_quota'}}"
        ]
    ),
    p!(
        "openai.rate_limit",
        "OpenAI / Anthropic API",
        Upstream429,
        Response,
        r#"RateLimitError|Rate limit reached for|rate_limit_exceeded|rate_limit_error|Error code: 429"#,
        "requests or tokens per minute exceed the account's tier",
        "Python/Node SDK: `max_retries` honours Retry-After; lower concurrency or request a higher tier",
        [
            "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM)'}}"
        ]
    ),
    p!(
        "anthropic.overloaded",
        "Anthropic API",
        Upstream5xx,
        Response,
        r#"overloaded_error|Error code: 529"#,
        "Anthropic's API is overloaded (HTTP 529)",
        "retry with backoff (the SDK's `max_retries`), or fail over to another region/provider",
        [
            "anthropic.InternalServerError: Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}"
        ]
    ),
    p!(
        "openai.server_error",
        "OpenAI / Anthropic SDK",
        Upstream5xx,
        Response,
        r#"InternalServerError|Error code: 5(\d\d|NN)|The server had an error while processing your request|An error occurred while processing your request|currently overloaded with other requests"#,
        "the API answered 5xx",
        "the SDK retries 5xx `max_retries` times (2 by default); fail over for longer outages",
        [
            "openai.InternalServerError: Error code: 500 - {'error': {'message': 'The server had an error while processing your request. Sorry about that!'}}"
        ]
    ),
    // ---- Google Gemini / gRPC status words ------------------------------------------------------
    p!(
        "bedrock.server",
        "AWS Bedrock (boto3 / AWS SDKs)",
        Upstream5xx,
        Response,
        r#"ModelTimeoutException|ModelNotReadyException|ModelStreamErrorException|ServiceUnavailableException|InternalServerException"#,
        "Bedrock's model did not finish in its own time limit (ModelTimeoutException, HTTP 408), was not ready, or its service failed",
        "retry with backoff (boto3's `retries={'mode': 'adaptive'}`); for long answers use InvokeModelWithResponseStream so tokens flow, and raise `read_timeout` in botocore's Config above the model's time",
        [
            "botocore.errorfactory.ModelTimeoutException: An error occurred (ModelTimeoutException) when calling the InvokeModel operation: Model has timed out in processing the request."
        ]
    ),
    p!(
        "google.resource_exhausted",
        "Google Gemini API",
        Upstream429,
        Response,
        r#"RESOURCE_EXHAUSTED"#,
        "Gemini's per-minute quota is exhausted",
        "back off and retry; request a quota increase",
        ["429 RESOURCE_EXHAUSTED. {'error': {'code': 429, 'status': 'RESOURCE_EXHAUSTED'}}"]
    ),
    p!(
        "google.unavailable",
        "Google Gemini API",
        Upstream5xx,
        Response,
        r#"\b503 UNAVAILABLE\b|The model is overloaded"#,
        "Gemini's model is overloaded",
        "retry with backoff or fall back to another model",
        [
            "503 UNAVAILABLE. {'error': {'code': 503, 'message': 'The model is overloaded. Please try again later.'}}"
        ]
    ),
    p!(
        "grpc.deadline_exceeded",
        "gRPC / Google APIs",
        TotalDeadline,
        Any,
        r#"(?-i)DEADLINE_EXCEEDED|Deadline Exceeded"#,
        "the call's gRPC deadline passed (client-set or the API's own limit)",
        "raise the call's deadline/timeout (e.g. `request_options={\"timeout\": 600}`) or stream",
        [
            "504 Deadline Exceeded",
            "status = StatusCode.DEADLINE_EXCEEDED"
        ]
    ),
    // ---- DNS, from every layer ------------------------------------------------------------------
    p!(
        "go.dns",
        "Go net",
        Dns,
        Dns,
        r#"lookup \S+( on \S+)?: (no such host|server misbehaving|i/o timeout|read udp)|lookup \S+ on \S+: read udp"#,
        "Go's resolver could not resolve the host (no such host = NXDOMAIN; server misbehaving = SERVFAIL; i/o timeout = the resolver did not answer)",
        "check the name and the resolver in /etc/resolv.conf; GODEBUG=netdns=go+2 shows what Go asks",
        [
            "dial tcp: lookup api.x.com on 127.0.0.53:53: no such host",
            "dial tcp: lookup api.x.com on 10.0.0.2:53: read udp 10.0.0.5:41234->10.0.0.2:53: i/o timeout",
            "lookup api.x.com: server misbehaving"
        ]
    ),
    p!(
        "node.dns",
        "Node.js",
        Dns,
        Dns,
        r#"ENOTFOUND|EAI_AGAIN|getaddrinfo"#,
        "getaddrinfo failed: ENOTFOUND = no such name, EAI_AGAIN = the resolver timed out or is unreachable",
        "check the host name; in containers check DNS settings; Node: `dns.setDefaultResultOrder('ipv4first')` if IPv6 is broken",
        [
            "Error: getaddrinfo ENOTFOUND api.x.com",
            "getaddrinfo EAI_AGAIN api.openai.com"
        ]
    ),
    p!(
        "java.dns",
        "Java",
        Dns,
        Dns,
        r#"UnknownHostException"#,
        "the JVM could not resolve the host",
        "check the host name; the JVM caches failed lookups for 10 s (networkaddress.cache.negative.ttl)",
        ["java.net.UnknownHostException: api.x.com: Name or service not known"]
    ),
    p!(
        "rust.dns",
        "Rust (reqwest / hyper-util)",
        Dns,
        Dns,
        r#"dns error|failed to lookup address information"#,
        "the resolver could not resolve the host",
        "check the host name and the machine's DNS",
        [
            "error sending request for url (https://api.x.com/v1/chat/completions): error trying to connect: dns error: failed to lookup address information: Name or service not known"
        ]
    ),
    p!(
        "python.dns",
        "Python (socket / httpx / requests / aiohttp)",
        Dns,
        Dns,
        r#"Name or service not known|Temporary failure in name resolution|nodename nor servname provided|NameResolutionError|Failed to resolve|ClientConnectorDNSError|\[Errno -[235]\]|getaddrinfo failed|\[Errno 11001\]|DNS resolution failed|dns lookup failed"#,
        "the resolver could not resolve the host (Errno -2 = no such name, -3 = temporary failure)",
        "check the base URL's host and the machine's DNS; httpx/requests honour HTTPS_PROXY, which changes who resolves",
        [
            "httpx.ConnectError: [Errno -2] Name or service not known",
            "(Caused by NameResolutionError(\"<urllib3.connection.HTTPSConnection object>: Failed to resolve 'api.x.com' ([Errno -3] Temporary failure in name resolution)\"))",
            "ClientConnectorDNSError: Cannot connect to host api.x.com:443 ssl:default [Name or service not known]"
        ]
    ),
    p!(
        "curl.dns",
        "curl",
        Dns,
        Dns,
        r#"curl: \(6\)|Could not resolve host|Couldn't resolve host|curl: \(5\)|Could not resolve proxy|Resolving timed out"#,
        "curl could not resolve the host (or the proxy)",
        "check the name; `curl --resolve host:443:IP` tests around DNS",
        [
            "curl: (6) Could not resolve host: api.x.com",
            "curl: (28) Resolving timed out after 5000 milliseconds"
        ]
    ),
    p!(
        "dotnet.dns",
        ".NET",
        Dns,
        Dns,
        r#"No such host is known|Name does not resolve"#,
        "the resolver could not resolve the host",
        "check the host name and DNS",
        ["System.Net.Http.HttpRequestException: No such host is known. (api.x.com:443)"]
    ),
    p!(
        "nginx.resolve",
        "nginx",
        Dns,
        Dns,
        r#"could not be resolved \(\d+: "#,
        "nginx's `resolver` could not resolve the upstream name",
        "check nginx's `resolver` directive and `resolver_timeout`",
        ["api.x.com could not be resolved (3: Host not found)"]
    ),
    // ---- TLS -------------------------------------------------------------------------------------
    p!(
        "go.tls_timeout",
        "Go net/http",
        TlsTimeout,
        Tls,
        r#"TLS handshake timeout"#,
        "the TLS handshake did not finish within Transport.TLSHandshakeTimeout (10 s by default)",
        "check for a TLS-inspecting middlebox; raise `TLSHandshakeTimeout` only on slow links",
        ["net/http: TLS handshake timeout"]
    ),
    p!(
        "python.tls_timeout",
        "Python ssl (httpx / requests)",
        TlsTimeout,
        Tls,
        r#"handshake operation timed out|_ssl\.c:\d+: The (read|write) operation timed out"#,
        "the TLS handshake timed out (httpx counts it in `connect`, 5 s in the OpenAI SDK)",
        "raise `httpx.Timeout(connect=...)` if the link is slow; check for an intercepting proxy",
        ["_ssl.c:989: The handshake operation timed out"]
    ),
    p!(
        "curl.tls_timeout",
        "curl",
        TlsTimeout,
        Tls,
        r#"SSL connection timeout"#,
        "curl's --connect-timeout ran out during the TLS handshake",
        "raise `--connect-timeout` or check the path for TLS inspection",
        ["curl: (28) SSL connection timeout"]
    ),
    p!(
        "cloudflare.525",
        "Cloudflare",
        TlsError,
        Tls,
        r#"\b52[56]\b[^0-9]*(SSL handshake failed|Invalid SSL certificate)|SSL handshake failed|Invalid SSL certificate"#,
        "Cloudflare could not complete TLS to the origin (525) or the origin's certificate is invalid (526)",
        "fix the origin's certificate or the SSL mode in Cloudflare",
        [
            "Error 525: SSL handshake failed",
            "526 Invalid SSL certificate"
        ]
    ),
    p!(
        "tls.certificate",
        "any TLS client",
        TlsError,
        Tls,
        r#"CERTIFICATE_VERIFY_FAILED|certificate verify failed|x509:|tls: failed to verify certificate|SSL certificate problem|curl: \(60\)|PKIX path building failed|SSLHandshakeException|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_HAS_EXPIRED|ERR_TLS_CERT_ALTNAME_INVALID|invalid peer certificate|SSLCertVerificationError|ClientConnectorCertificateError|unable to verify the first certificate|unable to get (?:local )?issuer certificate|self[- ]signed certificate|certificate has expired|CERTIFICATE_VERIFICATION_ERROR|ERR_TLS_CERT\w*|does not match certificate's altnames|not in the cert's altnames"#,
        "the server's certificate is not trusted here: self-signed, expired, wrong name, or replaced by an intercepting proxy",
        "Python: `SSL_CERT_FILE`/`REQUESTS_CA_BUNDLE`; Node: `NODE_EXTRA_CA_CERTS`; Go/curl: the system store or `--cacert`; never disable verification in production",
        [
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)",
            "x509: certificate signed by unknown authority",
            "tls: failed to verify certificate: x509: certificate has expired or is not yet valid",
            "curl: (60) SSL certificate problem: self-signed certificate",
            "javax.net.ssl.SSLHandshakeException: PKIX path building failed",
            "Error: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE)",
            "invalid peer certificate: UnknownIssuer"
        ]
    ),
    p!(
        "tls.protocol",
        "any TLS client",
        TlsError,
        Tls,
        r#"wrong version number|SSLEOFError|EOF occurred in violation of protocol|SSL_ERROR_SYSCALL|curl: \(35\)|SSL connect error|Client network socket disconnected before secure TLS connection|SSL_do_handshake\(\) failed|The SSL connection could not be established|ClientConnectorSSLError|SSLError|ssl\.SSLError|tls handshake eof|handshake failure"#,
        "the TLS handshake broke: https to a plain-HTTP port, an intercepting proxy, or a server closing during the handshake",
        "check the URL's scheme and port; behind a corporate proxy set HTTPS_PROXY correctly",
        [
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
            "ssl.SSLEOFError: EOF occurred in violation of protocol (_ssl.c:2426)",
            "curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to api.x.com:443",
            "Client network socket disconnected before secure TLS connection was established"
        ]
    ),
    // ---- the client's own connection pool ---------------------------------------------------------
    p!(
        "httpx.pool_timeout",
        "httpx",
        PoolTimeout,
        Pool,
        r#"httpx\.PoolTimeout|\bPoolTimeout\b"#,
        "every connection in httpx's pool was busy for `Timeout.pool` seconds",
        "raise `httpx.Limits(max_connections=...)` on the client's `http_client`, or lower concurrency",
        ["httpx.PoolTimeout"]
    ),
    p!(
        "urllib3.pool_full",
        "urllib3 / requests",
        PoolTimeout,
        Pool,
        r#"EmptyPoolError|Pool reached maximum size|No pool connections are available"#,
        "urllib3's pool is full and `block=True` waited past its timeout",
        "raise `pool_maxsize` on the HTTPAdapter, or lower concurrency",
        [
            "urllib3.exceptions.EmptyPoolError: HTTPSConnectionPool(host='api.x.com', port=443): Pool reached maximum size and no more connections are allowed."
        ]
    ),
    p!(
        "apache.pool_timeout",
        "Apache HttpClient (Java)",
        PoolTimeout,
        Pool,
        r#"ConnectionPoolTimeoutException|Timeout waiting for connection from pool"#,
        "every pooled connection was leased for `connectionRequestTimeout`",
        "raise `setMaxConnPerRoute`/`setMaxConnTotal` (the default is 2 per route in 4.x)",
        [
            "org.apache.http.conn.ConnectionPoolTimeoutException: Timeout waiting for connection from pool"
        ]
    ),
    p!(
        "go.waiting_for_connection",
        "Go net/http",
        PoolTimeout,
        Pool,
        r#"request canceled while waiting for connection"#,
        "the deadline passed while Go waited for a connection: MaxConnsPerHost reached, or the dial itself was slow",
        "raise `Transport.MaxConnsPerHost` (0 = unlimited) or check dial times with `hourglass diagnose`",
        [
            "net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)"
        ]
    ),
    p!(
        "sqlalchemy.pool",
        "SQLAlchemy",
        PoolTimeout,
        Pool,
        r#"QueuePool limit of size \d+ overflow \d+ reached"#,
        "the application's database pool is exhausted (calls to the AI API hold connections too long)",
        "do not hold a database connection across an AI call; raise pool_size / max_overflow",
        ["QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"]
    ),
    // ---- connect timeouts -----------------------------------------------------------------------
    p!(
        "httpx.connect_timeout",
        "httpx (OpenAI Python SDK)",
        TcpConnectTimeout,
        Connect,
        r#"httpx\.ConnectTimeout|httpcore\.ConnectTimeout"#,
        "httpx's connect timeout (5 s in the OpenAI SDK) covers TCP and TLS",
        "`OpenAI(timeout=httpx.Timeout(600, connect=5))`: keep connect short and let `max_retries` try again",
        ["httpx.ConnectTimeout: timed out"]
    ),
    p!(
        "undici.connect_timeout",
        "Node.js (undici fetch)",
        TcpConnectTimeout,
        Connect,
        r#"UND_ERR_CONNECT_TIMEOUT|Connect Timeout Error"#,
        "undici's connect timeout (10 s by default) fired",
        "`new Agent({ connect: { timeout: 10_000 } })`; on dual-stack hosts set `autoSelectFamily: true`",
        [
            "ConnectTimeoutError: Connect Timeout Error (attempted address: api.x.com:443, timeout: 10000ms)"
        ]
    ),
    p!(
        "urllib3.connect_timeout",
        "urllib3 / requests",
        TcpConnectTimeout,
        Connect,
        r#"ConnectTimeoutError|requests\.exceptions\.ConnectTimeout|\(connect timeout=[\d.]+\)"#,
        "the TCP connect did not finish within requests' connect timeout",
        "`requests.post(..., timeout=(3.05, 600))`: the first number is connect",
        [
            "(Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object>, 'Connection to api.x.com timed out. (connect timeout=10)'))"
        ]
    ),
    p!(
        "aiohttp.connect_timeout",
        "aiohttp",
        TcpConnectTimeout,
        Connect,
        r#"ConnectionTimeoutError|Connection timeout to host"#,
        "aiohttp's `sock_connect` / `connect` timeout fired",
        "`aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)`",
        [
            "aiohttp.client_exceptions.ConnectionTimeoutError: Connection timeout to host https://api.x.com/v1/chat/completions"
        ]
    ),
    p!(
        "node.etimedout",
        "Node.js net",
        TcpConnectTimeout,
        Connect,
        r#"connect ETIMEDOUT|\bETIMEDOUT\b"#,
        "the OS gave up on the TCP handshake (SYNs unanswered)",
        "check firewalls/security groups for the address shown; set a short connect timeout",
        ["Error: connect ETIMEDOUT 203.0.113.7:443"]
    ),
    p!(
        "java.connect_timeout",
        "Java",
        TcpConnectTimeout,
        Connect,
        r#"connect timed out|HttpConnectTimeoutException|ConnectTimeoutException|ConnectException: Connection timed out"#,
        "the TCP connect did not finish within the client's connect timeout",
        "OkHttp: `.connectTimeout(5, SECONDS)`; JDK HttpClient: `.connectTimeout(Duration.ofSeconds(5))`",
        [
            "java.net.SocketTimeoutException: connect timed out",
            "java.net.http.HttpConnectTimeoutException: HTTP connect timed out"
        ]
    ),
    p!(
        "curl.connect_timeout",
        "curl",
        TcpConnectTimeout,
        Connect,
        r#"Connection timed out after \d+ milli|Connection timeout after \d+ ms|Failed to connect to [^\n]*Connection timed out"#,
        "curl's --connect-timeout ran out",
        "`curl --connect-timeout 5 --retry 2`",
        [
            "curl: (28) Connection timed out after 5001 milliseconds",
            "curl: (28) Failed to connect to api.x.com port 443 after 129000 ms: Connection timed out"
        ]
    ),
    p!(
        "go.dial_timeout",
        "Go net",
        TcpConnectTimeout,
        Connect,
        r#"dial tcp [^\n]*(i/o timeout|connection timed out)"#,
        "Go's dialer timed out (net.Dialer.Timeout, 30 s in DefaultTransport)",
        "set `net.Dialer{Timeout: 5 * time.Second}` on the Transport and retry",
        [
            "Post \"https://api.x.com/v1/chat/completions\": dial tcp 203.0.113.7:443: i/o timeout",
            "dial tcp 203.0.113.7:443: connect: connection timed out"
        ]
    ),
    p!(
        "windows.connect_timeout",
        "Windows sockets",
        TcpConnectTimeout,
        Connect,
        r#"WinError 10060|did not properly respond after a period of time"#,
        "the TCP handshake timed out (WSAETIMEDOUT)",
        "check the firewall and proxy settings for the address",
        [
            "[WinError 10060] A connection attempt failed because the connected party did not properly respond after a period of time"
        ]
    ),
    p!(
        "envoy.connect_timeout",
        "Envoy / Istio",
        TcpConnectTimeout,
        Connect,
        r#"reset reason: connection timeout"#,
        "Envoy could not connect to the upstream cluster within its connect_timeout",
        "check the upstream cluster's endpoints; Envoy's `connect_timeout` is per cluster",
        [
            "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
        ]
    ),
    p!(
        "python.errno110",
        "Python socket",
        TcpConnectTimeout,
        Connect,
        r#"\[Errno 110\] Connection timed out|ConnectTimeout"#,
        "the OS gave up on the TCP handshake",
        "set a short connect timeout and retry",
        ["TimeoutError: [Errno 110] Connection timed out"]
    ),
    // ---- refused or unreachable -----------------------------------------------------------------
    p!(
        "nginx.connect_failed",
        "nginx",
        ConnRefused,
        Connect,
        r#"connect\(\) failed \(111|no live upstreams"#,
        "nginx could not connect to its upstream (the client sees 502)",
        "start the upstream service, or fix `proxy_pass`; `max_fails`/`fail_timeout` govern 'no live upstreams'",
        [
            "connect() failed (111: Connection refused) while connecting to upstream",
            "no live upstreams while connecting to upstream"
        ]
    ),
    p!(
        "cloudflare.521",
        "Cloudflare",
        ConnRefused,
        Connect,
        r#"\b521\b[^0-9]*Web server is down|Error 521|\b523\b[^0-9]*Origin is unreachable"#,
        "Cloudflare could not connect to the origin (refused, 521) or reach it (523)",
        "check the origin is up and allows Cloudflare's IP ranges",
        ["Error 521: Web server is down", "523 Origin is unreachable"]
    ),
    p!(
        "envoy.reset",
        "Envoy / Istio",
        PeerClosed,
        FirstByte,
        r#"reset.reason:.(?:connection.termination|remote.reset|local.reset|protocol.error|overflow)|upstream_reset_before_response_started\{(?:connection_termination|remote_reset|local_reset|overflow)"#,
        "what is behind Envoy closed or reset the connection before it answered (a crash, an idle connection reused after the backend closed it)",
        "retry on a new connection; keep the backend's keep-alive timeout longer than Envoy's idle timeout",
        [
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        ]
    ),
    p!(
        "envoy.connection_failure",
        "Envoy / Istio",
        ConnRefused,
        Connect,
        r#"reset reason: (connection failure|remote connection failure)|no healthy upstream"#,
        "Envoy could not connect to any healthy upstream endpoint",
        "check the upstream cluster's endpoints and health checks",
        [
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            "no healthy upstream"
        ]
    ),
    p!(
        "aiohttp.connector",
        "aiohttp",
        ConnRefused,
        Connect,
        r#"ClientConnectorError|Cannot connect to host"#,
        "aiohttp could not open a connection (the OS error is in brackets)",
        "check the host and port in the bracketed OS error",
        [
            "ClientConnectorError: Cannot connect to host api.x.com:443 ssl:default [Connection refused]"
        ]
    ),
    p!(
        "curl.connect_failed",
        "curl",
        ConnRefused,
        Connect,
        r#"curl: \(7\)|Failed to connect to|Couldn't connect to server|Could not connect to server"#,
        "curl could not open the TCP connection (refused or unreachable)",
        "check the port and that the service is up",
        [
            "curl: (7) Failed to connect to api.x.com port 443 after 3 ms: Couldn't connect to server"
        ]
    ),
    p!(
        "os.refused",
        "any (OS)",
        ConnRefused,
        Connect,
        r#"ECONNREFUSED|Connection refused|connection refused|actively refused|WinError 10061|ConnectionRefusedError|\[Errno 111\]"#,
        "nothing listens at that address and port",
        "start the service or fix the port; a local proxy (127.0.0.1) in HTTPS_PROXY may be down",
        [
            "Error: connect ECONNREFUSED 127.0.0.1:8080",
            "java.net.ConnectException: Connection refused",
            "dial tcp 127.0.0.1:8080: connect: connection refused",
            "No connection could be made because the target machine actively refused it"
        ]
    ),
    p!(
        "bun.refused",
        "Bun (fetch)",
        ConnRefused,
        Connect,
        r#"Unable to connect\. Is the computer able to access the url"#,
        "Bun could not open a connection to the host (refused or unreachable)",
        "check the URL's host and port and that the service is up; behind a proxy, set HTTPS_PROXY",
        ["Unable to connect. Is the computer able to access the url?"]
    ),
    p!(
        "os.unreachable",
        "any (OS)",
        ConnRefused,
        Connect,
        r#"EHOSTUNREACH|ENETUNREACH|No route to host|Network is unreachable|network is unreachable"#,
        "no route to the host: a network without IPv6, a VPN, or a down interface",
        "check routes; prefer IPv4 if IPv6 is broken (Node: `dns.setDefaultResultOrder('ipv4first')`)",
        [
            "connect ENETUNREACH 2001:db8::1:443",
            "[Errno 113] No route to host"
        ]
    ),
    // ---- write ----------------------------------------------------------------------------------
    p!(
        "httpx.write_timeout",
        "httpx (OpenAI Python SDK)",
        WriteTimeout,
        Write,
        r#"WriteTimeout"#,
        "one chunk of the request body could not be written within httpx's write timeout",
        "`httpx.Timeout(600, write=60)` for large uploads",
        ["httpx.WriteTimeout"]
    ),
    p!(
        "go.write_timeout",
        "Go net",
        WriteTimeout,
        Write,
        r#"write tcp [^\n]*i/o timeout"#,
        "a write deadline passed while sending the request",
        "raise the write deadline or shrink the request",
        ["write tcp 10.0.0.5:51234->203.0.113.7:443: i/o timeout"]
    ),
    // ---- waiting for the response -----------------------------------------------------------------
    p!(
        "go.response_header_timeout",
        "Go net/http",
        FirstByteTimeout,
        FirstByte,
        r#"timeout awaiting response headers"#,
        "Transport.ResponseHeaderTimeout fired before the headers came",
        "raise `ResponseHeaderTimeout` above the model's generation time, or stream",
        ["net/http: timeout awaiting response headers"]
    ),
    p!(
        "go.client_timeout_headers",
        "Go net/http",
        TotalDeadline,
        FirstByte,
        r#"Client\.Timeout exceeded while awaiting headers"#,
        "http.Client.Timeout (the whole call) passed before the headers came",
        "raise `http.Client{Timeout: ...}` above the model's p99, or use a context deadline per call",
        [
            "net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ]
    ),
    p!(
        "go.client_timeout_body",
        "Go net/http",
        TotalDeadline,
        Stream,
        r#"Client\.Timeout (exceeded )?or context cancellation while reading body|Client\.Timeout exceeded while reading body"#,
        "http.Client.Timeout covers the body too: a long stream runs past it",
        "for streams set `Client.Timeout = 0` and guard with per-chunk idle deadlines instead",
        ["context deadline exceeded (Client.Timeout or context cancellation while reading body)"]
    ),
    p!(
        "undici.headers_timeout",
        "Node.js (undici fetch)",
        FirstByteTimeout,
        FirstByte,
        r#"UND_ERR_HEADERS_TIMEOUT|HeadersTimeoutError|Headers Timeout Error"#,
        "undici's headersTimeout (300 s by default) fired before the headers came",
        "`new Agent({ headersTimeout: 0 })` as the fetch dispatcher and rely on the SDK's timeout; or stream",
        [
            "HeadersTimeoutError: Headers Timeout Error",
            "code: 'UND_ERR_HEADERS_TIMEOUT'"
        ]
    ),
    p!(
        "undici.body_timeout",
        "Node.js (undici fetch)",
        IdleStreamStall,
        Stream,
        r#"UND_ERR_BODY_TIMEOUT|BodyTimeoutError|Body Timeout Error"#,
        "undici's bodyTimeout (300 s between body chunks) fired",
        "`new Agent({ bodyTimeout: 0 })` and an idle timer of your own, or heartbeats from the server",
        ["BodyTimeoutError: Body Timeout Error"]
    ),
    p!(
        "java.read_timeout",
        "Java",
        FirstByteTimeout,
        FirstByte,
        r#"SocketTimeoutException: Read timed out|HttpTimeoutException: request timed out|SocketTimeoutException: timeout"#,
        "the read timeout fired waiting for data (OkHttp `readTimeout`, 10 s by default)",
        "OkHttp: `.readTimeout(120, SECONDS)` or stream; JDK HttpClient: `HttpRequest.timeout(...)`",
        [
            "java.net.SocketTimeoutException: timeout",
            "java.net.SocketTimeoutException: Read timed out",
            "java.net.http.HttpTimeoutException: request timed out"
        ]
    ),
    p!(
        "requests.read_timeout",
        "urllib3 / requests",
        FirstByteTimeout,
        FirstByte,
        r#"Read timed out|ReadTimeoutError|requests\.exceptions\.ReadTimeout"#,
        "requests' read timeout fired (in practice: before the server sent the first byte)",
        "`requests.post(..., timeout=(5, 600))` — the second number is the read timeout; or `stream=True`",
        ["HTTPSConnectionPool(host='api.x.com', port=443): Read timed out. (read timeout=60)"]
    ),
    p!(
        "aiohttp.sock_read",
        "aiohttp",
        FirstByteTimeout,
        FirstByte,
        r#"Timeout on reading data from socket|SocketTimeoutError"#,
        "aiohttp's sock_read timeout fired (no data for that long)",
        "`aiohttp.ClientTimeout(sock_read=...)` above the model's silence",
        ["SocketTimeoutError: Timeout on reading data from socket"]
    ),
    p!(
        "aiohttp.total",
        "aiohttp / asyncio",
        TotalDeadline,
        Any,
        r#"asyncio\.TimeoutError|^\W*TimeoutError\(\)\W*$|ServerTimeoutError"#,
        "aiohttp's ClientTimeout.total (300 s by default) or an asyncio.wait_for expired",
        "`aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60))` for long calls",
        ["asyncio.TimeoutError", "TimeoutError()"]
    ),
    p!(
        "httpx.read_timeout",
        "httpx (OpenAI Python SDK)",
        FirstByteTimeout,
        FirstByte,
        r#"httpx\.ReadTimeout|httpcore\.ReadTimeout"#,
        "httpx's read timeout (between bytes) fired: before the headers for non-streaming calls",
        "`httpx.Timeout(120, connect=5)` on the client; stream long calls",
        ["httpx.ReadTimeout: timed out"]
    ),
    p!(
        "java.call_timeout",
        "OkHttp",
        TotalDeadline,
        Any,
        r#"InterruptedIOException: timeout"#,
        "OkHttp's callTimeout (the whole call) fired",
        "raise `.callTimeout(...)` above the model's p99 times the tries, or 0 for streams",
        ["java.io.InterruptedIOException: timeout"]
    ),
    p!(
        "curl.operation_timeout_nothing",
        "curl",
        FirstByteTimeout,
        FirstByte,
        r#"Operation timed out after \S+ milliseconds with 0 (bytes|out of)"#,
        "curl's --max-time passed before any byte of the response",
        "raise `--max-time`, or stream with `-N` and use `--speed-limit 1 --speed-time 60` as an idle timeout",
        ["curl: (28) Operation timed out after 30002 milliseconds with 0 bytes received"]
    ),
    p!(
        "curl.operation_timeout",
        "curl",
        TotalDeadline,
        Any,
        r#"curl: \(28\)|Operation timed out after"#,
        "curl's --max-time passed mid-response",
        "raise `--max-time` above the longest generation",
        [
            "curl: (28) Operation timed out after 60000 milliseconds with 1234 out of 5678 bytes received"
        ]
    ),
    p!(
        "dotnet.httpclient_timeout",
        ".NET HttpClient",
        TotalDeadline,
        Any,
        r#"HttpClient\.Timeout|TaskCanceledException: The request was canceled due to"#,
        "HttpClient.Timeout (100 s by default) passed",
        "set `HttpClient.Timeout` (or `Timeout.InfiniteTimeSpan` with a CancellationToken per call)",
        [
            "The request was canceled due to the configured HttpClient.Timeout of 100 seconds elapsing."
        ]
    ),
    p!(
        "node.abort_timeout",
        "Node.js (AbortSignal.timeout)",
        TotalDeadline,
        Any,
        r#"operation was aborted due to timeout|TimeoutError: signal timed out"#,
        "an `AbortSignal.timeout(ms)` fired",
        "raise the signal's milliseconds above the model's p99",
        ["TimeoutError: The operation was aborted due to timeout"]
    ),
    p!(
        "reqwest.body",
        "Rust (reqwest)",
        IdleStreamStall,
        Stream,
        r#"request or response body error|error decoding response body"#,
        "reading the response body failed: a read timeout between chunks or a closed connection",
        "reqwest: print the error's `source()`; `.read_timeout()` bounds each read",
        [
            "request or response body error: operation timed out",
            "error decoding response body"
        ]
    ),
    p!(
        "rust.timeout",
        "Rust (reqwest / hyper)",
        TotalDeadline,
        Any,
        r#"operation timed out|source: TimedOut\b"#,
        "reqwest's `timeout` (the whole request, body included) fired",
        "reqwest: `.timeout()` covers the whole call; use `.read_timeout()` for streams and `.connect_timeout()` for dialing",
        [
            "error sending request for url (https://api.x.com/v1/chat/completions): operation timed out"
        ]
    ),
    // ---- the stream ------------------------------------------------------------------------------
    // ---- the other side closed ------------------------------------------------------------------
    p!(
        "httpx.server_disconnected",
        "httpx / httpcore",
        PeerClosed,
        FirstByte,
        r#"Server disconnected without sending a response|RemoteProtocolError"#,
        "the server (or a proxy) closed the connection after the request was sent, before any response",
        "retry on a new connection; if it follows idle periods, lower the keep-alive expiry (`httpx.Limits(keepalive_expiry=5)`)",
        ["httpx.RemoteProtocolError: Server disconnected without sending a response."]
    ),
    p!(
        "h11.incomplete_body",
        "httpx / h11",
        PeerClosed,
        Stream,
        r#"peer closed connection without sending complete message body"#,
        "the connection closed before the Content-Length body was complete",
        "retry; look for a proxy cutting long responses",
        [
            "peer closed connection without sending complete message body (received 1200 bytes, expected 5000)"
        ]
    ),
    p!(
        "requests.remote_disconnected",
        "urllib3 / requests",
        PeerClosed,
        FirstByte,
        r#"RemoteDisconnected|Remote end closed connection without response|Connection aborted"#,
        "the server closed the connection before the status line (often a reused keep-alive connection)",
        "mount an HTTPAdapter with `Retry(total=3, allowed_methods=None)`; it is safe to retry before headers",
        [
            "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
        ]
    ),
    p!(
        "dotnet.closed",
        ".NET",
        PeerClosed,
        Stream,
        r#"forcibly closed by the remote host|WinError 10054|IOException: The response ended prematurely"#,
        "the server or a proxy closed the connection",
        "retry with Polly or the built-in resilience handler",
        [
            "An existing connection was forcibly closed by the remote host.",
            "System.IO.IOException: The response ended prematurely."
        ]
    ),
    p!(
        "requests.chunked",
        "urllib3 / requests",
        PeerClosed,
        Stream,
        r#"ChunkedEncodingError|IncompleteRead|Response ended prematurely|InvalidChunkLength|Connection broken"#,
        "the chunked body ended early: the server or a proxy closed the stream",
        "retry the call; with `stream=True` keep an idle timeout to notice stalls",
        [
            "ChunkedEncodingError: ('Connection broken: IncompleteRead(0 bytes read, 512 more expected)', IncompleteRead(0 bytes read))"
        ]
    ),
    p!(
        "aiohttp.disconnected",
        "aiohttp",
        PeerClosed,
        Stream,
        r#"ServerDisconnectedError|Server disconnected|ClientPayloadError|Response payload is not completed"#,
        "the server closed the connection mid-response",
        "retry; for keep-alive races set `TCPConnector(keepalive_timeout=...)` below the server's",
        [
            "aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected",
            "ClientPayloadError: Response payload is not completed"
        ]
    ),
    p!(
        "go.server_closed_idle",
        "Go net/http",
        PeerClosed,
        FirstByte,
        r#"server closed idle connection"#,
        "the server closed a keep-alive connection just as Go reused it",
        "Go retries idempotent requests itself; for POST set `Transport.IdleConnTimeout` below the server's keep-alive",
        ["http: server closed idle connection"]
    ),
    p!(
        "go.goaway",
        "Go net/http (HTTP/2)",
        PeerClosed,
        Any,
        r#"GOAWAY|graceful shutdown"#,
        "the HTTP/2 server is shutting the connection down (deploy, restart, max-age)",
        "retry on a new connection; the request was not processed if its stream ID > LastStreamID",
        [
            "http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\""
        ]
    ),
    p!(
        "go.unexpected_eof",
        "Go",
        PeerClosed,
        Stream,
        r#"unexpected EOF|\bEOF\b\W*$"#,
        "the connection ended before the body (or chunk) was complete",
        "retry the call; look for a proxy cutting long responses",
        [
            "unexpected EOF",
            "Post \"https://api.x.com/v1/chat/completions\": EOF"
        ]
    ),
    p!(
        "http2.stream_reset",
        "HTTP/2 clients",
        PeerClosed,
        Stream,
        r#"stream error: stream ID \d+|RST_STREAM|StreamResetException|was not closed cleanly|INTERNAL_ERROR|curl: \(92\)|curl: \(16\)|client connection lost"#,
        "the server or a proxy reset the HTTP/2 stream",
        "retry; if it happens at a fixed duration, find the proxy's stream timeout",
        [
            "stream error: stream ID 3; INTERNAL_ERROR",
            "curl: (92) HTTP/2 stream 1 was not closed cleanly: INTERNAL_ERROR (err 2)"
        ]
    ),
    p!(
        "undici.other_side_closed",
        "Node.js (undici fetch)",
        PeerClosed,
        Stream,
        r#"other side closed|UND_ERR_SOCKET|TypeError: terminated|ERR_STREAM_PREMATURE_CLOSE|Premature close"#,
        "the server or a proxy closed the socket mid-response",
        "retry (the SDK's `maxRetries`); an idle proxy timeout shows as a fixed elapsed time",
        ["SocketError: other side closed", "TypeError: terminated"]
    ),
    p!(
        "node.socket_hang_up",
        "Node.js http",
        PeerClosed,
        FirstByte,
        r#"socket hang up|ECONNRESET"#,
        "the server closed or reset the socket before (hang up) or during (ECONNRESET) the response",
        "retry; set `keepAlive` timeouts below the server's to avoid reused-socket races",
        ["Error: socket hang up", "Error: read ECONNRESET"]
    ),
    p!(
        "okhttp.unexpected_end",
        "OkHttp",
        PeerClosed,
        FirstByte,
        r#"unexpected end of stream|\\n not found: limit=0|EOFException|Unexpected end of file"#,
        "the pooled connection was closed by the server before the response",
        "OkHttp retries this with `retryOnConnectionFailure(true)` (the default)",
        ["java.io.IOException: unexpected end of stream on https://api.x.com/..."]
    ),
    p!(
        "apache.no_response",
        "Apache HttpClient (Java)",
        PeerClosed,
        FirstByte,
        r#"NoHttpResponseException|target server failed to respond"#,
        "a stale pooled connection was closed by the server",
        "`setValidateAfterInactivity(...)` and `evictIdleConnections(...)` on the client",
        ["org.apache.http.NoHttpResponseException: api.x.com:443 failed to respond"]
    ),
    p!(
        "hyper.incomplete",
        "Rust (hyper)",
        PeerClosed,
        FirstByte,
        r#"connection closed before message completed|IncompleteMessage|error reading a body from connection|connection error"#,
        "the connection closed before the response was complete",
        "retry on a new connection; set the pool's idle timeout below the server's keep-alive",
        [
            "error sending request for url (https://api.x.com/): connection closed before message completed",
            "error reading a body from connection"
        ]
    ),
    p!(
        "curl.partial",
        "curl",
        PeerClosed,
        Stream,
        r#"curl: \(18\)|transfer closed with|curl: \(56\)|Recv failure|curl: \(55\)|Send failure"#,
        "the connection closed mid-transfer",
        "retry with `--retry 3 --retry-all-errors`",
        [
            "curl: (18) transfer closed with outstanding read data remaining",
            "curl: (56) Recv failure: Connection reset by peer"
        ]
    ),
    p!(
        "curl.empty_reply",
        "curl",
        PeerClosed,
        FirstByte,
        r#"curl: \(52\)|Empty reply from server"#,
        "the server closed the connection without any response",
        "retry; check the server's logs for crashes",
        ["curl: (52) Empty reply from server"]
    ),
    p!(
        "os.reset",
        "any (OS)",
        PeerClosed,
        Stream,
        r#"Connection reset by peer|connection reset|Broken pipe|broken pipe|EPIPE|Errno 104|Errno 32|Connection reset"#,
        "the other side reset the connection (a crash, a proxy timeout, a NAT table expiring)",
        "retry; long idle connections through NAT need TCP keep-alive or shorter pool idle times",
        [
            "ConnectionResetError: [Errno 104] Connection reset by peer",
            "write tcp 10.0.0.5:5123->203.0.113.7:443: write: broken pipe",
            "java.net.SocketException: Connection reset"
        ]
    ),
    p!(
        "nginx.premature_close",
        "nginx",
        PeerClosed,
        FirstByte,
        r#"upstream prematurely closed connection|recv\(\) failed \(104"#,
        "nginx's upstream closed the connection before a full response (the client sees 502)",
        "look at the upstream's logs for crashes; set `proxy_next_upstream` for idempotent retries",
        ["upstream prematurely closed connection while reading response header from upstream"]
    ),
    p!(
        "cloudflare.520",
        "Cloudflare",
        PeerClosed,
        Any,
        r#"\b520\b[^0-9]*(unknown|Web server is returning)|Web server is returning an unknown error"#,
        "the origin closed or reset the connection to Cloudflare, or returned an invalid response",
        "check the origin's logs; origins must keep connections open longer than Cloudflare's 900 s idle",
        [
            "Error 520: Web server is returning an unknown error",
            "520 (unknown error)"
        ]
    ),
    // ---- middleboxes: proxies, CDNs, load balancers, API gateways, serverless ----------------------
    p!(
        "proxy.client_closed",
        "nginx / ALB",
        ClientCancel,
        Any,
        r#"client prematurely closed connection|\b499\b|\b460\b[^\n]*(ALB|load balancer)|\bH27\b|\bclient (?:disconnected|went away|closed the connection)\b"#,
        "the client went away before the answer (nginx logs 499, ALB 460)",
        "raise the client's own timeout above the model's p99",
        [
            "client prematurely closed connection while reading upstream",
            "\"POST /v1/chat/completions HTTP/1.1\" 499 0"
        ]
    ),
    p!(
        "nginx.upstream_timed_out",
        "nginx",
        MiddleboxTimeout,
        FirstByte,
        r#"upstream timed out \(110|while reading response header from upstream|while reading upstream|while connecting to upstream"#,
        "nginx's proxy_read_timeout (60 s by default) or proxy_connect_timeout fired waiting on the upstream",
        "raise `proxy_read_timeout 600s;` and set `proxy_buffering off;` for streams, or send heartbeats",
        [
            "upstream timed out (110: Connection timed out) while reading response header from upstream",
            "upstream timed out (110: Connection timed out) while connecting to upstream"
        ]
    ),
    p!(
        "cloudflare.524",
        "Cloudflare",
        MiddleboxTimeout,
        FirstByte,
        r#"\b524\b|A timeout occurred|origin web server timed out"#,
        "Cloudflare's proxy read timeout (100 s on most plans) passed with no byte from the origin",
        "stream the response or send heartbeats well inside 100 s; Enterprise can raise proxy_read_timeout",
        ["524: A timeout occurred", "Error 524: A timeout occurred"]
    ),
    p!(
        "cloudflare.522",
        "Cloudflare",
        MiddleboxTimeout,
        Connect,
        r#"\b522\b[^0-9]*Connection timed out|Error 522"#,
        "Cloudflare's TCP connect to the origin timed out",
        "allow Cloudflare's IP ranges on the origin's firewall",
        ["Error 522: Connection timed out"]
    ),
    p!(
        "aws.apigateway",
        "AWS API Gateway",
        MiddleboxTimeout,
        FirstByte,
        r#"Endpoint request timed out|Execution failed due to a timeout error"#,
        "API Gateway's integration timeout (29 s for REST APIs, 30 s for HTTP APIs) passed",
        "move long calls off API Gateway's synchronous path (streaming via Lambda URLs or ALB), or raise the REST integration timeout quota",
        ["{\"message\": \"Endpoint request timed out\"}"]
    ),
    p!(
        "aws.lambda",
        "AWS Lambda",
        MiddleboxTimeout,
        Any,
        r#"Task timed out after [\d.]+ seconds"#,
        "the Lambda function's timeout passed while it waited on the model",
        "raise the function's timeout (max 900 s) or make the call asynchronous",
        ["Task timed out after 30.03 seconds"]
    ),
    p!(
        "aws.cloudfront",
        "AWS CloudFront",
        MiddleboxTimeout,
        FirstByte,
        r#"The request could not be satisfied|CloudFront attempted to establish a connection with the origin"#,
        "CloudFront's origin response timeout (30 s by default) or connect failed",
        "raise the origin's response timeout (up to 60 s, more by quota) or stream",
        [
            "504 ERROR The request could not be satisfied. CloudFront attempted to establish a connection with the origin, but either the attempt failed or the origin closed the connection."
        ]
    ),
    p!(
        "aws.alb",
        "AWS ALB / ELB",
        MiddleboxTimeout,
        FirstByte,
        r#"awselb|ELB[^\n]*504|504[^\n]*ELB"#,
        "the load balancer's idle timeout (60 s by default) passed with no byte",
        "raise the ALB's `idle_timeout.timeout_seconds` or stream / send heartbeats",
        ["504 Gateway Time-out (server: awselb/2.0)"]
    ),
    p!(
        "vercel.timeout",
        "Vercel",
        MiddleboxTimeout,
        Any,
        r#"FUNCTION_INVOCATION_TIMEOUT|EDGE_FUNCTION_INVOCATION_TIMEOUT"#,
        "the function exceeded its maxDuration",
        "raise `maxDuration` in the function's config or stream the response",
        ["FUNCTION_INVOCATION_TIMEOUT"]
    ),
    p!(
        "heroku.h12",
        "Heroku router",
        MiddleboxTimeout,
        FirstByte,
        r#"\bH12\b|Request timeout[^\n]*heroku|\bH15\b"#,
        "Heroku's router needs the first byte within 30 s (H12) and a byte every 55 s after (H15)",
        "stream or send heartbeats within 30 s; move long calls to a worker",
        ["at=error code=H12 desc=\"Request timeout\""]
    ),
    p!(
        "envoy.upstream_timeout",
        "Envoy / Istio / GCP load balancers",
        MiddleboxTimeout,
        FirstByte,
        r#"upstream request timeout|stream timeout|upstream_reset_before_response_started\{timeout\}"#,
        "Envoy's route timeout (15 s by default) or stream idle timeout (5 min) fired",
        "raise the route's `timeout` (Istio VirtualService `timeout:`) or set it to 0s for streams",
        ["upstream request timeout"]
    ),
    p!(
        "kong.timeout",
        "Kong",
        MiddleboxTimeout,
        FirstByte,
        r#"The upstream server is timing out"#,
        "Kong's service read_timeout (60 s by default) passed",
        "raise the service's `read_timeout` (milliseconds)",
        ["{\"message\":\"The upstream server is timing out\"}"]
    ),
    p!(
        "azure.timeout",
        "Azure App Service / Front Door",
        MiddleboxTimeout,
        FirstByte,
        r#"The request timed out\. The web server failed to respond within the specified time|OriginTimeout"#,
        "Azure's front end timed out (230 s on App Service; Front Door's origin response timeout)",
        "stream the response or move the call to a background job",
        [
            "500 - The request timed out. The web server failed to respond within the specified time."
        ]
    ),
    p!(
        "haproxy.timeout",
        "HAProxy / generic proxies",
        MiddleboxTimeout,
        FirstByte,
        r#"The server didn't respond in time|Gateway Time-?out|\b504\b"#,
        "a proxy between the client and the API gave up waiting (its read or server timeout)",
        "find the proxy by the response's Server header; raise its read timeout or stream",
        [
            "504 Gateway Time-out",
            "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>"
        ]
    ),
    // ---- the caller cancelled -------------------------------------------------------------------
    p!(
        "go.context_canceled",
        "Go",
        ClientCancel,
        Any,
        r#"context canceled"#,
        "the call's context was cancelled (often: the inbound request that triggered it was closed)",
        "find who cancels the context; detach background work with `context.WithoutCancel`",
        ["context canceled"]
    ),
    p!(
        "go.context_deadline",
        "Go",
        TotalDeadline,
        Any,
        r#"context deadline exceeded"#,
        "the call's context deadline passed",
        "raise the `context.WithTimeout` duration above the model's p99",
        ["Post \"https://api.x.com/v1/chat/completions\": context deadline exceeded"]
    ),
    p!(
        "abort",
        "Node.js / Rust / Java",
        ClientCancel,
        Any,
        r#"AbortError|This operation was aborted|operation was canceled|IOException: Canceled|stream was reset: CANCEL|asyncio\.CancelledError|CancelledError|UND_ERR_ABORTED|ResponseAborted|RequestAborted|request aborted|aborted by the (?:user|client|caller)|Controller is already closed"#,
        "the caller cancelled the request",
        "check which timeout or abort signal fired in the caller",
        [
            "AbortError: This operation was aborted",
            "operation was canceled",
            "java.io.IOException: Canceled"
        ]
    ),
    // ---- status words, last before the bare "timeout" -------------------------------------------
    p!(
        "cloudflare.1015",
        "Cloudflare",
        Upstream429,
        Response,
        r#"error 1015|You are being rate limited"#,
        "Cloudflare's rate limiting rule blocked the client",
        "lower the request rate or ask the site owner to raise the rule's threshold",
        ["Error 1015: You are being rate limited"]
    ),
    p!(
        "http.429",
        "any HTTP client",
        Upstream429,
        Response,
        r#"\b429\b|Too Many Requests|too many 429 error responses|\brate[- ]limited\b|\blimiting requests\b"#,
        "the API rate-limited the call",
        "honour Retry-After; spread load over more keys or upstreams",
        [
            "HTTP 429 Too Many Requests",
            "(Caused by ResponseError('too many 429 error responses'))"
        ]
    ),
    p!(
        "http.5xx",
        "any HTTP client",
        Upstream5xx,
        Response,
        r#"\b50[0-3]\b|\b529\b|Bad Gateway|Service Unavailable|Internal Server Error|too many 5\d\d error responses|The upstream server returned an invalid response|invalid response was received from the upstream"#,
        "the server or a gateway in front of it answered with a server error",
        "retry with backoff and fail over for 502/503",
        [
            "502 Bad Gateway",
            "HTTP/1.1 503 Service Unavailable",
            "curl: (22) The requested URL returned error: 500"
        ]
    ),
    p!(wraps "wrapper.generic", "any client", Wrapper, Any,
       r#"error sending request|fetch failed|HttpRequestException|APIError|ProxyError|Unable to connect to proxy|Tunnel connection failed|ClientError|\bconnection failed\b|\bnetwork (?:error|disconnected)\b|\bunknown (?:\w+ ){0,3}error\b|problem reaching|(?:could not|couldn't|unable to) reach\b"#,
       "a generic wrapper: the real cause is in the chained error",
       "print the full error chain (Node: `err.cause`; Python: `__cause__`; Rust: `source()` chain; .NET: InnerException)",
       ["TypeError: fetch failed", "error sending request for url (https://api.x.com/v1/chat/completions)"]),
    // ---- bare timeouts: the phase is unknown, first byte is the most common -----------------------
    p!(
        "server.crash",
        "a model server (Ollama, vLLM, llama.cpp, TGI)",
        Upstream5xx,
        Response,
        r#"\b(?:process|runner|worker|engine|server)\b[^\n]{0,30}\b(?:no longer running|exited|crashed|died|terminated unexpectedly)|\bout of memory\b|\bCUDA error\b|segmentation fault|EngineDeadError|EngineCore encountered"#,
        "the model server's process died or ran out of memory while serving the request",
        "retry on another replica; look at the server's own log for the crash, and give it memory for the context it is asked to hold",
        ["Error: model runner has unexpectedly stopped: process exited"]
    ),
    p!(
        "generic.closed",
        "any",
        PeerClosed,
        Any,
        r#"\b(?:connection|socket|stream)\b[^\n]{0,30}\b(?:closed|disconnected|dropped|lost|terminated)\b(?:[^\n]{0,20}unexpectedly)?|closed the connection|connection (?:was )?(?:closed|aborted) by (?:the )?(?:server|peer|remote)"#,
        "the other side closed the connection before the answer was complete",
        "retry on a new connection; if it happens at a fixed duration, find the proxy whose idle timeout that is",
        ["The socket connection was closed unexpectedly."]
    ),
    p!(
        "generic.timeout",
        "any",
        FirstByteTimeout,
        FirstByte,
        r#"timed out|timeout|time out|took longer than|exceeded the (?:configured )?(?:maximum )?time"#,
        "a read timeout fired; most often while waiting for a non-streamed answer",
        "find which timer fired by the elapsed time (`--elapsed`) and the client's settings",
        ["socket.timeout: timed out", "TimeoutError: timed out"]
    ),
];
