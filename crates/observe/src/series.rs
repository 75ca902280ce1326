//! The last fifteen minutes of one target's attempts, in ten-second steps, for the dashboard's
//! charts: attempts, successes, failures by the phase they failed in, and the first-token
//! latencies of each step (all of them up to 256 a step, an even sample past that), rendered
//! column by column for `/status`.

use std::collections::VecDeque;

use hourglass_engine::Phase;
use serde_json::{Map, Value, json};

/// Seconds per step.
pub const STEP_S: i64 = 10;
/// Steps kept and shown: fifteen minutes.
pub const STEPS: usize = 90;
/// First-token latencies kept per step.
const KEPT: usize = 256;

/// One step's counts.
#[derive(Debug, Clone)]
struct Step {
    /// Its start, in Unix seconds (a multiple of [`STEP_S`]).
    start: i64,
    attempts: u32,
    ok: u32,
    /// Failed attempts by phase, in [`Phase::ALL`]'s order.
    failures: Vec<u32>,
    /// First-token latencies (ms), a reservoir sample past [`KEPT`].
    first_tokens: Vec<f32>,
    /// First tokens seen this step (≥ the ones kept).
    seen: u32,
    /// The reservoir's random state (xorshift).
    state: u32,
}

impl Step {
    fn new(start: i64) -> Step {
        Step {
            start,
            attempts: 0,
            ok: 0,
            failures: vec![0; Phase::ALL.len()],
            first_tokens: Vec::new(),
            seen: 0,
            state: 0x9e37_79b9 ^ (start as u32),
        }
    }

    /// Adds `other`'s counts (the same step, seen by another thread): the first-token
    /// latencies both kept are pooled.
    fn add(&mut self, other: &Step) {
        self.attempts += other.attempts;
        self.ok += other.ok;
        for (mine, theirs) in self.failures.iter_mut().zip(&other.failures) {
            *mine += theirs;
        }
        self.first_tokens.extend_from_slice(&other.first_tokens);
        self.seen += other.seen;
    }

    fn keep(&mut self, first_token_ms: f64) {
        self.seen += 1;
        if self.first_tokens.len() < KEPT {
            self.first_tokens.push(first_token_ms as f32);
            return;
        }
        // Algorithm R: the n-th value replaces a kept one with probability KEPT / n.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let slot = (self.state % self.seen) as usize;
        if slot < KEPT {
            self.first_tokens[slot] = first_token_ms as f32;
        }
    }
}

/// One target's steps, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Series {
    steps: VecDeque<Step>,
}

/// The start of the step `unix_s` falls in.
pub fn step_of(unix_s: i64) -> i64 {
    unix_s.div_euclid(STEP_S) * STEP_S
}

impl Series {
    /// Records an attempt that ended at `unix_s`: whether it succeeded, the phase a failure
    /// happened in (`None` for an attempt that was neither: a hedge cancelled), its first-token
    /// latency.
    pub fn record(
        &mut self,
        unix_s: i64,
        ok: bool,
        failed_in: Option<Phase>,
        first_token_ms: Option<f64>,
    ) {
        let start = step_of(unix_s);
        if self.steps.back().is_none_or(|s| s.start < start) {
            self.steps.push_back(Step::new(start));
        }
        while self
            .steps
            .front()
            .is_some_and(|s| s.start <= start - STEP_S * STEPS as i64)
        {
            self.steps.pop_front();
        }
        // A clock that stepped back lands in the newest step.
        let Some(step) = self.steps.back_mut() else {
            return;
        };
        step.attempts += 1;
        if ok {
            step.ok += 1;
        }
        if let Some(phase) = failed_in
            && let Some(i) = Phase::ALL.iter().position(|p| *p == phase)
        {
            step.failures[i] += 1;
        }
        if let Some(ms) = first_token_ms {
            step.keep(ms);
        }
    }

    /// Adds `other`'s steps to these (another thread's attempts at the same target, for
    /// `/status`): counts of the same step add up, and the first-token latencies kept are
    /// pooled.
    pub fn add(&mut self, other: &Series) {
        let mut joined = VecDeque::with_capacity(self.steps.len().max(other.steps.len()));
        let mut mine = std::mem::take(&mut self.steps).into_iter().peekable();
        let mut theirs = other.steps.iter().peekable();
        loop {
            let order = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.start.cmp(&b.start),
            };
            match order {
                std::cmp::Ordering::Less => joined.extend(mine.next()),
                std::cmp::Ordering::Greater => joined.extend(theirs.next().cloned()),
                std::cmp::Ordering::Equal => {
                    if let (Some(mut step), Some(other)) = (mine.next(), theirs.next()) {
                        step.add(other);
                        joined.push_back(step);
                    }
                }
            }
        }
        self.steps = joined;
    }

    /// The fifteen minutes that end with the step of `now_s`, one entry per step in each
    /// column (`null` where a step had no attempts or no first token): `start` (Unix seconds of
    /// the first step), `step_s`, `attempts`, `success_rate`, `first_token_p50_ms`,
    /// `first_token_p99_ms`, and `failures` by phase (only the phases that failed).
    pub fn render(&self, now_s: i64) -> Value {
        let last = step_of(now_s);
        let first = last - STEP_S * (STEPS as i64 - 1);
        let mut attempts = Vec::with_capacity(STEPS);
        let mut success = Vec::with_capacity(STEPS);
        let mut p50 = Vec::with_capacity(STEPS);
        let mut p99 = Vec::with_capacity(STEPS);
        let mut failures: Vec<Vec<u32>> = vec![vec![0; STEPS]; Phase::ALL.len()];
        let mut steps = self.steps.iter().peekable();
        for (i, start) in (first..=last).step_by(STEP_S as usize).enumerate() {
            while steps.peek().is_some_and(|s| s.start < start) {
                steps.next();
            }
            let step = steps.peek().filter(|s| s.start == start);
            let n = step.map_or(0, |s| s.attempts);
            attempts.push(json!(n));
            success.push(match step {
                Some(s) if s.attempts > 0 => {
                    json!((1000.0 * f64::from(s.ok) / f64::from(s.attempts)).round() / 1000.0)
                }
                _ => Value::Null,
            });
            let mut kept: Vec<f32> = step.map(|s| s.first_tokens.clone()).unwrap_or_default();
            kept.sort_by(f32::total_cmp);
            p50.push(percentile(&kept, 50.0));
            p99.push(percentile(&kept, 99.0));
            if let Some(s) = step {
                for (phase, count) in s.failures.iter().enumerate() {
                    failures[phase][i] = *count;
                }
            }
        }
        let mut by_phase = Map::new();
        for (phase, counts) in Phase::ALL.iter().zip(failures) {
            if counts.iter().any(|c| *c > 0) {
                by_phase.insert(phase.name().to_owned(), json!(counts));
            }
        }
        json!({
            "start": first,
            "step_s": STEP_S,
            "attempts": attempts,
            "success_rate": success,
            "first_token_p50_ms": p50,
            "first_token_p99_ms": p99,
            "failures": by_phase,
        })
    }
}

