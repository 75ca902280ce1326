//! Scenario files: several simulated upstreams on several ports at once, each with its models,
//! latency profiles and fault mix, read from TOML and validated in one place. Every error names
//! the file, the key path (`upstream[1].model[0].first_token.p99`) and what would be accepted.
//!
//! ```toml
//! seed = 42
//! time_scale = 1.0
//!
//! [[upstream]]
//! name = "east"
//! listen = "127.0.0.1:9101"
//! models = ["gpt-4o-mini", "o1-mini"]
//!
//! [[upstream.model]]
//! name = "slow-chat"
//! like = "gpt-4o"
//! first_token = { median = "2s", p99 = "8s" }
//!
//! [[upstream.fault]]
//! fault = "status;code=503;retry_after=1"
//! probability = 0.05
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::content::splitmix;
use crate::fault::FaultList;
use crate::model::{ModelKind, ModelProfile, Spread};
use crate::server::{Server, ServerConfig, WeightedFaults};

/// A validated scenario: the upstreams to start.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The scenario's seed (each upstream derives its own from it).
    pub seed: u64,
    /// Factor applied to every latency the models draw.
    pub time_scale: f64,
    /// The upstreams, in file order.
    pub upstreams: Vec<UpstreamSpec>,
}

/// One simulated upstream of a scenario.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Where it listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// What it serves and how it misbehaves.
    pub config: ServerConfig,
}

/// What was wrong with a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{origin}: cannot read the scenario file: {source}")]
    Read {
        /// The file.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type or an unknown key.
    #[error("{origin}:{line}:{column}: {key}: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The key path, e.g. `upstream[0].listen`.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The key path.
        key: String,
        /// What was wrong and what would do.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    seed: u64,
    #[serde(default = "one")]
    time_scale: f64,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    blackhole: bool,
    #[serde(default)]
    model: Vec<RawModel>,
    #[serde(default)]
    fault: Vec<RawFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    #[serde(default)]
    like: Option<String>,
    #[serde(default)]
    kind: Option<ModelKind>,
    #[serde(default)]
    first_token: Option<RawSpread<DurationText>>,
    #[serde(default)]
    tokens_per_s: Option<f64>,
    #[serde(default)]
    jitter: Option<f64>,
    #[serde(default)]
    output_tokens: Option<RawSpread<f64>>,
    #[serde(default)]
    dimensions: Option<u32>,
}

/// A spread written as a table `{ median = …, p99 = … }` or as one value (a fixed spread).
enum RawSpread<T> {
    Fixed(T),
    Spread { median: T, p99: Option<T> },
}

/// A value of a spread: a duration written as text, or a plain number.
trait SpreadValue: Sized {
    const EXPECTING: &'static str;
    fn from_text(text: &str) -> Result<Self, String>;
    fn from_number(number: f64) -> Result<Self, String>;
}

#[derive(Clone, Copy)]
struct DurationText(Duration);

impl SpreadValue for DurationText {
    const EXPECTING: &'static str =
        "a duration such as \"800ms\" or a table { median = \"1s\", p99 = \"4s\" }";
    fn from_text(text: &str) -> Result<Self, String> {
        crate::duration::parse(text)
            .map(DurationText)
            .map_err(|e| e.to_string())
    }
    fn from_number(number: f64) -> Result<Self, String> {
        Err(format!(
            "`{number}` has no unit; write a duration as text, e.g. \"{number}s\""
        ))
    }
}

impl SpreadValue for f64 {
    const EXPECTING: &'static str = "a number or a table { median = 100, p99 = 400 }";
    fn from_text(text: &str) -> Result<Self, String> {
        Err(format!("`{text}` is text; write a plain number"))
    }
    fn from_number(number: f64) -> Result<Self, String> {
        Ok(number)
    }
}

/// One value inside a spread table.
struct SpreadField<T>(T);

struct SpreadVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: SpreadValue> serde::de::Visitor<'de> for SpreadVisitor<T> {
    type Value = RawSpread<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        T::from_text(text).map(RawSpread::Fixed).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Self::Value, E> {
        self.visit_f64(number as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Self::Value, E> {
        self.visit_f64(number as f64)
    }
    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Self::Value, E> {
        T::from_number(number)
            .map(RawSpread::Fixed)
            .map_err(E::custom)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut median, mut p99) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "median" => median = Some(map.next_value::<SpreadField<T>>()?.0),
                "p99" => p99 = Some(map.next_value::<SpreadField<T>>()?.0),
                other => {
                    return Err(serde::de::Error::unknown_field(other, &["median", "p99"]));
                }
            }
        }
        let median = median.ok_or_else(|| serde::de::Error::missing_field("median"))?;
        Ok(RawSpread::Spread { median, p99 })
    }
}

