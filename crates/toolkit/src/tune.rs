//! `hourglass tune`: timeouts and retries per model derived from measured latency (`probe`
//! results), or from the built-in priors of the model's family when there is no data. Every value
//! comes with the rule that produced it, and is rendered as hourglass TOML and as settings for the
//! OpenAI Python and Node SDKs and curl.

use std::collections::BTreeMap;
use std::time::Duration;

use hourglass_config::{Family, Policy, Scenario};

use crate::probe::{Report, Sample};
use crate::stats::percentile;

/// What shapes the derivation besides the data.
#[derive(Debug, Clone, Default)]
pub struct TuneOptions {
    /// The scenario (patience); default: the family's.
    pub scenario: Option<Scenario>,
    /// The smallest read/idle timeout of a proxy on the path, if known.
    pub middlebox: Option<Duration>,
    /// The longest answer (output tokens) real calls expect; default: the longest measured.
    pub output_tokens: Option<u32>,
}

/// One derived value and the rule behind it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Derived {
    /// The policy key (`timeouts.connect`, `retry.max_attempts`, `hedge`, …).
    pub key: &'static str,
    /// The value as written in the TOML.
    pub value: String,
    /// How it was derived.
    pub rule: String,
}

/// The tuning of one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelTuning {
    /// The model.
    pub model: String,
    /// Its family.
    pub family: &'static str,
    /// The scenario the values are for.
    pub scenario: &'static str,
    /// Where the numbers came from.
    pub basis: String,
    /// The upstreams that served it in the data (for `targets`), when they were named upstreams.
    pub upstreams: Vec<String>,
    /// Every value with its rule.
    pub derived: Vec<Derived>,
    /// Things to act on that a number cannot fix.
    pub warnings: Vec<String>,
    /// The resulting policy.
    #[serde(skip)]
    pub policy: Policy,
    /// The hedge threshold (the model's `hedge`).
    #[serde(skip)]
    pub hedge_after: Option<Duration>,
}

/// Records a derived value and its rule.
fn push(derived: &mut Vec<Derived>, key: &'static str, value: String, rule: String) {
    derived.push(Derived { key, value, rule });
}

/// A duration rounded up to two significant figures (never shorter than measured).
pub fn round_up(d: Duration) -> Duration {
    let ms = d.as_secs_f64() * 1000.0;
    let step = if ms < 1000.0 {
        10.0
    } else if ms < 10_000.0 {
        100.0
    } else if ms < 100_000.0 {
        1000.0
    } else {
        5000.0
    };
    Duration::from_millis(((ms / step).ceil() * step) as u64)
}

/// The shortest heartbeat the configuration accepts.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

fn fmt(d: Duration) -> String {
    hourglass_config::duration::format(d)
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64((v / 1000.0).max(0.0))
}

/// The margin over a p99 that a scenario's patience allows.
fn margin(scenario: Scenario) -> f64 {
    match scenario {
        Scenario::Realtime => 1.5,
        Scenario::Content | Scenario::Reasoning => 2.0,
        Scenario::Image => 1.5,
    }
}

/// What measurements say about one model, however they were taken (probe samples, or a running
/// gateway's histograms): the percentiles the rules use, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Calls measured.
    pub calls: usize,
    /// Of which succeeded.
    pub ok: usize,
    /// p99 of connecting, of calls that dialed.
    pub connect_p99: Option<f64>,
    /// p99 and p95 of a stream's first token.
    pub first_token: Option<(f64, f64)>,
    /// p99 of a whole answer (a non-streamed answer's first byte, a stream's end), and the
    /// percentile (and its value) the hedge is set at.
    pub whole: Option<(f64, u8, f64)>,
    /// p99 of each stream's longest gap.
    pub gap_p99: Option<f64>,
    /// p10 of output tokens per second.
    pub tokens_per_s_p10: Option<f64>,
    /// The longest answer seen, in tokens.
    pub answer_tokens: Option<u64>,
    /// Where the numbers came from, for the basis line.
    pub basis: String,
    /// Said after each measured figure in a rule (how it was measured), or empty.
    pub note: &'static str,
}

