//! What tests across the workspace need to stand up real things: simulated upstreams, a
//! PostgreSQL server and a Redis server from Debian's packages on loopback ports (`postgres`,
//! `redis`), an `hourglass serve` process killed by its own PID (`serve`), and one HTTP/1.1
//! exchange at a time over a plain socket (`http`). Only tests depend on it.

// A kit for tests: it panics with a clear message on what a test does not expect, and its
// helpers wait on the test's own thread (no runtime worker is blocked).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::disallowed_types
)]

pub mod http; // one exchange per connection: status, headers, de-chunked body
pub mod jobs; // submitting a chat job and looking at it while it runs
pub mod postgres; // a throwaway PostgreSQL cluster on loopback
pub mod redis; // a throwaway Redis server on loopback
pub mod serve; // `hourglass serve` as a child process

/// A loopback port that was free a moment ago (the listener that found it is closed): a server
/// started on it can still find it taken, so `postgres` and `redis` try another then.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A simulated upstream named `name` (what a fault's `upstream=` matches) on a loopback port,
/// run by `runtime`.
pub fn sim(runtime: &tokio::runtime::Runtime, name: &str) -> hourglass_sim::Server {
    let config = hourglass_sim::ServerConfig {
        name: name.to_owned(),
        ..hourglass_sim::ServerConfig::default()
    };
    runtime
        .block_on(hourglass_sim::Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            config,
        ))
        .unwrap()
}

/// Waits until `done` holds, looking every 50 ms for at most `seconds`; panics naming `what`.
pub fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(done(), "timed out after {seconds} s waiting until {what}");
}
