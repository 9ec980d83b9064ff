//! The in-process runtime, node kind by node kind, through the same submit / events / trigger /
//! abort API the CLI uses.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use futures::StreamExt;
use serde_json::json;
use walkoff_dataflow::{Bus, SubmitError};
use walkoff_schema::{EventKind, NodeStatus, WorkflowStatus};

// ---- actions and parameters ----

#[tokio::test]
async fn action_results_flow_to_descendants_whole_or_by_pointer() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "echo", json!([{"name": "value", "value": {"host": "web-01", "ports": [22, 80]}}])),
            action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a"}])),
            action("c", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a", "pointer": "/ports/1"}])),
        ],
        "branches": edges(&[("a", "b"), ("b", "c")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(
        result(&summary, "b"),
        json!({"host": "web-01", "ports": [22, 80]})
    );
    assert_eq!(result(&summary, "c"), json!(80));
}

#[tokio::test]
async fn a_pointer_to_nothing_fails_the_node_with_a_clear_message() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "echo", json!([{"name": "value", "value": {"x": 1}}])),
            action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a", "pointer": "/missing"}])),
        ],
        "branches": edges(&[("a", "b")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(summary.status, WorkflowStatus::Failed);
    assert_eq!(status(&summary, "b"), NodeStatus::Failure);
    assert!(
        error(&summary, "b").contains("has nothing at /missing"),
        "{}",
        error(&summary, "b")
    );
}

#[tokio::test]
async fn workflow_variables_use_defaults_and_per_execution_overrides() {
    let h = Harness::new();
    let make = || {
        workflow(json!({
            "start": "a",
            "variables": [{"name": "n", "value": 1}],
            "nodes": [action("a", "count", json!([{"name": "n", "variant": "WORKFLOW_VARIABLE", "value": "n"}]))],
        }))
    };
    let (summary, _) = h.run(make()).await;
    assert_eq!(result(&summary, "a"), json!(2));
    let vars = BTreeMap::from([("n".to_string(), json!(41))]);
    let (summary, _) = h
        .run_with(make(), vars, BTreeMap::new(), BTreeMap::new())
        .await;
    assert_eq!(result(&summary, "a"), json!(42));

    let unknown = BTreeMap::from([("nope".to_string(), json!(1))]);
    let err = h
        .runtime
        .submit(Arc::new(make()), unknown, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SubmitError::UnknownVariable(ref v) if v == "nope"),
        "{err}"
    );
}

