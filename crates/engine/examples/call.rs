//! Using the engine as a library, with no gateway: one chat call with per-phase timeouts,
//! retries and failover across two upstreams, printing what came back and how long each phase
//! took.
//!
//!     cargo run --release -- sim --scenario examples/failover-sim.toml &
//!     cargo run -p hourglass-engine --example call -- gpt-4o-mini "hang;upstream=east"
//!
//! Arguments: MODEL (default gpt-4o-mini) and an optional `x-sim-fault` value.

use bytes::Bytes;
use hourglass_config::Config;
use hourglass_engine::{CallRequest, Endpoint, Engine, ResponseBody};

const CONFIG: &str = r#"
[upstreams.east]
base_url = "http://127.0.0.1:9101/v1"

[upstreams.west]
base_url = "http://127.0.0.1:9102/v1"

[defaults]
timeouts = { connect = "1s", first_byte = "2s", first_token = "3s", idle = "5s", total = "30s" }
retry = { max_attempts = 3 }
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "gpt-4o-mini".to_owned());
    let fault = args.next();

    let config = Config::from_toml(CONFIG, "examples/call.rs", &|name| std::env::var(name).ok())?;
    let engine = Engine::new(config, Default::default())?;
    let body = serde_json::json!({"model": model, "stream": true, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]});
    let mut request = CallRequest::new(
        Endpoint::Chat,
        "/chat/completions",
        Bytes::from(body.to_string()),
    )
    .map_err(|bad| bad.message)?;
    if let Some(fault) = fault {
        request.headers.insert("x-sim-fault", fault.parse()?);
    }

    match engine.call(request).await {
        Ok(response) => {
            for record in &response.trail {
                println!(
                    "attempt: {} ({}) {} after {:?}",
                    record.upstream, record.model, record.outcome, record.elapsed
                );
            }
            println!("server-timing: {:?}", response.headers.get("server-timing"));
            if let ResponseBody::Stream(stream) = response.body {
                let body = http_body_util::BodyExt::collect(stream).await?.to_bytes();
                print!("{}", String::from_utf8_lossy(&body));
            }
        }
        Err(error) => {
            println!("{} ({}): {}", error.code, error.status, error.message);
            println!("diagnosis: {}", error.diagnosis());
        }
    }
    Ok(())
}
