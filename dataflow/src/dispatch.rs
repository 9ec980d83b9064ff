//! Where action requests go: the executor trait. The runtime hands every ready action to an
//! [`ActionExecutor`]; results come back on the bus's control channel either way.

use std::sync::Arc;

use async_trait::async_trait;
use walkoff_schema::ActionRequest;

use crate::bus::{Bus, BusError};

#[async_trait]
pub trait ActionExecutor: Send + Sync + 'static {
    /// Start these requests (a higher priority first); each one's result must reach the control
    /// channel as a `ControlMessage::Result`.
    async fn dispatch(&self, requests: Vec<ActionRequest>) -> Result<(), BusError>;

    /// Whether requests go to the bus's action queues, so the runtime queues them in the same
    /// commit as the state change that produced them instead of calling `dispatch`.
    fn queues_on_bus(&self) -> bool {
        false
    }
}

/// Queue requests on the bus, for executors in other tasks or processes to serve.
pub struct BusDispatch(pub Arc<dyn Bus>);

#[async_trait]
impl ActionExecutor for BusDispatch {
    async fn dispatch(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.0.send_actions(requests).await
    }

    fn queues_on_bus(&self) -> bool {
        true
    }
}
