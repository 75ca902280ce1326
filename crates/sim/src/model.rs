//! Simulated models: what each one serves and how long it takes.
//!
//! The latency model draws, per response, a time to first token and an output length from
//! log-normal distributions given by their median and 99th percentile (the two numbers people
//! quote), and gaps between tokens from a rate with relative jitter. Built-in profiles carry the
//! origin document's figures: fast chat models answer in about a second, reasoning models think
//! 20–120 s, image models take 10–40 s, embeddings well under a second.

use std::time::Duration;

/// Which endpoints a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat, completions and responses.
    Chat,
    /// Chat, completions and responses, with hidden reasoning tokens before the answer.
    Reasoning,
    /// Image generation.
    Image,
    /// Embeddings.
    Embedding,
    /// Every endpoint (for benchmarks and quick tests).
    Any,
}

/// A distribution given by its median and 99th percentile: log-normal, or fixed when they are equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Half of the draws fall below this value.
    pub median: f64,
    /// 99 % of the draws fall below this value; at least `median`.
    pub p99: f64,
}

/// Timing and length of a simulated model's answers, before `--time-scale` is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    /// Seconds from the request to the first content token (for image and embedding models: to
    /// the whole response).
    pub first_token: Spread,
    /// Mean generation rate in tokens per second after the first token; infinite means no gaps.
    pub tokens_per_s: f64,
    /// Relative spread of the gap between tokens (0 = perfectly even).
    pub jitter: f64,
    /// Number of output tokens per choice (capped by the request's `max_tokens`).
    pub output_tokens: Spread,
}

/// A simulated model: its name, what it serves, and its latency model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    /// The model id clients ask for.
    pub name: String,
    /// The endpoints it serves.
    pub kind: ModelKind,
    /// How long its answers take.
    pub latency: LatencyModel,
    /// Length of its embedding vectors (embedding models only).
    pub dimensions: u32,
}

/// One response's draw from a latency model, with the time scale applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Delay before the first content token.
    pub first_token: Duration,
    /// Output tokens per choice.
    pub output_tokens: u32,
    /// Mean gap between tokens, in seconds (time scale applied).
    pub mean_gap: f64,
    /// Relative jitter of each gap.
    pub jitter: f64,
}

/// z-score of the 99th percentile of the standard normal distribution.
const Z_P99: f64 = 2.326_347_874_040_841;

impl Spread {
    /// A spread that always yields `value`.
    pub const fn fixed(value: f64) -> Spread {
        Spread {
            median: value,
            p99: value,
        }
    }

    /// Draws one value: `median · exp(σ·z)` with σ chosen so that the 99th percentile is `p99`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> f64 {
        if self.median <= 0.0 || self.p99 <= self.median {
            return self.median.max(0.0);
        }
        let sigma = (self.p99 / self.median).ln() / Z_P99;
        self.median * (sigma * standard_normal(rng)).exp()
    }
}

/// A standard normal draw (Box–Muller).
pub(crate) fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // in (0, 1], so the logarithm is finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl LatencyModel {
    /// Draws the timing of one response; `time_scale` multiplies every duration.
    pub fn draw(&self, rng: &mut fastrand::Rng, time_scale: f64) -> Draw {
        let first_token = self.first_token.sample(rng) * time_scale;
        let output_tokens = self.output_tokens.sample(rng).round().clamp(1.0, 1e6) as u32;
        let mean_gap = if self.tokens_per_s.is_finite() && self.tokens_per_s > 0.0 {
            time_scale / self.tokens_per_s
        } else {
            0.0
        };
        Draw {
            first_token: seconds(first_token),
            output_tokens,
            mean_gap,
            jitter: self.jitter,
        }
    }
}

impl Draw {
    /// The gap before the next token: the mean gap, log-normally jittered with the mean kept.
    pub fn gap(&self, rng: &mut fastrand::Rng) -> Duration {
        if self.mean_gap <= 0.0 {
            return Duration::ZERO;
        }
        if self.jitter <= 0.0 {
            return seconds(self.mean_gap);
        }
        let sigma = self.jitter;
        seconds(self.mean_gap * (sigma * standard_normal(rng) - sigma * sigma / 2.0).exp())
    }
}

/// Seconds as a duration, saturating at a day so a wild distribution cannot overflow.
pub(crate) fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 86_400.0))
}

