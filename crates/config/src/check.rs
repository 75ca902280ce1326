//! `hourglass config check FILE`: what the gateway will do for every model, and why.

use std::fmt::Write as _;

use crate::{Config, HttpVersion, JobsSettings, Served};

/// Renders the upstreams, then each model's targets and effective policy with each value's source.
pub(crate) fn render(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration {}: ok", config.origin);
    let _ = writeln!(out, "listen {}", config.server.listen);
    let _ = writeln!(out, "\nupstreams");
    for upstream in &config.upstreams {
        let key = match (&upstream.api_key_from, &upstream.api_key) {
            (Some(from), Some(_)) => format!("key from {from} in {}", upstream.key_header.name()),
            _ => "no key: the client's own is passed on".to_owned(),
        };
        let speaks: Vec<&str> = upstream.protocols.iter().map(|f| f.name()).collect();
        let models = match &upstream.models {
            Served::Any => "every model".to_owned(),
            Served::Only(list) => list.join(", "),
        };
        let http = match upstream.http {
            HttpVersion::Auto => String::new(),
            HttpVersion::Http1 => "; HTTP/1.1".to_owned(),
            HttpVersion::Http2 => format!(
                "; HTTP/2, {} calls per connection",
                upstream.http2_max_streams
            ),
        };
        let _ = writeln!(
            out,
            "  {:<12} {}  ({} protocol{http}; {key}; serves {models})",
            upstream.name,
            upstream.base_url,
            speaks.join(" and ")
        );
    }
    render_jobs(&mut out, &config.jobs, &config.cluster);
    render_cluster(&mut out, &config.cluster, &config.client_limits);
    for model in &config.models {
        let _ = writeln!(
            out,
            "\nmodel {}  (family {}, scenario {}{})",
            model.name,
            model.family.name(),
            model.scenario.name(),
            if model.configured {
                ""
            } else {
                "; served by the upstreams' model lists"
            }
        );
        let targets: Vec<String> = model
            .targets
            .iter()
            .map(|t| {
                let upstream = &config.upstreams[t.upstream].name;
                if t.model == model.name {
                    upstream.clone()
                } else {
                    format!("{upstream} (as {})", t.model)
                }
            })
            .collect();
        let _ = writeln!(out, "  targets    {}", targets.join(" → "));
        if !model.fallbacks.is_empty() {
            let _ = writeln!(out, "  fallbacks  {}", model.fallbacks.join(" → "));
        }
        for sourced in model.sources.iter() {
            let _ = writeln!(
                out,
                "  {:<24} {:>8}   {}",
                sourced.key, sourced.value, sourced.source
            );
        }
    }
    if config.upstreams.iter().any(|u| u.models == Served::Any) {
        let _ = writeln!(
            out,
            "\nother models: sent to the upstreams that serve every model, with the built-in policy of\n\
             the family their name suggests (o1/o3/*-r1: reasoning, dall-e/gpt-image: image,\n\
             *embedding*: embedding, else chat) and its default scenario"
        );
    }
    out
}

/// The `[cluster]` table: what this instance shares with others and what it keeps to itself
/// (never the database's URL: it may hold a password).
fn render_cluster(
    out: &mut String,
    cluster: &crate::ClusterSettings,
    limits: &crate::ClientLimits,
) {
    let f = crate::duration::format;
    let instance = cluster.instance.as_deref().unwrap_or("the host's name");
    let mut limited: Vec<String> = Vec::new();
    if let Some(n) = limits.requests_per_minute {
        limited.push(format!("{n} requests/min"));
    }
    if let Some(n) = limits.tokens_per_minute {
        limited.push(format!("{n} tokens/min"));
    }
    if let Some(n) = limits.concurrent {
        limited.push(format!("{n} at once"));
    }
    let limits_text = if limited.is_empty() {
        "none".to_owned()
    } else {
        format!("{} per client key", limited.join(", "))
    };
    if !cluster.is_shared() {
        let _ = writeln!(
            out,
            "\ncluster    one instance ({instance}): nothing is shared; jobs stay in its own store"
        );
        let _ = writeln!(out, "  limits     {limits_text} (counted in this process)");
        return;
    }
    let _ = writeln!(out, "\ncluster    instance {instance}, one of several");
    if cluster.postgres_url.is_some() {
        let _ = writeln!(
            out,
            "  shared     background jobs and their events, webhook deliveries, response affinities (PostgreSQL, up to {} connections)",
            cluster.postgres_pool
        );
        let _ = writeln!(
            out,
            "  leases     a replica holds the jobs it runs for {}, renewed every {}; another takes them when it lapses",
            f(cluster.job_lease),
            f(cluster.job_lease / 3)
        );
    } else {
        let _ = writeln!(
            out,
            "  jobs       each replica keeps its own (no cluster.postgres_url)"
        );
    }
    if cluster.redis_url.is_some() {
        let _ = writeln!(
            out,
            "  shared     cool-downs (429/503 Retry-After, rejected keys, upstreams found down) and client limits (Redis, off the call path)"
        );
        let _ = writeln!(out, "  limits     {limits_text}, counted across replicas");
    } else {
        let _ = writeln!(
            out,
            "  cool-downs each replica learns its own (no cluster.redis_url)"
        );
        let _ = writeln!(out, "  limits     {limits_text} (counted per replica)");
    }
    let _ = writeln!(
        out,
        "  local      breakers, latency estimates, hedge windows, the retry budget, connection pools, timers"
    );
    let _ = writeln!(
        out,
        "  starting   not ready until its job store answers, for at most {}; then it runs without it (jobs answer 503)",
        f(cluster.wait_for_stores)
    );
}

/// The `[jobs]` table: the store, its limits and the webhooks (never a secret's value).
fn render_jobs(out: &mut String, jobs: &JobsSettings, cluster: &crate::ClusterSettings) {
    let f = crate::duration::format;
    if !jobs.enabled {
        let _ = writeln!(
            out,
            "\njobs       off (jobs.enabled = false): background calls are refused"
        );
        return;
    }
    let store = match &jobs.data_dir {
        _ if cluster.postgres_url.is_some() => {
            "PostgreSQL (cluster.postgres_url), shared by every replica".to_owned()
        }
        Some(dir) => format!("redb at {}", dir.join("jobs.redb").display()),
        None => "redb at $XDG_DATA_HOME/hourglass/jobs.redb (else ~/.local/share/hourglass; --data-dir overrides)".to_owned(),
    };
    let _ = writeln!(out, "\njobs       store {store}");
    let _ = writeln!(
        out,
        "  retention {}, at most {} queued and {} running, store up to {} MiB",
        f(jobs.retention),
        jobs.max_queued,
        jobs.max_running,
        jobs.max_store_bytes >> 20
    );
    for hook in &jobs.webhooks {
        let events = if hook.events.is_empty() {
            "every event".to_owned()
        } else {
            hook.events.join(", ")
        };
        let _ = writeln!(
            out,
            "  webhook {:<10} {}  ({events}; signed)",
            hook.name, hook.url
        );
    }
    if !jobs.webhook_urls.is_empty() {
        let _ = writeln!(
            out,
            "  jobs may name webhooks under {} (signed with jobs.webhook_secret)",
            jobs.webhook_urls.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  webhook deliveries retried for {}",
        f(jobs.webhook_retry_for)
    );
}
