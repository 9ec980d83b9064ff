//! The executor: parameter checks, timeouts, panics, bounded concurrency, acknowledgements.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use walkoff_dataflow::bus::conformance;
use walkoff_dataflow::{Bus, MemoryBus};
use walkoff_executors::{serve, ActionError, App, ExecutorConfig, PreparedApp};
use walkoff_schema::{AppApi, ControlMessage, Outcome};

struct TestApp {
    api: AppApi,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl TestApp {
    fn new() -> Arc<TestApp> {
        let api = AppApi::from_yaml(
            r#"
name: conformance
app_version: 1.0.0
actions:
  - name: noop
  - name: sleep
    parameters:
      - name: ms
        required: true
        schema: {type: integer, minimum: 0}
  - name: explode
  - name: refuse
"#,
        )
        .unwrap();
        Arc::new(TestApp {
            api,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl App for TestApp {
    fn api(&self) -> &AppApi {
        &self.api
    }

    async fn call(
        &self,
        action: &str,
        parameters: Map<String, Value>,
    ) -> Result<Value, ActionError> {
        match action {
            "noop" => Ok(Value::Null),
            "sleep" => {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(parameters["ms"].as_u64().unwrap())).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(json!("slept"))
            }
            "explode" => panic!("kaboom"),
            "refuse" => Err(ActionError::permanent("refused")),
            _ => unreachable!(),
        }
    }
}

fn request(action: &str, parameters: Value, timeout_ms: u64) -> walkoff_schema::ActionRequest {
    let mut r = conformance::request("e", action, 3);
    r.action = action.into();
    r.parameters = parameters.as_object().unwrap().clone();
    r.timeout_ms = timeout_ms;
    r
}

fn failure(outcome: &Outcome) -> (&str, bool) {
    match outcome {
        Outcome::Failure { error, retryable } => (error.as_str(), *retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_action_past_its_timeout_fails_and_may_be_retried() {
    let app = PreparedApp::new(TestApp::new());
    let result = app.run(request("sleep", json!({"ms": 5000}), 50)).await;
    assert_eq!(failure(&result.outcome), ("timed out after 50 ms", true));
}

#[tokio::test]
async fn parameters_are_checked_against_their_schemas_before_the_action_runs() {
    let app = PreparedApp::new(TestApp::new());
    let result = app.run(request("sleep", json!({"ms": "soon"}), 1000)).await;
    let (error, retryable) = failure(&result.outcome);
    assert!(
        error.contains("parameter 'ms' = \"soon\" does not match its schema"),
        "{error}"
    );
    assert!(!retryable, "bad parameters are not retried");

    let result = app.run(request("sleep", json!({"secs": 1}), 1000)).await;
    let (error, _) = failure(&result.outcome);
    assert!(
        error.contains("unknown parameter 'secs'")
            && error.contains("missing required parameter 'ms'"),
        "{error}"
    );

    let result = app.run(request("teleport", json!({}), 1000)).await;
    assert!(failure(&result.outcome)
        .0
        .contains("has no action 'teleport'"));
}

/// A panic is a bug, not a passing fault: the node fails at once (no retry that would panic
/// again), naming the action.
#[tokio::test]
async fn a_panicking_action_fails_instead_of_losing_its_result() {
    let app = PreparedApp::new(TestApp::new());
    let result = app.run(request("explode", json!({}), 1000)).await;
    assert_eq!(
        failure(&result.outcome),
        (
            "action 'explode' of app conformance@1.0.0 panicked: kaboom",
            false
        )
    );
    let result = app.run(request("refuse", json!({}), 1000)).await;
    assert_eq!(failure(&result.outcome), ("refused", false));
}

#[tokio::test]
async fn the_executor_keeps_at_most_its_concurrency_in_flight_and_acknowledges_everything() {
    let memory = MemoryBus::new();
    let bus: Arc<dyn Bus> = memory.clone();
    let test_app = TestApp::new();
    let app = Arc::new(PreparedApp::new(test_app.clone()));
    let config = ExecutorConfig {
        consumer: "x".into(),
        concurrency: 3,
        block: Duration::from_millis(100),
        ..ExecutorConfig::default()
    };
    let executor = tokio::spawn(serve(Arc::clone(&bus), app, config));
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let mut r = request("sleep", json!({"ms": 20}), 1000);
            r.node_id = format!("n{i}");
            r
        })
        .collect();
    bus.send_actions(requests).await.unwrap();
    let mut results = 0;
    while results < 12 {
        for delivery in bus
            .recv_control("w", 100, Duration::from_secs(5))
            .await
            .unwrap()
            .deliveries
        {
            assert!(
                matches!(&delivery.message, ControlMessage::Result(r) if matches!(r.outcome, Outcome::Success { .. }))
            );
            bus.ack_control(vec![delivery.id]).await.unwrap();
            results += 1;
        }
    }
    let max = test_app.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&max),
        "max in flight {max} with a concurrency of 3"
    );
    assert_eq!(bus.pending().await.unwrap(), 0);
    bus.close().await;
    executor.await.unwrap();
}

#[tokio::test]
async fn the_local_executor_runs_higher_priority_first_within_its_concurrency() {
    let bus: Arc<dyn Bus> = MemoryBus::new();
    let test_app = TestApp::new();
    let registry = walkoff_executors::Registry::new().with(test_app.clone());
    let executor = walkoff_executors::LocalExecutor::new(Arc::clone(&bus), &registry, 1);
    use walkoff_dataflow::ActionExecutor;
    // One slot: requests dispatched together start one at a time, highest priority first.
    let mut requests = Vec::new();
    for (node, priority) in [
        ("first", 1),
        ("low", 1),
        ("high", 5),
        ("mid", 3),
        ("high-2", 5),
    ] {
        let mut r = request("sleep", json!({"ms": 5}), 1000);
        r.node_id = node.into();
        r.priority = priority;
        requests.push(r);
    }
    executor.dispatch(requests).await.unwrap();
    let mut order = Vec::new();
    while order.len() < 5 {
        for delivery in bus
            .recv_control("w", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .deliveries
        {
            let ControlMessage::Result(r) = delivery.message else {
                panic!()
            };
            order.push(r.node_id);
        }
    }
    assert_eq!(order, ["high", "high-2", "mid", "first", "low"]);
    assert_eq!(test_app.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(executor.waiting(), 0);

    // A request for an app this process does not serve is answered, not left waiting.
    let mut stray = request("noop", json!({}), 1000);
    stray.app.name = "elsewhere".into();
    executor.dispatch(vec![stray]).await.unwrap();
    let delivery = bus
        .recv_control("w", 10, Duration::from_secs(5))
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let ControlMessage::Result(r) = delivery.message else {
        panic!()
    };
    assert_eq!(
        failure(&r.outcome),
        (
            "no executor in this process serves the app elsewhere@1.0.0",
            false
        )
    );
}
