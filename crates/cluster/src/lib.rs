//! What gateways share, and what a gateway counts per client: cool-downs learned by one replica
//! honoured by all through Redis (`cooldowns`), client limits counted in memory and, with Redis,
//! across replicas (`limits`), over one link to Redis that fails open (`link`). Nothing here is
//! on a call's path: a call reads only local state; Redis work runs beside it, and when Redis is
//! away calls go on with what this replica knows.

pub mod cooldowns; // learned here → Redis → every replica's health table
pub mod limits; // requests and tokens per minute, calls at once: per client key
pub mod link; // one Redis connection, reconnected with a pause, up or down

use std::sync::Arc;

use hourglass_engine::Engine;

/// The engine cool-downs from other replicas go to: the gateway's current one.
pub type EngineSource = Arc<dyn Fn() -> Arc<Engine> + Send + Sync>;

/// This process's holder token: the instance's name and a random part, so two processes under
/// one name (a restart) are told apart.
pub fn holder(instance: &str) -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!("{instance}/{:016x}", u64::from_le_bytes(bytes))
}
