//! Every configuration block of docs/providers.md loads and passes `config check`, with its key
//! variables set: the page's examples cannot drift from what the gateway accepts.

#![allow(clippy::unwrap_used)] // a test may panic on what it does not expect

use hourglass_config::{Config, KeyHeader, WireFormat};

fn blocks() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/providers.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut heading = String::new();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.to_owned();
        }
        if line.trim() == "```toml" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push((heading.clone(), block.join("\n")));
        }
    }
    out
}

#[test]
fn every_provider_example_passes_config_check() {
    let blocks = blocks();
    let headings: Vec<&str> = blocks.iter().map(|(h, _)| h.as_str()).collect();
    for provider in [
        "OpenAI",
        "Azure OpenAI (v1 API)",
        "Anthropic",
        "Gemini (OpenAI-compatible endpoint)",
        "DeepSeek",
        "OpenRouter",
        "Ollama",
        "vLLM",
        "llama.cpp",
    ] {
        assert!(headings.contains(&provider), "{provider} has an example");
    }
    let env = |name: &str| name.ends_with("_API_KEY").then(|| format!("key-of-{name}"));
    for (heading, block) in &blocks {
        let config = Config::from_toml(block, &format!("providers.md ({heading})"), &env)
            .unwrap_or_else(|e| panic!("{heading}: {e}"));
        let check = config.render_check();
        assert!(check.contains(": ok"), "{heading}: {check}");
        assert!(!config.models.is_empty(), "{heading}");
        for model in config.models.iter().filter(|m| m.configured) {
            assert!(
                model
                    .sources
                    .iter()
                    .any(|s| s.source.starts_with("models.")),
                "{heading}: {} sets timeouts of its own",
                model.name
            );
        }
        assert!(
            !check.contains("key-of-"),
            "{heading}: a key in the check output"
        );
    }
    let config = |heading: &str| {
        let block = &blocks.iter().find(|(h, _)| h == heading).unwrap().1;
        Config::from_toml(block, heading, &env).unwrap()
    };
    let azure = config("Azure OpenAI (v1 API)");
    assert_eq!(azure.upstreams[0].key_header, KeyHeader::ApiKey);
    let anthropic = config("Anthropic");
    assert!(
        anthropic
            .upstreams
            .iter()
            .all(|u| u.protocols == [WireFormat::Anthropic])
    );
    assert_eq!(anthropic.upstreams[0].key_header, KeyHeader::XApiKey);
}
