//! The engine's words, as types: the error codes a client can see, the phases an attempt goes
//! through, the limits a deadline enforces, and how an attempt, a call or a stream ended. Each
//! serializes to the name `docs/errors.md` documents, so errors, logs, metrics and the toolkit
//! say the same word; a test holds the docs to these lists.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Displays, serializes and compares a type by its documented `name()`.
macro_rules! said_as_name {
    ($type:ident) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        /// Compares with a documented name (tests and scripts match on names).
        impl PartialEq<&str> for $type {
            fn eq(&self, other: &&str) -> bool {
                self.name() == *other
            }
        }
    };
}

/// Declares a fieldless enum whose every variant has one documented name: `ALL`, `name()`,
/// `from_name()`, `Display`, `Serialize` and `Deserialize` all come from the one list.
macro_rules! named {
    ($(#[$meta:meta])* pub enum $type:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $type {
            $($(#[$vmeta])* $variant,)+
        }

        impl $type {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$type] = &[$($type::$variant,)+];

            /// The documented name.
            pub fn name(self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }

            /// The value with this documented name.
            pub fn from_name(name: &str) -> Option<$type> {
                match name {
                    $($name => Some($type::$variant),)+
                    _ => None,
                }
            }
        }

        said_as_name!($type);

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                $type::from_name(&name).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} `{name}`",
                        stringify!($type)
                    ))
                })
            }
        }
    };
}

named! {
    /// Every error code the gateway or the engine can answer with (`error.code`).
    pub enum ErrorCode {
        /// The upstream's host name did not resolve.
        DnsFailure = "dns_failure",
        /// The upstream refused the TCP connection.
        ConnectRefused = "connect_refused",
        /// The network could not reach the upstream.
        ConnectFailed = "connect_failed",
        /// The TLS handshake failed.
        TlsFailure = "tls_failure",
        /// No connection within `timeouts.connect`.
        ConnectTimeout = "connect_timeout",
        /// The request body was not taken within `timeouts.write`.
        WriteTimeout = "write_timeout",
        /// No response headers within `timeouts.first_byte`.
        FirstByteTimeout = "first_byte_timeout",
        /// No meaningful content within `timeouts.first_token`.
        FirstTokenTimeout = "first_token_timeout",
        /// No content for `timeouts.idle`.
        IdleTimeout = "idle_timeout",
        /// One try took longer than `timeouts.attempt`.
        AttemptTimeout = "attempt_timeout",
        /// `timeouts.total` or the client's own deadline passed.
        DeadlineExceeded = "deadline_exceeded",
        /// The connection closed before a response.
        UpstreamClosed = "upstream_closed",
        /// The upstream answered 429.
        RateLimited = "rate_limited",
        /// The upstream answered another error status.
        UpstreamStatus = "upstream_status",
        /// The stream or body ended before it was complete.
        UpstreamCut = "upstream_cut",
        /// A stream ended with `[DONE]` before any `finish_reason`.
        UpstreamTruncated = "upstream_truncated",
        /// The response is not valid JSON or SSE.
        UpstreamMalformed = "upstream_malformed",
        /// A retry was due but the retry budget is spent.
        RetryBudgetExhausted = "retry_budget_exhausted",
        /// No upstream serves the model.
        NoRoute = "no_route",
        /// The request itself is not valid.
        BadRequest = "bad_request",
        /// The request body did not arrive within `server.body_read_timeout`.
        RequestTimeout = "request_timeout",
        /// The request body is larger than `server.max_request_body`.
        RequestTooLarge = "request_too_large",
        /// The request line and headers are larger than `server.max_header_bytes`.
        HeadersTooLarge = "headers_too_large",
        /// A path the gateway does not serve.
        NotFound = "not_found",
        /// The gateway already holds `server.max_connections` client connections.
        TooManyConnections = "too_many_connections",
        /// The gateway stopped before the answer ended (`server.shutdown_grace` ran out).
        GatewayShutdown = "gateway_shutdown",
        /// An admin endpoint was called without the admin key.
        Unauthorized = "unauthorized",
        /// An API call came without one of the gateway's client keys.
        InvalidApiKey = "invalid_api_key",
        /// A reload was asked for and the configuration file is not valid.
        BadConfig = "bad_config",
        /// A background job's answer had begun when the gateway stopped; it ends rather than
        /// being spliced onto a second answer.
        GatewayRestarted = "gateway_restarted",
        /// No background job (or response) with that id belongs to the caller's key.
        JobNotFound = "job_not_found",
        /// `jobs.max_queued` background jobs are waiting already, or the store is full.
        TooManyJobs = "too_many_jobs",
        /// The background job was cancelled before it ended.
        JobCancelled = "job_cancelled",
        /// The client's key is past one of its `[client_limits]`.
        ClientRateLimited = "client_rate_limited",
        /// The store of background jobs cannot be opened or written.
        JobsUnavailable = "jobs_unavailable",
    }
}

