//! The JSON of the wire messages, as `docs/redis-contract.md` documents it for apps in any language.
//! A change here is a change to the contract.

use chrono::{TimeZone, Utc};
use serde_json::{json, Map};
use walkoff_schema::{ActionRequest, AppRef, ControlMessage, NodeResult, Outcome};

#[test]
fn an_action_request_as_apps_read_it() {
    let mut parameters = Map::new();
    parameters.insert("data".into(), json!([22]));
    let request = ActionRequest {
        execution_id: "0b7d…".into(),
        workflow_id: "alert-triage".into(),
        node_id: "scan ports".into(),
        label: "scan ports".into(),
        app: AppRef {
            name: "basics".into(),
            version: "1.0.0".into(),
        },
        action: "echo_array".into(),
        priority: 3,
        parameters,
        attempt: 1,
        shard: Some(0),
        timeout_ms: 300000,
        delivery: 2,
        max_deliveries: 3,
        reply_to: Some("walkoff:control:7".into()),
    };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"execution_id": "0b7d…", "workflow_id": "alert-triage", "node_id": "scan ports",
               "label": "scan ports", "app": {"name": "basics", "version": "1.0.0"},
               "action": "echo_array", "priority": 3, "parameters": {"data": [22]},
               "attempt": 1, "shard": 0, "timeout_ms": 300000, "delivery": 2,
               "max_deliveries": 3, "reply_to": "walkoff:control:7"})
    );
    // A first delivery without a limit or a reply stream (the embedded mode) leaves them out.
    let mut first = request.clone();
    first.delivery = 1;
    first.max_deliveries = 0;
    first.reply_to = None;
    let json = serde_json::to_value(&first).unwrap();
    assert!(json.get("delivery").is_none() && json.get("reply_to").is_none());
    let back: ActionRequest = serde_json::from_value(json).unwrap();
    assert_eq!(back, first);
}

#[test]
fn results_as_apps_write_them() {
    let at = Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap();
    let result = |outcome| {
        serde_json::to_value(ControlMessage::Result(NodeResult {
            execution_id: "0b7d…".into(),
            node_id: "scan ports".into(),
            shard: Some(0),
            attempt: 1,
            outcome,
            started_at: at,
            finished_at: at,
        }))
        .unwrap()
    };
    assert_eq!(
        result(Outcome::Success {
            result: json!([22])
        }),
        json!({"type": "result", "execution_id": "0b7d…", "node_id": "scan ports", "shard": 0,
               "attempt": 1, "outcome": {"type": "success", "result": [22]},
               "started_at": "2026-11-26T07:00:00Z", "finished_at": "2026-11-26T07:00:00Z"})
    );
    assert_eq!(
        result(Outcome::Failure {
            error: "host unreachable".into(),
            retryable: true
        })["outcome"],
        json!({"type": "failure", "error": "host unreachable", "retryable": true})
    );
    // An executor may send a batch of results (all for one control partition) as one message.
    let batch = ControlMessage::Results {
        results: vec![NodeResult {
            execution_id: "0b7d…".into(),
            node_id: "scan ports".into(),
            shard: None,
            attempt: 2,
            outcome: Outcome::Success { result: json!(1) },
            started_at: at,
            finished_at: at,
        }],
    };
    assert_eq!(
        serde_json::to_value(&batch).unwrap(),
        json!({"type": "results", "results": [{"execution_id": "0b7d…", "node_id": "scan ports",
               "attempt": 2, "outcome": {"type": "success", "result": 1},
               "started_at": "2026-11-26T07:00:00Z", "finished_at": "2026-11-26T07:00:00Z"}]})
    );
    assert_eq!(batch.execution_id(), "0b7d…");
    // What apps write is read back as it is written.
    let parsed: ControlMessage =
        serde_json::from_value(result(Outcome::Success { result: json!(1) })).unwrap();
    assert!(matches!(parsed, ControlMessage::Result(r) if r.attempt == 1 && r.shard == Some(0)));
}