#[tokio::test]
async fn globals_come_from_the_provider_and_a_missing_one_is_refused() {
    let h = Harness::new();
    let make = || {
        workflow(json!({
            "start": "a",
            "nodes": [action("a", "echo", json!([{"name": "value", "variant": "GLOBAL", "value": "api_key"}]))],
        }))
    };
    let globals = BTreeMap::from([("api_key".to_string(), json!("s3cret"))]);
    let (summary, _) = h
        .run_with(make(), BTreeMap::new(), globals, BTreeMap::new())
        .await;
    assert_eq!(result(&summary, "a"), json!("s3cret"));
    let err = h
        .runtime
        .submit(Arc::new(make()), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SubmitError::MissingGlobal(ref g) if g == "api_key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failure_skips_what_is_reachable_only_through_it_and_the_workflow_fails() {
    let h = Harness::new();
    // a -> bad -> only_via_bad -> after
    // a -> good -> join ; bad -> join   (join still runs: one parent succeeded)
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            action("bad", "fail", json!([{"name": "message", "value": "boom"}])),
            action("only_via_bad", "noop", json!([])),
            action("after", "noop", json!([])),
            action("good", "noop", json!([])),
            action("join", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "bad"}])),
        ],
        "branches": edges(&[("a", "bad"), ("bad", "only_via_bad"), ("only_via_bad", "after"),
                            ("a", "good"), ("good", "join"), ("bad", "join")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(summary.status, WorkflowStatus::Failed);
    assert_eq!(status(&summary, "bad"), NodeStatus::Failure);
    assert_eq!(error(&summary, "bad"), "boom");
    assert_eq!(status(&summary, "only_via_bad"), NodeStatus::Skipped);
    assert_eq!(status(&summary, "after"), NodeStatus::Skipped);
    assert_eq!(status(&summary, "join"), NodeStatus::Success);
    // The failed parent's result is null, as WALKOFF passed None.
    assert_eq!(result(&summary, "join"), json!(null));
    for node in summary.nodes.values() {
        assert!(node.status.is_terminal());
    }
}

#[tokio::test]
async fn nodes_unreachable_from_the_start_are_skipped() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [action("a", "noop", json!([])), action("island", "noop", json!([])), action("beyond", "noop", json!([]))],
        "branches": edges(&[("island", "beyond")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(status(&summary, "island"), NodeStatus::Skipped);
    assert_eq!(status(&summary, "beyond"), NodeStatus::Skipped);
}

// ---- retries ----

#[tokio::test]
async fn a_flaky_action_is_retried_and_every_event_carries_its_attempt() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [{"label": "a", "kind": "action", "action": "flaky", "retry": {"attempts": 3, "backoff_ms": 5},
                   "parameters": [{"name": "failures", "value": 2}]}],
    }));
    let (summary, events) = h.run(wf).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "a"), json!("ok on attempt 3"));
    assert_eq!(summary.nodes["a"].attempts, 3);
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Node(n) if n.status == NodeStatus::Executing && n.parameters.is_some() => {
                Some(n.attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(
        h.observed.calls.lock().unwrap()[&("a".to_string(), None)],
        3
    );
}

#[tokio::test]
async fn retries_stop_at_the_policy_and_the_error_says_how_many_attempts() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [{"label": "a", "kind": "action", "action": "flaky", "retry": {"attempts": 2},
                   "parameters": [{"name": "failures", "value": 5}]}],
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "a"), NodeStatus::Failure);
    assert_eq!(
        error(&summary, "a"),
        "flaked on attempt 2 (after 2 attempts)"
    );
    assert_eq!(
        h.observed.calls.lock().unwrap()[&("a".to_string(), None)],
        2
    );
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [{"label": "a", "kind": "action", "action": "flaky", "retry": {"attempts": 5},
                   "parameters": [{"name": "failures", "value": 5}, {"name": "permanent", "value": true}]}],
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "a"), NodeStatus::Failure);
    assert_eq!(
        h.observed.calls.lock().unwrap()[&("a".to_string(), None)],
        1
    );
}

// ---- conditions ----

fn branching(code: &str) -> walkoff_schema::Workflow {
    workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "echo", json!([{"name": "value", "value": 10}])),
            action("b", "echo", json!([{"name": "value", "value": 3}])),
            {"label": "pick", "kind": "condition", "code": code},
            action("left", "echo", json!([{"name": "value", "value": "went left"}])),
            action("right", "echo", json!([{"name": "value", "value": "went right"}])),
            action("after left", "noop", json!([])),
        ],
        "branches": edges(&[("a", "b"), ("a", "pick"), ("b", "pick"), ("pick", "left"), ("pick", "right"), ("left", "after left")]),
    }))
}

#[tokio::test]
async fn walkoff_condition_code_runs_unchanged_and_skips_the_untaken_branch() {
    let h = Harness::new();
    let (summary, _) = h
        .run(branching(
            "if a.result > b.result:\n    selected_node = left\nelse:\n    selected_node = right",
        ))
        .await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "pick"), json!("left"));
    assert_eq!(status(&summary, "left"), NodeStatus::Success);
    assert_eq!(status(&summary, "after left"), NodeStatus::Success);
    assert_eq!(status(&summary, "right"), NodeStatus::Skipped);
}