impl ErrorCode {
    /// The likely cause and the fix, in one line (`hourglass.diagnosis` of an error body).
    pub fn diagnosis(self) -> &'static str {
        match self {
            ErrorCode::DnsFailure => {
                "the upstream's host name does not resolve: check base_url and this machine's DNS; the network, not the API"
            }
            ErrorCode::ConnectRefused => {
                "nothing listens at the upstream's address, or a firewall rejects it: check base_url and that the service is up"
            }
            ErrorCode::ConnectFailed => {
                "the network cannot reach the upstream (unreachable or reset during connect): check routes, proxies and firewalls"
            }
            ErrorCode::TlsFailure => {
                "the TLS handshake failed: check the URL scheme and port, the certificate, and any intercepting proxy"
            }
            ErrorCode::ConnectTimeout => {
                "no TCP/TLS handshake completed in time: the host is unreachable or dropping packets (network, not the API); raise timeouts.connect only for slow links"
            }
            ErrorCode::WriteTimeout => {
                "the request body could not be sent in time: a large upload on a slow link; raise timeouts.write or shrink the request"
            }
            ErrorCode::FirstByteTimeout => {
                "the upstream accepted the request but sent no response headers in time: overloaded or hung server, or a proxy waiting on it"
            }
            ErrorCode::FirstTokenTimeout => {
                "the upstream answered but produced no content in time: overloaded, or a reasoning model thinking longer than timeouts.first_token allows"
            }
            ErrorCode::IdleTimeout => {
                "the stream stalled between tokens for longer than timeouts.idle: an overloaded or stuck upstream; keep-alive comments do not count as progress"
            }
            ErrorCode::AttemptTimeout => {
                "one try took longer than timeouts.attempt: a slow generation; raise it (or attempt_growth) for long outputs, or stream"
            }
            ErrorCode::DeadlineExceeded => {
                "the call's total deadline passed (timeouts.total or the client's own timeout) before any upstream answered in full"
            }
            ErrorCode::UpstreamClosed => {
                "the upstream closed or reset the connection before answering: a crashing server, an idle-timeout on a proxy, or a load balancer cutting it"
            }
            ErrorCode::RateLimited => {
                "the upstream is rate limiting: spread load over more upstreams or keys, or lower the request rate"
            }
            ErrorCode::UpstreamStatus => {
                "the upstream answered with an error status; its own message is included"
            }
            ErrorCode::UpstreamCut => {
                "the upstream ended the response before it was complete (no [DONE]): a crash or a proxy cutting long responses"
            }
            ErrorCode::UpstreamTruncated => {
                "the upstream ended the stream with [DONE] but no finish_reason: it interrupted the answer (llama.cpp's server does when a newer request arrives); the text is incomplete"
            }
            ErrorCode::UpstreamMalformed => {
                "the upstream sent a response that is not valid JSON or SSE: a proxy's error page or a broken server"
            }
            ErrorCode::RetryBudgetExhausted => {
                "retries are capped at a share of recent calls (retry_budget) and that share is spent: upstreams are failing broadly, so retrying would only add load"
            }
            ErrorCode::NoRoute => {
                "no upstream serves this model: add it to an upstream's models or a [models.NAME] table"
            }
            ErrorCode::BadRequest => {
                "the request itself is not valid: fix it on the client side; retrying cannot help"
            }
            ErrorCode::RequestTimeout => {
                "the client sent its request body too slowly (server.body_read_timeout): a slow or stalled client, or a slowloris"
            }
            ErrorCode::RequestTooLarge => {
                "the request body is larger than server.max_request_body: shrink it or raise the limit"
            }
            ErrorCode::HeadersTooLarge => {
                "the request's headers are larger than server.max_header_bytes: a client sending huge cookies or tokens, or a hostile one"
            }
            ErrorCode::TooManyConnections => {
                "the gateway holds server.max_connections client connections already: a flood, or too small a limit for the load; retry shortly, or raise it (and the process's open-file limit)"
            }
            ErrorCode::GatewayShutdown => {
                "the gateway was stopping and server.shutdown_grace ran out before the answer ended: retry the call; another instance, or the restarted gateway, takes it"
            }
            ErrorCode::NotFound => {
                "the gateway serves /v1/* (and /health, /metrics, /status, /dashboard): check the client's base_url ends in /v1"
            }
            ErrorCode::Unauthorized => {
                "the admin endpoints need the admin key (server.admin_key_env), or a client key when only those are set, as `Authorization: Bearer …`"
            }
            ErrorCode::InvalidApiKey => {
                "the gateway has client keys and the request carried none of them: send one as `Authorization: Bearer …` (the client's api_key)"
            }
            ErrorCode::BadConfig => {
                "the configuration file did not load, so the old configuration keeps serving: fix the key the message names (`hourglass config check FILE`) and reload again"
            }
            ErrorCode::GatewayRestarted => {
                "the gateway stopped (a crash or a restart) after this background job's answer had begun: the part already stored is kept, never spliced onto a new answer; submit the job again"
            }
            ErrorCode::JobNotFound => {
                "no background job or response with this id belongs to your key: a mistyped id, another key's job, or one past jobs.retention"
            }
            ErrorCode::TooManyJobs => {
                "jobs.max_queued background jobs are waiting already (or the store reached jobs.max_store_size): retry after Retry-After, or raise the limit"
            }
            ErrorCode::JobCancelled => {
                "the background job was cancelled (DELETE or /cancel) before it ended: there is no answer; submit it again if it is still wanted"
            }
            ErrorCode::ClientRateLimited => {
                "your key is past one of the gateway's [client_limits] (requests or tokens per minute, or calls at once; x-hourglass-limit says which): wait Retry-After, spread the calls, or ask for a higher limit"
            }
            ErrorCode::JobsUnavailable => {
                "the store of background jobs cannot be opened or written (jobs.data_dir: permissions, a full disk, another process holding it): synchronous calls still work; fix the store and restart"
            }
        }
    }

    /// Whether the code is a timer firing.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            ErrorCode::ConnectTimeout
                | ErrorCode::WriteTimeout
                | ErrorCode::FirstByteTimeout
                | ErrorCode::FirstTokenTimeout
                | ErrorCode::IdleTimeout
                | ErrorCode::AttemptTimeout
                | ErrorCode::DeadlineExceeded
                | ErrorCode::RequestTimeout
        )
    }
}

