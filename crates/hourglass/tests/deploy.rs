//! What `deploy/` and the `Dockerfile` ship, checked: the image is multi-stage, runs as a
//! non-root user and holds the binary only (no container build can run here: base images come
//! from registries this machine cannot reach, so the Dockerfile is checked by reading it); the
//! Kubernetes manifests pass the Kubernetes JSON schemas (`kubernetes-validate --strict`, from
//! PyPI, schemas bundled) and agree with the gateway — their configuration loads, every secret it
//! names is given, the port and probes are the gateway's, the grace period covers preStop and
//! `server.shutdown_grace`; and the systemd unit passes `systemd-analyze verify`.

#![allow(clippy::unwrap_used)] // a test panics on what it does not expect

use std::path::{Path, PathBuf};
use std::process::Command;

use hourglass_testkit::http::exchange;
use hourglass_testkit::serve::Serve;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_image_is_multi_stage_non_root_and_holds_the_binary_only() {
    let all = instructions(&read("Dockerfile"));
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| i.starts_with("FROM "))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a final one: {all:?}");
    assert!(all[stages[0]].ends_with(" AS build"), "{}", all[stages[0]]);
    let build = &all[stages[0]..stages[1]];
    assert!(
        build
            .iter()
            .any(|i| i.contains("cargo build --profile dist --locked -p hourglass")),
        "{build:?}"
    );
    assert!(read("Cargo.toml").contains("[profile.dist]"));
    let last = &all[stages[1]..];
    assert!(last[0].contains("distroless"), "{}", last[0]);
    let copies: Vec<&String> = last.iter().filter(|i| i.starts_with("COPY")).collect();
    assert_eq!(copies.len(), 1, "the binary only: {copies:?}");
    assert!(copies[0].starts_with("COPY --from=build /out/hourglass /usr/local/bin/hourglass"));
    assert!(
        !last
            .iter()
            .any(|i| i.starts_with("ADD") || i.starts_with("RUN"))
    );
    let user = last
        .iter()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "not root: {user}"
    );
    assert!(last.contains(&r#"ENTRYPOINT ["/usr/local/bin/hourglass"]"#.to_owned()));
    assert!(last.iter().any(|i| i == "EXPOSE 8787"));
    let ignored = read(".dockerignore");
    for path in ["target", ".git", "**/.venv", "**/node_modules"] {
        assert!(
            ignored.lines().any(|l| l == path),
            "{path} is not sent to the build"
        );
    }
}

/// The `kubernetes-validate` of the venv `scripts/test` makes.
fn validator() -> PathBuf {
    let path = root().join("tests/deploy/.venv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "{} is missing: scripts/test installs it",
        path.display()
    );
    path
}

fn validate(path: &Path) -> std::process::Output {
    Command::new(validator())
        .arg("--strict")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_pass_the_schemas_and_a_broken_one_does_not() {
    let manifests = root().join("deploy/kubernetes/hourglass.yaml");
    let out = validate(&manifests);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in [
        "configmap/hourglass",
        "deployment/hourglass",
        "service/hourglass",
        "poddisruptionbudget/hourglass",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{text}"
        );
    }
    // The validator bites: a misspelt field fails.
    let broken = std::env::temp_dir().join(format!("hourglass-broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        read("deploy/kubernetes/hourglass.yaml").replace("readinessProbe", "readinesProbe"),
    )
    .unwrap();
    let out = validate(&broken);
    assert!(!out.status.success());
    std::fs::remove_file(broken).unwrap();
}

/// The configuration the ConfigMap carries.
fn configmap_toml(manifests: &str) -> String {
    let start = manifests.find("hourglass.toml: |\n").unwrap() + "hourglass.toml: |\n".len();
    manifests[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn number_after(text: &str, key: &str) -> u64 {
    let at = text.find(key).unwrap_or_else(|| panic!("{key}")) + key.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn the_kubernetes_example_agrees_with_the_gateway() {
    let manifests = read("deploy/kubernetes/hourglass.yaml");
    let toml = configmap_toml(&manifests);
    // Every secret the configuration reads comes from the Deployment's environment.
    let named: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.split_once("_env = ").map(|(_, v)| v.trim_matches('"')))
        .collect();
    assert_eq!(named.len(), 4, "{named:?}");
    for var in &named {
        assert!(
            manifests.contains(&format!("- name: {var}\n")),
            "{var} is not set"
        );
    }
    let env = |name: &str| match name {
        "HOURGLASS_POSTGRES_URL" => Some("postgres://u:p@postgres:5432/hourglass".to_owned()),
        "HOURGLASS_REDIS_URL" => Some("redis://redis:6379/0".to_owned()),
        "OPENAI_API_KEY" => Some("sk-test".to_owned()),
        "HOURGLASS_CLIENT_KEYS" => Some("ck-a,ck-b".to_owned()),
        _ => None,
    };
    let config = hourglass_config::Config::from_toml(&toml, "configmap.toml", &env).unwrap();
    assert_eq!(config.server.listen.port(), 8787);
    assert!(manifests.contains("containerPort: 8787"));
    assert!(config.cluster.postgres_url.is_some() && config.cluster.redis_url.is_some());
    // The grace period covers preStop's sleep and the gateway's own shutdown grace.
    let grace = number_after(&manifests, "terminationGracePeriodSeconds:");
    let pre_stop = number_after(&manifests, "sleep:\n                seconds:");
    assert!(
        grace >= pre_stop + config.server.shutdown_grace.as_secs() + 5,
        "{grace} s for {pre_stop} s + {:?}",
        config.server.shutdown_grace
    );
    // The probes' paths are the gateway's, and answer on a running one.
    let dir = std::env::temp_dir().join(format!("hourglass-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("local.toml");
    std::fs::write(
        &local,
        "[upstreams.sim]\nbase_url = \"http://127.0.0.1:9/v1\"\n[health_check]\nmode = \"off\"\n",
    )
    .unwrap();
    let serve = Serve::start(
        env!("CARGO_BIN_EXE_hourglass"),
        &local,
        &["--data-dir", dir.join("data").to_str().unwrap()],
        &[],
    );
    for (path, probe) in [
        ("/health/ready", "readinessProbe"),
        ("/health/live", "livenessProbe"),
    ] {
        let at = manifests.find(&format!("{probe}:")).unwrap();
        assert!(
            manifests[at..].contains(&format!("path: {path}")),
            "{probe}"
        );
        assert_eq!(
            exchange(&serve.addr, "GET", path, &[], "").unwrap().status,
            200,
            "{path}"
        );
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("deploy/systemd/hourglass.service");
    // verify checks that ExecStart's program exists: point it at the binary just built.
    let dir = std::env::temp_dir().join(format!("hourglass-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hourglass.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/hourglass", env!("CARGO_BIN_EXE_hourglass")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (Debian's systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    // It waits for calls in flight longer than the gateway's default grace (30 s).
    let stop = number_after(&unit, "TimeoutStopSec=");
    assert!(stop > 30, "{stop}");
    let _ = std::fs::remove_dir_all(dir);
}
