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
use tokio::task::JoinHandle;
use walkoff_schema::{
    AppCatalog, ControlMessage, Event, EventKind, ExecutionId, NodeResult, Outcome, Problems,
    StartExecution, Workflow, WorkflowStatus,
};

use crate::bus::{Bus, BusError};
use crate::compile::{compile, Plan};
use crate::dispatch::ActionExecutor;
use crate::events::follow;
use crate::execution::{Effects, Execution};
use crate::script::ScriptLimits;

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

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This worker's consumer name on the bus.
    pub consumer: String,
    /// Control messages applied per batch.
    pub batch_size: usize,
    /// Longest a receive waits before the loop checks for shutdown.
    pub block: Duration,
    pub script_limits: ScriptLimits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            consumer: "worker-1".into(),
            batch_size: 512,
            block: Duration::from_millis(500),
            script_limits: ScriptLimits::default(),
        }
    }
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
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Workflows whose compiled plans are kept for resubmission.
const PLAN_CACHE_SIZE: usize = 32;

struct Inner {
    bus: Arc<dyn Bus>,
    executor: Arc<dyn ActionExecutor>,
    catalog: Arc<AppCatalog>,
    config: RuntimeConfig,
    executions: Mutex<FxHashMap<ExecutionId, Execution>>,
    /// Plans compiled at submission, picked up by the control loop instead of compiling again.
    prepared: Mutex<HashMap<ExecutionId, Arc<Plan>>>,
    /// Plans of recently submitted workflows, by workflow identity.
    plans: Mutex<Vec<(std::sync::Weak<Workflow>, Arc<Plan>)>>,
    /// Recently finished executions, so a redelivered start does not run one again.
    finished: Mutex<FinishedSet>,
    stopping: AtomicBool,
}

/// A bounded memory of finished execution ids, oldest forgotten first.
#[derive(Default)]
struct FinishedSet {
    ids: std::collections::HashSet<ExecutionId>,
    order: std::collections::VecDeque<ExecutionId>,
}

impl FinishedSet {
    const CAPACITY: usize = 100_000;

    fn insert(&mut self, id: ExecutionId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.ids.remove(&oldest);
                }
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs executions: submit, deliver trigger data, abort, follow events.
pub struct Runtime {
    inner: Arc<Inner>,
    control_loop: Mutex<Option<JoinHandle<()>>>,
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
        let inner = Arc::new(Inner {
            bus,
            executor,
            catalog,
            config,
            executions: Mutex::new(FxHashMap::default()),
            prepared: Mutex::new(HashMap::new()),
            plans: Mutex::new(Vec::new()),
            finished: Mutex::new(FinishedSet::default()),
            stopping: AtomicBool::new(false),
        });
        let control_loop = tokio::spawn(control_loop(Arc::clone(&inner)));
        Runtime {
            inner,
            control_loop: Mutex::new(Some(control_loop)),
        }
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    pub fn catalog(&self) -> &AppCatalog {
        &self.inner.catalog
    }

    /// Validate, compile and enqueue an execution of `workflow`.
    pub async fn submit(
        &self,
        workflow: Arc<Workflow>,
        variables: BTreeMap<String, Value>,
        globals: &dyn GlobalProvider,
    ) -> Result<ExecutionId, SubmitError> {
        let plan = self.plan_for(&workflow)?;
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
        let execution_id = uuid::Uuid::new_v4().to_string();
        lock(&self.inner.prepared).insert(execution_id.clone(), plan);
        let start = StartExecution {
            execution_id: execution_id.clone(),
            workflow,
            variables,
            globals: resolved_globals,
        };
        if let Err(e) = self
            .inner
            .bus
            .send_control(vec![ControlMessage::Start(Box::new(start))])
            .await
        {
            lock(&self.inner.prepared).remove(&execution_id);
            return Err(e.into());
        }
        Ok(execution_id)
    }