impl Measured {
    /// From probe samples.
    pub fn from_samples(samples: &[&Sample]) -> Measured {
        let ok: Vec<&&Sample> = samples.iter().filter(|s| s.ok).collect();
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let of =
            |f: &dyn Fn(&Sample) -> Option<f64>| sorted(ok.iter().filter_map(|s| f(s)).collect());
        let connects = sorted(samples.iter().filter_map(|s| s.connect_ms).collect());
        let first_tokens = of(&|s| s.first_token_ms);
        let whole = of(&|s| {
            if s.first_token_ms.is_some() {
                Some(s.total_ms)
            } else {
                s.first_byte_ms
            }
        });
        let gaps = of(&|s| s.max_gap_ms);
        let speeds = of(&|s| s.tokens_per_s);
        let p = |v: &[f64], q: f64| (!v.is_empty()).then(|| percentile(v, q));
        Measured {
            calls: samples.len(),
            ok: ok.len(),
            connect_p99: p(&connects, 99.0),
            first_token: p(&first_tokens, 99.0).zip(p(&first_tokens, 95.0)),
            whole: p(&whole, 99.0)
                .zip(p(&whole, 95.0))
                .map(|(p99, p95)| (p99, 95, p95)),
            gap_p99: p(&gaps, 99.0),
            tokens_per_s_p10: p(&speeds, 10.0),
            answer_tokens: ok.iter().filter_map(|s| s.completion_tokens).max(),
            basis: format!("{} measured calls ({} succeeded)", samples.len(), ok.len()),
            note: "",
        }
    }
}

/// Tunes every model in `report` (samples of the same model pooled across endpoints).
pub fn from_report(report: &Report, options: &TuneOptions) -> Vec<ModelTuning> {
    let mut by_model: BTreeMap<&str, (Vec<&Sample>, Vec<String>, Family)> = BTreeMap::new();
    for r in &report.results {
        let entry = by_model
            .entry(r.model.as_str())
            .or_insert_with(|| (Vec::new(), Vec::new(), Family::infer(&r.model)));
        entry.0.extend(r.samples.iter());
        if !r.endpoint.contains("://") && !entry.1.contains(&r.endpoint) {
            entry.1.push(r.endpoint.clone());
        }
    }
    by_model
        .into_iter()
        .map(|(model, (samples, upstreams, family))| {
            let measured = Measured::from_samples(&samples);
            let mut t = derive(model, family, Some(&measured), options);
            t.upstreams = upstreams;
            t
        })
        .collect()
}

/// Tunes every model a running gateway has served (`models`: only these), from its `/metrics`
/// histograms — connect, first token, each stream's longest gap, tokens per second, calls by
/// outcome — and its `/status` windows (the whole answer's p99 and p90 over the last five
/// minutes, or the last minute). `source` names the gateway in each basis line.
pub fn from_gateway(
    metrics: &str,
    status: &serde_json::Value,
    source: &str,
    models: &[String],
    options: &TuneOptions,
) -> Result<Vec<ModelTuning>, String> {
    use crate::prom::{self, Histogram};
    let samples = prom::parse(metrics).map_err(|e| format!("{source}/metrics: {e}"))?;
    let served: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "hourglass_calls_total")
        .filter_map(|s| s.labels.get("model").map(String::as_str))
        .filter(|m| *m != "other" && !m.is_empty())
        .filter(|m| models.is_empty() || models.iter().any(|want| want == m))
        .collect();
    if served.is_empty() {
        return Err(format!(
            "{source} has served no calls{} yet: tune reads what it has measured",
            if models.is_empty() {
                String::new()
            } else {
                format!(" of {}", models.join(", "))
            }
        ));
    }
    let targets = status["targets"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for model in served {
        let q = |name: &str, extra: &[(&str, &str)], quantile: f64| {
            let mut want = vec![("model", model)];
            want.extend_from_slice(extra);
            Histogram::of(&samples, name, &want)
                .quantile(quantile)
                .map(|v| v * 1000.0)
        };
        let phase = "hourglass_phase_duration_seconds";
        let calls = prom::total(&samples, "hourglass_calls_total", &[("model", model)]);
        let ok = prom::total(
            &samples,
            "hourglass_calls_total",
            &[("model", model), ("outcome", "ok")],
        );
        // The whole answer: the slowest target's p99 (and p90) of the freshest window with data.
        let mine: Vec<&serde_json::Value> =
            targets.iter().filter(|t| t["model"] == model).collect();
        let whole = ["5m", "1m"].iter().find_map(|window| {
            let p = |pct: &str| {
                mine.iter()
                    .filter_map(|t| t["windows"][window]["total_ms"][pct].as_f64())
                    .reduce(f64::max)
            };
            p("p99")
                .zip(p("p90"))
                .map(|(p99, p90)| (*window, (p99, 90, p90)))
        });
        let measured = Measured {
            calls: calls as usize,
            ok: ok as usize,
            connect_p99: q(phase, &[("phase", "connect")], 0.99),
            first_token: q(phase, &[("phase", "first_token")], 0.99).zip(q(
                phase,
                &[("phase", "first_token")],
                0.95,
            )),
            whole: whole.map(|(_, w)| w),
            gap_p99: q("hourglass_stream_max_gap_seconds", &[], 0.99),
            tokens_per_s_p10: q("hourglass_stream_tokens_per_second", &[], 0.10)
                .map(|v| v / 1000.0),
            answer_tokens: None,
            basis: format!(
                "{source}: {calls} calls ({ok} ok) in /metrics; {}",
                match whole {
                    Some((window, _)) => format!("whole answers from /status ({window} window)"),
                    None => "no recent whole answers in /status".to_owned(),
                }
            ),
            note: " (gateway histogram)",
        };
        let mut tuning = derive(model, Family::infer(model), Some(&measured), options);
        tuning.upstreams = mine
            .iter()
            .filter_map(|t| {
                let upstream = t["upstream"].as_str()?;
                let sent = t["upstream_model"].as_str().unwrap_or(model);
                Some(format!("{upstream}:{sent}"))
            })
            .collect();
        tuning.upstreams.dedup();
        out.push(tuning);
    }
    Ok(out)
}