named! {
    /// How far an attempt got (`phase` in an attempt trail).
    pub enum Phase {
        /// Connecting (DNS, TCP, TLS).
        Connect = "connect",
        /// Sending the request.
        Write = "write",
        /// Waiting for the response headers.
        FirstByte = "first_byte",
        /// Headers received, waiting for the first meaningful content.
        FirstToken = "first_token",
        /// Reading the body.
        Body = "body",
        /// The response is complete.
        Done = "done",
    }
}

named! {
    /// Which configured limit a deadline enforces.
    pub enum Limit {
        /// `timeouts.connect`
        Connect = "connect",
        /// `timeouts.write`
        Write = "write",
        /// `timeouts.first_byte`
        FirstByte = "first_byte",
        /// `timeouts.first_token`
        FirstToken = "first_token",
        /// `timeouts.idle`
        Idle = "idle",
        /// `timeouts.attempt` (grown for later tries)
        Attempt = "attempt",
        /// `timeouts.total`, or the client's own deadline
        Total = "total",
    }
}

impl Limit {
    /// The error code of a timeout at this limit.
    pub fn code(self) -> ErrorCode {
        match self {
            Limit::Connect => ErrorCode::ConnectTimeout,
            Limit::Write => ErrorCode::WriteTimeout,
            Limit::FirstByte => ErrorCode::FirstByteTimeout,
            Limit::FirstToken => ErrorCode::FirstTokenTimeout,
            Limit::Idle => ErrorCode::IdleTimeout,
            Limit::Attempt => ErrorCode::AttemptTimeout,
            Limit::Total => ErrorCode::DeadlineExceeded,
        }
    }

