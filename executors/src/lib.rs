//! Running actions: the [`App`] trait, the [`Registry`] of apps, the in-process [`LocalExecutor`],
//! and the executor loop that serves an app's queue on the bus.

pub mod keys;
mod local;
pub mod secrets;

pub use local::LocalExecutor;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use walkoff_dataflow::{Bus, BusError, Delivery};
use walkoff_schema::{ActionRequest, AppApi, AppCatalog, AppRef, NodeResult, Outcome};

use crate::secrets::{Mask, Secrets};

/// An app: a set of actions described by its WALKOFF `api.yaml`.
#[async_trait]
pub trait App: Send + Sync + 'static {
    fn api(&self) -> &AppApi;

    /// Run `action` with parameters already checked against the action's JSON Schemas.
    async fn call(
        &self,
        action: &str,
        parameters: Map<String, Value>,
    ) -> Result<Value, ActionError>;
}

/// An action's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
    /// False when another attempt cannot succeed.
    pub retryable: bool,
}

impl ActionError {
    /// A failure another attempt might not repeat (the default for app errors).
    pub fn new(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix, such as bad input.
    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// An app with its parameter schemas compiled once.
pub struct PreparedApp {
    app: Arc<dyn App>,
    app_ref: AppRef,
    /// Per action, the compiled schema of each parameter, in the order the API lists them.
    validators: HashMap<String, Vec<Option<jsonschema::Validator>>>,
    /// What opens globals' sealed values (none: a request carrying one fails, saying why).
    secrets: Option<Arc<Secrets>>,
}

impl PreparedApp {
    pub fn new(app: Arc<dyn App>) -> PreparedApp {
        let api = app.api();
        let mut validators = HashMap::new();
        for action in &api.actions {
            let compiled = action
                .parameters
                .iter()
                .map(|parameter| {
                    let schema = parameter.json_schema.as_ref()?;
                    jsonschema::draft4::new(schema)
                        .map_err(|e| {
                            tracing::warn!(
                                app = %api.name, action = %action.name, parameter = %parameter.name,
                                error = %e, "invalid parameter schema; values are not checked"
                            )
                        })
                        .ok()
                })
                .collect();
            validators.insert(action.name.clone(), compiled);
        }
        PreparedApp {
            app_ref: AppRef {
                name: api.name.clone(),
                version: api.app_version.clone(),
            },
            app,
            validators,
            secrets: None,
        }
    }

    /// Open globals' sealed values in this app's requests with `secrets`.
    pub fn opening_with(mut self, secrets: Arc<Secrets>) -> PreparedApp {
        self.secrets = Some(secrets);
        self
    }

    /// Open the sealed values among `parameters`; what to mask in the answer.
    fn open(&self, parameters: &mut Map<String, Value>) -> Result<Mask, ActionError> {
        match &self.secrets {
            Some(secrets) => secrets
                .open_parameters(parameters)
                .map_err(ActionError::permanent),
            None => match parameters.iter().find(|(_, v)| walkoff_schema::sealed::is_sealed(v)) {
                Some((name, _)) => Err(ActionError::permanent(format!(
                    "parameter '{name}' is a global's sealed value, and this executor holds no key to open it (start it with WALKOFF_KEY_FILE or WALKOFF_KEY)"
                ))),
                None => Ok(Mask::default()),
            },
        }
    }

    pub fn app_ref(&self) -> &AppRef {
        &self.app_ref
    }

    /// The app itself.
    pub fn app(&self) -> Arc<dyn App> {
        Arc::clone(&self.app)
    }

    pub fn api(&self) -> &AppApi {
        self.app.api()
    }

    /// Check parameters against the action's definition: unknown action, unknown or missing
    /// parameters, and values that do not match their JSON Schema.
    pub fn check(&self, action: &str, parameters: &Map<String, Value>) -> Result<(), ActionError> {
        let api = self.app.api();
        let Some(action_api) = api.action(action) else {
            return Err(ActionError::permanent(format!(
                "the app '{}' {} has no action '{action}'",
                api.name, api.app_version
            )));
        };
        let mut problems = Vec::new();
        for name in parameters.keys() {
            if action_api.parameter(name).is_none() {
                problems.push(format!("unknown parameter '{name}'"));
            }
        }
        let validators = self.validators.get(action);
        for (i, parameter) in action_api.parameters.iter().enumerate() {
            match parameters.get(&parameter.name) {
                None if parameter.required => {
                    problems.push(format!("missing required parameter '{}'", parameter.name))
                }
                None => {}
                Some(value) => {
                    if let Some(validator) =
                        validators.and_then(|v| v.get(i)).and_then(Option::as_ref)
                    {
                        let errors: Vec<String> = validator
                            .iter_errors(value)
                            .map(|e| e.to_string())
                            .collect();
                        if !errors.is_empty() {
                            problems.push(format!(
                                "parameter '{}' = {value} does not match its schema: {}",
                                parameter.name,
                                errors.join("; ")
                            ));
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ActionError::permanent(problems.join("; ")))
        }
    }

    /// Run one request: check its parameters, call the action under its timeout, and turn a panic
    /// into a failure rather than a lost result.
    pub async fn run(&self, mut request: ActionRequest) -> NodeResult {
        let started_at = Utc::now();
        let timeout = Duration::from_millis(request.timeout_ms.max(1));
        let (opened, mask) = match self.open(&mut request.parameters) {
            Ok(mask) => (Ok(()), mask),
            Err(e) => (Err(e), Mask::default()),
        };
        // Checking runs on the executor's read loop for actions that finish at once: a panic in
        // it must not take the loop down.
        let checked = opened.and_then(|()| {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.check(&request.action, &request.parameters)
            }))
            .unwrap_or_else(|panic| {
                Err(ActionError::permanent(format!(
                    "checking the parameters of action '{}' of app {} panicked: {}",
                    request.action,
                    self.app_ref,
                    panic_message(&panic)
                )))
            })
        });
        let parameters = std::mem::take(&mut request.parameters);
        let outcome = self
            .outcome(&request.action, parameters, checked, timeout)
            .await;
        // What the action answers never carries a global's value out of the executor.
        let outcome = if mask.is_empty() {
            outcome
        } else {
            match outcome {
                Outcome::Success { result } => Outcome::Success {
                    result: mask.value(result),
                },
                Outcome::Failure { error, retryable } => Outcome::Failure {
                    error: mask.text(&error),
                    retryable,
                },
            }
        };
        NodeResult {
            execution_id: request.execution_id,
            node_id: request.node_id,
            shard: request.shard,
            attempt: request.attempt,
            outcome,
            started_at,
            finished_at: Utc::now(),
        }
    }

    /// What calling the action came to, unless its parameters were refused.
    async fn outcome(
        &self,
        action: &str,
        parameters: Map<String, Value>,
        checked: Result<(), ActionError>,
        timeout: Duration,
    ) -> Outcome {
        if let Err(e) = checked {
            return Outcome::Failure {
                error: e.message,
                retryable: e.retryable,
            };
        }
        let mut call = AssertUnwindSafe(self.app.call(action, parameters))
            .catch_unwind()
            .boxed();
        // Many actions finish on their first poll; only arm the timeout for the others.
        let finished = match futures::poll!(call.as_mut()) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => tokio::time::timeout(timeout, call).await,
        };
        match finished {
            Err(_) => Outcome::Failure {
                error: format!("timed out after {} ms", timeout.as_millis()),
                retryable: true,
            },
            // A bug, not a passing fault: another attempt would panic again.
            Ok(Err(panic)) => Outcome::Failure {
                error: format!(
                    "action '{action}' of app {} panicked: {}",
                    self.app_ref,
                    panic_message(&panic)
                ),
                retryable: false,
            },
            Ok(Ok(Ok(result))) => Outcome::Success { result },
            Ok(Ok(Err(e))) => Outcome::Failure {
                error: e.message,
                retryable: e.retryable,
            },
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The apps this process can run, by name and version.
#[derive(Default, Clone)]
pub struct Registry {
    apps: BTreeMap<AppRef, Arc<PreparedApp>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&mut self, app: Arc<dyn App>) -> &mut Registry {
        let prepared = PreparedApp::new(app);
        self.apps
            .insert(prepared.app_ref.clone(), Arc::new(prepared));
        self
    }

    pub fn with(mut self, app: Arc<dyn App>) -> Registry {
        self.register(app);
        self
    }

    /// Every app of this registry opening globals' sealed values with `secrets`.
    pub fn opening_with(self, secrets: Arc<Secrets>) -> Registry {
        Registry {
            apps: self
                .apps
                .into_iter()
                .map(|(app_ref, prepared)| {
                    let reopened = PreparedApp::new(Arc::clone(&prepared.app))
                        .opening_with(Arc::clone(&secrets));
                    (app_ref, Arc::new(reopened))
                })
                .collect(),
        }
    }

    pub fn get(&self, app: &AppRef) -> Option<&Arc<PreparedApp>> {
        self.apps.get(app)
    }

    pub fn apps(&self) -> impl Iterator<Item = &Arc<PreparedApp>> {
        self.apps.values()
    }

    /// The API definitions of every registered app, for validation.
    pub fn catalog(&self) -> AppCatalog {
        let mut catalog = AppCatalog::new();
        for app in self.apps.values() {
            catalog.insert(app.api().clone());
        }
        catalog
    }
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// This executor's consumer name on the bus.
    pub consumer: String,
    /// Actions in flight at once.
    pub concurrency: usize,
    /// Longest a receive waits before it is issued again.
    pub block: Duration,
    /// How often the executor tells the bus it is alive.
    pub heartbeat: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            consumer: "executor-1".into(),
            concurrency: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            block: Duration::from_millis(500),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Serve `app`'s queue until the bus closes: beat, receive requests, run up to `concurrency` at
/// once, and report results in batches (reporting acknowledges their requests).
pub async fn serve(bus: Arc<dyn Bus>, app: Arc<PreparedApp>, config: ExecutorConfig) {
    // Alive before the first request is taken, so housekeeping never mistakes it for dead.
    if let Err(e) = bus
        .executor_heartbeat(app.app_ref(), &config.consumer)
        .await
    {
        tracing::warn!(error = %e, app = %app.app_ref(), "heartbeat failed");
    }
    let heartbeat = tokio::spawn(beat(Arc::clone(&bus), Arc::clone(&app), config.clone()));
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(Arc::clone(&bus), Arc::clone(&app), done_rx));
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut failures = 0u32;
    // Results of actions that finished on their first poll: reported with the next read, in
    // one round trip, instead of by the reporter and a write of their own.
    let mut finished: Vec<Done> = Vec::new();
    loop {
        let mut permits: Vec<_> =
            std::iter::from_fn(|| Arc::clone(&slots).try_acquire_owned().ok()).collect();
        if permits.is_empty() {
            // Every slot is taken: what finished cannot wait for a read that cannot happen.
            for done in finished.drain(..) {
                let _ = done_tx.send(done);
            }
            let Ok(first) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            permits.push(first);
            permits.extend(std::iter::from_fn(|| {
                Arc::clone(&slots).try_acquire_owned().ok()
            }));
        }
        let received = if finished.is_empty() {
            bus.recv_actions(app.app_ref(), &config.consumer, permits.len(), config.block)
                .await
        } else {
            let results = finished
                .iter()
                .map(|(id, result, _)| (id.clone(), result.clone()))
                .collect();
            let (reported, received) = bus
                .complete_and_recv_actions(
                    app.app_ref(),
                    &config.consumer,
                    results,
                    permits.len(),
                    config.block,
                )
                .await;
            match reported {
                Ok(()) => finished.clear(),
                Err(BusError::Closed) => break,
                Err(e) => {
                    // The reporter retries until Redis takes them.
                    tracing::warn!(error = %e, "could not report action results with a read");
                    for done in finished.drain(..) {
                        let _ = done_tx.send(done);
                    }
                }
            }
            received
        };
        let deliveries = match received {
            Ok(d) => {
                failures = 0;
                d
            }
            Err(BusError::Closed) => break,
            Err(e) => {
                failures += 1;
                let backoff = Duration::from_millis(50u64 << failures.min(6));
                tracing::warn!(error = %e, ?backoff, app = %app.app_ref(), "receive failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        for Delivery { id, message, .. } in deliveries {
            let Some(permit) = permits.pop() else { break };
            let run = {
                let app = Arc::clone(&app);
                async move { app.run(message).await }
            };
            let mut run = Box::pin(run);
            match futures::poll!(run.as_mut()) {
                std::task::Poll::Ready(result) => finished.push((id, result, permit)),
                std::task::Poll::Pending => {
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        let result = run.await;
                        // The slot frees once the result is handed to the reporter.
                        let _ = done.send((id, result, permit));
                    });
                }
            }
        }
    }
    for done in finished {
        let _ = done_tx.send(done);
    }
    heartbeat.abort();
    drop(done_tx);
    let _ = reporter.await;
}

/// Tell the bus this executor is alive, until the bus closes.
async fn beat(bus: Arc<dyn Bus>, app: Arc<PreparedApp>, config: ExecutorConfig) {
    let mut every = tokio::time::interval(config.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match bus
            .executor_heartbeat(app.app_ref(), &config.consumer)
            .await
        {
            Ok(()) => {}
            Err(BusError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, app = %app.app_ref(), "heartbeat failed"),
        }
    }
}

type Done = (
    walkoff_dataflow::DeliveryId,
    NodeResult,
    tokio::sync::OwnedSemaphorePermit,
);

/// Report finished actions, as many per write as have finished meanwhile.
async fn report(
    bus: Arc<dyn Bus>,
    app: Arc<PreparedApp>,
    mut done: tokio::sync::mpsc::UnboundedReceiver<Done>,
) {
    let mut batch = Vec::new();
    while done.recv_many(&mut batch, 512).await > 0 {
        let mut results = Vec::with_capacity(batch.len());
        let mut permits = Vec::with_capacity(batch.len());
        for (id, result, permit) in batch.drain(..) {
            results.push((id, result));
            permits.push(permit);
        }
        let mut failures = 0u32;
        loop {
            match bus.complete_actions(app.app_ref(), results.clone()).await {
                Ok(()) => break,
                Err(BusError::Closed) => return,
                Err(e) => {
                    // Keep the results until Redis is back: the work is done, only the report is
                    // missing. (If this process dies meanwhile, the requests are handed out again.)
                    failures += 1;
                    let backoff = Duration::from_millis(50u64 << failures.min(6));
                    tracing::warn!(error = %e, ?backoff, "could not report action results");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        drop(permits);
    }
}

/// Start one executor task per registered app.
pub fn serve_all(
    bus: &Arc<dyn Bus>,
    registry: &Registry,
    config: &ExecutorConfig,
) -> Vec<tokio::task::JoinHandle<()>> {
    registry
        .apps()
        .map(|app| tokio::spawn(serve(Arc::clone(bus), Arc::clone(app), config.clone())))
        .collect()
}
