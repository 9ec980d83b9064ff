//! What runs executions behind the gateway. The embedded engine is the in-process runtime on the
//! in-memory bus with the built-in apps; its bus is tapped so that every event the engine commits
//! reaches the recorder, which stores it before any subscriber is told.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use walkoff_dataflow::bus::{Commit, ControlBatch, ExecutionRecord, Partition};
use walkoff_dataflow::{
    Bus, BusError, ControlError, Delivery, DeliveryId, MemoryBus, Plan, Runtime, RuntimeConfig,
    SubmitError,
};
use walkoff_executors::{ExecutorConfig, LocalExecutor, Registry};
use walkoff_schema::{
    ActionRequest, AppCatalog, AppRef, ControlMessage, Event, ExecutionId, NodeResult,
};

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// The apps workflows may use; with `fresh`, read again rather than taken from a cache
    /// (a workflow named an app the cached catalogue lacks, which may just have registered).
    async fn catalog(&self, fresh: bool) -> Result<Arc<AppCatalog>, BusError>;

    /// Enqueue an execution of `plan` under `execution_id`, with the (sealed) values of the
    /// globals it uses, by the key it names them with.
    async fn submit(
        &self,
        plan: Arc<Plan>,
        execution_id: ExecutionId,
        variables: BTreeMap<String, Value>,
        globals: BTreeMap<String, Value>,
    ) -> Result<(), SubmitError>;

    async fn trigger(
        &self,
        execution_id: &str,
        node: &str,
        data: Value,
    ) -> Result<(), ControlError>;

    async fn abort(&self, execution_id: &str) -> Result<(), ControlError>;

    /// Record and publish the events of `execution_id` in this process as they come: a
    /// subscriber here waits for them. The embedded engine records every event anyway.
    fn follow(&self, _execution_id: &str) {}

    /// How often a subscriber waiting for events reads the store again, when this process's
    /// live feed may miss events another process stored; `None`: every stored event reaches
    /// the live feed here.
    fn store_recheck(&self) -> Option<Duration> {
        None
    }

    async fn shutdown(&self);
}

/// The runtime, the in-memory bus and the built-in apps, all in this process.
pub struct EmbeddedEngine {
    runtime: Runtime,
    bus: Arc<MemoryBus>,
}

impl EmbeddedEngine {
    /// Start the engine; every committed event goes to `events`, in order per execution.
    pub fn start(registry: &Registry, events: mpsc::Sender<Vec<Event>>) -> EmbeddedEngine {
        let bus = MemoryBus::new();
        let tapped: Arc<dyn Bus> = Arc::new(TappedBus {
            inner: Arc::clone(&bus),
            events,
        });
        let executor = LocalExecutor::new(
            Arc::clone(&tapped),
            registry,
            ExecutorConfig::default().concurrency,
        );
        let runtime = Runtime::start(
            tapped,
            Arc::new(executor),
            Arc::new(registry.catalog()),
            RuntimeConfig::default(),
        );
        EmbeddedEngine { runtime, bus }
    }
}

#[async_trait]
impl Engine for EmbeddedEngine {
    async fn catalog(&self, _fresh: bool) -> Result<Arc<AppCatalog>, BusError> {
        Ok(self.runtime.catalog())
    }

    async fn submit(
        &self,
        plan: Arc<Plan>,
        execution_id: ExecutionId,
        variables: BTreeMap<String, Value>,
        globals: BTreeMap<String, Value>,
    ) -> Result<(), SubmitError> {
        self.runtime
            .submit_plan(plan, execution_id, variables, &globals)
            .await
            .map(|_| ())
    }

    async fn trigger(
        &self,
        execution_id: &str,
        node: &str,
        data: Value,
    ) -> Result<(), ControlError> {
        self.runtime.trigger(execution_id, node, data).await
    }

    async fn abort(&self, execution_id: &str) -> Result<(), ControlError> {
        self.runtime.abort(execution_id).await
    }

    async fn shutdown(&self) {
        self.runtime.shutdown().await;
        self.bus.close().await;
    }
}

/// The in-memory bus with its events sent to the recorder instead of kept in the bus: the store
/// keeps them. The channel is bounded, so a store that falls behind slows the engine down
/// instead of filling memory.
struct TappedBus {
    inner: Arc<MemoryBus>,
    events: mpsc::Sender<Vec<Event>>,
}

impl TappedBus {
    async fn tap(&self, events: Vec<Event>) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        self.events.send(events).await.map_err(|_| BusError::Closed)
    }
}

#[async_trait]
impl Bus for TappedBus {
    async fn send_actions(&self, requests: Vec<ActionRequest>) -> Result<(), BusError> {
        self.inner.send_actions(requests).await
    }

    async fn recv_actions(
        &self,
        app: &AppRef,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<ActionRequest>>, BusError> {
        self.inner.recv_actions(app, consumer, max, wait).await
    }

    async fn complete_actions(
        &self,
        app: &AppRef,
        done: Vec<(DeliveryId, NodeResult)>,
    ) -> Result<(), BusError> {
        self.inner.complete_actions(app, done).await
    }

    async fn send_control(&self, messages: Vec<ControlMessage>) -> Result<(), BusError> {
        self.inner.send_control(messages).await
    }

    async fn recv_control(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ControlBatch, BusError> {
        self.inner.recv_control(consumer, max, wait).await
    }

    async fn ack_control(&self, ids: Vec<DeliveryId>) -> Result<(), BusError> {
        self.inner.ack_control(ids).await
    }

    fn durable(&self) -> bool {
        self.inner.durable()
    }

    fn interrupt_control_receive(&self) {
        self.inner.interrupt_control_receive()
    }

    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn commit(&self, _consumer: &str, commit: Commit) -> Result<(), BusError> {
        // As the in-memory bus commits, with the events going to the recorder instead of into
        // the bus's memory: the store keeps them, and nothing here reads them back.
        let Commit {
            acks,
            events,
            actions,
            ..
        } = commit;
        self.tap(events).await?;
        if !actions.is_empty() {
            self.inner.send_actions(actions).await?;
        }
        self.inner.ack_control(acks).await
    }

    async fn lookup_executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, BusError> {
        self.inner.lookup_executions(ids).await
    }

    async fn load_partition(
        &self,
        partition: Partition,
    ) -> Result<Vec<(ExecutionId, Vec<ControlMessage>)>, BusError> {
        self.inner.load_partition(partition).await
    }

    async fn resync(&self, consumer: &str) {
        self.inner.resync(consumer).await
    }

    async fn executor_heartbeat(&self, app: &AppRef, consumer: &str) -> Result<(), BusError> {
        self.inner.executor_heartbeat(app, consumer).await
    }

    async fn maintain(&self, consumer: &str, executor_wait: Duration) -> Result<(), BusError> {
        self.inner.maintain(consumer, executor_wait).await
    }

    async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        self.tap(events).await
    }

    async fn read_events(
        &self,
        execution_id: &str,
        from_seq: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, BusError> {
        self.inner
            .read_events(execution_id, from_seq, max, wait)
            .await
    }

    async fn pending(&self) -> Result<usize, BusError> {
        self.inner.pending().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
