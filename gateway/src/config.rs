//! What an operator can set: where to listen, the master key, and the limits every request and
//! subscription is held to (each breach is a clear error, never a stalled server).

use std::net::SocketAddr;
use std::time::Duration;

use crate::keys::MasterKey;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Share the port with other processes that ask for the same (SO_REUSEPORT; the kernel
    /// spreads connections among them): gateway replicas on one host's network.
    pub reuse_port: bool,
    /// The deployment's master key (tokens are signed, globals encrypted, by keys derived
    /// from it). The default is a random one, good for one process's life: `walkoff serve` and
    /// `walkoff gateway` read theirs from a file.
    pub key: MasterKey,
    pub limits: Limits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            reuse_port: false,
            key: MasterKey::random(),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest selection a query (or subscription) may nest.
    pub max_depth: usize,
    /// Largest complexity (fields selected, lists weighted) a query may have.
    pub max_complexity: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Subscriptions open at once on one WebSocket connection.
    pub max_subscriptions_per_connection: usize,
    /// Longest an HTTP request may take.
    pub request_timeout: Duration,
    /// Events a subscriber may fall behind the live feed before it catches up from the store.
    pub subscriber_buffer: usize,
    /// How long a subscription to an execution that does not exist yet waits for it.
    pub pending_execution_wait: Duration,
    /// Largest page of a list.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 12,
            max_complexity: 2000,
            max_body_bytes: 4 * 1024 * 1024,
            max_subscriptions_per_connection: 200,
            request_timeout: Duration::from_secs(30),
            subscriber_buffer: 64,
            pending_execution_wait: Duration::from_secs(60),
            max_page: 200,
        }
    }
}
