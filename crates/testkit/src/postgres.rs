//! A throwaway PostgreSQL cluster for a test: `initdb` into a directory of its own, started by
//! `pg_ctl` on a free loopback port (no Unix socket outside that directory, trust auth for the
//! one user), stopped and removed when dropped. The server is Debian's (`apt-get install
//! postgresql`, which `scripts/test` does); as root it runs as the `postgres` user, because
//! PostgreSQL refuses to run as root. It can be stopped and started again mid-test to see what a
//! gateway does while its database is away.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running (or stopped) test cluster.
pub struct TestPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of PostgreSQL's programs: `pg_config --bindir`, else the newest under
/// `/usr/lib/postgresql`.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server is not installed (no initdb under /usr/lib/postgresql): \
             apt-get install postgresql — scripts/test installs it"
        ),
    }
}

impl TestPostgres {
    /// A new cluster, started.
    pub fn start() -> TestPostgres {
        let bin = bin_dir();
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = std::env::temp_dir().join(format!(
            "hourglass-pg-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if as_postgres {
            let ids = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8_lossy(&ids.stdout).trim().parse().expect(
                "running as root, PostgreSQL needs the `postgres` user its Debian package makes",
            );
            std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
        }
        let mut server = TestPostgres {
            bin,
            dir,
            port: crate::free_port(),
            as_postgres,
        };
        let data = server.data();
        let out = server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "hourglass",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 300\n",
            server.dir.display()
        );
        server.append_conf(&conf);
        // The free port was free when it was picked; another test's connection may take it as
        // its own end before the server binds it. Then another port is tried.
        for _ in 0..5 {
            server.append_conf(&format!("port = {}\n", server.port));
            match server.try_resume() {
                Err(log) if log.contains("could not bind") => server.port = crate::free_port(),
                started => {
                    started.unwrap_or_else(|e| panic!("{e}"));
                    return server;
                }
            }
        }
        panic!("PostgreSQL found no free loopback port in five tries");
    }

    /// Adds `conf` to the cluster's configuration (a later setting wins).
    fn append_conf(&self, conf: &str) {
        let conf_path = self.data().join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(conf);
        std::fs::write(&conf_path, existing).unwrap();
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` (made by [`TestPostgres::database`]).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://hourglass@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Makes database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(out.status.success(), "CREATE DATABASE: {}", text(&out));
        self.url(name)
    }

    /// Runs `sql` in database `db` with psql; its output (unaligned, tuples only).
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "{sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn psql(&self, db: &str, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "hourglass",
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap()
    }

    /// Stops the server at once (as a crash or a lost host would).
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Starts it again (or the first time), waiting until it takes connections.
    pub fn resume(&self) {
        self.try_resume().unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`TestPostgres::resume`], or what `pg_ctl` and the server's log said.
    fn try_resume(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        // Only what this start wrote: the log grows across restarts.
        let written_before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", log.to_str().unwrap()]);
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read(&log).unwrap_or_default();
        Err(format!(
            "pg_ctl start: {}\n{}",
            text(&out),
            String::from_utf8_lossy(log.get(written_before..).unwrap_or_default())
        ))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data();
        let mut all = vec!["-D", data.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command
            .args(args)
            .current_dir(Path::new("/"))
            .output()
            .unwrap_or_else(|e| panic!("{} does not run: {e}", path.display()))
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