impl<'de, T: SpreadValue> Deserialize<'de> for RawSpread<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpreadVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: SpreadValue> Deserialize<'de> for SpreadField<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(SpreadVisitor::<T>(std::marker::PhantomData))? {
            RawSpread::Fixed(value) => Ok(SpreadField(value)),
            RawSpread::Spread { .. } => Err(serde::de::Error::custom(
                "a spread cannot nest another table",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    fault: String,
    probability: f64,
}

/// Collects the first validation error with its key path.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn fail<T>(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        })
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            origin: origin.clone(),
            source,
        })?;
        Scenario::from_toml(&text, &origin)
    }

    /// Reads and validates scenario text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let raw = parse(text, origin)?;
        let check = Check { origin };
        if !(raw.time_scale.is_finite() && raw.time_scale > 0.0) {
            return check.fail(
                "time_scale",
                format!(
                    "is {}; write a factor above 0, e.g. 0.01 to run 100× faster",
                    raw.time_scale
                ),
            );
        }
        if raw.upstream.is_empty() {
            return check.fail(
                "upstream",
                "the scenario has no upstream; add at least one [[upstream]] table with a name",
            );
        }
        let mut upstreams: Vec<UpstreamSpec> = Vec::with_capacity(raw.upstream.len());
        for (index, upstream) in raw.upstream.into_iter().enumerate() {
            let key = format!("upstream[{index}]");
            let spec = upstream_spec(&check, &key, upstream, raw.seed, index, raw.time_scale)?;
            if let Some(other) = upstreams
                .iter()
                .position(|u| u.config.name == spec.config.name)
            {
                return check.fail(
                    format!("{key}.name"),
                    format!(
                        "`{}` is already the name of upstream[{other}]; names must differ",
                        spec.config.name
                    ),
                );
            }
            if spec.listen.port() != 0
                && let Some(other) = upstreams.iter().position(|u| u.listen == spec.listen)
            {
                return check.fail(format!("{key}.listen"), format!("{} is already taken by upstream[{other}]; use another port, or port 0 for any free one", spec.listen));
            }
            upstreams.push(spec);
        }
        Ok(Scenario {
            seed: raw.seed,
            time_scale: raw.time_scale,
            upstreams,
        })
    }

    /// Replaces the seed of the scenario and of each upstream (for `--seed`).
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        for (index, upstream) in self.upstreams.iter_mut().enumerate() {
            upstream.config.seed = upstream_seed(seed, index);
        }
        self
    }

    /// Replaces the time scale of every upstream (for `--time-scale`).
    pub fn with_time_scale(mut self, time_scale: f64) -> Scenario {
        self.time_scale = time_scale;
        for upstream in &mut self.upstreams {
            upstream.config.time_scale = time_scale;
        }
        self
    }

    /// Starts every upstream on its address.
    pub async fn start(&self) -> Result<Vec<Server>, std::io::Error> {
        let mut servers = Vec::with_capacity(self.upstreams.len());
        for upstream in &self.upstreams {
            let server = Server::bind(upstream.listen, upstream.config.clone())
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "upstream `{}` cannot listen on {}: {e}",
                            upstream.config.name, upstream.listen
                        ),
                    )
                })?;
            servers.push(server);
        }
        Ok(servers)
    }
}