#[tokio::test]
async fn a_condition_may_select_several_children_or_none() {
    let h = Harness::new();
    let (summary, _) = h.run(branching("selected_node = [left, right]")).await;
    assert_eq!(status(&summary, "left"), NodeStatus::Success);
    assert_eq!(status(&summary, "right"), NodeStatus::Success);
    assert_eq!(result(&summary, "pick"), json!(["left", "right"]));

    let (summary, _) = h.run(branching("selected_node = None")).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(status(&summary, "pick"), NodeStatus::Success);
    assert_eq!(status(&summary, "left"), NodeStatus::Skipped);
    assert_eq!(status(&summary, "after left"), NodeStatus::Skipped);
    assert_eq!(status(&summary, "right"), NodeStatus::Skipped);
}

#[tokio::test]
async fn a_condition_that_selects_nothing_valid_fails_with_a_message() {
    let h = Harness::new();
    let (summary, _) = h.run(branching("x = 1")).await;
    assert_eq!(status(&summary, "pick"), NodeStatus::Failure);
    assert!(error(&summary, "pick").contains("did not assign selected_node"));
    assert_eq!(status(&summary, "left"), NodeStatus::Skipped);
    assert_eq!(summary.status, WorkflowStatus::Failed);

    let (summary, _) = h.run(branching("selected_node = a")).await;
    assert_eq!(status(&summary, "pick"), NodeStatus::Failure);
    assert!(
        error(&summary, "pick").contains("selected_node must be a child"),
        "{}",
        error(&summary, "pick")
    );

    let (summary, _) = h.run(branching("selected_node = 'nowhere'")).await;
    assert!(error(&summary, "pick").contains("'nowhere', which is not a child"));

    let (summary, _) = h.run(branching("selected_node = a.result.nope")).await;
    assert!(
        error(&summary, "pick").starts_with("script error at line 1"),
        "{}",
        error(&summary, "pick")
    );
}

#[tokio::test]
async fn a_non_selected_child_with_another_parent_that_ran_still_runs() {
    let h = Harness::new();
    // pick selects left; right is also a child of a, which succeeded, so right runs (a join).
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "pick", "kind": "condition", "code": "selected_node = left"},
            action("left", "noop", json!([])),
            action("right", "noop", json!([])),
        ],
        "branches": edges(&[("a", "pick"), ("pick", "left"), ("pick", "right"), ("a", "right")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "right"), NodeStatus::Success);
}

#[tokio::test]
async fn runaway_scripts_fail_their_node_naming_the_limit() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "spin", "kind": "transform", "code": "for i in range(1000000000):\n    x = i\nresult = 1"},
        ],
        "branches": edges(&[("a", "spin")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "spin"), NodeStatus::Failure);
    assert!(
        error(&summary, "spin").contains("tick limit"),
        "{}",
        error(&summary, "spin")
    );

    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "hog", "kind": "transform", "code": "x = []\nfor i in range(100000000):\n    x.append(\"y\" * 1000)\nresult = len(x)"},
        ],
        "branches": edges(&[("a", "hog")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "hog"), NodeStatus::Failure);
    assert!(
        error(&summary, "hog").contains("heap limit"),
        "{}",
        error(&summary, "hog")
    );
}

// ---- transforms ----

#[tokio::test]
async fn walkoff_transform_code_runs_unchanged() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "left",
        "nodes": [
            action("left", "echo", json!([{"name": "value", "value": "ECHOING: went left"}])),
            {"label": "shout", "kind": "transform", "code": "result = left.result.upper()"},
            {"label": "nothing", "kind": "transform", "code": "x = shout.result"},
            {"label": "structured", "kind": "transform", "code": "result = {\"words\": shout.result.split(\" \"), \"n\": len(shout.result)}"},
        ],
        "branches": edges(&[("left", "shout"), ("shout", "nothing"), ("shout", "structured")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(result(&summary, "shout"), json!("ECHOING: WENT LEFT"));
    assert_eq!(status(&summary, "nothing"), NodeStatus::Success);
    assert_eq!(result(&summary, "nothing"), json!(null));
    assert_eq!(
        result(&summary, "structured"),
        json!({"words": ["ECHOING:", "WENT", "LEFT"], "n": 18})
    );
}

#[tokio::test]
async fn labels_with_spaces_are_visible_with_underscores() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "first step",
        "nodes": [
            action("first step", "echo", json!([{"name": "value", "value": 20}])),
            {"label": "double", "kind": "transform", "code": "result = first_step.result * 2"},
        ],
        "branches": edges(&[("first step", "double")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(result(&summary, "double"), json!(40));
}

// ---- parallel actions ----

fn parallel(
    data: serde_json::Value,
    bad: Option<i64>,
    concurrency: usize,
) -> walkoff_schema::Workflow {
    let mut parameters = vec![json!({"name": "data", "value": data, "parallelized": true})];
    if let Some(bad) = bad {
        parameters.push(json!({"name": "bad", "value": bad}));
    }
    workflow(json!({
        "start": "fan",
        "nodes": [
            {"label": "fan", "kind": "action", "action": "items", "parallelized": true, "concurrency": concurrency,
             "parameters": parameters},
            action("after", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "fan"}])),
        ],
        "branches": edges(&[("fan", "after")]),
    }))
}

