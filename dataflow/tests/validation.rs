//! Validation: one test per problem, and every problem reported at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{action, catalog, edges, workflow};
use serde_json::{json, Value};
use walkoff_dataflow::compile;
use walkoff_schema::{Problem, ProblemCode};

fn problems(wf: Value) -> Vec<Problem> {
    problems_with_globals(wf, None)
}

fn problems_with_globals(wf: Value, globals: Option<&BTreeSet<String>>) -> Vec<Problem> {
    match compile(Arc::new(workflow(wf)), &catalog(), globals) {
        Ok(_) => Vec::new(),
        Err(p) => p.0,
    }
}

/// Assert exactly one problem with `code`, on node `label` when given, and return it.
fn only(problems: &[Problem], code: ProblemCode, label: Option<&str>) -> Problem {
    let matching: Vec<&Problem> = problems.iter().filter(|p| p.code == code).collect();
    assert_eq!(matching.len(), 1, "expected one {code:?} in {problems:#?}");
    assert_eq!(matching[0].label.as_deref(), label, "{:#?}", matching[0]);
    matching[0].clone()
}

fn noop(label: &str) -> Value {
    action(label, "noop", json!([]))
}

#[test]
fn a_valid_workflow_has_no_problems() {
    let wf = json!({
        "start": "a",
        "variables": [{"name": "v", "value": 1}],
        "nodes": [
            action("a", "count", json!([{"name": "n", "variant": "WORKFLOW_VARIABLE", "value": "v"}])),
            {"label": "pick", "kind": "condition", "code": "selected_node = b"},
            action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a"}])),
            {"label": "t", "kind": "transform", "code": "result = b.result"},
            {"label": "wait", "kind": "trigger", "schema": {"type": "object"}},
        ],
        "branches": edges(&[("a", "pick"), ("pick", "b"), ("b", "t"), ("t", "wait")]),
    });
    assert_eq!(problems(wf), Vec::new());
}

#[test]
fn unknown_start_node() {
    let p = problems(json!({"start": "nope", "nodes": [noop("a")]}));
    let problem = only(&p, ProblemCode::UnknownStart, None);
    assert!(problem.message.contains("'nope'"));
    assert_eq!(problem.field.as_deref(), Some("start"));
}

#[test]
fn a_cycle_names_the_nodes_on_it() {
    let p = problems(json!({
        "start": "a",
        "nodes": [noop("a"), noop("b"), noop("c"), noop("d")],
        "branches": edges(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]),
    }));
    let problem = only(&p, ProblemCode::Cycle, Some("b"));
    assert_eq!(problem.message, "these nodes form a cycle: 'b', 'c', 'd'");
    let p = problems(json!({"start": "a", "nodes": [noop("a")], "branches": edges(&[("a", "a")])}));
    only(&p, ProblemCode::Cycle, Some("a"));
}

#[test]
fn a_branch_to_or_from_a_missing_node() {
    let p = problems(json!({
        "start": "a",
        "nodes": [noop("a")],
        "branches": edges(&[("a", "ghost"), ("phantom", "a")]),
    }));
    let dangling: Vec<_> = p
        .iter()
        .filter(|p| p.code == ProblemCode::DanglingBranch)
        .collect();
    assert_eq!(dangling.len(), 2, "{p:#?}");
    assert!(dangling[0].message.contains("points to 'ghost'"));
    assert_eq!(dangling[0].field.as_deref(), Some("branches[0].to"));
    assert!(dangling[1].message.contains("points from 'phantom'"));
}

#[test]
fn an_unknown_app_or_version() {
    let p = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "nmap", "action": "scan"},
    ]}));
    assert!(only(&p, ProblemCode::UnknownApp, Some("a"))
        .message
        .contains("'nmap' is not installed"));
    let p = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "test", "app_version": "9.9.9", "action": "noop"},
    ]}));
    let problem = only(&p, ProblemCode::UnknownApp, Some("a"));
    assert!(
        problem
            .message
            .contains("no version '9.9.9' (installed: 1.0.0)"),
        "{}",
        problem.message
    );
}

