//! Test support: a `test` app served directly on the bus, and helpers that run a workflow to the end.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use walkoff_dataflow::{Bus, BusDispatch, ExecutionSummary, MemoryBus, Runtime, RuntimeConfig};
use walkoff_schema::{
    AppApi, AppCatalog, AppRef, Event, EventKind, NodeResult, NodeStatus, Outcome, Workflow,
};

pub const TEST_API: &str = r#"
name: test
app_version: 1.0.0
actions:
  - name: noop
  - name: echo
    parameters:
      - name: value
        required: true
  - name: fail
    parameters:
      - name: message
        schema: {type: string}
  - name: flaky
    description: fails its first `failures` attempts, permanently when `permanent` is true
    parameters:
      - name: failures
        required: true
        schema: {type: integer}
      - name: permanent
        schema: {type: boolean}
  - name: hang
    description: never answers
  - name: items
    parameters:
      - name: data
        required: true
        parallelizable: true
        schema: {type: array}
      - name: bad
        description: an item that fails its shard
  - name: count
    parameters:
      - name: n
        required: true
        schema: {type: integer, minimum: 0}
"#;

pub fn catalog() -> AppCatalog {
    AppCatalog::new().with(AppApi::from_yaml(TEST_API).unwrap())
}

/// What the test executor saw.
#[derive(Default)]
pub struct Observed {
    /// Calls per (node id, shard).
    pub calls: Mutex<HashMap<(String, Option<u32>), u32>>,
    /// Shard parameter values per node, in dispatch order.
    pub shard_inputs: Mutex<HashMap<String, Vec<Value>>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// Serve the `test` app on `bus` until it closes.
pub fn spawn_test_executor(bus: Arc<dyn Bus>) -> Arc<Observed> {
    let observed = Arc::new(Observed::default());
    let seen = Arc::clone(&observed);
    tokio::spawn(async move {
        let app = AppRef {
            name: "test".into(),
            version: "1.0.0".into(),
        };
        loop {
            let Ok(batch) = bus
                .recv_actions(&app, "test-executor", 64, Duration::from_millis(200))
                .await
            else {
                return;
            };
            for delivery in batch {
                let bus = Arc::clone(&bus);
                let seen = Arc::clone(&seen);
                let app = app.clone();
                tokio::spawn(async move {
                    let request = delivery.message;
                    *seen
                        .calls
                        .lock()
                        .unwrap()
                        .entry((request.node_id.clone(), request.shard))
                        .or_default() += 1;
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    let p = &request.parameters;
                    let outcome = match request.action.as_str() {
                        "noop" => Ok(Value::Null),
                        "echo" => Ok(p["value"].clone()),
                        "fail" => Err((
                            p.get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("failed on purpose")
                                .to_string(),
                            true,
                        )),
                        "flaky" => {
                            let failures = p["failures"].as_u64().unwrap() as u32;
                            let permanent =
                                p.get("permanent").and_then(Value::as_bool).unwrap_or(false);
                            if request.attempt <= failures {
                                Err((format!("flaked on attempt {}", request.attempt), !permanent))
                            } else {
                                Ok(json!(format!("ok on attempt {}", request.attempt)))
                            }
                        }
                        "hang" => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        "items" => {
                            seen.shard_inputs
                                .lock()
                                .unwrap()
                                .entry(request.node_id.clone())
                                .or_default()
                                .push(p["data"].clone());
                            // Let other shards start, so concurrency is observable.
                            tokio::task::yield_now().await;
                            let item = &p["data"][0];
                            if p.get("bad") == Some(item) {
                                Err((format!("bad item {item}"), true))
                            } else {
                                Ok(json!([{"item": item}]))
                            }
                        }
                        "count" => Ok(json!(p["n"].as_u64().unwrap() + 1)),
                        other => Err((format!("no action {other}"), false)),
                    };
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let outcome = match outcome {
                        Ok(result) => Outcome::Success { result },
                        Err((error, retryable)) => Outcome::Failure { error, retryable },
                    };
                    let result = NodeResult {
                        execution_id: request.execution_id,
                        node_id: request.node_id,
                        shard: request.shard,
                        attempt: request.attempt,
                        outcome,
                        started_at: Utc::now(),
                        finished_at: Utc::now(),
                    };
                    let _ = bus
                        .complete_actions(&app, vec![(delivery.id, result)])
                        .await;
                });
            }
        }
    });
    observed
}

/// A runtime on a fresh in-memory bus with the test executor.
pub struct Harness {
    pub bus: Arc<MemoryBus>,
    pub runtime: Runtime,
    pub observed: Arc<Observed>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(RuntimeConfig::default())
    }