/// Tunes a model with no data: the family's built-in priors, with the rules that set them.
pub fn from_priors(model: &str, options: &TuneOptions) -> ModelTuning {
    derive(model, Family::infer(model), None, options)
}

/// Tunes one model from what was measured of it (`None`: the family's priors).
pub fn derive(
    model: &str,
    family: Family,
    measured: Option<&Measured>,
    options: &TuneOptions,
) -> ModelTuning {
    let scenario = options.scenario.unwrap_or(family.default_scenario());
    let prior = hourglass_config::policy::prior(family, scenario);
    let m = margin(scenario);
    let mut policy = prior;
    let mut derived = Vec::new();
    let mut warnings = Vec::new();
    let none = Measured::default();
    let data = measured.unwrap_or(&none);
    let note = data.note;
    let prior_rule = |what: &str| {
        format!(
            "built-in prior for {} models, {} scenario ({what})",
            family.name(),
            scenario.name()
        )
    };
    let t = &mut policy.timeouts;

    // connect: the handshake is either quick or broken; a slow one is better retried.
    if let Some(p99) = data.connect_p99 {
        t.connect = round_up(ms(p99 * 3.0)).clamp(Duration::from_secs(1), Duration::from_secs(10));
        push(
            &mut derived,
            "timeouts.connect",
            fmt(t.connect),
            format!(
                "p99 connect {}{note} × 3, at least 1s, at most 10s",
                crate::probe::human_ms(p99)
            ),
        );
    } else {
        push(
            &mut derived,
            "timeouts.connect",
            fmt(t.connect),
            prior_rule("no connect samples"),
        );
    }

    // first_token: streams only.
    let floor_ft = Duration::from_secs(2);
    if let Some((p99, _)) = data.first_token {
        t.first_token = round_up(ms(p99 * m)).max(floor_ft);
        push(
            &mut derived,
            "timeouts.first_token",
            fmt(t.first_token),
            format!(
                "p99 first token {}{note} × {m}, at least 2s",
                crate::probe::human_ms(p99)
            ),
        );
    } else {
        push(
            &mut derived,
            "timeouts.first_token",
            fmt(t.first_token),
            prior_rule("no streamed samples"),
        );
    }

    // first_byte and attempt: a whole answer's headers come when it is done, so both cover the
    // whole generation: the p99 of a whole answer's first byte, or of a stream's total.
    // Answers longer than the probe's take longer: first token plus the extra tokens at a slow
    // (10th percentile) decode rate.
    let measured_tokens = data.answer_tokens;
    let extra_ms = match (
        options.output_tokens,
        measured_tokens,
        data.tokens_per_s_p10,
    ) {
        (Some(want), Some(had), Some(slow)) if u64::from(want) > had => {
            (u64::from(want) - had) as f64 / slow.max(1e-3) * 1000.0
        }
        _ => 0.0,
    };
    if options.output_tokens.is_none()
        && let Some(had) = measured_tokens
    {
        warnings.push(format!(
            "first_byte and attempt assume answers up to {had} tokens, as probed; pass --output-tokens N for longer ones"
        ));
    }
    if let Some((p99, _, _)) = data.whole {
        t.first_byte = round_up(ms((p99 + extra_ms) * m)).max(Duration::from_secs(5));
        let longer = if extra_ms > 0.0 {
            format!(
                " + {} for --output-tokens at the p10 decode rate",
                crate::probe::human_ms(extra_ms)
            )
        } else {
            String::new()
        };
        push(
            &mut derived,
            "timeouts.first_byte",
            fmt(t.first_byte),
            format!(
                "(p99 whole-answer time {}{note}{longer}) × {m}, at least 5s (a non-streamed answer's headers come when it is done)",
                crate::probe::human_ms(p99)
            ),
        );
        t.attempt = t.first_byte.max(t.first_token);
        push(
            &mut derived,
            "timeouts.attempt",
            fmt(t.attempt),
            "= the larger of first_byte and first_token: one try's whole answer".to_owned(),
        );
    } else {
        push(
            &mut derived,
            "timeouts.first_byte",
            fmt(t.first_byte),
            prior_rule("no successful samples"),
        );
        push(
            &mut derived,
            "timeouts.attempt",
            fmt(t.attempt),
            prior_rule("no successful samples"),
        );
    }

    // idle: the longest silence inside a healthy stream, with room for a slow moment.
    let floor_idle = if scenario == Scenario::Realtime {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(5)
    };
    if let Some(p99) = data.gap_p99 {
        t.idle = round_up(ms(p99 * 4.0)).max(floor_idle);
        push(
            &mut derived,
            "timeouts.idle",
            fmt(t.idle),
            format!(
                "p99 of each stream's longest gap {}{note} × 4, at least {} (a stall rarely recovers: fail over)",
                crate::probe::human_ms(p99),
                fmt(floor_idle)
            ),
        );
    } else {
        push(
            &mut derived,
            "timeouts.idle",
            fmt(t.idle),
            prior_rule("no streamed samples"),
        );
    }

    // Tries, backoff and the total: the scenario's patience.
    let tries = prior.retry.max_attempts;
    push(
        &mut derived,
        "retry.max_attempts",
        tries.to_string(),
        format!("{} scenario: {tries} tries", scenario.name()),
    );
    push(
        &mut derived,
        "retry.backoff_base",
        fmt(policy.retry.backoff_base),
        format!("{} scenario prior", scenario.name()),
    );
    push(
        &mut derived,
        "retry.backoff_max",
        fmt(policy.retry.backoff_max),
        format!("{} scenario prior", scenario.name()),
    );
    if measured.is_some_and(|d| d.calls > 0) {
        let t = &mut policy.timeouts;
        t.attempt_growth = 1.0;
        t.total = round_up(t.attempt * tries + policy.retry.backoff_max * (tries - 1));
        push(
            &mut derived,
            "timeouts.total",
            fmt(t.total),
            format!(
                "attempt × {tries} tries + {} backoff each between",
                fmt(policy.retry.backoff_max)
            ),
        );
        let rate = data.ok as f64 / data.calls as f64;
        if rate < 0.95 {
            warnings.push(format!(
                "only {:.0}% of the measured calls succeeded: retries cannot make up for a failing upstream; run `hourglass explain` on its errors",
                rate * 100.0
            ));
        }
    } else {
        push(
            &mut derived,
            "timeouts.total",
            fmt(policy.timeouts.total),
            prior_rule("no data"),
        );
    }

    settle(&mut policy, &mut derived);

    // A proxy on the path cuts any silence longer than its limit. What it sees as silence is a
    // stream's wait for its first token and its gaps — heartbeats fill those — and the whole
    // wait of a non-streamed answer, which only a per-request heartbeat fills. The gateway's own
    // timers are never capped to the proxy's limit: with heartbeats there is no silence, and a
    // stream that flows tokens for longer than the limit is not silent either. Capping them
    // would fail every call the heartbeat was recommended to save.
    if let Some(limit) = options.middlebox {
        let cap = longest_silence(limit);
        let quarter = round_up(limit / 4).max(MIN_HEARTBEAT);
        let to = &policy.timeouts;
        let (silence, whole) = (to.first_token.max(to.idle), to.first_byte.max(to.attempt));
        if silence > cap {
            let beat = policy.heartbeat.map_or(quarter, |b| b.min(quarter));
            policy.heartbeat = Some(beat);
            warnings.push(format!(
                "a stream can be silent for {} but a proxy on the path cuts silence at {}: heartbeats every {} keep it open",
                fmt(silence),
                fmt(limit),
                fmt(beat)
            ));
            push(
                &mut derived,
                "heartbeat",
                fmt(beat),
                format!(
                    "--middlebox {} ÷ 4 (or the family's, when shorter): the longest silence a stream may have ({}) is longer than the proxy allows",
                    fmt(limit),
                    fmt(silence)
                ),
            );
        } else if let Some(beat) = policy.heartbeat
            && beat > quarter
        {
            policy.heartbeat = Some(quarter);
            push(
                &mut derived,
                "heartbeat",
                fmt(quarter),
                format!(
                    "--middlebox {} ÷ 4: a beat must come well inside the proxy's limit",
                    fmt(limit)
                ),
            );
        }
        if whole > cap {
            let beat = policy.heartbeat.unwrap_or(quarter);
            warnings.push(format!(
                "a non-streamed answer may wait up to {} for its whole body, longer than the proxy's {}: stream it (the policy's heartbeats then keep the proxy fed), send `x-hourglass-heartbeat: {}` with it, or submit it as a background call (`Prefer: respond-async`)",
                fmt(whole),
                fmt(limit),
                fmt(beat)
            ));
        }
    }

    if let Some(beat) = policy.heartbeat
        && !derived.iter().any(|d| d.key == "heartbeat")
    {
        push(
            &mut derived,
            "heartbeat",
            fmt(beat),
            prior_rule("its long silences need heartbeats through proxies"),
        );
    }

    // Hedging: a second request after the p95 of the wait wins against the slowest 5 %.
    let wait = match (data.first_token, data.whole) {
        (Some((_, p95)), _) => Some((p95, 95, "first token")),
        (None, Some((_, pct, value))) => Some((value, pct, "whole answer")),
        (None, None) => None,
    };
    let hedge_after = wait.map(|(value, _, _)| round_up(ms(value)));
    if let (Some(h), Some((_, pct, what))) = (hedge_after, wait) {
        push(
            &mut derived,
            "hedge",
            fmt(h),
            format!(
                "p{pct} {what}{note}: a second request on another upstream then beats the slowest {}%",
                100 - pct
            ),
        );
    }

    let mut tuning = ModelTuning {
        model: model.to_owned(),
        family: family.name(),
        scenario: scenario.name(),
        basis: if data.calls == 0 {
            "no measurements: the family's built-in priors".to_owned()
        } else {
            data.basis.clone()
        },
        upstreams: Vec::new(),
        derived,
        warnings,
        policy,
        hedge_after,
    };
    let found = contradictions(&tuning, options.middlebox);
    tuning.warnings.extend(
        found
            .into_iter()
            .map(|f| format!("inconsistent settings (a bug in `hourglass tune`): {f}")),
    );
    tuning
}