#[test]
fn an_unknown_action() {
    let p = problems(json!({"start": "a", "nodes": [action("a", "launch", json!([]))]}));
    let problem = only(&p, ProblemCode::UnknownAction, Some("a"));
    assert!(problem.message.contains("no action 'launch'") && problem.message.contains("noop"));
}

#[test]
fn a_missing_required_parameter() {
    let p = problems(json!({"start": "a", "nodes": [action("a", "echo", json!([]))]}));
    let problem = only(&p, ProblemCode::MissingParameter, Some("a"));
    assert_eq!(problem.field.as_deref(), Some("parameter 'value'"));
}

#[test]
fn an_unknown_or_repeated_parameter() {
    let p = problems(json!({"start": "a", "nodes": [action("a", "echo", json!([
        {"name": "value", "value": 1}, {"name": "volume", "value": 11}, {"name": "value", "value": 2}
    ]))]}));
    let problem = only(&p, ProblemCode::UnknownParameter, Some("a"));
    assert_eq!(problem.field.as_deref(), Some("parameter 'volume'"));
    assert!(problem.message.contains("it takes: value"));
    only(&p, ProblemCode::DuplicateParameter, Some("a"));
}

#[test]
fn a_static_value_that_fails_the_parameters_schema() {
    let p = problems(
        json!({"start": "a", "nodes": [action("a", "count", json!([{"name": "n", "value": "seven"}]))]}),
    );
    let problem = only(&p, ProblemCode::InvalidStaticValue, Some("a"));
    assert_eq!(problem.field.as_deref(), Some("parameter 'n'"));
    assert!(
        problem
            .message
            .contains("\"seven\" is not of type \"integer\""),
        "{}",
        problem.message
    );
    let p = problems(
        json!({"start": "a", "nodes": [action("a", "count", json!([{"name": "n", "value": -1}]))]}),
    );
    only(&p, ProblemCode::InvalidStaticValue, Some("a"));
}

#[test]
fn an_action_result_from_a_node_that_is_not_an_ancestor() {
    let p = problems(json!({
        "start": "a",
        "nodes": [
            noop("a"), noop("sibling"),
            action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "sibling"}])),
            action("c", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "nowhere"}])),
            action("d", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a"}])),
        ],
        "branches": edges(&[("a", "sibling"), ("a", "b"), ("b", "c"), ("c", "d")]),
    }));
    let problem = only(&p, ProblemCode::NotAnAncestor, Some("b"));
    assert!(problem.message.contains("'sibling'"));
    only(&p, ProblemCode::UnknownNodeReference, Some("c"));
}

#[test]
fn a_bad_pointer() {
    let p = problems(json!({"start": "a", "nodes": [noop("a"),
        action("b", "echo", json!([{"name": "value", "variant": "ACTION_RESULT", "value": "a", "pointer": "host"}]))],
        "branches": edges(&[("a", "b")])}));
    only(&p, ProblemCode::InvalidPointer, Some("b"));
}

#[test]
fn an_unknown_workflow_variable_or_global() {
    let wf = json!({"start": "a", "nodes": [
        action("a", "echo", json!([{"name": "value", "variant": "WORKFLOW_VARIABLE", "value": "missing"}])),
        action("b", "echo", json!([{"name": "value", "variant": "GLOBAL", "value": "api_key"}])),
    ], "branches": edges(&[("a", "b")])});
    let p = problems(wf.clone());
    only(&p, ProblemCode::UnknownWorkflowVariable, Some("a"));
    assert!(
        p.iter().all(|p| p.code != ProblemCode::UnknownGlobal),
        "globals unchecked when unknown"
    );
    let known = BTreeSet::from(["other".to_string()]);
    let p = problems_with_globals(wf, Some(&known));
    only(&p, ProblemCode::UnknownGlobal, Some("b"));
}

