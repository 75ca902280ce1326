//! Scenario files start several upstreams, each with its own models and faults.

use hourglass_sim::Scenario;
use serde_json::json;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn a_scenario_starts_every_upstream_on_its_own_port() {
    let text = r#"
        seed = 5
        [[upstream]]
        name = "east"
        models = ["sim-instant"]
        [[upstream]]
        name = "west"
        [[upstream.model]]
        name = "tiny"
        like = "sim-instant"
        output_tokens = 3
        [[upstream.fault]]
        fault = "status;code=503"
        probability = 1.0
    "#;
    let servers = Scenario::from_toml(text, "inline")
        .unwrap()
        .start()
        .await
        .unwrap();
    let [east, west] = &servers[..] else {
        panic!("two servers")
    };
    assert_ne!(east.local_addr(), west.local_addr());

    let io = TcpStream::connect(east.local_addr().unwrap())
        .await
        .unwrap();
    let models = get("/v1/models").send(io).await.unwrap().json();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);

    let io = TcpStream::connect(west.local_addr().unwrap())
        .await
        .unwrap();
    let reply = post("/v1/chat/completions", chat("tiny", json!({})))
        .send(io)
        .await
        .unwrap();
    assert_eq!(reply.status, 503, "west fails every request");
    let io = TcpStream::connect(west.local_addr().unwrap())
        .await
        .unwrap();
    let overridden = post("/v1/chat/completions", chat("tiny", json!({})))
        .fault("slow;tokens_per_s=1000")
        .send(io)
        .await
        .unwrap();
    assert_eq!(
        overridden.status, 200,
        "a header replaces the scenario's mix"
    );
    assert_eq!(
        hourglass_sim::content::check(
            overridden.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
        )
        .unwrap()
        .tokens,
        3
    );
}

#[tokio::test]
async fn a_taken_port_is_reported_with_the_upstream_name() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        "[[upstream]]\nname = \"east\"\nlisten = \"{}\"\n",
        taken.local_addr().unwrap()
    );
    let error = Scenario::from_toml(&text, "inline")
        .unwrap()
        .start()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("upstream `east` cannot listen on"),
        "{error}"
    );
}

#[test]
fn the_example_scenario_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sim-scenario.toml");
    let scenario = Scenario::load(&path).unwrap();
    let names: Vec<_> = scenario
        .upstreams
        .iter()
        .map(|u| u.config.name.as_str())
        .collect();
    assert_eq!(names, ["east", "west", "dark"]);
    assert!(scenario.upstreams[2].config.blackhole);
}
