//! The classes an error message falls into: where the call was when it failed and what kind of
//! failure it was, with the causes and fixes that hold for every message of the class.

use serde::{Serialize, Serializer};

/// What failed, as one word a script can switch on (its [`Class::name`], in text and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// The host name did not resolve.
    Dns,
    /// The TCP handshake did not complete in time.
    TcpConnectTimeout,
    /// The connection was refused or the host unreachable, at once.
    ConnRefused,
    /// The TLS handshake did not complete in time.
    TlsTimeout,
    /// The TLS handshake failed: certificate, protocol, or an interceptor.
    TlsError,
    /// No connection came free from the client's pool in time.
    PoolTimeout,
    /// The request body could not be sent in time.
    WriteTimeout,
    /// The request was sent but no response (headers or first token) came in time.
    FirstByteTimeout,
    /// A stream started and then went silent.
    IdleStreamStall,
    /// The whole call ran past an overall deadline.
    TotalDeadline,
    /// The other side closed or reset the connection.
    PeerClosed,
    /// The API answered 429: rate limit or quota.
    Upstream429,
    /// The API answered with a server error.
    Upstream5xx,
    /// A proxy, CDN, load balancer or gateway between client and API gave up waiting.
    MiddleboxTimeout,
    /// The caller itself cancelled the call.
    ClientCancel,
    /// The request was refused as invalid (no such model or path, a bad body, a missing key).
    ClientError,
    /// A generic wrapper that hides the real cause.
    Wrapper,
    /// Nothing in the catalogue matches.
    Unknown,
}

/// `--json` prints the documented name (serde's own snake case would print `upstream429`).
impl Serialize for Class {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl Class {
    /// Every class, in the order summaries list them.
    pub const ALL: [Class; 18] = [
        Class::Dns,
        Class::TcpConnectTimeout,
        Class::ConnRefused,
        Class::TlsTimeout,
        Class::TlsError,
        Class::PoolTimeout,
        Class::WriteTimeout,
        Class::FirstByteTimeout,
        Class::IdleStreamStall,
        Class::TotalDeadline,
        Class::PeerClosed,
        Class::Upstream429,
        Class::Upstream5xx,
        Class::MiddleboxTimeout,
        Class::ClientCancel,
        Class::ClientError,
        Class::Wrapper,
        Class::Unknown,
    ];