    pub fn with_config(config: RuntimeConfig) -> Harness {
        let bus = MemoryBus::new();
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let observed = spawn_test_executor(Arc::clone(&dyn_bus));
        let runtime = Runtime::start(
            Arc::clone(&dyn_bus),
            Arc::new(BusDispatch(dyn_bus)),
            Arc::new(catalog()),
            config,
        );
        Harness {
            bus,
            runtime,
            observed,
        }
    }

    /// Submit and follow to the end, delivering trigger data by label when a trigger waits.
    pub async fn run_with(
        &self,
        workflow: Workflow,
        variables: BTreeMap<String, Value>,
        globals: BTreeMap<String, Value>,
        triggers: BTreeMap<String, Value>,
    ) -> (ExecutionSummary, Vec<Event>) {
        let id = self
            .runtime
            .submit(Arc::new(workflow), variables, &globals)
            .await
            .expect("submit");
        let mut summary = ExecutionSummary::new(&id);
        let mut events = Vec::new();
        let mut stream = Box::pin(self.runtime.events(&id, 1));
        let follow = async {
            while let Some(event) = stream.next().await {
                let event = event.expect("event stream");
                summary.apply(&event);
                if let EventKind::Node(node) = &event.kind {
                    if node.status == NodeStatus::AwaitingData {
                        if let Some(data) = triggers.get(&node.label) {
                            self.runtime
                                .trigger(&id, &node.label, data.clone())
                                .await
                                .expect("trigger");
                        }
                    }
                }
                events.push(event);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), follow)
            .await
            .expect("the execution did not finish: a hang");
        (summary, events)
    }

    pub async fn run(&self, workflow: Workflow) -> (ExecutionSummary, Vec<Event>) {
        self.run_with(workflow, BTreeMap::new(), BTreeMap::new(), BTreeMap::new())
            .await
    }
}

/// Build a workflow from compact JSON: nodes without ids take their label.
pub fn workflow(value: Value) -> Workflow {
    let mut value = value;
    let object = value.as_object_mut().unwrap();
    object.entry("id").or_insert(json!("wf"));
    object.entry("name").or_insert(json!("test workflow"));
    for node in object["nodes"].as_array_mut().unwrap() {
        let node = node.as_object_mut().unwrap();
        if node.get("kind") == Some(&json!("action")) {
            node.entry("app").or_insert(json!("test"));
        }
    }
    Workflow::from_canonical(value).unwrap()
}

pub fn status(summary: &ExecutionSummary, label: &str) -> NodeStatus {
    summary
        .nodes
        .get(label)
        .unwrap_or_else(|| panic!("no node '{label}' in {summary:#?}"))
        .status
}

pub fn result(summary: &ExecutionSummary, label: &str) -> Value {
    summary.nodes[label].result.clone().unwrap_or(Value::Null)
}

pub fn error(summary: &ExecutionSummary, label: &str) -> String {
    summary.nodes[label].error.clone().unwrap_or_default()
}

pub fn action(label: &str, action: &str, parameters: Value) -> Value {
    json!({"label": label, "kind": "action", "action": action, "parameters": parameters})
}

pub fn edges(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(from, to)| json!({"from": from, "to": to}))
            .collect(),
    )
}
