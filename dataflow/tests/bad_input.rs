//! Bad input never panics: mutated workflow documents either load and compile, or fail with an
//! error; the runtime never sees a panic from them.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use walkoff_dataflow::compile;
use walkoff_schema::load_workflow;

fn example(path: &str) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
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
    let catalog = walkoff_apps_catalog();
    if let Ok((workflow, _)) = load_workflow(&doc.to_string()) {
        let _ = compile(Arc::new(workflow), &catalog, None);
    }
}

fn walkoff_apps_catalog() -> walkoff_schema::AppCatalog {
    let api = walkoff_schema::AppApi::from_yaml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../apps/basics/api.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    walkoff_schema::AppCatalog::new().with(api)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_canonical_workflows_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check(example("examples/triage.json"), &mutations);
    }

    #[test]
    fn mutated_walkoff1_workflows_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check(example("examples/walkoff1/semantics-mix.json"), &mutations);
    }
}
