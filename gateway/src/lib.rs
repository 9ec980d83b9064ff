//! The GraphQL gateway of walkoff: the schema and its resolvers (one module per resource), the
//! store, authentication, the recorder that persists every event, live subscriptions, and the
//! HTTP and WebSocket transport.
//!
//! Tests call [`graphql::build_schema`]'s `execute` directly, or [`http::router`] through
//! `tower::ServiceExt::oneshot`, without a socket.

pub mod auth;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod graphql;
pub mod http;
pub mod hub;
pub mod recorder;
pub mod serve;
pub mod store;

use std::sync::Arc;

use moka::future::Cache;
use walkoff_dataflow::Plan;

pub use config::{GatewayConfig, Limits};
pub use error::{ApiError, ApiResult};

/// Everything a request may need, shared by every request.
pub struct Gateway {
    pub store: store::Store,
    pub auth: Arc<auth::Auth>,
    pub engine: Arc<dyn engine::Engine>,
    pub hub: Arc<hub::Hub>,
    pub config: GatewayConfig,
    /// Compiled plans by (workflow id, version): a stored version never changes, so an entry
    /// is right for as long as it lives; updates and deletes drop the old ones at once.
    pub plans: Cache<(String, i64), Arc<Plan>>,
}

impl Gateway {
    pub fn new(
        store: store::Store,
        engine: Arc<dyn engine::Engine>,
        hub: Arc<hub::Hub>,
        config: GatewayConfig,
    ) -> Arc<Gateway> {
        let auth = auth::Auth::new(store.clone(), config.tokens.clone());
        Arc::new(Gateway {
            store,
            auth,
            engine,
            hub,
            config,
            plans: Cache::builder().max_capacity(1024).build(),
        })
    }
}
