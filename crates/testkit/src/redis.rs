//! A throwaway Redis server for a test: Debian's `redis-server` (`apt-get install redis-server`,
//! which `scripts/test` does) on a free loopback port, no persistence, killed by its own PID when
//! dropped. It can be stopped and started again on the same port mid-test, to see what gateways
//! do while it is away.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The server ended before it answered.
struct Exited;

/// A test Redis server.
pub struct TestRedis {
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestRedis {
    /// A new server, started and answering.
    pub fn start() -> TestRedis {
        // The free port was free when it was picked; another test's connection may take it as
        // its own end before the server binds it, and then the server exits: another port.
        for _ in 0..5 {
            let server = TestRedis {
                port: crate::free_port(),
                child: Mutex::new(None),
            };
            match server.try_resume() {
                Err(Exited) => continue,
                Ok(()) => return server,
            }
        }
        panic!("redis-server found no free loopback port in five tries");
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (as a crash would); its data goes with it.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on its port, waiting until it answers.
    pub fn resume(&self) {
        if self.try_resume().is_err() {
            panic!("redis-server on port {} exited at once", self.port);
        }
    }

    /// [`TestRedis::resume`], or `Exited` when the server ended before it answered (as it does
    /// when its port is taken).
    fn try_resume(&self) -> Result<(), Exited> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server does not run ({e}): apt-get install redis-server — scripts/test installs it"
                )
            });
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return Ok(());
            }
            let mut child = self.child.lock().unwrap();
            if let Some(running) = child.as_mut()
                && running.try_wait().is_ok_and(|status| status.is_some())
            {
                *child = None;
                return Err(Exited);
            }
            drop(child);
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "redis-server on port {} did not answer within 5 s",
            self.port
        );
    }

    /// Whether it answers `PING`.
    pub fn ping(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one command (RESP) and returns the raw reply's first line.
    pub fn command(&self, words: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose port is taken exits at once, and is told apart from one that answers.
    #[test]
    fn a_server_on_a_taken_port_is_seen_to_exit() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let blocked = TestRedis {
            port: taken.local_addr().unwrap().port(),
            child: Mutex::new(None),
        };
        assert!(matches!(blocked.try_resume(), Err(Exited)));
        let server = TestRedis::start();
        assert!(server.ping());
    }
}