#[test]
fn a_parallel_action_needs_exactly_one_parallelizable_parallelized_parameter() {
    let none = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "test", "action": "items", "parallelized": true,
         "parameters": [{"name": "data", "value": [1]}]}]}));
    assert!(only(&none, ProblemCode::InvalidParallel, Some("a"))
        .message
        .contains("has none"));
    let not_parallelizable = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "test", "action": "items", "parallelized": true,
         "parameters": [{"name": "data", "value": [1], "parallelized": true}, {"name": "bad", "value": 1, "parallelized": true}]}]}));
    let parallel: Vec<_> = not_parallelizable
        .iter()
        .filter(|p| p.code == ProblemCode::InvalidParallel)
        .collect();
    assert_eq!(parallel.len(), 2, "{not_parallelizable:#?}");
    let not_a_parallel_action = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "test", "action": "items",
         "parameters": [{"name": "data", "value": [1], "parallelized": true}]}]}));
    only(
        &not_a_parallel_action,
        ProblemCode::InvalidParallel,
        Some("a"),
    );
}

#[test]
fn a_condition_without_children() {
    let p = problems(
        json!({"start": "a", "nodes": [noop("a"), {"label": "c", "kind": "condition", "code": "selected_node = None"}],
        "branches": edges(&[("a", "c")])}),
    );
    only(&p, ProblemCode::ConditionWithoutChildren, Some("c"));
}

#[test]
fn duplicate_labels_including_after_spaces_become_underscores() {
    let p = problems(json!({"start": "a b", "nodes": [
        {"id": "1", "label": "a b", "kind": "action", "action": "noop"},
        {"id": "2", "label": "a_b", "kind": "action", "action": "noop"},
        {"id": "3", "label": "a b", "kind": "action", "action": "noop"},
    ]}));
    let dup: Vec<_> = p
        .iter()
        .filter(|p| p.code == ProblemCode::DuplicateLabel)
        .collect();
    assert_eq!(dup.len(), 2, "{p:#?}");
    assert!(dup[0].message.contains("becomes 'a_b' in scripts"));
}

#[test]
fn starlark_syntax_errors_carry_line_and_column() {
    let p = problems(json!({"start": "a", "nodes": [noop("a"),
        {"label": "t", "kind": "transform", "code": "x = 1\nif x >\n    result = 2"}],
        "branches": edges(&[("a", "t")])}));
    let problem = only(&p, ProblemCode::ScriptSyntax, Some("t"));
    assert_eq!(problem.line, Some(2));
    assert!(problem.column.is_some());
    assert!(
        problem.to_string().contains("at line 2, column"),
        "{problem}"
    );
}

#[test]
fn an_invalid_trigger_schema() {
    let p = problems(
        json!({"start": "a", "nodes": [{"label": "a", "kind": "trigger", "schema": {"type": "nonsense"}}]}),
    );
    only(&p, ProblemCode::InvalidTriggerSchema, Some("a"));
}

#[test]
fn invalid_settings() {
    let p = problems(json!({"start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "test", "action": "noop", "priority": 9, "timeout_ms": 0, "retry": {"attempts": 0}},
    ]}));
    let settings: Vec<_> = p
        .iter()
        .filter(|p| p.code == ProblemCode::InvalidSetting)
        .map(|p| p.field.clone().unwrap())
        .collect();
    assert_eq!(settings, ["priority", "timeout_ms", "retry.attempts"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(json!({
        "start": "ghost",
        "nodes": [
            action("a", "launch", json!([])),
            action("b", "echo", json!([])),
            {"label": "b", "kind": "transform", "code": "result = ("},
            {"label": "c", "kind": "condition", "code": "selected_node = None"},
        ],
        "branches": edges(&[("a", "c"), ("c", "nowhere")]),
    }));
    let codes: BTreeSet<&str> = p.iter().map(|p| p.code.as_str()).collect();
    for code in [
        "unknown_start",
        "unknown_action",
        "missing_parameter",
        "duplicate_label",
        "duplicate_id",
        "script_syntax",
        "dangling_branch",
        "condition_without_children",
    ] {
        assert!(codes.contains(code), "{code} missing from {codes:?}");
    }
}
