//! The basics app answers as WALKOFF's does, through the executor's checked path.

use serde_json::{json, Value};
use walkoff_apps::builtin_registry;
use walkoff_dataflow::bus::conformance;
use walkoff_schema::{AppRef, Outcome};

async fn call(action: &str, parameters: Value) -> Outcome {
    let registry = builtin_registry();
    let app = registry
        .get(&AppRef {
            name: "basics".into(),
            version: "1.0.0".into(),
        })
        .expect("basics is built in");
    let mut request = conformance::request("e", action, 3);
    request.app = app.app_ref().clone();
    request.action = action.into();
    request.parameters = parameters.as_object().unwrap().clone();
    app.run(request).await.outcome
}

async fn ok(action: &str, parameters: Value) -> Value {
    match call(action, parameters).await {
        Outcome::Success { result } => result,
        other => panic!("{action} failed: {other:?}"),
    }
}

async fn err(action: &str, parameters: Value) -> String {
    match call(action, parameters).await {
        Outcome::Failure { error, .. } => error,
        other => panic!("{action} succeeded: {other:?}"),
    }
}

#[tokio::test]
async fn every_basics_action_answers_like_walkoff() {
    assert_eq!(ok("hello_world", json!({})).await, json!("Hello World"));
    let n = ok("random_number", json!({})).await.as_f64().unwrap();
    assert!((0.0..1.0).contains(&n));
    assert_eq!(
        ok("string_to_json", json!({"call": "{\"a\": [1, 2]}"})).await,
        json!({"a": [1, 2]})
    );
    assert_eq!(
        ok("echo_string", json!({"call": "hi"})).await,
        json!("ECHOING: hi")
    );
    assert_eq!(
        ok("return_plus_one", json!({"number": 41})).await,
        json!(42)
    );
    assert_eq!(
        ok("return_plus_one", json!({"number": 1.5})).await,
        json!(2.5)
    );
    assert_eq!(ok("pause", json!({"seconds": 0.01})).await, json!(0.01));
    assert_eq!(
        ok("echo_array", json!({"data": [1, "two"]})).await,
        json!([1, "two"])
    );
    assert_eq!(
        ok("echo_json", json!({"data": {"k": "v"}})).await,
        json!({"k": "v"})
    );
    let csv = ok("sample_report_data", json!({})).await;
    assert!(csv.as_str().unwrap().starts_with("Hostname,"));
}

#[tokio::test]
async fn basics_rejects_bad_input_clearly() {
    assert!(err("string_to_json", json!({"call": "{nope"}))
        .await
        .contains("'call' is not valid JSON"));
    assert!(err("echo_string", json!({"call": 5}))
        .await
        .contains("parameter 'call' = 5 does not match its schema"));
    assert!(err("echo_json", json!({"data": [1]}))
        .await
        .contains("does not match its schema"));
    assert!(err("return_plus_one", json!({}))
        .await
        .contains("missing required parameter 'number'"));
}

#[tokio::test]
async fn numbers_at_the_edges_are_answered_or_refused_never_a_panic() {
    // An overflow was a panic, reported as a retryable failure.
    assert_eq!(
        ok("return_plus_one", json!({"number": i64::MAX})).await,
        json!(i64::MAX as u64 + 1)
    );
    assert!(err("return_plus_one", json!({"number": u64::MAX}))
        .await
        .contains("beyond 64 bits"));
    // `Duration::from_secs_f64(1e300)` panicked.
    for seconds in [json!(1e300), json!(86401)] {
        let refused = call("pause", json!({"seconds": seconds})).await;
        match refused {
            Outcome::Failure { error, retryable } => {
                assert!(error.contains("must be between 0 and 86400"), "{error}");
                assert!(!retryable);
            }
            other => panic!("pause {seconds}: {other:?}"),
        }
    }
}