#[tokio::test]
async fn parallel_shards_get_one_element_lists_and_join_in_input_order() {
    let h = Harness::new();
    let items: Vec<i64> = (0..50).collect();
    let (summary, _) = h.run(parallel(json!(items), None, 4)).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    let expected: Vec<serde_json::Value> = items.iter().map(|i| json!({"item": i})).collect();
    assert_eq!(result(&summary, "fan"), json!(expected));
    assert_eq!(result(&summary, "after"), json!(expected));
    let inputs = h.observed.shard_inputs.lock().unwrap()["fan"].clone();
    assert_eq!(inputs.len(), 50);
    assert!(inputs
        .iter()
        .all(|v| v.as_array().is_some_and(|a| a.len() == 1)));
    let max = h
        .observed
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(max <= 4, "{max} shards ran at once with a concurrency of 4");
}

#[tokio::test]
async fn a_failed_shard_fails_the_node_listing_every_shard_error() {
    let h = Harness::new();
    let (summary, _) = h.run(parallel(json!([1, 2, 3, 2]), Some(2), 16)).await;
    assert_eq!(summary.status, WorkflowStatus::Failed);
    assert_eq!(status(&summary, "fan"), NodeStatus::Failure);
    assert_eq!(status(&summary, "after"), NodeStatus::Skipped);
    assert_eq!(
        error(&summary, "fan"),
        "2 of 4 shards failed: shard 1 (2): bad item 2; shard 3 (2): bad item 2"
    );
}

#[tokio::test]
async fn an_empty_parallel_list_succeeds_with_an_empty_result() {
    let h = Harness::new();
    let (summary, _) = h.run(parallel(json!([]), None, 16)).await;
    assert_eq!(status(&summary, "fan"), NodeStatus::Success);
    assert_eq!(result(&summary, "fan"), json!([]));
}

#[tokio::test]
async fn a_parallel_parameter_that_is_not_a_list_fails_the_node() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "echo", json!([{"name": "value", "value": "not a list"}])),
            {"label": "fan", "kind": "action", "action": "items", "parallelized": true,
             "parameters": [{"name": "data", "variant": "ACTION_RESULT", "value": "a", "parallelized": true}]},
        ],
        "branches": edges(&[("a", "fan")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "fan"), NodeStatus::Failure);
    assert!(
        error(&summary, "fan").contains("must be a list"),
        "{}",
        error(&summary, "fan")
    );
}

// ---- triggers ----

fn with_trigger() -> walkoff_schema::Workflow {
    workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "approve", "kind": "trigger", "schema": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}},
            action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "approve", "pointer": "/ok"}])),
        ],
        "branches": edges(&[("a", "approve"), ("approve", "b")]),
    }))
}

#[tokio::test]
async fn a_trigger_waits_for_data_which_becomes_its_result() {
    let h = Harness::new();
    let triggers = BTreeMap::from([("approve".to_string(), json!({"ok": true}))]);
    let (summary, events) = h
        .run_with(with_trigger(), BTreeMap::new(), BTreeMap::new(), triggers)
        .await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "approve"), json!({"ok": true}));
    assert_eq!(result(&summary, "b"), json!(true));
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Node(n) if n.status == NodeStatus::AwaitingData)));
}

