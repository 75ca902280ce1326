//! Reading Prometheus's text format (what a gateway's `/metrics` serves) as far as `tune
//! --gateway` needs: samples by name and labels, histograms merged over label sets, and their
//! quantiles the way `histogram_quantile` computes them.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (`hourglass_phase_duration_seconds_bucket`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Every sample of a text exposition; a line that is not a sample is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(sample(line).map_err(|e| format!("line {}: {e}: `{line}`", index + 1))?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("`{v}` is not a number"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `key="value",…}` with `\\`, `\"` and `\n` escapes; returns the labels and what follows `}`.
fn label_set(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("a label without `=`")?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label `{key}` is not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label `{key}` is not closed"))?;
        labels.insert(key, value);
        text = &text[eq + 1 + end + 1..];
    }
}

/// A histogram's cumulative buckets (upper bound, count), merged over label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative counts by upper bound, ascending (the last one `+Inf`).
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The histogram `name` (without `_bucket`) over every sample whose labels include `want`.
    pub fn of(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Histogram {
        let bucket = format!("{name}_bucket");
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in samples.iter().filter(|s| {
            s.name == bucket
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        }) {
            let Some(le) = s.labels.get("le") else {
                continue;
            };
            let bound = match le.as_str() {
                "+Inf" => f64::INFINITY,
                v => match v.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                },
            };
            // f64 bits order like the numbers for non-negative values.
            let entry = by_bound.entry(bound.to_bits()).or_insert((bound, 0.0));
            entry.1 += s.value;
        }
        Histogram {
            buckets: by_bound.into_values().collect(),
        }
    }

    /// How many observations it holds.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile (0–1), interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; a quantile in the `+Inf` bucket is the highest finite bound.
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let fraction = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }
}

/// The sum of a counter over every sample whose labels include `want`.
pub fn total(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP h latency
# TYPE h histogram
h_bucket{model="a",upstream="x",le="0.1"} 10
h_bucket{model="a",upstream="x",le="1"} 90
h_bucket{model="a",upstream="x",le="+Inf"} 100
h_bucket{model="a",upstream="y",le="0.1"} 0
h_bucket{model="a",upstream="y",le="1"} 0
h_bucket{model="a",upstream="y",le="+Inf"} 100
c_total{model="a \"quoted\"",outcome="ok"} 7
"#;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let samples = parse(TEXT).unwrap();
        let x = Histogram::of(&samples, "h", &[("upstream", "x")]);
        assert_eq!(x.count(), 100.0);
        // rank 50 of 100: 40 of the 80 observations between 0.1 and 1.
        assert!((x.quantile(0.5).unwrap() - 0.55).abs() < 1e-9);
        // Merged over both upstreams: the p99 falls in +Inf, reported as the top finite bound.
        let both = Histogram::of(&samples, "h", &[("model", "a")]);
        assert_eq!(both.quantile(0.99), Some(1.0));
        assert_eq!(
            Histogram::of(&samples, "h", &[("model", "b")]).quantile(0.5),
            None
        );
        assert_eq!(
            total(&samples, "c_total", &[("model", "a \"quoted\"")]),
            7.0
        );
    }

    #[test]
    fn a_line_that_is_no_sample_is_named() {
        let error = parse("ok 1\nbad{le=\"1} 2\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
