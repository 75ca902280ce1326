//! `GET /dashboard` in a real browser (Debian's chromium, driven by playwright-core): while calls
//! with faults (and background jobs) flow, every number the page shows and every point of its
//! charts must be the one in the `/status` answer it rendered. The screenshot is kept as a test
//! artifact.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_status_says_while_traffic_flows() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/dashboard.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run `scripts/test` once to install it"
    );
    let gateway = start_jobs(
        "[server]\nadmin_key_env = \"HOURGLASS_TEST_ADMIN_KEY\"\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
        0.01,
    )
    .await;
    let addr = gateway.addr;
    // Traffic with faults: a answers 503 to a third of the calls, b stalls some streams.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut i = 0u32;
            while running.load(Ordering::Relaxed) {
                let fault = match i % 6 {
                    0 | 3 => "status;code=503;upstream=a",
                    4 => "stall;after_chunks=2;for=50ms;upstream=b",
                    _ => "",
                };
                let mut headers: Vec<(&str, &str)> = if fault.is_empty() {
                    vec![]
                } else {
                    vec![("x-sim-fault", fault)]
                };
                // Every seventh call is a background job too.
                if i.is_multiple_of(7) {
                    headers.push(("prefer", "respond-async"));
                }
                let _ = chat(addr, "m", i.is_multiple_of(2), &headers).await;
                i += 1;
                tokio::time::sleep(ms(20)).await;
            }
            i
        })
    };
    tokio::time::sleep(ms(500)).await;

    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let base = format!("http://{addr}");
    let shot = screenshot.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(base)
            .arg(ADMIN_KEY)
            .arg(shot)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    running.store(false, Ordering::Relaxed);
    let calls = traffic.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(calls > 20, "traffic flowed during the test: {calls} calls");
    let rows = summary["rows"].as_array().unwrap();
    let a = rows
        .iter()
        .find(|r| r["upstream"] == "a")
        .unwrap_or_else(|| panic!("no card for a: {summary}"));
    // a's 503s are drawn in the failures chart, in the phase they failed in.
    assert!(
        a["failure_phases"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{summary}"
    );
    assert!(
        summary["plotted"].as_u64().unwrap() >= 5,
        "the charts have points, each checked against /status: {summary}"
    );
    assert!(
        summary["failures"].as_u64().unwrap() > 0,
        "the failure feed shows a's 503s: {summary}"
    );
    let jobs = &summary["jobs"]["text"];
    assert!(jobs.as_str().unwrap().contains("submitted"), "{summary}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot was kept"
    );
}