#[tokio::test]
async fn trigger_data_that_breaks_the_schema_is_refused_and_the_trigger_keeps_waiting() {
    let h = Harness::new();
    let id = h
        .runtime
        .submit(Arc::new(with_trigger()), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut stream = Box::pin(h.runtime.events(&id, 1));
    while let Some(Ok(event)) = stream.next().await {
        if matches!(&event.kind, EventKind::Node(n) if n.status == NodeStatus::AwaitingData) {
            break;
        }
    }
    let err = h
        .runtime
        .trigger(&id, "approve", json!({"ok": "yes"}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match its schema"),
        "{err}"
    );
    let err = h.runtime.trigger(&id, "a", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("is not a trigger"), "{err}");
    let err = h
        .runtime
        .trigger("no-such-execution", "approve", json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no running execution"), "{err}");
    h.runtime
        .trigger(&id, "approve", json!({"ok": false}))
        .await
        .unwrap();
    let mut last = None;
    while let Some(Ok(event)) = stream.next().await {
        last = Some(event);
    }
    assert_eq!(
        last.unwrap().workflow_status(),
        Some(WorkflowStatus::Completed)
    );
}

#[tokio::test]
async fn trigger_data_delivered_before_the_trigger_is_reached_is_kept() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "slow",
        "nodes": [
            {"label": "slow", "kind": "action", "action": "flaky", "retry": {"attempts": 2, "backoff_ms": 100},
             "parameters": [{"name": "failures", "value": 1}]},
            {"label": "gate", "kind": "trigger"},
        ],
        "branches": edges(&[("slow", "gate")]),
    }));
    let id = h
        .runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    h.runtime
        .trigger(&id, "gate", json!({"early": true}))
        .await
        .unwrap();
    let mut summary = walkoff_dataflow::ExecutionSummary::new(&id);
    let mut stream = Box::pin(h.runtime.events(&id, 1));
    while let Some(Ok(event)) = stream.next().await {
        summary.apply(&event);
    }
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "gate"), json!({"early": true}));
}

#[tokio::test]
async fn a_trigger_may_be_the_start_or_a_leaf() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "first",
        "nodes": [
            {"label": "first", "kind": "trigger"},
            action("middle", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "first"}])),
            {"label": "last", "kind": "trigger"},
        ],
        "branches": edges(&[("first", "middle"), ("middle", "last")]),
    }));
    let triggers = BTreeMap::from([
        ("first".to_string(), json!({"n": 1})),
        ("last".to_string(), json!({"n": 2})),
    ]);
    let (summary, _) = h
        .run_with(wf, BTreeMap::new(), BTreeMap::new(), triggers)
        .await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "middle"), json!({"n": 1}));
    assert_eq!(result(&summary, "last"), json!({"n": 2}));
}

#[tokio::test]
async fn a_trigger_nobody_answers_fails_when_its_wait_is_over() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "answered", "kind": "trigger", "timeout_ms": 200},
            {"label": "ignored", "kind": "trigger", "timeout_ms": 200},
            action("after ignored", "noop", json!([])),
        ],
        "branches": edges(&[("a", "answered"), ("a", "ignored"), ("ignored", "after ignored")]),
    }));
    let triggers = BTreeMap::from([("answered".to_string(), json!({"ok": true}))]);
    let (summary, _) = h
        .run_with(wf, BTreeMap::new(), BTreeMap::new(), triggers)
        .await;
    assert_eq!(summary.status, WorkflowStatus::Failed);
    assert_eq!(status(&summary, "answered"), NodeStatus::Success);
    assert_eq!(status(&summary, "ignored"), NodeStatus::Failure);
    assert_eq!(
        error(&summary, "ignored"),
        "trigger 'ignored' received no data within 200 milliseconds"
    );
    assert_eq!(status(&summary, "after ignored"), NodeStatus::Skipped);
}

// ---- abort ----

