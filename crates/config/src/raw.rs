//! The configuration file as written: serde structs that refuse unknown keys, read in document
//! order (the order of upstreams is the default order of targets).

use serde::Deserialize;

use crate::policy::{
    Family, Heartbeat, PolicyPatch, Positive, RetryPatch, Scenario, TimeoutsPatch,
};

/// The whole file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub retry_budget: RawBudget,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default)]
    pub health_check: RawHealthCheck,
    #[serde(default)]
    pub jobs: crate::jobs::RawJobs,
    #[serde(default)]
    pub cluster: crate::cluster::RawCluster,
    #[serde(default)]
    pub client_limits: crate::cluster::RawClientLimits,
    #[serde(default)]
    pub upstreams: Ordered<RawUpstream>,
    #[serde(default)]
    pub models: Ordered<RawModel>,
    #[serde(default)]
    pub defaults: PolicyPatch,
    /// By family name, checked in `validate` (an enum key would hide its path in errors).
    #[serde(default)]
    pub families: Ordered<PolicyPatch>,
    /// By scenario name, checked in `validate`.
    #[serde(default)]
    pub scenarios: Ordered<PolicyPatch>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub max_request_body: Option<String>,
    pub header_read_timeout: Option<Positive>,
    pub body_read_timeout: Option<Positive>,
    pub max_header_bytes: Option<String>,
    pub shutdown_grace: Option<Positive>,
    pub max_connections: Option<usize>,
    pub threads: Option<usize>,
    pub client_deadline_margin: Option<String>,
    pub admin_key_env: Option<String>,
    pub admin_key_file: Option<String>,
    pub client_keys_env: Option<String>,
    pub client_keys_file: Option<String>,
    pub allow_unauthenticated: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub mode: Option<RawCheckMode>,
    pub model: Option<String>,
    pub interval: Option<Positive>,
    pub timeout: Option<Positive>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCheckMode {
    Off,
    Models,
    Completion,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub min_calls: Option<u32>,
    pub window: Option<Positive>,
    pub ejection: Option<Positive>,
    pub max_ejection: Option<Positive>,
    pub half_open_calls: Option<u32>,
    pub max_ejected_share: Option<f64>,
    pub min_tokens_per_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub ratio: Option<f64>,
    pub min_per_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub base_url: String,
    pub protocol: Option<toml::Value>,
    pub api_key_header: Option<String>,
    pub http: Option<String>,
    pub http2_max_streams: Option<i64>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    #[serde(default)]
    pub headers: Ordered<String>,
    pub models: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub targets: Option<Vec<RawTarget>>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub family: Option<Family>,
    pub scenario: Option<Scenario>,
    #[serde(default)]
    pub timeouts: TimeoutsPatch,
    #[serde(default)]
    pub retry: RetryPatch,
    pub stream_upstream: Option<bool>,
    pub heartbeat: Option<Heartbeat>,
    pub balance: Option<crate::Balance>,
    pub hedge: Option<String>,
}

/// One target: `"UPSTREAM[:MODEL]"`, or a table with a tier and a weight.
pub(crate) enum RawTarget {
    Name(String),
    Table(RawTargetTable),
}

impl<'de> Deserialize<'de> for RawTarget {
    /// By hand rather than `untagged`, so a mistyped key in a table is named in the error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawTarget;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "\"UPSTREAM\", \"UPSTREAM:MODEL\" or { upstream = \"…\", model, tier, weight }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawTarget, E> {
                Ok(RawTarget::Name(text.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawTarget, A::Error> {
                RawTargetTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawTarget::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetTable {
    pub upstream: String,
    pub model: Option<String>,
    pub tier: Option<u32>,
    pub weight: Option<u32>,
}

/// A TOML table read as a list of (key, value) in document order.
pub(crate) struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}