    /// Its configuration key (`timeouts.first_token`).
    pub fn key(self) -> &'static str {
        match self {
            Limit::Connect => "timeouts.connect",
            Limit::Write => "timeouts.write",
            Limit::FirstByte => "timeouts.first_byte",
            Limit::FirstToken => "timeouts.first_token",
            Limit::Idle => "timeouts.idle",
            Limit::Attempt => "timeouts.attempt",
            Limit::Total => "timeouts.total",
        }
    }
}

/// How an attempt, a call or a committed stream ended (`outcome` in trails, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed with this code.
    Failed(ErrorCode),
    /// A hedged attempt lost the race and was cancelled.
    HedgeCancelled,
    /// The client left before a committed stream ended (a stream's outcome).
    ClientGone,
    /// The client left before the call ended (a call's outcome).
    ClientCancel,
}

impl Outcome {
    /// The outcomes that are not an error code, by their documented names.
    pub const OTHERS: &'static [Outcome] = &[
        Outcome::Ok,
        Outcome::HedgeCancelled,
        Outcome::ClientGone,
        Outcome::ClientCancel,
    ];

    /// The documented name: `ok`, `hedge_cancelled`, `client_gone`, `client_cancel` or the
    /// error code.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(code) => code.name(),
            Outcome::HedgeCancelled => "hedge_cancelled",
            Outcome::ClientGone => "client_gone",
            Outcome::ClientCancel => "client_cancel",
        }
    }

    /// Whether it succeeded.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// The error code, when it failed.
    pub fn code(self) -> Option<ErrorCode> {
        match self {
            Outcome::Failed(code) => Some(code),
            _ => None,
        }
    }
}

said_as_name!(Outcome);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_distinct_and_reads_back() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.name()), "{code} twice");
            assert_eq!(ErrorCode::from_name(code.name()), Some(*code));
        }
        for outcome in Outcome::OTHERS {
            assert!(seen.insert(outcome.name()), "{outcome} is also a code");
        }
        for phase in Phase::ALL {
            assert_eq!(Phase::from_name(phase.name()), Some(*phase));
        }
        assert_eq!(
            serde_json::to_string(&Outcome::Failed(ErrorCode::RateLimited)).unwrap(),
            "\"rate_limited\""
        );
    }

    #[test]
    fn every_code_has_its_own_diagnosis() {
        let diagnoses: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.diagnosis()).collect();
        assert_eq!(diagnoses.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn every_limit_has_its_timeout_code() {
        for limit in Limit::ALL {
            assert!(limit.code().is_timeout(), "{limit}");
            assert!(limit.key().ends_with(limit.name()));
        }
    }
}