/// The longest silence a proxy that cuts at `limit` lets through: a second less, at least one.
fn longest_silence(limit: Duration) -> Duration {
    limit
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_secs(1))
}

/// Makes the timers agree with each other: no phase may be allowed longer than the attempt that
/// contains it, and no attempt longer than the whole call (a scenario's patience can be shorter
/// than a family's attempt: a reasoning model for a person who waits). A value that is cut keeps
/// its rule and says why.
fn settle(policy: &mut Policy, derived: &mut [Derived]) {
    let t = &mut policy.timeouts;
    let mut cut = |key: &'static str, value: &mut Duration, bound: Duration, why: &str| {
        if *value > bound {
            *value = bound;
            if let Some(d) = derived.iter_mut().find(|d| d.key == key) {
                d.value = fmt(bound);
                d.rule.push_str(&format!("; cut to {why} ({})", fmt(bound)));
            }
        }
    };
    let total = t.total;
    cut(
        "timeouts.attempt",
        &mut t.attempt,
        total,
        "the total: one try cannot outlast the call",
    );
    let attempt = t.attempt;
    for (key, value) in [
        ("timeouts.connect", &mut t.connect),
        ("timeouts.first_byte", &mut t.first_byte),
        ("timeouts.first_token", &mut t.first_token),
        ("timeouts.idle", &mut t.idle),
    ] {
        cut(key, value, attempt, "the attempt that contains it");
    }
}

