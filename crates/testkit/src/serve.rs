//! `hourglass serve` as a child process, for tests that need the real binary (a `kill -9`,
//! several replicas): started with a configuration file and environment, its address read from
//! its first lines, killed by its own PID when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `hourglass serve`.
pub struct Serve {
    child: Child,
    /// The address it listens on, `127.0.0.1:PORT`.
    pub addr: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Serve {
    /// Starts `binary serve --listen 127.0.0.1:0 --config config` with `args` and `env` added,
    /// and waits until it listens.
    pub fn start(binary: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "serve exited");
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on http://".len()..];
                break rest[..rest.find("/v1").unwrap()].to_owned();
            }
        };
        Serve {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// `kill -9` (by its own PID), and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
