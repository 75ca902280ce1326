//! A real middlebox: nginx with a short `proxy_read_timeout` between the client and the gateway,
//! and a call whose first token comes after three times that timeout — the reasoning model behind
//! a 60 s proxy, time-scaled. Without heartbeats the client gets nginx's 504; with them it gets the
//! answer, streaming and not. (`scripts/test` installs nginx.)

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use hourglass_sim::content;

use crate::support::*;

const POLICY: &str = r#"
[models.slow]
targets = ["a:sim-instant"]
timeouts = { first_byte = "10s", first_token = "10s", idle = "10s", attempt = "20s", total = "30s" }
"#;

/// nginx in front of `upstream`, stopped (by its PID) when dropped.
pub(crate) struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// The PIDs of nginx's worker processes (children of the master this test started).
    fn workers(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut workers = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`: the parent is the second field after the name.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if parent == Some(master) {
                workers.push(pid);
            }
        }
        workers
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers before it exits (a SIGKILL would orphan
    /// them); a SIGKILL only when the signal could not be sent.
    fn drop(&mut self) {
        let termed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !termed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn stopping_nginx_leaves_no_worker_behind() {
    let gateway = start(POLICY).await;
    let nginx = nginx_in_front_of(gateway.addr, "1s").await;
    // The master listens before it forks its worker: wait for the worker to exist.
    let mut workers = nginx.workers();
    for _ in 0..100 {
        if !workers.is_empty() {
            break;
        }
        tokio::time::sleep(ms(50)).await;
        workers = nginx.workers();
    }
    assert!(!workers.is_empty(), "nginx runs a worker");
    drop(nginx);
    // Gone, or a zombie waiting for init to reap it: not running either way.
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    for _ in 0..100 {
        if !workers.iter().any(running) {
            return;
        }
        tokio::time::sleep(ms(50)).await;
    }
    panic!("nginx workers still running after the test stopped nginx: {workers:?}");
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is missing: run `scripts/test` (it installs Debian's nginx-light)")
}

pub(crate) async fn nginx_in_front_of(upstream: std::net::SocketAddr, read_timeout: &str) -> Nginx {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("hourglass-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let conf = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{upstream};\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n\
         proxy_read_timeout {read_timeout};\n    }}\n  }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(ms(20)).await;
    }
    Nginx { child, port, dir }
}

#[tokio::test]
async fn heartbeats_carry_a_long_silent_call_through_a_proxy_with_a_short_read_timeout() {
    let gateway = start(POLICY).await;
    let nginx = nginx_in_front_of(gateway.addr, "1s").await;
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    // The first token comes after 3 s: three times nginx's read timeout.
    let silent = ("x-sim-fault", "first_token;after=3s");

    let cut = chat(proxy, "slow", true, &[silent]).await;
    assert_eq!(
        cut.status, 504,
        "without heartbeats nginx gives up: {}",
        cut.body
    );
    let cut_whole = chat(proxy, "slow", false, &[silent]).await;
    assert_eq!(cut_whole.status, 504, "{}", cut_whole.body);

    let kept = chat(
        proxy,
        "slow",
        true,
        &[silent, ("x-hourglass-heartbeat", "300ms")],
    )
    .await;
    assert_eq!(kept.status, 200);
    assert!(kept.body.ends_with("data: [DONE]\n\n"), "{}", kept.body);
    assert_eq!(content::check(&stream_text(&kept.body)).unwrap().tokens, 16);

    let kept_whole = chat(
        proxy,
        "slow",
        false,
        &[silent, ("x-hourglass-heartbeat", "300ms")],
    )
    .await;
    assert_eq!(kept_whole.status, 200);
    content::check(
        kept_whole.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
}
