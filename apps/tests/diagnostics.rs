//! The diagnostics app, through the executor's checked path.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use walkoff_apps::diagnostics::Diagnostics;
use walkoff_dataflow::bus::conformance;
use walkoff_executors::Registry;
use walkoff_schema::{AppRef, Outcome};

async fn call(action: &str, parameters: Value) -> Outcome {
    call_on(Diagnostics::new(), action, parameters).await
}

/// `record` writes inside `dir`.
async fn call_recording_in(dir: &Path, action: &str, parameters: Value) -> Outcome {
    call_on(Diagnostics::recording_in(dir), action, parameters).await
}

async fn call_on(diagnostics: Diagnostics, action: &str, parameters: Value) -> Outcome {
    let registry = Registry::new().with(Arc::new(diagnostics));
    let app = registry
        .get(&AppRef {
            name: "diagnostics".into(),
            version: "1.0.0".into(),
        })
        .expect("diagnostics is in the registry");
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
    for line in [json!("first"), json!(["shard"])] {
        let parameters = json!({"path": "drills/../drill.txt", "line": line, "hold_ms": 1});
        let refused = call_recording_in(dir.path(), "record", parameters).await;
        assert!(matches!(refused, Outcome::Failure { .. }), "{refused:?}");
        let parameters = json!({"path": "./drill.txt", "line": line, "hold_ms": 1});
        success(call_recording_in(dir.path(), "record", parameters).await);
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("drill.txt")).unwrap(),
        "first\nshard\n"
    );
}

/// `record` writes files: only where the operator allows, never where a workflow says.
#[tokio::test]
async fn record_writes_only_inside_the_directory_the_operator_allows() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("x.txt");
    // Off unless a directory is given.
    match call(
        "record",
        json!({"path": target.display().to_string(), "line": "x"}),
    )
    .await
    {
        Outcome::Failure { error, retryable } => {
            assert!(error.contains("WALKOFF_RECORD_DIR"), "{error}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    // Inside one: no absolute path, no way out.
    let dir = tempfile::tempdir().unwrap();
    for path in [
        target.display().to_string(),
        "../x.txt".into(),
        "a/../../x.txt".into(),
    ] {
        match call_recording_in(dir.path(), "record", json!({"path": path, "line": "x"})).await {
            Outcome::Failure { error, retryable } => {
                assert!(error.contains("relative path inside"), "{path}: {error}");
                assert!(!retryable);
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(!target.exists(), "nothing was written outside");
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
    let dir = tempfile::tempdir().unwrap();
    match call_recording_in(
        dir.path(),
        "record",
        json!({"path": "nonexistent-dir/x.txt", "line": "x"}),
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
