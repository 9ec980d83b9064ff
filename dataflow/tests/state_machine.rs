//! The execution state machine on its own: messages in, effects out. Forged or stale messages change
//! nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use common::{catalog, workflow};
use serde_json::json;
use walkoff_dataflow::{compile, Effects, Execution};
use walkoff_schema::{ControlMessage, NodeResult, NodeStatus, Outcome, StartExecution};

fn result(node: &str, shard: Option<u32>, attempt: u32) -> ControlMessage {
    ControlMessage::Result(NodeResult {
        execution_id: "e".into(),
        node_id: node.into(),
        shard,
        attempt,
        outcome: Outcome::Success {
            result: json!([shard]),
        },
        started_at: Utc::now(),
        finished_at: Utc::now(),
    })
}

#[test]
fn forged_and_stale_shard_messages_change_nothing() {
    let wf = Arc::new(workflow(json!({"start": "fan", "nodes": [
        {"label": "fan", "kind": "action", "action": "items", "parallelized": true, "concurrency": 1,
         "parameters": [{"name": "data", "value": [10, 20, 30], "parallelized": true}]}
    ]})));
    let plan = Arc::new(compile(Arc::clone(&wf), &catalog(), None).unwrap());
    let mut fx = Effects::default();
    let start = StartExecution {
        execution_id: "e".into(),
        workflow: wf,
        variables: BTreeMap::new(),
        globals: BTreeMap::new(),
    };
    let mut execution = Execution::start(plan, start, &mut fx).unwrap();
    assert_eq!(fx.actions.len(), 1, "concurrency 1: one shard dispatched");
    assert_eq!(fx.actions[0].shard, Some(0));

    // Shards not yet dispatched, attempt 0, wrong attempts and unknown shards are all ignored.
    for message in [
        result("fan", Some(1), 0),
        result("fan", Some(1), 1),
        result("fan", Some(0), 2),
        result("fan", Some(9), 1),
        ControlMessage::Retry {
            execution_id: "e".into(),
            node_id: "fan".into(),
            shard: Some(2),
            attempt: 0,
        },
        result("nope", None, 1),
    ] {
        let mut fx = Effects::default();
        execution.apply(message, &mut fx);
        assert!(fx.is_empty(), "a forged message had effects: {fx:?}");
    }

    // The real results move it on, one shard at a time, and a duplicate is ignored.
    for shard in 0..3u32 {
        let mut fx = Effects::default();
        execution.apply(result("fan", Some(shard), 1), &mut fx);
        assert!(!fx.events.is_empty());
        let mut dup = Effects::default();
        execution.apply(result("fan", Some(shard), 1), &mut dup);
        assert!(dup.is_empty());
    }
    assert_eq!(execution.node(0).status, NodeStatus::Success);
    assert_eq!(execution.node(0).result, Some(json!([0, 1, 2])));
    assert!(execution.is_finished());
}

#[test]
fn a_reached_trigger_arms_its_timeout_which_fails_it_only_while_it_waits() {
    let wf = Arc::new(workflow(json!({"start": "gate", "nodes": [
        {"label": "gate", "kind": "trigger", "timeout_ms": 250}
    ]})));
    let plan = Arc::new(compile(Arc::clone(&wf), &catalog(), None).unwrap());
    let start = || StartExecution {
        execution_id: "e".into(),
        workflow: Arc::clone(&wf),
        variables: BTreeMap::new(),
        globals: BTreeMap::new(),
    };
    let timeout = ControlMessage::TriggerTimeout {
        execution_id: "e".into(),
        node_id: "gate".into(),
    };
    let mut fx = Effects::default();
    let mut waiting = Execution::start(Arc::clone(&plan), start(), &mut fx).unwrap();
    assert_eq!(
        fx.timers,
        [(std::time::Duration::from_millis(250), timeout.clone())]
    );
    assert_eq!(waiting.node(0).status, NodeStatus::AwaitingData);

    // Answered first: the timeout, when it comes, changes nothing.
    let mut answered =
        Execution::start(Arc::clone(&plan), start(), &mut Effects::default()).unwrap();
    answered.apply(
        ControlMessage::Trigger {
            execution_id: "e".into(),
            node: "gate".into(),
            data: json!(1),
        },
        &mut Effects::default(),
    );
    assert!(answered.is_finished());
    let mut fx = Effects::default();
    answered.apply(timeout.clone(), &mut fx);
    assert!(fx.is_empty());
    assert_eq!(answered.node(0).status, NodeStatus::Success);

    // Not answered: it fails, naming the trigger and the wait.
    waiting.apply(timeout, &mut Effects::default());
    assert_eq!(waiting.node(0).status, NodeStatus::Failure);
    assert_eq!(
        waiting.node(0).error.as_deref(),
        Some("trigger 'gate' received no data within 250 milliseconds")
    );
    assert!(waiting.is_finished());
}
