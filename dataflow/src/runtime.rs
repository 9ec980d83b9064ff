//! The runtime: a control loop that applies messages from the bus to executions and carries out
//! their effects. It is driven entirely by messages: no polling, no sleeps.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use serde_json::Value;
use tokio::task::{AbortHandle, JoinHandle};
use walkoff_schema::{
    AppCatalog, ControlMessage, Event, EventKind, ExecutionId, Problems, StartExecution, Workflow,
    WorkflowStatus,
};

use crate::bus::{partition_of, Bus, BusError, Commit, ControlBatch, ExecutionRecord};
use crate::compile::Plan;
use crate::dispatch::ActionExecutor;
use crate::events::follow;
use crate::execution::{Effects, Execution};
use crate::plans::Plans;
use crate::recovery;
use crate::script::ScriptLimits;
use crate::script_host::ScriptIsolation;

/// Where the values of `GLOBAL` parameters come from.
pub trait GlobalProvider: Send + Sync {
    /// The value of a global, by name or id.
    fn global(&self, key: &str) -> Option<Value>;
}

impl GlobalProvider for BTreeMap<String, Value> {
    fn global(&self, key: &str) -> Option<Value> {
        self.get(key).cloned()
    }
}

/// How long `shutdown` waits for the batch in hand: a blocking read (`RuntimeConfig::block`) plus
/// a commit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This worker's consumer name on the bus.
    pub consumer: String,
    /// Control messages applied per batch.
    pub batch_size: usize,
    /// Longest a receive waits before the loop checks for shutdown.
    pub block: Duration,
    pub script_limits: ScriptLimits,
    /// Where conditions and transforms run (the `walkoff` binary: in script hosts).
    pub scripts: ScriptIsolation,
    /// How long an action request waits for an executor of its app to appear before its node
    /// fails (distributed mode).
    pub executor_wait: Duration,
    /// How often the deployment's housekeeping runs (distributed mode; one worker does it).
    pub maintenance_every: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            consumer: "worker-1".into(),
            batch_size: 512,
            block: Duration::from_millis(500),
            script_limits: ScriptLimits::default(),
            scripts: ScriptIsolation::process_default(),
            executor_wait: Duration::from_secs(30),
            maintenance_every: Duration::from_secs(1),
        }
    }
}