/// Every pair of settings in `t` where one cuts a call the other allows, given the heartbeat it
/// recommends and the smallest proxy limit on the path (`middlebox`). `tune` never prints such a
/// pair; the tests check it for every family, scenario and proxy.
pub fn contradictions(t: &ModelTuning, middlebox: Option<Duration>) -> Vec<String> {
    let p = &t.policy;
    let to = &p.timeouts;
    let mut found = Vec::new();
    for (name, value) in [
        ("connect", to.connect),
        ("first_byte", to.first_byte),
        ("first_token", to.first_token),
        ("idle", to.idle),
    ] {
        if value > to.attempt {
            found.push(format!(
                "{name} {} is longer than attempt {}",
                fmt(value),
                fmt(to.attempt)
            ));
        }
    }
    if to.attempt > to.total {
        found.push(format!(
            "attempt {} is longer than total {}",
            fmt(to.attempt),
            fmt(to.total)
        ));
    }
    if let Some(limit) = middlebox {
        let silence = to.first_token.max(to.idle);
        let cap = longest_silence(limit);
        match p.heartbeat {
            None if silence > cap => found.push(format!(
                "a stream may be silent for {} but the proxy cuts at {} and no heartbeat is set",
                fmt(silence),
                fmt(limit)
            )),
            Some(beat) if beat >= cap && silence > cap => found.push(format!(
                "heartbeat {} does not come inside the proxy's {}",
                fmt(beat),
                fmt(limit)
            )),
            _ => {}
        }
    }
    if let Some(hedge) = t.hedge_after
        && hedge >= to.attempt
    {
        found.push(format!(
            "hedge {} never fires inside attempt {}",
            fmt(hedge),
            fmt(to.attempt)
        ));
    }
    let read = python_read(to);
    if read < to.first_token.max(to.idle).max(to.first_byte) {
        found.push(format!(
            "the Python SDK's read timeout {} cuts a wait the policy allows",
            fmt(read)
        ));
    }
    found
}