#[tokio::test]
async fn abort_ends_running_and_pending_nodes_aborted() {
    let h = Harness::new();
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            action("stuck", "hang", json!([])),
            {"label": "waiting", "kind": "trigger"},
            action("later", "noop", json!([])),
        ],
        "branches": edges(&[("a", "stuck"), ("a", "waiting"), ("stuck", "later"), ("waiting", "later")]),
    }));
    let id = h
        .runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut summary = walkoff_dataflow::ExecutionSummary::new(&id);
    let mut stream = Box::pin(h.runtime.events(&id, 1));
    let mut aborted = false;
    while let Some(Ok(event)) = stream.next().await {
        summary.apply(&event);
        let stuck_running = summary
            .nodes
            .get("stuck")
            .is_some_and(|n| n.status == NodeStatus::Executing);
        let waiting = summary
            .nodes
            .get("waiting")
            .is_some_and(|n| n.status == NodeStatus::AwaitingData);
        if stuck_running && waiting && !aborted {
            aborted = true;
            h.runtime.abort(&id).await.unwrap();
        }
    }
    assert_eq!(summary.status, WorkflowStatus::Aborted);
    assert_eq!(status(&summary, "a"), NodeStatus::Success);
    assert_eq!(status(&summary, "stuck"), NodeStatus::Aborted);
    assert_eq!(status(&summary, "waiting"), NodeStatus::Aborted);
    assert_eq!(status(&summary, "later"), NodeStatus::Aborted);
    assert!(
        h.runtime.abort(&id).await.is_err(),
        "a finished execution cannot be aborted"
    );
}

// ---- events ----

#[tokio::test]
async fn events_are_numbered_from_one_without_gaps_and_replay_from_any_point() {
    let h = Harness::new();
    let (summary, events) = h.run(branching("selected_node = left")).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(events.last().unwrap().is_final());
    assert!(events
        .iter()
        .all(|e| e.execution_id == summary.execution_id));

    let replay: Vec<_> = h
        .runtime
        .events(&summary.execution_id, 5)
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(replay, events[4..]);
    // Node events carry the label, the resolved parameters when executing, and results.
    let executing_a = events.iter().find_map(|e| match &e.kind {
        EventKind::Node(n) if n.label == "a" && n.status == NodeStatus::Executing => {
            Some(n.clone())
        }
        _ => None,
    });
    assert_eq!(executing_a.unwrap().parameters.unwrap()["value"], json!(10));
    assert_eq!(
        h.bus.pending().await.unwrap(),
        0,
        "every message was acknowledged"
    );
}

// ---- redelivery and resumption ----

#[tokio::test]
async fn a_start_redelivered_after_the_execution_finished_runs_nothing_again() {
    let h = Harness::new();
    let wf = workflow(json!({"start": "a", "nodes": [action("a", "noop", json!([]))]}));
    let (summary, events) = h.run(wf.clone()).await;
    assert_eq!(summary.status, WorkflowStatus::Completed);
    let start = walkoff_schema::StartExecution {
        execution_id: summary.execution_id.clone(),
        workflow: Arc::new(wf.clone()),
        variables: BTreeMap::new(),
        globals: BTreeMap::new(),
    };
    h.runtime
        .bus()
        .send_control(vec![walkoff_schema::ControlMessage::Start(Box::new(start))])
        .await
        .unwrap();
    // A later execution finishing proves the control loop has processed the redelivered start.
    h.run(wf).await;
    assert_eq!(h.observed.calls.lock().unwrap().values().sum::<u32>(), 2);
    let again: Vec<_> = h
        .runtime
        .events(&summary.execution_id, 1)
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(again, events);
}

#[tokio::test]
async fn following_from_past_the_final_event_ends_at_once() {
    let h = Harness::new();
    let (summary, events) = h
        .run(workflow(
            json!({"start": "a", "nodes": [action("a", "noop", json!([]))]}),
        ))
        .await;
    let past = events.len() as u64 + 1;
    let rest: Vec<_> = h
        .runtime
        .events(&summary.execution_id, past)
        .collect()
        .await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn following_an_unfinished_execution_ends_when_the_bus_closes() {
    let h = Harness::new();
    let wf = workflow(json!({"start": "a", "nodes": [action("a", "hang", json!([]))]}));
    let id = h
        .runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut stream = Box::pin(h.runtime.events(&id, 1));
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.workflow_status(), Some(WorkflowStatus::Executing));
    h.bus.close().await;
    let rest: Vec<_> = stream.collect().await;
    assert!(
        matches!(rest.last(), Some(Err(walkoff_dataflow::BusError::Closed))),
        "{rest:?}"
    );
}