    /// The class's name, as `--json` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Dns => "dns",
            Class::TcpConnectTimeout => "tcp_connect_timeout",
            Class::ConnRefused => "conn_refused",
            Class::TlsTimeout => "tls_timeout",
            Class::TlsError => "tls_error",
            Class::PoolTimeout => "pool_timeout",
            Class::WriteTimeout => "write_timeout",
            Class::FirstByteTimeout => "first_byte_timeout",
            Class::IdleStreamStall => "idle_stream_stall",
            Class::TotalDeadline => "total_deadline",
            Class::PeerClosed => "peer_closed",
            Class::Upstream429 => "upstream_429",
            Class::Upstream5xx => "upstream_5xx",
            Class::MiddleboxTimeout => "middlebox_timeout",
            Class::ClientCancel => "client_cancel",
            Class::ClientError => "client_error",
            Class::Wrapper => "wrapper",
            Class::Unknown => "unknown",
        }
    }

    /// The class with this name.
    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Whether the class is a timer firing (as opposed to a refusal, a close or a status).
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            Class::TcpConnectTimeout
                | Class::TlsTimeout
                | Class::PoolTimeout
                | Class::WriteTimeout
                | Class::FirstByteTimeout
                | Class::IdleStreamStall
                | Class::TotalDeadline
                | Class::MiddleboxTimeout
        )
    }

    /// Whose side the problem is most likely on: the network, the server, or the client's own
    /// configuration (the question "network or server?").
    pub fn side(self) -> &'static str {
        match self {
            Class::Dns
            | Class::TcpConnectTimeout
            | Class::ConnRefused
            | Class::TlsTimeout
            | Class::TlsError => "network",
            Class::PoolTimeout
            | Class::WriteTimeout
            | Class::ClientCancel
            | Class::ClientError
            | Class::TotalDeadline => "client",
            Class::FirstByteTimeout
            | Class::IdleStreamStall
            | Class::Upstream429
            | Class::Upstream5xx => "server",
            Class::PeerClosed | Class::MiddleboxTimeout => "path",
            Class::Wrapper | Class::Unknown => "unknown",
        }
    }

    /// Causes that hold for any message of the class, most likely first.
    pub fn causes(self) -> &'static [&'static str] {
        match self {
            Class::Dns => &[
                "the host name is misspelled or the base URL points at a name that does not exist",
                "this machine's resolver is down, slow or cannot reach the internet (containers: check /etc/resolv.conf)",
                "a corporate DNS or split-horizon setup hides the name",
            ],
            Class::TcpConnectTimeout => &[
                "packets to the host are dropped: a firewall, a security group or no route from this network",
                "the host is overloaded and its accept queue is full",
                "an IPv6 address is tried first on a network without IPv6 connectivity",
            ],
            Class::ConnRefused => &[
                "nothing listens at that address and port: the service is down or the port is wrong",
                "a local proxy or sidecar the URL points at is not running",
                "a firewall rejects the connection (or there is no route to the host)",
            ],
            Class::TlsTimeout => &[
                "the network drops the TLS handshake (a middlebox inspecting TLS, MTU problems)",
                "the server is overloaded and slow to answer the handshake",
            ],
            Class::TlsError => &[
                "an intercepting proxy presents its own certificate that this client does not trust",
                "the certificate expired, or does not name this host",
                "https:// was used on a plain-HTTP port (or the reverse)",
                "the client's CA bundle is missing or outdated",
            ],
            Class::PoolTimeout => &[
                "more calls in flight than the client's connection pool allows, so calls queue for a connection",
                "long streams hold every pooled connection",
            ],
            Class::WriteTimeout => &[
                "a large request body (images, long context) on a slow or congested uplink",
                "the server stopped reading the request (overloaded)",
            ],
            Class::FirstByteTimeout => &[
                "the model is still generating: non-streaming calls send nothing until the whole answer is ready",
                "the API is overloaded and the request is queued",
                "a reasoning model thinks for tens of seconds before its first token",
            ],
            Class::IdleStreamStall => &[
                "the upstream stalled mid-stream (overload, a stuck worker)",
                "a proxy on the way buffers the stream and releases it late",
            ],
            Class::TotalDeadline => &[
                "the overall timeout is shorter than a long generation needs",
                "retries and waits used the budget up",
            ],
            Class::PeerClosed => &[
                "a proxy or load balancer on the way closed an idle or long-lived connection",
                "the server crashed or restarted mid-request",
                "a pooled keep-alive connection was closed by the server just as it was reused",
            ],
            Class::Upstream429 => &[
                "the account's requests- or tokens-per-minute limit is reached",
                "the quota or credit is used up (not retryable)",
                "the provider sheds load from many clients at once",
            ],
            Class::Upstream5xx => &[
                "the provider's service is failing or overloaded",
                "a gateway in front of it could not reach its backend",
            ],
            Class::MiddleboxTimeout => &[
                "a proxy, CDN or load balancer has a read timeout shorter than the model's silence",
                "the call was not streamed, so the proxy saw no byte until the whole answer was ready",
            ],
            Class::ClientCancel => &[
                "the caller's own timeout or abort signal fired, or the user went away",
                "an inbound request to a server that makes this call was closed, cancelling it",
            ],
            Class::ClientError => &[
                "the request names a model or path nothing serves, or its body is not valid",
                "the gateway has keys and the request carried none of them, or the wrong one",
            ],
            Class::Wrapper => {
                &["this message wraps a lower-level error that carries the real cause"]
            }
            Class::Unknown => &["no known pattern matches this message"],
        }
    }

    /// Fixes that hold for any message of the class.
    pub fn fixes(self) -> &'static [&'static str] {
        match self {
            Class::Dns => &[
                "check the host name in the base URL; run `hourglass diagnose URL` to see every address",
            ],
            Class::TcpConnectTimeout => &[
                "run `hourglass diagnose URL` to see which address times out; keep the connect timeout short (3–10 s) and fail over instead of waiting",
            ],
            Class::ConnRefused => &[
                "check the port and that the service is up; with hourglass, list a second upstream so calls fail over",
            ],
            Class::TlsTimeout => &[
                "keep the TLS handshake inside a short connect timeout (5–10 s) and retry on another connection",
            ],
            Class::TlsError => &[
                "run `hourglass diagnose URL` to see the certificate (subject, issuer, expiry); behind an intercepting proxy install its CA",
            ],
            Class::PoolTimeout => &[
                "raise the pool size or lower concurrency; never set the pool wait longer than the call's deadline",
            ],
            Class::WriteTimeout => &[
                "raise the write timeout for large uploads, or shrink the request (resize images, trim context)",
            ],
            Class::FirstByteTimeout => &[
                "stream (`stream: true`) so the first token, not the whole answer, ends the wait; or raise the read timeout above the model's p99 generation time (`hourglass probe` measures it)",
            ],
            Class::IdleStreamStall => &[
                "keep a short idle timeout between chunks (15–60 s) and retry: a stall rarely recovers",
            ],
            Class::TotalDeadline => &[
                "set the total deadline from measured p99 latency times the attempts you allow (`hourglass tune`)",
            ],
            Class::PeerClosed => &[
                "retry on a new connection; if it happens at a fixed duration, find the proxy whose idle timeout that is",
            ],
            Class::Upstream429 => &[
                "honour Retry-After with jittered backoff, spread load over more keys or upstreams, and stop retrying on `insufficient_quota`",
            ],
            Class::Upstream5xx => {
                &["retry with backoff, and fail over to another provider or region for 502/503/529"]
            }
            Class::MiddleboxTimeout => &[
                "stream the call or send heartbeats (`x-hourglass-heartbeat: 15s`), or raise the proxy's read timeout above the model's silence",
            ],
            Class::ClientCancel => &[
                "if the caller's timeout fired, raise it to the model's measured p99 (`hourglass tune`); otherwise nothing is wrong upstream",
            ],
            Class::ClientError => {
                &["fix the request as the message says; retrying the same request cannot help"]
            }
            Class::Wrapper => &[
                "print the wrapped cause (Python: `e.__cause__`; Node: `err.cause`; Go: `errors.Unwrap`) and explain that message",
            ],
            Class::Unknown => &[
                "run `hourglass diagnose URL` to see which phase fails, or pass the lower-level error message",
            ],
        }
    }
}
