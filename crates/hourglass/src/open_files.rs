//! How many files (sockets) the process may hold open: `serve` and `sim` raise the soft limit to
//! the hard one as they start, as Go's runtime and nginx's `worker_rlimit_nofile` do, since a
//! shell's soft limit is often 1,024 while the hard one allows far more; and `serve` warns when
//! even the hard limit leaves less room than `server.max_connections` asks for. Every call holds
//! a client connection and, over HTTP/1.1, an upstream one: 600 slow streams at once through a
//! gateway started at a soft limit of 1,024 had 57 fail (`Too many open files` on accepts and
//! upstream connects); raised to the hard limit, all 600 were answered.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Files the process keeps besides its calls' connections: the listening socket, the runtimes'
/// epoll and event descriptors, the log, the jobs' store, health checks' connections.
const SPARE: u64 = 64;

/// The soft limit used when the hard one is unlimited (Linux never lets a process open more
/// than `fs.nr_open`, 1,048,576 by default).
const UNLIMITED: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one; when the system refuses, the limit stays as
/// it was and the refusal is logged.
pub fn raise() {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let before = current.unwrap_or(UNLIMITED);
    let wanted = maximum.unwrap_or(UNLIMITED);
    if wanted <= before {
        return;
    }
    let raised = Rlimit {
        current: Some(wanted),
        maximum,
    };
    if let Err(error) = setrlimit(Resource::Nofile, raised) {
        tracing::warn!(
            "open files: cannot raise the limit from {before} to {wanted} ({error}); about {} calls fit at once",
            calls_that_fit(before)
        );
    }
}

/// The process's open-file limit now (its soft limit).
pub fn limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(UNLIMITED)
}

/// Calls that fit at once within `limit` open files: a client and an upstream connection each.
fn calls_that_fit(limit: u64) -> u64 {
    limit.saturating_sub(SPARE) / 2
}

/// What `serve` says when `limit` open files leave less room than `max_connections` client
/// connections (and their upstream ones) need; nothing when they fit.
pub fn shortfall(limit: u64, max_connections: usize) -> Option<String> {
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(SPARE);
    (limit < needed).then(|| {
        format!(
            "the process may open {limit} files, so about {} calls fit at once (a client and an \
             upstream connection each), fewer than server.max_connections = {max_connections}; \
             past that, connections fail with `Too many open files`. Raise the hard limit \
             (`ulimit -Hn`, systemd's LimitNOFILE=) to {needed}, or lower server.max_connections",
            calls_that_fit(limit)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let hard = (getrlimit(Resource::Nofile).maximum).expect("Linux bounds open files");
        // Lowered first (the test process may already run at its hard limit), by one so that
        // tests running beside it in the same process lose nothing, then raised.
        let lowered = Rlimit {
            current: Some(hard - 1),
            maximum: Some(hard),
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        assert_eq!(limit(), hard - 1);
        raise();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, Some(hard));
        assert_eq!(now.maximum, Some(hard), "the hard limit is left alone");
        raise();
        assert_eq!(limit(), hard, "already raised, left as it is");
    }

    #[test]
    fn serve_warns_only_when_max_connections_do_not_fit() {
        assert_eq!(shortfall(2 * 16_384 + SPARE, 16_384), None);
        assert_eq!(shortfall(1 << 20, 16_384), None);
        let note = shortfall(1024, 16_384).unwrap();
        assert!(note.contains("may open 1024 files"), "{note}");
        assert!(note.contains("about 480 calls fit at once"), "{note}");
        assert!(note.contains("server.max_connections = 16384"), "{note}");
        assert!(note.contains("to 32832"), "{note}");
        let note = shortfall(20_000, 16_384).unwrap();
        assert!(note.contains("about 9968 calls"), "{note}");
    }
}