#[tokio::test]
async fn one_workflow_submitted_many_times_runs_each_execution_on_its_own() {
    let h = Harness::new();
    let wf = Arc::new(workflow(json!({
        "start": "a",
        "variables": [{"name": "n", "value": 0}],
        "nodes": [action("a", "count", json!([{"name": "n", "variant": "WORKFLOW_VARIABLE", "value": "n"}]))],
    })));
    let mut ids = Vec::new();
    for n in 0..5 {
        let vars = BTreeMap::from([("n".to_string(), json!(n))]);
        ids.push(
            h.runtime
                .submit(Arc::clone(&wf), vars, &BTreeMap::new())
                .await
                .unwrap(),
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let mut summary = walkoff_dataflow::ExecutionSummary::new(id);
        let mut stream = Box::pin(h.runtime.events(id, 1));
        while let Some(Ok(event)) = stream.next().await {
            summary.apply(&event);
        }
        assert_eq!(summary.status, WorkflowStatus::Completed);
        assert_eq!(result(&summary, "a"), json!(n + 1));
    }
}

#[tokio::test]
async fn a_script_stuck_in_one_long_operation_is_failed_by_the_watchdog_on_time() {
    // The interpreter checks its limits only between operations; one long string operation gives it
    // no chance to, so the watchdog must fail the node.
    let config = walkoff_dataflow::RuntimeConfig {
        script_limits: walkoff_dataflow::ScriptLimits {
            max_duration: std::time::Duration::from_millis(1),
            max_heap_bytes: 8 << 30,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Harness::with_config(config);
    let wf = workflow(json!({
        "start": "a",
        "nodes": [
            action("a", "noop", json!([])),
            {"label": "slow", "kind": "transform", "code": "result = len((\"a\" * 100000000).upper().lower())"},
        ],
        "branches": edges(&[("a", "slow")]),
    }));
    let (summary, _) = h.run(wf).await;
    assert_eq!(status(&summary, "slow"), NodeStatus::Failure);
    assert_eq!(
        error(&summary, "slow"),
        "script exceeded its time limit of 1 ms"
    );
}

#[tokio::test]
async fn a_start_message_with_an_invalid_workflow_fails_the_execution_with_the_problems() {
    let h = Harness::new();
    let wf = workflow(json!({"start": "ghost", "nodes": [action("a", "noop", json!([]))]}));
    let start = walkoff_schema::StartExecution {
        execution_id: "from-elsewhere".into(),
        workflow: Arc::new(wf),
        variables: BTreeMap::new(),
        globals: BTreeMap::new(),
    };
    h.runtime
        .bus()
        .send_control(vec![walkoff_schema::ControlMessage::Start(Box::new(start))])
        .await
        .unwrap();
    let events: Vec<_> = h
        .runtime
        .events("from-elsewhere", 1)
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(events.len(), 1);
    match &events[0].kind {
        EventKind::Workflow { status, error, .. } => {
            assert_eq!(*status, WorkflowStatus::Failed);
            assert!(
                error.as_deref().unwrap().contains("[unknown_start]"),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_trigger_takes_data_once() {
    let h = Harness::new();
    // The node after the trigger never finishes, so the execution is still running when the
    // second delivery is tried.
    let wf = workflow(json!({
        "start": "approve",
        "nodes": [{"label": "approve", "kind": "trigger"}, action("stuck", "hang", json!([]))],
        "branches": edges(&[("approve", "stuck")]),
    }));
    let id = h
        .runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut stream = Box::pin(h.runtime.events(&id, 1));
    let mut delivered = false;
    let mut refused = false;
    while let Some(Ok(event)) = stream.next().await {
        if let EventKind::Node(n) = &event.kind {
            if n.label == "approve" && n.status == NodeStatus::AwaitingData && !delivered {
                delivered = true;
                h.runtime
                    .trigger(&id, "approve", json!({"ok": true}))
                    .await
                    .unwrap();
            }
            if n.label == "approve" && n.status == NodeStatus::Success {
                let err = h
                    .runtime
                    .trigger(&id, "approve", json!({"ok": false}))
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "trigger 'approve' has already received its data"
                );
                refused = true;
                h.runtime.abort(&id).await.unwrap();
            }
        }
    }
    assert!(delivered && refused);
}

/// Stopping does not wait out the control loop's receive: however long it may wait for
/// messages (a minute here, beyond the grace after which the loop would be abandoned), the loop
/// ends by itself at once. (`walkoff run` exits as soon as its result is known.)
#[tokio::test]
async fn stopping_ends_the_control_loops_wait_at_once() {
    use walkoff_dataflow::{BusDispatch, MemoryBus, Runtime, RuntimeConfig};

    let bus: Arc<dyn Bus> = MemoryBus::new();
    let runtime = Runtime::start(
        Arc::clone(&bus),
        Arc::new(BusDispatch(Arc::clone(&bus))),
        Arc::new(catalog()),
        RuntimeConfig {
            block: std::time::Duration::from_secs(60),
            ..RuntimeConfig::default()
        },
    );
    let wf = workflow(json!({
        "start": "t",
        "nodes": [{"label": "t", "kind": "transform", "code": "result = 1"}],
        "branches": [],
    }));
    let id = runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let mut events = Box::pin(runtime.events(&id, 1));
    while let Some(event) = events.next().await {
        event.unwrap();
    }
    // The loop is now waiting for the next message.
    assert!(runtime.shutdown().await, "the control loop was abandoned");
}

/// An executor may answer several requests in one message; each result is applied as if it had
/// come alone.
#[tokio::test]
async fn results_sent_in_one_message_are_applied_one_by_one() {
    use walkoff_dataflow::{BusDispatch, MemoryBus, Runtime, RuntimeConfig};
    use walkoff_schema::{AppRef, ControlMessage, NodeResult, Outcome};

    let bus: Arc<dyn Bus> = MemoryBus::new();
    let runtime = Runtime::start(
        Arc::clone(&bus),
        Arc::new(BusDispatch(Arc::clone(&bus))),
        Arc::new(catalog()),
        RuntimeConfig::default(),
    );
    let wf = workflow(json!({
        "start": "fan",
        "nodes": [{"label": "fan", "kind": "action", "action": "items", "parallelized": true,
                   "concurrency": 3,
                   "parameters": [{"name": "data", "value": [1, 2, 3], "parallelized": true}]}],
        "branches": [],
    }));
    let id = runtime
        .submit(Arc::new(wf), BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let app = AppRef {
        name: "test".into(),
        version: "1.0.0".into(),
    };
    let mut requests = Vec::new();
    while requests.len() < 3 {
        requests.extend(
            bus.recv_actions(&app, "x", 10, std::time::Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let now = chrono::Utc::now();
    let results: Vec<NodeResult> = requests
        .iter()
        .map(|d| NodeResult {
            execution_id: id.clone(),
            node_id: d.message.node_id.clone(),
            shard: d.message.shard,
            attempt: d.message.attempt,
            outcome: Outcome::Success {
                result: json!(d.message.shard.unwrap() * 10),
            },
            started_at: now,
            finished_at: now,
        })
        .collect();
    bus.send_control(vec![ControlMessage::Results { results }])
        .await
        .unwrap();
    let mut summary = walkoff_dataflow::ExecutionSummary::new(&id);
    let mut events = Box::pin(runtime.events(&id, 1));
    while let Some(event) = events.next().await {
        summary.apply(&event.unwrap());
    }
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_eq!(result(&summary, "fan"), json!([0, 10, 20]));
    runtime.shutdown().await;
}