impl ModelKind {
    /// The word used in files and errors.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Reasoning => "reasoning",
            ModelKind::Image => "image",
            ModelKind::Embedding => "embedding",
            ModelKind::Any => "any",
        }
    }

    /// Whether a model of this kind generates text (chat, completions, responses).
    pub fn generates_text(self) -> bool {
        matches!(
            self,
            ModelKind::Chat | ModelKind::Reasoning | ModelKind::Any
        )
    }
}

const fn profile(
    kind: ModelKind,
    first_token: (f64, f64),
    tokens_per_s: f64,
    output_tokens: (f64, f64),
) -> (ModelKind, LatencyModel) {
    (
        kind,
        LatencyModel {
            first_token: Spread {
                median: first_token.0,
                p99: first_token.1,
            },
            tokens_per_s,
            jitter: 0.25,
            output_tokens: Spread {
                median: output_tokens.0,
                p99: output_tokens.1,
            },
        },
    )
}

/// The built-in models: name, kind, first token (median, p99 seconds), tokens/s, output tokens.
const BUILTIN: &[(&str, (ModelKind, LatencyModel))] = &[
    // Fast chat: about a second to the first token.
    (
        "gpt-4o-mini",
        profile(ModelKind::Chat, (0.45, 1.5), 90.0, (120.0, 600.0)),
    ),
    (
        "gpt-4o",
        profile(ModelKind::Chat, (0.8, 3.0), 55.0, (180.0, 800.0)),
    ),
    (
        "claude-4-sonnet",
        profile(ModelKind::Chat, (1.2, 4.0), 60.0, (200.0, 900.0)),
    ),
    (
        "deepseek-chat",
        profile(ModelKind::Chat, (1.5, 6.0), 35.0, (200.0, 900.0)),
    ),
    // Reasoning: the origin document's 20–120 s of thinking before the answer.
    (
        "o1-mini",
        profile(ModelKind::Reasoning, (40.0, 60.0), 70.0, (300.0, 1500.0)),
    ),
    (
        "o1-preview",
        profile(ModelKind::Reasoning, (85.0, 120.0), 40.0, (400.0, 2000.0)),
    ),
    (
        "o3-pro",
        profile(ModelKind::Reasoning, (65.0, 90.0), 45.0, (400.0, 2000.0)),
    ),
    (
        "deepseek-r1",
        profile(ModelKind::Reasoning, (30.0, 45.0), 30.0, (400.0, 2000.0)),
    ),
    // Image generation: 5–40 s for the whole picture.
    (
        "gpt-image-1",
        profile(ModelKind::Image, (22.0, 30.0), f64::INFINITY, (1.0, 1.0)),
    ),
    (
        "dall-e-3",
        profile(ModelKind::Image, (28.0, 40.0), f64::INFINITY, (1.0, 1.0)),
    ),
    (
        "flux-kontext",
        profile(ModelKind::Image, (16.0, 25.0), f64::INFINITY, (1.0, 1.0)),
    ),
    (
        "stable-diffusion",
        profile(ModelKind::Image, (9.0, 15.0), f64::INFINITY, (1.0, 1.0)),
    ),
    // Embeddings: well under a second.
    (
        "text-embedding-3-small",
        profile(ModelKind::Embedding, (0.12, 0.4), f64::INFINITY, (1.0, 1.0)),
    ),
    (
        "text-embedding-3-large",
        profile(ModelKind::Embedding, (0.2, 0.6), f64::INFINITY, (1.0, 1.0)),
    ),
    // No latency at all: for benchmarks, where the simulator must never be the bottleneck.
    (
        "sim-instant",
        profile(ModelKind::Any, (0.0, 0.0), f64::INFINITY, (16.0, 16.0)),
    ),
];

impl ModelProfile {
    /// Every built-in model.
    pub fn builtin() -> Vec<ModelProfile> {
        BUILTIN.iter().map(|(name, _)| Self::make(name)).collect()
    }

    /// The built-in model of that name.
    pub fn builtin_named(name: &str) -> Option<ModelProfile> {
        BUILTIN
            .iter()
            .any(|(n, _)| *n == name)
            .then(|| Self::make(name))
    }

