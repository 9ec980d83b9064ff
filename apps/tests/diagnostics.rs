//! The diagnostics app, through the executor's checked path.

use serde_json::{json, Value};
use walkoff_apps::builtin_registry;
use walkoff_dataflow::bus::conformance;
use walkoff_schema::{AppRef, Outcome};

async fn call(action: &str, parameters: Value) -> Outcome {
    let registry = builtin_registry();
    let app = registry
        .get(&AppRef {
            name: "diagnostics".into(),
            version: "1.0.0".into(),
        })
        .expect("diagnostics is built in");
    let mut request = conformance::request("e", action, 3);
    request.app = app.app_ref().clone();
    request.action = action.into();
    request.parameters = parameters.as_object().unwrap().clone();
    app.run(request).await.outcome
}

fn success(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Success { result } => result,
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test]
async fn diagnostics_actions_do_what_they_say() {
    assert_eq!(success(call("noop", json!({})).await), Value::Null);
    assert_eq!(
        success(call("noop", json!({"value": {"a": [1]}})).await),
        json!({"a": [1]})
    );
    assert_eq!(success(call("sleep", json!({"ms": 5})).await), json!(5));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drill.txt").display().to_string();
    for line in [json!("first"), json!(["shard"])] {
        let outcome = call("record", json!({"path": path, "line": line, "hold_ms": 1})).await;
        success(outcome);
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nshard\n");
}

#[tokio::test]
async fn diagnostics_refuses_bad_input_before_running() {
    for (action, parameters) in [
        ("sleep", json!({"ms": -1})),
        ("sleep", json!({})),
        ("record", json!({"path": "", "line": "x"})),
        ("record", json!({"path": "/x", "line": 5})),
    ] {
        match call(action, parameters.clone()).await {
            Outcome::Failure { retryable, .. } => {
                assert!(
                    !retryable,
                    "{action} {parameters}: bad input is not retried"
                )
            }
            other => panic!("{action} {parameters} ran: {other:?}"),
        }
    }
    // A file that cannot be written fails the attempt, which a retry may fix.
    match call(
        "record",
        json!({"path": "/nonexistent-dir/x.txt", "line": "x"}),
    )
    .await
    {
        Outcome::Failure { error, retryable } => {
            assert!(error.contains("cannot append"), "{error}");
            assert!(retryable);
        }
        other => panic!("{other:?}"),
    }
}
