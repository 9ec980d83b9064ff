//! Fuzzing on stable Rust: everything a user or the network hands the schema — workflow documents
//! in both formats, app `api.yaml` files, wire messages and events — is decoded without a panic,
//! whatever it holds. Inputs are arbitrary JSON (with the field names these formats use, so the
//! decoders get past their first check), real documents with one part replaced or removed, and
//! arbitrary text.
//!
//! The suite runs proptest's default number of cases; the long run is a command, not CI:
//! `PROPTEST_CASES=1000000 cargo test --release -p walkoff-schema --test fuzz`
//! (figures in `docs/benchmarks.md`).

use proptest::prelude::*;
use serde_json::{json, Value};
use walkoff_schema::{
    load_workflow_with_warnings, ActionRequest, AppApi, ControlMessage, Event, NodeResult,
};

/// Field names of workflows (both formats), app APIs and wire messages, and some others.
const KEYS: &[&str] = &[
    "id",
    "id_",
    "name",
    "start",
    "nodes",
    "branches",
    "actions",
    "conditions",
    "transforms",
    "triggers",
    "workflow_variables",
    "label",
    "kind",
    "app",
    "app_name",
    "app_version",
    "action",
    "parameters",
    "value",
    "variant",
    "pointer",
    "code",
    "type",
    "source_id",
    "destination_id",
    "parallelized",
    "priority",
    "retry",
    "timeout_ms",
    "schema",
    "version",
    "execution_id",
    "seq",
    "at",
    "status",
    "outcome",
    "result",
    "results",
    "error",
    "retryable",
    "node_id",
    "shard",
    "attempt",
    "workflow",
    "variables",
    "globals",
    "node",
    "data",
    "walkoff_type_",
    "position",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{0,10}",
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(KEYS).prop_map(|k| json!(k)),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Every path (object keys and list indices) inside a document.
fn paths(value: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(json!(k));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(json!(i));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// `doc` with the part at one of its paths replaced by `replacement`, or removed when `None`.
fn mutated(doc: &Value, at: prop::sample::Index, replacement: Option<Value>) -> Value {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let path = &all[at.index(all.len())];
    let mut doc = doc.clone();
    let Some((last, parent_path)) = path.split_last() else {
        return replacement.unwrap_or(Value::Null);
    };
    let mut parent = &mut doc;
    for step in parent_path {
        parent = match step {
            Value::String(k) => &mut parent[k.as_str()],
            Value::Number(i) => &mut parent[i.as_u64().unwrap_or(0) as usize],
            _ => return doc,
        };
    }
    match (parent, last, replacement) {
        (Value::Object(map), Value::String(k), Some(v)) => {
            map.insert(k.clone(), v);
        }
        (Value::Object(map), Value::String(k), None) => {
            map.remove(k);
        }
        (Value::Array(items), Value::Number(i), Some(v)) => {
            items[i.as_u64().unwrap_or(0) as usize] = v;
        }
        (Value::Array(items), Value::Number(i), None) => {
            items.remove(i.as_u64().unwrap_or(0) as usize);
        }
        _ => {}
    }
    doc
}

fn file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn workflows() -> &'static [Value] {
    static DOCS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        [
            "examples/triage.json",
            "examples/walkoff1/semantics-mix.json",
        ]
        .iter()
        .map(|path| serde_json::from_str(&file(path)).unwrap())
        .collect()
    })
}

fn app_apis() -> &'static [Value] {
    static DOCS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        ["apps/basics/api.yaml", "apps/diagnostics/api.yaml"]
            .iter()
            .map(|path| serde_yaml::from_str(&file(path)).unwrap())
            .collect()
    })
}

/// Wire messages as the Redis contract shows them.
fn messages() -> Vec<Value> {
    let result = json!({"execution_id": "0b7d", "node_id": "scan ports", "shard": 0, "attempt": 1,
        "outcome": {"type": "success", "result": [22]},
        "started_at": "2026-11-26T07:00:00Z", "finished_at": "2026-11-26T07:00:00Z"});
    let mut typed_result = result.clone();
    typed_result["type"] = json!("result");
    vec![
        json!({"execution_id": "0b7d", "workflow_id": "alert-triage", "node_id": "scan ports",
            "label": "scan ports", "app": {"name": "basics", "version": "1.0.0"},
            "action": "echo_array", "priority": 3, "parameters": {"data": [22]}, "attempt": 1,
            "shard": 0, "timeout_ms": 300000, "delivery": 2, "max_deliveries": 3,
            "reply_to": "walkoff:control:7"}),
        result.clone(),
        typed_result,
        json!({"type": "results", "results": [result]}),
        json!({"type": "trigger", "execution_id": "0b7d", "node": "approval", "data": {"ok": true}}),
        json!({"type": "abort", "execution_id": "0b7d"}),
        json!({"type": "retry", "execution_id": "0b7d", "node_id": "n", "shard": null, "attempt": 2}),
        json!({"execution_id": "0b7d", "seq": 3, "at": "2026-11-26T07:00:00Z", "type": "node",
            "node_id": "n", "label": "n", "status": "SUCCESS", "attempt": 1, "result": 1}),
        json!({"execution_id": "0b7d", "seq": 4, "at": "2026-11-26T07:00:00Z", "type": "workflow",
            "workflow_id": "w", "status": "COMPLETED"}),
    ]
}

/// Decode `text` as every wire type: an answer or an error, never a panic.
fn decode_wire(text: &str) {
    let _ = serde_json::from_str::<ControlMessage>(text);
    let _ = serde_json::from_str::<ActionRequest>(text);
    let _ = serde_json::from_str::<NodeResult>(text);
    let _ = serde_json::from_str::<Event>(text);
}

proptest! {
    #[test]
    fn arbitrary_json_workflows_load_or_are_refused(doc in arbitrary_json()) {
        let _ = load_workflow_with_warnings(&doc.to_string());
    }

    #[test]
    fn mutated_workflows_of_both_formats_load_or_are_refused(
        which in 0usize..2,
        at in any::<prop::sample::Index>(),
        replacement in prop::option::of(arbitrary_json()),
    ) {
        let doc = mutated(&workflows()[which], at, replacement);
        let _ = load_workflow_with_warnings(&doc.to_string());
    }

    #[test]
    fn arbitrary_text_is_refused_as_a_workflow_an_app_api_or_a_message(text in ".{0,256}") {
        let loaded = load_workflow_with_warnings(&text);
        if serde_json::from_str::<Value>(&text).is_err() {
            prop_assert!(loaded.is_err(), "text that is not JSON loaded as a workflow");
        }
        let _ = AppApi::from_yaml(&text);
        decode_wire(&text);
    }

    #[test]
    fn mutated_app_apis_load_or_are_refused(
        which in 0usize..2,
        at in any::<prop::sample::Index>(),
        replacement in prop::option::of(arbitrary_json()),
    ) {
        let doc = mutated(&app_apis()[which], at, replacement);
        let _ = AppApi::from_yaml(&serde_yaml::to_string(&doc).unwrap());
    }

    #[test]
    fn arbitrary_and_mutated_wire_messages_decode_or_are_refused(
        which in 0usize..9,
        at in any::<prop::sample::Index>(),
        replacement in prop::option::of(arbitrary_json()),
        doc in arbitrary_json(),
    ) {
        decode_wire(&doc.to_string());
        decode_wire(&mutated(&messages()[which], at, replacement).to_string());
    }
}