    /// The compiled plan of `workflow`: workflows are immutable behind their `Arc`, so submitting
    /// the same one again (a stored workflow run many times) reuses its plan.
    fn plan_for(&self, workflow: &Arc<Workflow>) -> Result<Arc<Plan>, SubmitError> {
        {
            let cache = lock(&self.inner.plans);
            if let Some((_, plan)) = cache
                .iter()
                .find(|(w, _)| w.upgrade().is_some_and(|w| Arc::ptr_eq(&w, workflow)))
            {
                return Ok(Arc::clone(plan));
            }
        }
        let plan = Arc::new(
            compile(Arc::clone(workflow), &self.inner.catalog, None)
                .map_err(SubmitError::Invalid)?,
        );
        let mut cache = lock(&self.inner.plans);
        cache.retain(|(w, _)| w.strong_count() > 0);
        if cache.len() >= PLAN_CACHE_SIZE {
            cache.remove(0);
        }
        cache.push((Arc::downgrade(workflow), Arc::clone(&plan)));
        Ok(plan)
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
            let prepared = lock(&self.inner.prepared);
            let (plan, execution) = match (executions.get(execution_id), prepared.get(execution_id))
            {
                (Some(e), _) => (Arc::clone(&e.plan), Some(e)),
                (None, Some(plan)) => (Arc::clone(plan), None),
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
            || lock(&self.inner.prepared).contains_key(execution_id);
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

    /// Stop the control loop after its current batch.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let handle = lock(&self.control_loop).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

async fn control_loop(inner: Arc<Inner>) {
    let bus = Arc::clone(&inner.bus);
    let mut failures = 0u32;
    while !inner.stopping.load(Ordering::Acquire) {
        let batch = match bus
            .recv_control(
                &inner.config.consumer,
                inner.config.batch_size,
                inner.config.block,
            )
            .await
        {
            Ok(batch) => {
                failures = 0;
                batch
            }
            Err(BusError::Closed) => return,
            Err(e) => {
                // Back off on a broken connection rather than spin; the messages stay queued.
                failures += 1;
                let backoff = Duration::from_millis(50u64 << failures.min(6));
                tracing::warn!(error = %e, ?backoff, "control receive failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let mut fx = Effects::default();
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut executions = lock(&inner.executions);
            for delivery in batch {
                ids.push(delivery.id);
                apply(&inner, &mut executions, delivery.message, &mut fx);
            }
        }
        if let Err(e) = carry_out(&inner, fx).await {
            tracing::warn!(error = %e, "could not carry out effects");
        }
        if let Err(e) = bus.ack_control(ids).await {
            tracing::warn!(error = %e, "could not acknowledge control messages");
        }
    }
}

fn apply(
    inner: &Inner,
    executions: &mut FxHashMap<ExecutionId, Execution>,
    message: ControlMessage,
    fx: &mut Effects,
) {
    match message {
        ControlMessage::Start(start) => {
            if executions.contains_key(&start.execution_id)
                || lock(&inner.finished).contains(&start.execution_id)
            {
                return; // a redelivered start
            }
            let prepared = lock(&inner.prepared).remove(&start.execution_id);
            let plan = match prepared {
                Some(plan) => Ok(plan),
                None => compile(Arc::clone(&start.workflow), &inner.catalog, None).map(Arc::new),
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
                }
            }
        }
        other => {
            let id = other.execution_id().to_string();
            let finished = match executions.get_mut(&id) {
                Some(execution) => {
                    execution.apply(other, fx);
                    execution.is_finished()
                }
                // Late results of finished executions are dropped.
                None => false,
            };
            if finished {
                executions.remove(&id);
                lock(&inner.finished).insert(id);
            }
        }
    }
}

async fn carry_out(inner: &Arc<Inner>, fx: Effects) -> Result<(), BusError> {
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
    for job in scripts {
        let bus = Arc::clone(&inner.bus);
        let limits = inner.config.script_limits;
        tokio::spawn(async move {
            let (execution_id, node_id, attempt) =
                (job.execution_id.clone(), job.node_id.clone(), job.attempt);
            let started_at = Utc::now();
            // Starlark checks its limits every thousand ticks; one huge operation between checks
            // could overrun them, so a watchdog fails the node on time whatever the script does.
            let watchdog = limits.max_duration * 2 + std::time::Duration::from_millis(250);
            let evaluation = tokio::task::spawn_blocking(move || job.run(&limits));
            let failed = |error: String| NodeResult {
                execution_id: execution_id.clone(),
                node_id: node_id.clone(),
                shard: None,
                attempt,
                outcome: Outcome::Failure {
                    error,
                    retryable: false,
                },
                started_at,
                finished_at: Utc::now(),
            };
            let result = match tokio::time::timeout(watchdog, evaluation).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => failed(format!("the script evaluation crashed: {e}")),
                Err(_) => failed(format!(
                    "script stopped: it exceeded the time limit of {} ms",
                    limits.max_duration.as_millis()
                )),
            };
            if let Err(e) = bus.send_control(vec![ControlMessage::Result(result)]).await {
                tracing::warn!(error = %e, "could not report a script result");
            }
        });
    }
    for (delay, message) in timers {
        let bus = Arc::clone(&inner.bus);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = bus.send_control(vec![message]).await {
                tracing::warn!(error = %e, "could not deliver a retry");
            }
        });
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