/// The nearest-rank percentile, rounded to 0.1 ms; `null` when there is nothing.
fn percentile(sorted: &[f32], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let v = f64::from(sorted[rank.clamp(1, sorted.len()) - 1]);
    json!((v * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_count_attempts_successes_failures_and_latencies() {
        let mut s = Series::default();
        let t0 = 1_764_500_000; // a multiple of 10
        for i in 0..10 {
            s.record(
                t0 + 1,
                i < 7,
                (i >= 7).then_some(Phase::FirstByte),
                Some(100.0 + i as f64),
            );
        }
        s.record(t0 + 25, false, Some(Phase::Connect), None);
        let v = s.render(t0 + 25);
        assert_eq!(v["step_s"], 10);
        let n = v["attempts"].as_array().unwrap();
        assert_eq!(n.len(), STEPS);
        assert_eq!(v["start"], t0 + 20 - 10 * (STEPS as i64 - 1));
        // The last three steps: t0 (10 attempts), t0+10 (none), t0+20 (1).
        assert_eq!(n[STEPS - 3], 10);
        assert_eq!(n[STEPS - 2], 0);
        assert_eq!(n[STEPS - 1], 1);
        assert_eq!(v["success_rate"][STEPS - 3], 0.7);
        assert!(v["success_rate"][STEPS - 2].is_null());
        assert_eq!(v["success_rate"][STEPS - 1], 0.0);
        assert_eq!(v["first_token_p50_ms"][STEPS - 3], 104.0);
        assert_eq!(v["first_token_p99_ms"][STEPS - 3], 109.0);
        assert_eq!(v["failures"]["first_byte"][STEPS - 3], 3);
        assert_eq!(v["failures"]["connect"][STEPS - 1], 1);
        assert!(
            v["failures"].get("write").is_none(),
            "only phases that failed"
        );
    }

    #[test]
    fn fifteen_minutes_are_kept_and_a_busy_step_is_sampled() {
        let mut s = Series::default();
        let t0 = 1_764_500_000;
        s.record(t0, true, None, Some(5.0));
        for i in 0..10_000 {
            s.record(t0 + 900, true, None, Some(f64::from(i % 100)));
        }
        let v = s.render(t0 + 900);
        // The first step fell out of the window.
        assert_eq!(
            v["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| **n != 0)
                .count(),
            1
        );
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].first_tokens.len(), KEPT);
        // An even sample of 0..99: the median is near 50.
        let p50 = v["first_token_p50_ms"][STEPS - 1].as_f64().unwrap();
        assert!((35.0..=65.0).contains(&p50), "{p50}");
    }

    #[test]
    fn two_threads_series_add_up_step_by_step() {
        let t0 = 1_764_500_000;
        let (mut a, mut b) = (Series::default(), Series::default());
        a.record(t0, true, None, Some(10.0));
        a.record(t0 + 20, false, Some(Phase::Connect), None);
        b.record(t0 + 10, true, None, Some(30.0));
        b.record(t0 + 20, true, None, Some(20.0));
        b.record(t0 + 20, false, Some(Phase::Connect), None);
        a.add(&b);
        let starts: Vec<i64> = a.steps.iter().map(|s| s.start).collect();
        assert_eq!(starts, [t0, t0 + 10, t0 + 20], "one step each, in order");
        let v = a.render(t0 + 20);
        let n = v["attempts"].as_array().unwrap();
        assert_eq!(n[STEPS - 3..], [1, 1, 3]);
        assert_eq!(v["success_rate"][STEPS - 1], 0.333);
        assert_eq!(v["failures"]["connect"][STEPS - 1], 2);
        assert_eq!(v["first_token_p50_ms"][STEPS - 1], 20.0);
        assert_eq!(v["first_token_p50_ms"][STEPS - 2], 30.0);
        // `b` is unchanged.
        assert_eq!(b.steps.len(), 2);
    }
}
