//! Workflow formats: WALKOFF 1.0 import and export lose nothing; format detection; clear load errors;
//! WALKOFF api.yaml files load unchanged.

use serde_json::{json, Value};
use walkoff_schema::{
    dump_workflow, load_workflow, walkoff1, AppApi, AppCatalog, Format, LoadError, NodeKind,
    Variant,
};

fn example(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap()
}

/// Every field of `original` is in `exported` with the same value (objects compared recursively,
/// lists element by element).
fn assert_contains(original: &Value, exported: &Value, path: &str) {
    match (original, exported) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let other = b
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} was lost"));
                assert_contains(value, other, &format!("{path}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_contains(x, y, &format!("{path}[{i}]"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path} changed"),
    }
}

#[test]
fn a_walkoff1_workflow_survives_import_export_and_reimport_with_nothing_lost() {
    let text = example("examples/walkoff1/semantics-mix.json");
    let original: Value = serde_json::from_str(&text).unwrap();
    let (workflow, format) = load_workflow(&text).unwrap();
    assert_eq!(format, Format::Walkoff1);
    assert_eq!(workflow.nodes.len(), 9);
    assert_eq!(workflow.variables[0].name, "start value");
    assert!(workflow.walkoff_extra.contains_key("permissions"));

    let exported = walkoff1::export(&workflow);
    assert_contains(&original, &exported, "workflow");
    assert_eq!(
        exported, original,
        "a complete WALKOFF 1.0 export is reproduced exactly"
    );

    let (again, _) = load_workflow(&exported.to_string()).unwrap();
    assert_eq!(again, workflow);

    // Through our canonical format and back as well.
    let canonical = dump_workflow(&workflow, Format::Canonical);
    let (from_canonical, format) = load_workflow(&canonical.to_string()).unwrap();
    assert_eq!(format, Format::Canonical);
    assert_eq!(from_canonical, workflow);
    assert_eq!(walkoff1::export(&from_canonical), original);
}

#[test]
fn walkoff1_fields_map_onto_the_model() {
    let (workflow, _) = load_workflow(&example("examples/walkoff1/semantics-mix.json")).unwrap();
    let parallel = workflow
        .nodes
        .iter()
        .find(|n| n.label == "echo array")
        .unwrap();
    let NodeKind::Action(action) = &parallel.kind else {
        panic!()
    };
    assert!(action.parallelized);
    assert_eq!(action.app, "basics");
    assert_eq!(action.action, "echo_array");
    assert!(action.parameters[0].parallelized);
    let start = workflow.node(&workflow.start).unwrap();
    let NodeKind::Action(start_action) = &start.kind else {
        panic!()
    };
    assert_eq!(
        start_action.parameters[0].variant,
        Variant::WorkflowVariable
    );
    let condition = workflow
        .nodes
        .iter()
        .find(|n| n.label == "big enough")
        .unwrap();
    assert!(
        matches!(&condition.kind, NodeKind::Condition(c) if c.code.contains("selected_node = left"))
    );
    assert_eq!(condition.position.as_ref().unwrap().x.as_f64(), Some(200.0));
}

#[test]
fn a_walkoff1_trigger_without_a_schema_accepts_anything() {
    // WALKOFF 1.0's API drops trigger_schema; such workflows still load.
    let wf = json!({"id_": "w", "name": "t", "start": "t1", "triggers": [
        {"id_": "t1", "label": "wait", "name": "Trigger", "app_name": "Builtin", "walkoff_type_": "trigger"}
    ]});
    let (workflow, _) = load_workflow(&wf.to_string()).unwrap();
    assert!(matches!(&workflow.nodes[0].kind, NodeKind::Trigger(t) if t.schema == json!({})));
}

#[test]
fn load_errors_name_the_place() {
    match load_workflow("{\n  \"nodes\": [,]\n}") {
        Err(LoadError::Json { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    match load_workflow(
        r#"{"id": "w", "name": "n", "start": "a", "nodes": [{"label": "a", "kind": "rocket"}]}"#,
    ) {
        Err(LoadError::Canonical {
            line,
            column,
            message,
        }) => {
            assert_eq!(line, 1);
            assert!(column > 0);
            assert!(message.contains("rocket"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad = json!({"id_": "w", "start": "a", "actions": [{"id_": "a", "label": "a", "name": "x", "app_name": "basics",
        "parameters": [{"name": "p", "variant": "SOMETIMES", "value": 1}]}]});
    match load_workflow(&bad.to_string()) {
        Err(LoadError::Walkoff1 { path, message }) => {
            assert_eq!(path, "actions[0].parameters[0].variant");
            assert!(message.contains("SOMETIMES"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(load_workflow("[1, 2]"), Err(LoadError::UnknownFormat));
}

#[test]
fn hand_written_workflows_may_omit_ids() {
    let (workflow, _) = load_workflow(
        r#"{"id": "w", "name": "n", "start": "scan", "variables": [{"name": "v", "value": 1}],
            "nodes": [{"label": "scan", "kind": "action", "app": "basics", "action": "hello_world"}]}"#,
    )
    .unwrap();
    assert_eq!(workflow.nodes[0].id, "scan");
    assert_eq!(workflow.variables[0].id, "v");
}

#[test]
fn the_basics_api_yaml_loads_unchanged() {
    let api = AppApi::from_yaml(&example("apps/basics/api.yaml")).unwrap();
    assert_eq!(api.name, "basics");
    assert_eq!(api.app_version, "1.0.0");
    let names: Vec<&str> = api.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hello_world",
            "random_number",
            "string_to_json",
            "echo_string",
            "return_plus_one",
            "pause",
            "echo_array",
            "echo_json",
            "sample_report_data"
        ]
    );
    let echo_array = api.action("echo_array").unwrap();
    assert!(echo_array.parameters[0].parallelizable);
    assert!(echo_array.parameters[0].required);
    // WALKOFF writes `schema`; the model field is `json_schema`.
    assert_eq!(
        echo_array.parameters[0].json_schema,
        Some(json!({"type": "array"}))
    );
    assert!(api.extra.contains_key("contact_info"));
}

#[test]
fn an_invalid_api_yaml_says_where() {
    match AppApi::from_yaml("name: x\napp_version: 1.0.0\nactions:\n  - description: no name\n") {
        Err(LoadError::AppApi { location, message }) => {
            assert!(location.contains("line"), "{location}");
            assert!(message.contains("name"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn app_versions_are_ordered_as_semantic_versions() {
    let api = |version: &str| {
        AppApi::from_yaml(&format!(
            "name: scanner\napp_version: {version}\nactions:\n  - name: scan\n"
        ))
        .unwrap()
    };
    let mut catalog = AppCatalog::new();
    for version in ["1.10.0", "1.9.0", "nightly", "1.10.0-rc.1", "1.2.0"] {
        catalog.insert(api(version));
    }
    // Not by text, where 1.9.0 sorts after 1.10.0; a version that is not semantic comes first.
    assert_eq!(
        catalog.versions("scanner"),
        ["nightly", "1.2.0", "1.9.0", "1.10.0-rc.1", "1.10.0"]
    );
    assert_eq!(catalog.get("scanner", "").unwrap().app_version, "1.10.0");
}