/// The Python SDK's `read` timeout: every wait for bytes, so the longest of them.
fn python_read(to: &hourglass_config::Timeouts) -> Duration {
    to.first_byte.max(to.first_token).max(to.idle)
}

/// The table a person reads: every value with its rule.
pub fn render_table(tunings: &[ModelTuning]) -> String {
    let mut out = String::new();
    for t in tunings {
        out.push_str(&format!(
            "{} ({} family, {} scenario) — {}\n",
            t.model, t.family, t.scenario, t.basis
        ));
        let width = t.derived.iter().map(|d| d.key.len()).max().unwrap_or(0);
        let vwidth = t.derived.iter().map(|d| d.value.len()).max().unwrap_or(0);
        for d in &t.derived {
            out.push_str(&format!(
                "  {:<width$}  {:>vwidth$}  {}\n",
                d.key, d.value, d.rule
            ));
        }
        for w in &t.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
        out.push('\n');
    }
    out
}

/// hourglass configuration: one `[models."NAME"]` table per model.
pub fn render_toml(tunings: &[ModelTuning]) -> String {
    let mut out = String::from(
        "# Generated by `hourglass tune`; every value's rule is in `hourglass tune`'s table.\n",
    );
    for t in tunings {
        let name = serde_json::to_string(&t.model).unwrap_or_default();
        let p = &t.policy;
        out.push_str(&format!("\n[models.{name}]\n"));
        if !t.upstreams.is_empty() {
            let targets: Vec<String> = t
                .upstreams
                .iter()
                .map(|u| {
                    // A gateway's targets come as `upstream:model sent`; a probe's as upstreams.
                    let target = if u.contains(':') {
                        u.clone()
                    } else {
                        format!("{u}:{}", t.model)
                    };
                    serde_json::to_string(&target).unwrap_or_default()
                })
                .collect();
            out.push_str(&format!("targets = [{}]\n", targets.join(", ")));
        }
        out.push_str(&format!(
            "family = \"{}\"\nscenario = \"{}\"\n",
            t.family, t.scenario
        ));
        if let Some(beat) = p.heartbeat {
            out.push_str(&format!("heartbeat = \"{}\"\n", fmt(beat)));
        }
        match (t.hedge_after, t.upstreams.len()) {
            (Some(h), 2..) => out.push_str(&format!("hedge = \"{}\"\n", fmt(h))),
            (Some(h), _) => out.push_str(&format!(
                "# hedge = \"{}\"  (hedging needs a second upstream in targets)\n",
                fmt(h)
            )),
            (None, _) => {}
        }
        let to = &p.timeouts;
        out.push_str(&format!("\n[models.{name}.timeouts]\n"));
        for (key, value) in [
            ("connect", to.connect),
            ("write", to.write),
            ("first_byte", to.first_byte),
            ("first_token", to.first_token),
            ("idle", to.idle),
            ("attempt", to.attempt),
            ("total", to.total),
        ] {
            out.push_str(&format!("{key} = \"{}\"\n", fmt(value)));
        }
        out.push_str(&format!("attempt_growth = {}\n", to.attempt_growth));
        out.push_str(&format!(
            "\n[models.{name}.retry]\nmax_attempts = {}\nbackoff_base = \"{}\"\nbackoff_max = \"{}\"\n",
            p.retry.max_attempts,
            fmt(p.retry.backoff_base),
            fmt(p.retry.backoff_max)
        ));
    }
    out
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.1}")
    } else {
        format!("{s}")
    }
}