/// Where a worker finds app APIs it was not started with (apps registered after it started).
#[async_trait::async_trait]
pub trait CatalogSource: Send + Sync {
    async fn load(&self) -> Result<AppCatalog, BusError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the workflow is not valid: {0}")]
    Invalid(Problems),
    #[error("unknown workflow variable '{0}'")]
    UnknownVariable(String),
    #[error("the workflow uses the global '{0}', which has no value")]
    MissingGlobal(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no running execution '{0}'")]
    UnknownExecution(String),
    #[error("execution '{execution}' has no node '{node}'")]
    UnknownNode { execution: String, node: String },
    #[error("{0}")]
    InvalidTriggerData(String),
    #[error("trigger '{0}' has already received its data")]
    TriggerAlreadyResolved(String),
    #[error("execution '{0}' has already finished")]
    Finished(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

pub(crate) struct Inner {
    pub(crate) bus: Arc<dyn Bus>,
    executor: Arc<dyn ActionExecutor>,
    pub(crate) plans: Plans,
    config: RuntimeConfig,
    pub(crate) executions: Mutex<FxHashMap<ExecutionId, Execution>>,
    /// Recently finished executions, so a redelivered start does not run one again.
    pub(crate) finished: Mutex<FinishedSet>,
    /// Timers (retry back-off, trigger timeouts) armed for running executions, cancelled when
    /// they end or move to another worker: a week-long trigger wait must not outlive its
    /// execution.
    timers: Mutex<FxHashMap<ExecutionId, Vec<AbortHandle>>>,
    stopping: AtomicBool,
}

impl Inner {
    /// Cancel the timers of an execution that ended.
    fn cancel_timers_of(&self, execution_id: &str) {
        if let Some(handles) = lock(&self.timers).remove(execution_id) {
            handles.iter().for_each(AbortHandle::abort);
        }
    }

    /// Cancel the timers of executions that left this worker.
    fn cancel_timers(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.timers).retain(|id, handles| {
            let kept = keep(id);
            if !kept {
                handles.iter().for_each(AbortHandle::abort);
            }
            kept
        });
    }
}

/// A bounded memory of finished execution ids, oldest forgotten first.
#[derive(Default)]
pub(crate) struct FinishedSet {
    ids: std::collections::HashSet<ExecutionId>,
    order: std::collections::VecDeque<ExecutionId>,
}

impl FinishedSet {
    const CAPACITY: usize = 100_000;

    pub(crate) fn insert(&mut self, id: ExecutionId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.ids.remove(&oldest);
                }
            }
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs executions: submit, deliver trigger data, abort, follow events.
pub struct Runtime {
    inner: Arc<Inner>,
    control_loop: Mutex<Option<JoinHandle<()>>>,
    maintenance: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Start the control loop on the current tokio runtime. Actions go to `executor`; everything
    /// else travels on `bus`.
    pub fn start(
        bus: Arc<dyn Bus>,
        executor: Arc<dyn ActionExecutor>,
        catalog: Arc<AppCatalog>,
        config: RuntimeConfig,
    ) -> Runtime {
        Runtime::start_with_source(bus, executor, catalog, None, config)
    }

    /// Like [`Runtime::start`], reloading the catalog from `source` when a workflow names an app
    /// the worker does not know yet.
    pub fn start_with_source(
        bus: Arc<dyn Bus>,
        executor: Arc<dyn ActionExecutor>,
        catalog: Arc<AppCatalog>,
        catalog_source: Option<Arc<dyn CatalogSource>>,
        config: RuntimeConfig,
    ) -> Runtime {
        let inner = Arc::new(Inner {
            bus,
            executor,
            plans: Plans::new(catalog, catalog_source),
            config,
            executions: Mutex::new(FxHashMap::default()),
            finished: Mutex::new(FinishedSet::default()),
            timers: Mutex::new(FxHashMap::default()),
            stopping: AtomicBool::new(false),
        });
        let control_loop = tokio::spawn(control_loop(Arc::clone(&inner)));
        let maintenance = inner
            .bus
            .durable()
            .then(|| tokio::spawn(maintenance_loop(Arc::clone(&inner))));
        Runtime {
            inner,
            control_loop: Mutex::new(Some(control_loop)),
            maintenance,
        }
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    pub fn catalog(&self) -> Arc<AppCatalog> {
        self.inner.plans.catalog()
    }

    /// Validate, compile and enqueue an execution of `workflow`.
    pub async fn submit(
        &self,
        workflow: Arc<Workflow>,
        variables: BTreeMap<String, Value>,
        globals: &dyn GlobalProvider,
    ) -> Result<ExecutionId, SubmitError> {
        let plan = self
            .inner
            .plans
            .for_submission(&workflow)
            .map_err(SubmitError::Invalid)?;
        self.submit_plan(plan, new_execution_id(), variables, globals)
            .await
    }

    /// Enqueue an execution of an already compiled `plan` under an id the caller chose (a
    /// gateway picks it first, so a client can subscribe to its events before it starts).
    pub async fn submit_plan(
        &self,
        plan: Arc<Plan>,
        execution_id: ExecutionId,
        variables: BTreeMap<String, Value>,
        globals: &dyn GlobalProvider,
    ) -> Result<ExecutionId, SubmitError> {
        let start = new_start(
            &plan,
            Arc::clone(&plan.workflow),
            execution_id,
            variables,
            globals,
        )?;
        let execution_id = start.execution_id.clone();
        self.inner.plans.prepare(execution_id.clone(), plan);
        if let Err(e) = self
            .inner
            .bus
            .send_control(vec![ControlMessage::Start(Box::new(start))])
            .await
        {
            self.inner.plans.take_prepared(&execution_id);
            return Err(e.into());
        }
        Ok(execution_id)
    }

    /// Deliver data to a trigger (by id or label). The data is checked against the trigger's schema
    /// here, so a caller learns at once when it is rejected.
    pub async fn trigger(
        &self,
        execution_id: &str,
        node: &str,
        data: Value,
    ) -> Result<(), ControlError> {
        {
            let executions = lock(&self.inner.executions);
            let prepared = self.inner.plans.prepared(execution_id);
            let (plan, execution) = match (executions.get(execution_id), prepared) {
                (Some(e), _) => (Arc::clone(&e.plan), Some(e)),
                (None, Some(plan)) => (plan, None),
                (None, None) => {
                    return Err(ControlError::UnknownExecution(execution_id.to_string()))
                }
            };
            let index = plan.find(node).ok_or_else(|| ControlError::UnknownNode {
                execution: execution_id.to_string(),
                node: node.to_string(),
            })?;
            crate::trigger::check(&plan, index, &data).map_err(ControlError::InvalidTriggerData)?;
            if execution.is_some_and(|e| e.node(index).status.is_terminal()) {
                return Err(ControlError::TriggerAlreadyResolved(
                    plan.nodes[index].label.clone(),
                ));
            }
        }
        self.inner
            .bus
            .send_control(vec![ControlMessage::Trigger {
                execution_id: execution_id.to_string(),
                node: node.to_string(),
                data,
            }])
            .await?;
        Ok(())
    }

    /// Abort an execution: running and pending nodes end ABORTED, the workflow ABORTED.
    pub async fn abort(&self, execution_id: &str) -> Result<(), ControlError> {
        let known = lock(&self.inner.executions).contains_key(execution_id)
            || self.inner.plans.is_prepared(execution_id);
        if !known {
            return Err(ControlError::UnknownExecution(execution_id.to_string()));
        }
        self.inner
            .bus
            .send_control(vec![ControlMessage::Abort {
                execution_id: execution_id.to_string(),
            }])
            .await?;
        Ok(())
    }

    /// The events of an execution from `from_seq` on, ending with its final workflow event.
    pub fn events(
        &self,
        execution_id: &str,
        from_seq: u64,
    ) -> impl Stream<Item = Result<Event, BusError>> + Send + 'static {
        follow(
            Arc::clone(&self.inner.bus),
            execution_id.to_string(),
            from_seq,
        )
    }

    /// Executions started and not yet finished.
    pub fn running(&self) -> usize {
        lock(&self.inner.executions).len()
    }

    /// Stop the control loop after its current batch, or after `SHUTDOWN_GRACE` when the batch
    /// cannot finish (its bus is unreachable): stopping then is a crash, which a durable bus
    /// recovers from (the batch stays pending and another worker takes it). True when the loop
    /// stopped by itself, false when it was abandoned.
    pub async fn shutdown(&self) -> bool {
        self.inner.stopping.store(true, Ordering::Release);
        // The control loop sees `stopping` as soon as its receive ends: end it now.
        self.inner.bus.interrupt_control_receive();
        if let Some(maintenance) = &self.maintenance {
            maintenance.abort();
        }
        let handle = lock(&self.control_loop).take();
        if let Some(mut handle) = handle {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!("the control loop did not stop in time; abandoning its batch");
                handle.abort();
                let _ = handle.await;
                return false;
            }
        }
        true
    }
}

/// A new execution of `plan`'s workflow: variables checked, the globals it uses resolved.
/// A fresh execution id.
pub fn new_execution_id() -> ExecutionId {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn new_start(
    plan: &Plan,
    workflow: Arc<Workflow>,
    execution_id: ExecutionId,
    variables: BTreeMap<String, Value>,
    globals: &dyn GlobalProvider,
) -> Result<StartExecution, SubmitError> {
    if let Some(unknown) = variables.keys().find(|key| {
        !workflow
            .variables
            .iter()
            .any(|v| &v.id == *key || &v.name == *key)
    }) {
        return Err(SubmitError::UnknownVariable(unknown.clone()));
    }
    let mut resolved_globals = BTreeMap::new();
    for key in plan.referenced_globals() {
        let value = globals
            .global(&key)
            .ok_or_else(|| SubmitError::MissingGlobal(key.clone()))?;
        resolved_globals.insert(key, value);
    }
    Ok(StartExecution {
        execution_id,
        workflow,
        variables,
        globals: resolved_globals,
    })
}

async fn maintenance_loop(inner: Arc<Inner>) {
    let mut every = tokio::time::interval(inner.config.maintenance_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match inner
            .bus
            .maintain(&inner.config.consumer, inner.config.executor_wait)
            .await
        {
            Ok(()) => {}
            Err(BusError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
    }
}

async fn control_loop(inner: Arc<Inner>) {
    let bus = Arc::clone(&inner.bus);
    let consumer = inner.config.consumer.as_str();
    let mut failures = 0u32;
    // A batch received together with the previous commit.
    let mut next: Option<ControlBatch> = None;
    while !inner.stopping.load(Ordering::Acquire) {
        let batch = match next.take() {
            Some(batch) => batch,
            None => match bus
                .recv_control(consumer, inner.config.batch_size, inner.config.block)
                .await
            {
                Ok(batch) => batch,
                Err(BusError::Closed) => return,
                Err(e) => {
                    failures += 1;
                    backoff(failures, &e, "control receive failed").await;
                    continue;
                }
            },
        };
        let committed = match run_batch(&inner, batch).await {
            Ok(None) => Ok(()),
            Ok(Some((commit, local))) if local.is_empty() => {
                // Nothing to start once the batch is durable: commit and read on in one go.
                let (committed, read) = bus
                    .commit_and_recv(
                        consumer,
                        commit,
                        inner.config.batch_size,
                        inner.config.block,
                    )
                    .await;
                match read {
                    Some(Ok(batch)) => next = Some(batch),
                    Some(Err(BusError::Closed)) => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "control receive failed"),
                    None => {}
                }
                committed
            }
            Ok(Some((commit, local))) => match bus.commit(consumer, commit).await {
                Ok(()) => {
                    if let Err(e) = carry_out(&inner, local).await {
                        tracing::warn!(error = %e, "could not carry out effects");
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => failures = 0,
            Err(BusError::Closed) => return,
            Err(e) => {
                // What this worker holds in memory may be ahead of what Redis holds: forget it
                // and load the owned partitions again; the batch's messages are still pending.
                failures += 1;
                next = None;
                lock(&inner.executions).clear();
                inner.cancel_timers(|_| false);
                bus.resync(consumer).await;
                backoff(failures, &e, "a batch could not be committed").await;
            }
        }
    }
}

/// Wait longer after each consecutive failure (up to 3.2 s) rather than spin on a broken connection.
async fn backoff(failures: u32, error: &BusError, what: &str) {
    let wait = Duration::from_millis(50u64 << failures.min(6));
    tracing::warn!(%error, ?wait, "{what}");
    tokio::time::sleep(wait).await;
}

/// Apply one batch: drop and load partitions as ownership changed, apply the messages, and return
/// everything they changed (to commit in one write) with the local work to start once it is
/// durable (scripts, timers, actions for an in-process executor).
async fn run_batch(
    inner: &Arc<Inner>,
    batch: ControlBatch,
) -> Result<Option<(Commit, Effects)>, BusError> {
    let ControlBatch {
        deliveries,
        gained,
        lost,
    } = batch;
    let partitions = inner.bus.partitions();
    if !lost.is_empty() {
        let moved = |id: &str| lost.contains(&partition_of(id, partitions));
        lock(&inner.executions).retain(|id, _| !moved(id));
        inner.cancel_timers(|id| !moved(id));
    }
    for partition in gained {
        recovery::restore_partition(inner, partition).await?;
    }
    if deliveries.is_empty() {
        return Ok(None);
    }
    let deliveries = unbatch(deliveries);
    let durable = inner.bus.durable();
    let queues_on_bus = inner.executor.queues_on_bus();
    let records = prepare_starts(inner, &deliveries).await?;

    let mut fx = Effects::default();
    let mut local = Effects::default();
    let mut commit = Commit::default();
    let mut logs: FxHashMap<ExecutionId, Vec<ControlMessage>> = FxHashMap::default();
    {
        let mut executions = lock(&inner.executions);
        for delivery in deliveries {
            commit.acks.push(delivery.id);
            let message = delivery.message;
            let id = message.execution_id().to_string();
            if let Some(ExecutionRecord::Running(log)) = records.get(&id) {
                if !executions.contains_key(&id) {
                    if let Some((execution, outstanding)) = recovery::restore(inner, log.clone()) {
                        executions.insert(id.clone(), execution);
                        local.scripts.extend(outstanding.scripts);
                        local.timers.extend(outstanding.timers);
                    }
                }
            }
            let logged = durable.then(|| message.clone());
            let applied = match message {
                ControlMessage::Start(start) => {
                    let known = executions.contains_key(&id)
                        || lock(&inner.finished).contains(&id)
                        || records
                            .get(&id)
                            .is_some_and(|r| *r != ExecutionRecord::Absent);
                    if known {
                        false // a redelivered start
                    } else {
                        let started = start_execution(inner, &mut executions, start, &mut fx);
                        if started {
                            commit.started.push(id.clone());
                            if !executions.contains_key(&id) {
                                commit.finished.push(id.clone()); // finished as it started
                            }
                        }
                        started
                    }
                }
                other => apply_message(inner, &mut executions, other, &mut fx, &mut commit),
            };
            if let (true, Some(message)) = (applied, logged) {
                logs.entry(id).or_default().push(message);
            }
        }
    }
    commit.logs = logs.into_iter().collect();
    let Effects {
        events,
        actions,
        scripts,
        timers,
    } = fx;
    commit.events = events;
    local.scripts.extend(scripts);
    local.timers.extend(timers);
    if queues_on_bus {
        commit.actions = actions;
    } else {
        local.actions = actions;
    }
    Ok(Some((commit, local)))
}

/// Results that came in one message are applied (and logged) one by one, each with the message's
/// delivery id, so one acknowledgement covers them all.
fn unbatch(
    deliveries: Vec<crate::bus::Delivery<ControlMessage>>,
) -> Vec<crate::bus::Delivery<ControlMessage>> {
    let mut out = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery.message {
            ControlMessage::Results { results } => {
                out.extend(results.into_iter().map(|result| crate::bus::Delivery {
                    id: delivery.id.clone(),
                    deliveries: delivery.deliveries,
                    message: ControlMessage::Result(result),
                }))
            }
            message => out.push(crate::bus::Delivery {
                message,
                ..delivery
            }),
        }
    }
    out
}

/// Before a batch is applied: what the bus knows of executions whose start it holds (a start may be
/// redelivered after a worker died), and the plans of the new ones, compiled outside the lock.
async fn prepare_starts(
    inner: &Arc<Inner>,
    deliveries: &[crate::bus::Delivery<ControlMessage>],
) -> Result<HashMap<ExecutionId, ExecutionRecord>, BusError> {
    let starts: Vec<&StartExecution> = deliveries
        .iter()
        .filter_map(|d| match &d.message {
            ControlMessage::Start(start) => Some(start.as_ref()),
            _ => None,
        })
        .filter(|start| {
            !lock(&inner.executions).contains_key(&start.execution_id)
                && !lock(&inner.finished).contains(&start.execution_id)
        })
        .collect();
    if starts.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<ExecutionId> = starts.iter().map(|s| s.execution_id.clone()).collect();
    let records = if inner.bus.durable() {
        inner.bus.lookup_executions(&ids).await?
    } else {
        vec![ExecutionRecord::Absent; ids.len()]
    };
    for (start, record) in starts.iter().zip(&records) {
        if *record != ExecutionRecord::Absent || inner.plans.is_prepared(&start.execution_id) {
            continue;
        }
        if let Ok(plan) = inner.plans.for_start(&start.workflow).await {
            inner.plans.prepare(start.execution_id.clone(), plan);
        }
    }
    Ok(ids.into_iter().zip(records).collect())
}

/// Start a new execution; false when it could not start (its failure event is in `fx`).
fn start_execution(
    inner: &Inner,
    executions: &mut FxHashMap<ExecutionId, Execution>,
    start: Box<StartExecution>,
    fx: &mut Effects,
) -> bool {
    let plan = match inner.plans.take_prepared(&start.execution_id) {
        Some(plan) => Ok(plan),
        None => inner.plans.compiled(&start.workflow),
    };
    let execution_id = start.execution_id.clone();
    let workflow_id = start.workflow.id.clone();
    let started = plan
        .map_err(|problems| problems.to_string())
        .and_then(|plan| Execution::start(plan, *start, fx).map_err(|e| e.to_string()));
    match started {
        Ok(execution) => {
            if execution.is_finished() {
                lock(&inner.finished).insert(execution_id);
            } else {
                executions.insert(execution_id, execution);
            }
            true
        }
        Err(reason) => {
            lock(&inner.finished).insert(execution_id.clone());
            tracing::warn!(execution = %execution_id, reason = %reason, "execution could not start");
            fx.events.push(Event {
                execution_id,
                seq: 1,
                at: Utc::now(),
                kind: EventKind::Workflow {
                    workflow_id,
                    status: WorkflowStatus::Failed,
                    error: Some(reason),
                },
            });
            false
        }
    }
}

/// Apply a message to a running execution; false when there is none (late results of finished
/// executions are dropped).
fn apply_message(
    inner: &Inner,
    executions: &mut FxHashMap<ExecutionId, Execution>,
    message: ControlMessage,
    fx: &mut Effects,
    commit: &mut Commit,
) -> bool {
    let id = message.execution_id().to_string();
    let Some(execution) = executions.get_mut(&id) else {
        return false;
    };
    execution.apply(message, fx);
    if execution.is_finished() {
        executions.remove(&id);
        lock(&inner.finished).insert(id.clone());
        inner.cancel_timers_of(&id);
        commit.finished.push(id);
    }
    true
}

pub(crate) async fn carry_out(inner: &Arc<Inner>, fx: Effects) -> Result<(), BusError> {
    let Effects {
        events,
        actions,
        scripts,
        timers,
    } = fx;
    // Events first, so a node's EXECUTING event precedes anything its executor reports. Each kind
    // of effect is carried out even when another failed, so one failure loses no more than itself.
    let mut first_error = None;
    if let Err(e) = inner.bus.publish_events(events).await {
        first_error.get_or_insert(e);
    }
    if !actions.is_empty() {
        if let Err(e) = inner.executor.dispatch(actions).await {
            first_error.get_or_insert(e);
        }
    }
    if !scripts.is_empty() {
        let bus = Arc::clone(&inner.bus);
        let mut results = inner
            .config
            .scripts
            .run_all(scripts, inner.config.script_limits);
        tokio::spawn(async move {
            // What is ready goes out together: one write for a burst of results.
            let mut ready = Vec::new();
            while results.recv_many(&mut ready, 256).await > 0 {
                let messages = ready.drain(..).map(ControlMessage::Result).collect();
                if let Err(e) = bus.send_control(messages).await {
                    tracing::warn!(error = %e, "could not report script results");
                }
            }
        });
    }
    for (delay, message) in timers {
        let id = message.execution_id().to_string();
        // An execution that ended in the batch that armed the timer needs it no more.
        if !lock(&inner.executions).contains_key(&id) {
            continue;
        }
        let bus = Arc::clone(&inner.bus);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = bus.send_control(vec![message]).await {
                tracing::warn!(error = %e, "could not deliver a timer's message");
            }
        });
        let mut armed = lock(&inner.timers);
        let handles = armed.entry(id).or_default();
        handles.retain(|handle| !handle.is_finished());
        handles.push(timer.abort_handle());
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MemoryBus;
    use crate::dispatch::BusDispatch;

    #[tokio::test]
    async fn an_executions_timers_are_cancelled_when_it_ends() {
        let bus: Arc<dyn Bus> = MemoryBus::new();
        let runtime = Runtime::start(
            Arc::clone(&bus),
            Arc::new(BusDispatch(Arc::clone(&bus))),
            Arc::new(AppCatalog::default()),
            RuntimeConfig::default(),
        );
        let workflow = Workflow::from_canonical(serde_json::json!({
            "id": "w", "name": "w", "start": "wait",
            "nodes": [{"id": "wait", "label": "wait", "kind": "trigger"}]
        }))
        .unwrap();
        let id = runtime
            .submit(Arc::new(workflow), BTreeMap::new(), &BTreeMap::new())
            .await
            .unwrap();
        let armed = || lock(&runtime.inner.timers).get(&id).map_or(0, Vec::len);
        // The trigger's week-long wait is armed once the start is applied…
        for _ in 0..200 {
            if armed() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(armed(), 1, "the trigger's timeout was not armed");
        // …and gone as soon as the execution ends, not a week later.
        runtime.abort(&id).await.unwrap();
        for _ in 0..200 {
            if !lock(&runtime.inner.timers).contains_key(&id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !lock(&runtime.inner.timers).contains_key(&id),
            "the timer outlived its execution"
        );
        runtime.shutdown().await;
    }
}