fn parse(text: &str, origin: &str) -> Result<RawScenario, ScenarioError> {
    let located = |key: String, error: toml::de::Error| {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        ScenarioError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            key,
            message: error.message().trim().to_owned(),
        }
    };
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| located("(document)".to_owned(), e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        located(key, e.into_inner())
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn upstream_seed(seed: u64, index: usize) -> u64 {
    splitmix(seed ^ (index as u64).wrapping_mul(0x9e37_79b9))
}

fn upstream_spec(
    check: &Check<'_>,
    key: &str,
    raw: RawUpstream,
    seed: u64,
    index: usize,
    time_scale: f64,
) -> Result<UpstreamSpec, ScenarioError> {
    if raw.name.trim().is_empty() || raw.name.contains(char::is_whitespace) {
        return check.fail(
            format!("{key}.name"),
            format!(
                "`{}` is not a usable name; write one word such as `east`",
                raw.name
            ),
        );
    }
    let listen = match raw.listen.as_deref() {
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(text) => match text.parse() {
            Ok(addr) => addr,
            Err(_) => return check.fail(format!("{key}.listen"), format!("`{text}` is not an address; write IP:PORT such as 127.0.0.1:9101 (port 0 picks a free one)")),
        },
    };
    let mut custom = Vec::with_capacity(raw.model.len());
    for (i, model) in raw.model.into_iter().enumerate() {
        custom.push(model_profile(check, &format!("{key}.model[{i}]"), model)?);
    }
    let mut models: Vec<ModelProfile> = match raw.models {
        None => ModelProfile::builtin(),
        Some(names) => {
            let mut models = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                if custom.iter().any(|m| m.name == *name) {
                    continue;
                }
                match ModelProfile::builtin_named(name) {
                    Some(model) => models.push(model),
                    None => return check.fail(format!("{key}.models[{i}]"), format!("`{name}` is not a built-in model; define it in an [[upstream.model]] table or use one of: {}", ModelProfile::builtin_names().collect::<Vec<_>>().join(", "))),
                }
            }
            models
        }
    };
    models.retain(|m| !custom.iter().any(|c| c.name == m.name));
    models.extend(custom);

    let mut fault_mix = Vec::with_capacity(raw.fault.len());
    let mut total = 0.0;
    for (i, entry) in raw.fault.into_iter().enumerate() {
        let entry_key = format!("{key}.fault[{i}]");
        let faults = match FaultList::parse(&entry.fault) {
            Ok(faults) => faults,
            Err(error) => return check.fail(format!("{entry_key}.fault"), error.to_string()),
        };
        if let Some(other) = faults
            .0
            .iter()
            .find_map(|f| f.upstream.as_ref().filter(|u| **u != raw.name))
        {
            return check.fail(format!("{entry_key}.fault"), format!("names upstream `{other}` but belongs to upstream `{}`, so it would never apply; drop `upstream=`", raw.name));
        }
        if !(0.0..=1.0).contains(&entry.probability) {
            return check.fail(
                format!("{entry_key}.probability"),
                format!("is {}; write a probability from 0 to 1", entry.probability),
            );
        }
        total += entry.probability;
        fault_mix.push(WeightedFaults {
            faults,
            probability: entry.probability,
        });
    }
    if total > 1.0 + 1e-9 {
        return check.fail(
            format!("{key}.fault"),
            format!("the probabilities add up to {total}; they must add up to at most 1"),
        );
    }
    Ok(UpstreamSpec {
        listen,
        config: ServerConfig {
            name: raw.name,
            models,
            fault_mix,
            seed: upstream_seed(seed, index),
            time_scale,
            blackhole: raw.blackhole,
        },
    })
}

fn model_profile(
    check: &Check<'_>,
    key: &str,
    raw: RawModel,
) -> Result<ModelProfile, ScenarioError> {
    let base_name = raw.like.as_deref().unwrap_or("gpt-4o-mini");
    let Some(mut model) = ModelProfile::builtin_named(base_name) else {
        return check.fail(
            format!("{key}.like"),
            format!(
                "`{base_name}` is not a built-in model; use one of: {}",
                ModelProfile::builtin_names().collect::<Vec<_>>().join(", ")
            ),
        );
    };
    model.name = raw.name;
    if let Some(kind) = raw.kind {
        model.kind = kind;
    }
    if let Some(spread) = raw.first_token {
        let (median, p99) = spread.parts();
        let p99 = p99.unwrap_or(median);
        if p99.0 < median.0 {
            return check.fail(
                format!("{key}.first_token.p99"),
                format!(
                    "{} is below the median {}; the 99th percentile must be at least the median",
                    crate::duration::format(p99.0),
                    crate::duration::format(median.0)
                ),
            );
        }
        model.latency.first_token = Spread {
            median: median.0.as_secs_f64(),
            p99: p99.0.as_secs_f64(),
        };
    }
    if let Some(rate) = raw.tokens_per_s {
        if rate.is_nan() || rate <= 0.0 {
            return check.fail(
                format!("{key}.tokens_per_s"),
                format!("is {rate}; write a rate above 0 (inf for no gaps)"),
            );
        }
        model.latency.tokens_per_s = rate;
    }
    if let Some(jitter) = raw.jitter {
        if !(0.0..=2.0).contains(&jitter) {
            return check.fail(
                format!("{key}.jitter"),
                format!("is {jitter}; write a relative spread from 0 (even gaps) to 2"),
            );
        }
        model.latency.jitter = jitter;
    }
    if let Some(spread) = raw.output_tokens {
        let (median, p99) = spread.parts();
        let p99 = p99.unwrap_or(median);
        if median.is_nan() || median < 1.0 {
            return check.fail(
                format!("{key}.output_tokens.median"),
                format!("is {median}; write at least 1 token"),
            );
        }
        if p99 < median {
            return check.fail(format!("{key}.output_tokens.p99"), format!("{p99} is below the median {median}; the 99th percentile must be at least the median"));
        }
        model.latency.output_tokens = Spread { median, p99 };
    }
    if let Some(dimensions) = raw.dimensions {
        if dimensions == 0 {
            return check.fail(format!("{key}.dimensions"), "must be at least 1");
        }
        model.dimensions = dimensions;
    }
    Ok(model)
}

impl<T: Copy> RawSpread<T> {
    fn parts(&self) -> (T, Option<T>) {
        match *self {
            RawSpread::Fixed(value) => (value, None),
            RawSpread::Spread { median, p99 } => (median, p99),
        }
    }
}

#[cfg(test)]
mod tests;