/// Settings for the OpenAI Python SDK (httpx has no overall deadline: `read` bounds each wait).
pub fn render_python(t: &ModelTuning) -> String {
    let to = &t.policy.timeouts;
    let read = python_read(to);
    format!(
        "# {model}: OpenAI Python SDK (httpx). `read` bounds every wait for bytes: the whole answer\n\
         # when not streaming ({first_byte}), the first token and the gaps between chunks when streaming.\n\
         import httpx\nfrom openai import OpenAI\n\n\
         client = OpenAI(\n    timeout=httpx.Timeout({read}, connect={connect}, write={write}, pool={connect}),\n    max_retries={retries},\n)\n",
        model = t.model,
        first_byte = fmt(to.first_byte),
        read = secs(read),
        connect = secs(to.connect),
        write = secs(to.write),
        retries = t.policy.retry.max_attempts.saturating_sub(1),
    )
}

/// Settings for the OpenAI Node SDK; undici's own 300 s header and body timeouts must be raised
/// when a wait can be longer.
pub fn render_node(t: &ModelTuning) -> String {
    let to = &t.policy.timeouts;
    let undici_default = Duration::from_secs(300);
    let needs_agent = to.first_byte > undici_default || to.idle > undici_default;
    let mut out = format!(
        "// {}: OpenAI Node SDK\nimport OpenAI from \"openai\";\n",
        t.model
    );
    if needs_agent {
        out.push_str("import { Agent } from \"undici\";\n");
    }
    out.push_str(&format!(
        "\nconst client = new OpenAI({{\n  timeout: {}, // ms, per try\n  maxRetries: {},\n",
        to.attempt.as_millis(),
        t.policy.retry.max_attempts.saturating_sub(1)
    ));
    if needs_agent {
        out.push_str(&format!(
            "  // undici cuts header waits and body gaps at 300 s by default: raise them for this model.\n  \
             fetchOptions: {{ dispatcher: new Agent({{ connect: {{ timeout: {} }}, headersTimeout: {}, bodyTimeout: {} }}) }},\n",
            to.connect.as_millis(),
            to.first_byte.as_millis(),
            to.idle.max(to.first_token).as_millis()
        ));
    } else {
        out.push_str(
            "  // undici's default 300 s headersTimeout/bodyTimeout are above every wait here.\n",
        );
    }
    out.push_str("});\n");
    out
}

/// curl flags: connect, a whole-call cap, and for streams an idle limit by transfer speed.
pub fn render_curl(t: &ModelTuning) -> String {
    let to = &t.policy.timeouts;
    format!(
        "# {model}: curl (whole answer)\ncurl --connect-timeout {connect} --max-time {attempt} --retry {retries} --retry-all-errors ...\n\
         # {model}: curl (stream): a silence of {idle_s} s (the longer of first_token and idle) ends it\n\
         curl -N --connect-timeout {connect} --max-time {attempt} --speed-limit 1 --speed-time {idle_s} ...\n",
        model = t.model,
        connect = secs(to.connect),
        attempt = secs(to.attempt),
        retries = t.policy.retry.max_attempts.saturating_sub(1),
        idle_s = to.idle.max(to.first_token).as_secs_f64().ceil().max(1.0),
    )
}
