//! The bus: how workers, executors and listeners talk. Action requests go out to per-app queues,
//! results, trigger data and aborts come back on the control channel, and events are published per
//! execution with their sequence numbers.
//!
//! Two implementations pass the same conformance suite ([`conformance`]): [`MemoryBus`], the
//! embedded default, and [`RedisBus`] on Redis Streams. The trait is shaped for Redis: batched sends,
//! receives that wait a bounded time, explicit acknowledgements and a delivery count, so delivery is
//! at least once and consumers make their effects idempotent.

pub mod conformance;
mod memory;
mod priority;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, Event, NodeResult};

pub use memory::MemoryBus;
pub use priority::PriorityQueue;
pub use redis::RedisBus;

/// Identifies one delivered message for acknowledgement.
pub type DeliveryId = String;

/// A message as received, with what acknowledging it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<T> {
    pub id: DeliveryId,
    /// How many times this message has been delivered (1 the first time).
    pub deliveries: u32,
    pub message: T,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queue action requests on their apps' queues; a higher priority is served first.
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError>;

    /// Receive up to `max` requests for `app`, waiting at most `wait` for the first one. An empty
    /// answer means the wait ran out.
    async fn recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError>;

    /// Publish results to the workers, then acknowledge the requests they answer.
    async fn complete_actions(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError>;

    /// Send control messages (start, results, trigger data, abort, retry) to the workers.
    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError>;

    /// Receive up to `max` control messages, waiting at most `wait` for the first one.
    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ControlMessage>>, BusError>;

    /// Acknowledge control messages whose effects are durable.
    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError>;

    /// Publish events; within an execution they arrive in sequence order.
    async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError>;

    /// Events of `execution_id` with `seq >= from_seq`, at most `max`, waiting at most `wait` for
    /// the first one.
    async fn read_events(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError>;

    /// Messages (action requests and control messages) delivered but not yet acknowledged.
    async fn pending(&self) -> Result<usize, BusError>;

    /// Stop: pending and future receives return [`BusError::Closed`].
    async fn close(&self);
}
