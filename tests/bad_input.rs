//! Bad input never panics: mutated workflow documents are refused when they load or compile, and
//! those that compile run — on the embedded runtime with the `basics` app, as `walkoff run` runs
//! them — to an end (COMPLETED, FAILED or ABORTED), never to a panic or a hang. Time is virtual
//! (paused and advanced by tokio), so a mutated hour-long `pause` costs nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use walkoff_dataflow::{compile, Bus, MemoryBus, Runtime, RuntimeConfig};
use walkoff_executors::{ExecutorConfig, LocalExecutor, Registry};
use walkoff_schema::{load_workflow, EventKind, NodeStatus, Workflow};

fn example(path: &str) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    serde_json::from_str(&std::fs::read_to_string(format!("{root}/{path}")).unwrap()).unwrap()
}

/// Every path (object keys and list indices) inside a document.
fn paths(value: &Value, prefix: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let mut p = prefix.clone();
                p.push(json!(k));
                paths(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(json!(i));
                paths(v, p, out);
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut current = value;
    for step in path {
        current = match step {
            Value::String(k) => current.get_mut(k.as_str())?,
            Value::Number(i) => current.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(current)
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    DuplicateNode(prop::sample::Index),
}

fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(-1)),
        Just(json!(1e300)),
        "[a-z_ ]{0,8}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("/ports/99")),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"type": "nonsense"})),
        Just(json!("ACTION_RESULT")),
        Just(json!("selected_node = (")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), junk()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        any::<prop::sample::Index>().prop_map(Mutation::DuplicateNode),
    ]
}

fn apply(doc: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    paths(doc, Vec::new(), &mut all);
    match mutation {
        Mutation::Replace(i, v) => {
            let path = i.get(&all).clone();
            if let Some(slot) = at(doc, &path) {
                *slot = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let path = i.get(&all).clone();
            if let Some((last, parent)) = path.split_last() {
                match (at(doc, parent), last) {
                    (Some(Value::Object(map)), Value::String(k)) => {
                        map.remove(k);
                    }
                    (Some(Value::Array(items)), Value::Number(n)) => {
                        let n = n.as_u64().unwrap() as usize;
                        if n < items.len() {
                            items.remove(n);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::DuplicateNode(i) => {
            for list in ["nodes", "actions", "conditions", "triggers"] {
                if let Some(Value::Array(items)) = doc.get_mut(list) {
                    if !items.is_empty() {
                        let copy = i.get(items).clone();
                        items.push(copy);
                    }
                }
            }
        }
    }
}

fn check(mut doc: Value, mutations: &[Mutation]) {
    for m in mutations {
        apply(&mut doc, m);
    }
    let registry = Registry::new().with(Arc::new(walkoff_apps::basics::Basics::new()));
    let Ok((workflow, _)) = load_workflow(&doc.to_string()) else {
        return;
    };
    let workflow = Arc::new(workflow);
    if compile(Arc::clone(&workflow), &registry.catalog(), None).is_ok() {
        run_to_its_end(workflow, &registry);
    }
}

/// Run `workflow` to its final event; a trigger it waits on is answered by aborting the run.
fn run_to_its_end(workflow: Arc<Workflow>, registry: &Registry) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = MemoryBus::new();
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let executor = LocalExecutor::new(
            Arc::clone(&dyn_bus),
            registry,
            ExecutorConfig::default().concurrency,
        );
        let engine = Runtime::start(
            dyn_bus,
            Arc::new(executor),
            Arc::new(registry.catalog()),
            RuntimeConfig::default(),
        );
        let id = match engine
            .submit(Arc::clone(&workflow), BTreeMap::new(), &BTreeMap::new())
            .await
        {
            Ok(id) => id,
            // Refused when submitted (a variable or global it needs): refused cleanly.
            Err(_) => return,
        };
        let mut events = Box::pin(engine.events(&id, 1));
        // A day of virtual time: far beyond any timeout a node can have by default.
        let ended = tokio::time::timeout(Duration::from_secs(24 * 3600 * 7), async {
            while let Some(event) = events.next().await {
                let event = event.expect("the event feed works");
                match event.kind {
                    EventKind::Workflow { status, .. } if status.is_terminal() => return,
                    EventKind::Node(node) if node.status == NodeStatus::AwaitingData => {
                        // Nobody will answer; a clean end is an abort.
                        let _ = engine.abort(&id).await;
                    }
                    _ => {}
                }
            }
            panic!("the event feed of {id} ended before its final event");
        })
        .await;
        assert!(
            ended.is_ok(),
            "execution {id} of a mutated workflow never ended: {}",
            serde_json::to_string(&*workflow).unwrap()
        );
        engine.shutdown().await;
        bus.close().await;
    });
}

proptest! {
    // Most mutations are refused when loaded or compiled; enough cases that dozens still run.
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn mutated_canonical_workflows_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check(example("examples/triage.json"), &mutations);
    }

    #[test]
    fn mutated_walkoff1_workflows_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check(example("examples/walkoff1/semantics-mix.json"), &mutations);
    }
}
