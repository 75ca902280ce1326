//! Names and times: random job ids, the fingerprint of the key that owns a job, and the wall
//! clock jobs are stamped with (replaceable, so tests can move it).

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};

/// The wall clock in Unix milliseconds. Jobs outlive the process, so their times are wall
/// times, not the monotonic clock of the call path.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// A new id: `prefix` and 48 hex digits from the system's secure random source (an id is not
/// a secret — ownership is checked on every read — but it must not be guessable either).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // The OS random source failing is not recoverable in any useful way; fall back to a
        // non-secure draw rather than refuse the job.
        fastrand::fill(&mut bytes);
    }
    let mut id = String::with_capacity(prefix.len() + 48);
    id.push_str(prefix);
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The owner of a job made with `key` (the bearer token the client presented, `None` when it
/// sent none): the first 128 bits of its SHA-256, in hex. The key itself is never stored.
pub fn owner(key: Option<&str>) -> String {
    let Some(key) = key else {
        return "anonymous".to_owned();
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_owners_do_not_show_the_key() {
        let a = new_id("job_");
        assert!(a.starts_with("job_") && a.len() == 52, "{a}");
        assert_ne!(a, new_id("job_"));
        let owner_a = owner(Some("sk-secret-1"));
        assert_eq!(owner_a.len(), 32);
        assert!(!owner_a.contains("secret"));
        assert_eq!(owner_a, owner(Some("sk-secret-1")));
        assert_ne!(owner_a, owner(Some("sk-secret-2")));
        assert_eq!(owner(None), "anonymous");
    }
}