#[test]
fn events_as_listeners_read_them() {
    use walkoff_schema::{Event, EventKind, NodeEvent, NodeStatus, WorkflowStatus};
    let at = Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 1).unwrap();
    let workflow = Event {
        execution_id: "0b7d…".into(),
        seq: 42,
        at,
        kind: EventKind::Workflow {
            workflow_id: "alert-triage".into(),
            status: WorkflowStatus::Completed,
            error: None,
        },
    };
    assert_eq!(
        serde_json::to_value(&workflow).unwrap(),
        json!({"execution_id": "0b7d…", "seq": 42, "at": "2026-11-26T07:00:01Z", "type": "workflow",
               "workflow_id": "alert-triage", "status": "COMPLETED"})
    );
    let mut parameters = Map::new();
    parameters.insert("data".into(), json!([22, 80]));
    let node = Event {
        execution_id: "0b7d…".into(),
        seq: 7,
        at,
        kind: EventKind::Node(NodeEvent {
            node_id: "scan ports".into(),
            label: "scan ports".into(),
            status: NodeStatus::Executing,
            attempt: 1,
            shard: None,
            parameters: Some(parameters),
            result: None,
            error: None,
        }),
    };
    let value = serde_json::to_value(&node).unwrap();
    assert_eq!(
        value,
        json!({"execution_id": "0b7d…", "seq": 7, "at": "2026-11-26T07:00:01Z", "type": "node",
               "node_id": "scan ports", "label": "scan ports", "status": "EXECUTING", "attempt": 1,
               "parameters": {"data": [22, 80]}})
    );
    assert_eq!(serde_json::from_value::<Event>(value).unwrap(), node);
}

/// `type` moved to the end of every object in `value`: the order an app in another language may
/// write.
fn type_last(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(tag) = object.shift_remove("type") {
                object.insert("type".into(), tag);
            }
            object.values_mut().for_each(type_last);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(type_last),
        _ => {}
    }
}

#[test]
fn control_messages_are_read_with_their_type_anywhere() {
    let at = Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap();
    let result = |node: &str, outcome| NodeResult {
        execution_id: "0b7d…".into(),
        node_id: node.into(),
        shard: None,
        attempt: 1,
        outcome,
        started_at: at,
        finished_at: at + chrono::Duration::nanoseconds(1_500),
    };
    let messages = [
        ControlMessage::Result(result(
            "scan",
            Outcome::Success {
                result: json!({"ports": [22, 80], "type": "tcp"}),
            },
        )),
        ControlMessage::Result(result(
            "scan",
            Outcome::Failure {
                error: "host unreachable".into(),
                retryable: false,
            },
        )),
        ControlMessage::Results {
            results: vec![
                result("a", Outcome::Success { result: json!(1) }),
                result(
                    "b",
                    Outcome::Success {
                        result: json!(null),
                    },
                ),
            ],
        },
        ControlMessage::Trigger {
            execution_id: "0b7d…".into(),
            node: "approval".into(),
            data: json!({"approved": true}),
        },
        ControlMessage::Abort {
            execution_id: "0b7d…".into(),
        },
        ControlMessage::Retry {
            execution_id: "0b7d…".into(),
            node_id: "scan".into(),
            shard: Some(3),
            attempt: 2,
        },
        ControlMessage::TriggerTimeout {
            execution_id: "0b7d…".into(),
            node_id: "approval".into(),
        },
    ];
    for message in messages {
        // Written with the tag first, and read back.
        let text = serde_json::to_string(&message).unwrap();
        assert!(text.starts_with(r#"{"type":"#), "{text}");
        assert_eq!(
            serde_json::from_str::<ControlMessage>(&text).unwrap(),
            message
        );
        // Read the same with every tag last, from text and from a JSON value.
        let mut value = serde_json::to_value(&message).unwrap();
        type_last(&mut value);
        let text = value.to_string();
        assert!(!text.starts_with(r#"{"type":"#), "{text}");
        assert_eq!(
            serde_json::from_str::<ControlMessage>(&text).unwrap(),
            message,
            "{text}"
        );
        assert_eq!(
            serde_json::from_value::<ControlMessage>(value).unwrap(),
            message
        );
    }
}

#[test]
fn a_malformed_control_message_is_an_error_naming_the_problem() {
    let ok = r#""execution_id":"e","node_id":"n","attempt":1,"started_at":"2026-11-26T07:00:00Z","finished_at":"2026-11-26T07:00:00Z""#;
    for (text, expected) in [
        (
            r#"{"type":"result","execution_id":"e"}"#.to_string(),
            "missing field `node_id`",
        ),
        (
            r#"{"execution_id":"e","type":"result"}"#.to_string(),
            "missing field `node_id`",
        ),
        (
            r#"{"type":"resalt","execution_id":"e"}"#.to_string(),
            "unknown variant `resalt`",
        ),
        (
            r#"{"execution_id":"e"}"#.to_string(),
            "missing field `type`",
        ),
        ("[1]".to_string(), "expected a control message"),
        (
            format!(r#"{{"type":"result",{ok},"outcome":{{"type":"sucess","result":1}}}}"#),
            "unknown variant `sucess`",
        ),
        (
            format!(
                r#"{{"type":"result",{ok},"outcome":{{"type":"success","result":1}},"attempt":2}}"#
            ),
            "duplicate field `attempt`",
        ),
        (
            format!(r#"{{"type":"result",{ok}}}"#).replace("07:00:00Z\"}", "yesterday\"}"),
            "input contains invalid characters",
        ),
    ] {
        let e = serde_json::from_str::<ControlMessage>(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
}
