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
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, Event, ExecutionId, NodeResult};

pub use memory::MemoryBus;
pub use priority::PriorityQueue;
pub use redis::{
    FinishedEntry, RedisBus, RedisBusConfig, RedisKeys, Wake, EXECUTORS, MAX_CONTROL_DELIVERIES,
    STAT_ACTIONS_DEAD_LETTERED, STAT_ACTIONS_HANDED_OUT_AGAIN, STAT_CONTROL_DEAD_LETTERED,
};

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
    /// A commit touched a partition this worker no longer owns; nothing of it was written.
    #[error("partition {0} is owned by another worker now")]
    Fenced(u32),
}

/// Control messages are split into partitions by execution id; each partition is owned by one
/// worker at a time, so one worker applies all of an execution's messages, in order.
pub type Partition = u32;

/// What a worker receives: control messages of the partitions it owns, and the partitions it gained
/// (load their running executions before applying anything) or lost (drop their executions).
#[derive(Debug, Default)]
pub struct ControlBatch {
    pub deliveries: Vec<Delivery<ControlMessage>>,
    pub gained: Vec<Partition>,
    pub lost: Vec<Partition>,
}

/// Everything one batch of control messages changed, written at once: either all of it becomes
/// durable and the messages are acknowledged, or none of it and they stay pending.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Control messages this commit answers.
    pub acks: Vec<DeliveryId>,
    /// Per execution, the messages applied, in order (a new execution's log opens with its start).
    pub logs: Vec<(ExecutionId, Vec<ControlMessage>)>,
    pub started: Vec<ExecutionId>,
    pub finished: Vec<ExecutionId>,
    pub events: Vec<Event>,
    pub actions: Vec<ActionRequest>,
}

/// What the bus holds of an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionRecord {
    /// Never started (or forgotten after its retention).
    Absent,
    Finished,
    /// Running: its log, the start first, to replay.
    Running(Vec<ControlMessage>),
}

/// FNV-1a (32 bit) of the execution id, modulo the partition count: stable across processes and
/// languages.
pub fn partition_of(execution_id: &str, partitions: u32) -> Partition {
    let hash = execution_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % partitions.max(1)
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

    /// Report results as `complete_actions` does, then (whatever the report's outcome) receive
    /// as `recv_actions` does; a bus may do both in one round trip. A failed report is the
    /// caller's to retry: reporting a result twice is harmless, workers apply it once.
    async fn complete_and_recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        done: Vec<(DeliveryId, NodeResult)>,
        max: usize,
        wait: Duration,
    ) -> (
        Result<(), BusError>,
        Result<Vec<Delivery<ActionRequest>>, BusError>,
    ) {
        let reported = self.complete_actions(app, done).await;
        let received = self.recv_actions(app, consumer, max, wait).await;
        (reported, received)
    }

    /// Send control messages (start, results, trigger data, abort, retry) to the workers.
    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError>;

    /// Receive up to `max` control messages of the partitions `consumer` owns, waiting at most
    /// `wait` for the first one. The first call makes `consumer` a worker: from then on it holds
    /// partitions (a fair share of them) until it stops or is presumed dead.
    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError>;

    /// Acknowledge control messages that change nothing.
    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError>;

    /// Whether execution state outlives this process (so logs are worth writing and reading).
    fn durable(&self) -> bool;

    /// How many control partitions there are.
    fn partitions(&self) -> u32;

    /// Write a batch's changes and acknowledge its messages, all or nothing; fails with
    /// [`BusError::Fenced`] when `consumer` no longer owns a partition the commit touches.
    async fn commit(&self, consumer: &str, commit: Commit) -> Result<(), BusError>;

    /// Commit, then (when the commit worked) receive the next batch as `recv_control` does; a bus
    /// may do both in one round trip.
    async fn commit_and_recv(
        &self,
        consumer: &str,
        commit: Commit,
        max: usize,
        wait: Duration,
    ) -> (Result<(), BusError>, Option<Result<ControlBatch, BusError>>) {
        let committed = self.commit(consumer, commit).await;
        let next = match &committed {
            Ok(()) => Some(self.recv_control(consumer, max, wait).await),
            Err(_) => None,
        };
        (committed, next)
    }

    /// What the bus holds of these executions.
    async fn lookup_executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, BusError>;

    /// The logs of the running executions of a partition.
    async fn load_partition(
        &self,
        partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError>;

    /// Forget what this worker owns and hand every owned partition out again as gained, after a
    /// commit failed and its in-memory state can no longer be trusted.
    async fn resync(&self, consumer: &str);

    /// An executor of `app` is alive; called at least once a second while it serves.
    async fn executor_heartbeat(&self, app: &AppRef, consumer: &str) -> Result<(), BusError>;

    /// Housekeeping one worker does for all: requests held by dead executors are handed out
    /// again (or dead-lettered past their delivery limit, failing their node), and requests for
    /// apps no executor has served within `executor_wait` fail their node.
    async fn maintain(&self, consumer: &str, executor_wait: Duration) -> Result<(), BusError>;

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

    /// End a control receive that is waiting now (or the next one) with an empty batch: a
    /// runtime stopping need not wait out its receive's `wait`. Buses whose receives end soon
    /// enough by themselves may ignore it.
    fn interrupt_control_receive(&self) {}
}