    /// The names of the built-in models, for error messages.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    fn make(name: &str) -> ModelProfile {
        let (kind, latency) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .expect("make is only called with names from BUILTIN");
        let dimensions = if name.ends_with("-large") { 3072 } else { 1536 };
        ModelProfile {
            name: name.to_owned(),
            kind,
            latency,
            dimensions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    fn draws(spread: Spread, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut values: Vec<f64> = (0..n).map(|_| spread.sample(&mut rng)).collect();
        values.sort_by(f64::total_cmp);
        values
    }

    #[test]
    fn log_normal_spread_hits_its_median_and_p99() {
        let spread = Spread {
            median: 40.0,
            p99: 60.0,
        };
        let values = draws(spread, 40_000, 1);
        let median = quantile(&values, 0.5);
        let p99 = quantile(&values, 0.99);
        assert!((median / 40.0 - 1.0).abs() < 0.02, "median {median}");
        assert!((p99 / 60.0 - 1.0).abs() < 0.04, "p99 {p99}");
        assert!(values[0] > 0.0, "a log-normal draw is positive");
    }

    #[test]
    fn a_wide_tail_is_reproduced_too() {
        let values = draws(
            Spread {
                median: 0.45,
                p99: 1.5,
            },
            40_000,
            2,
        );
        assert!((quantile(&values, 0.5) / 0.45 - 1.0).abs() < 0.03);
        assert!((quantile(&values, 0.99) / 1.5 - 1.0).abs() < 0.08);
    }

    #[test]
    fn equal_median_and_p99_is_a_fixed_value() {
        let values = draws(Spread::fixed(3.0), 100, 3);
        assert!(values.iter().all(|v| *v == 3.0));
        assert!(draws(Spread::fixed(0.0), 10, 3).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn same_seed_same_draws() {
        let model = ModelProfile::builtin_named("o1-mini").unwrap().latency;
        let a = model.draw(&mut fastrand::Rng::with_seed(9), 1.0);
        let b = model.draw(&mut fastrand::Rng::with_seed(9), 1.0);
        assert_eq!(a, b);
        let c = model.draw(&mut fastrand::Rng::with_seed(10), 1.0);
        assert_ne!(a, c);
    }

    #[test]
    fn time_scale_shrinks_a_ninety_second_call() {
        let model = LatencyModel {
            first_token: Spread::fixed(90.0),
            tokens_per_s: 50.0,
            jitter: 0.0,
            output_tokens: Spread::fixed(10.0),
        };
        let draw = model.draw(&mut fastrand::Rng::with_seed(1), 0.01);
        assert_eq!(draw.first_token, Duration::from_millis(900));
        assert_eq!(draw.output_tokens, 10);
        assert_eq!(
            draw.gap(&mut fastrand::Rng::with_seed(1)),
            Duration::from_micros(200)
        );
    }

    #[test]
    fn token_gaps_keep_their_mean_under_jitter() {
        let model = LatencyModel {
            first_token: Spread::fixed(0.0),
            tokens_per_s: 50.0,
            jitter: 0.3,
            output_tokens: Spread::fixed(1.0),
        };
        let mut rng = fastrand::Rng::with_seed(5);
        let draw = model.draw(&mut rng, 1.0);
        let gaps: Vec<f64> = (0..20_000)
            .map(|_| draw.gap(&mut rng).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean / 0.02 - 1.0).abs() < 0.02, "mean gap {mean}");
        let distinct = gaps.iter().filter(|g| (**g - 0.02).abs() > 0.002).count();
        assert!(
            distinct > 10_000,
            "jitter spreads the gaps ({distinct} far from the mean)"
        );
    }

    #[test]
    fn builtins_follow_the_origin_documents_figures() {
        let all = ModelProfile::builtin();
        let by_kind = |kind| all.iter().filter(move |m| m.kind == kind);
        for chat in by_kind(ModelKind::Chat) {
            assert!(chat.latency.first_token.median <= 1.5, "{}", chat.name);
        }
        for reasoning in by_kind(ModelKind::Reasoning) {
            let spread = reasoning.latency.first_token;
            assert!(
                spread.median >= 20.0 && spread.p99 <= 120.0,
                "{}",
                reasoning.name
            );
        }
        for image in by_kind(ModelKind::Image) {
            let spread = image.latency.first_token;
            assert!(spread.median >= 5.0 && spread.p99 <= 40.0, "{}", image.name);
        }
        for embedding in by_kind(ModelKind::Embedding) {
            assert!(
                embedding.latency.first_token.p99 < 1.0,
                "{}",
                embedding.name
            );
        }
        assert!(ModelProfile::builtin_named("nope").is_none());
        assert_eq!(
            ModelProfile::builtin_named("text-embedding-3-large")
                .unwrap()
                .dimensions,
            3072
        );
    }
}
