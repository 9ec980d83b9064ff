//! Conditions and transforms run in script hosts (`walkoff script-host`) under memory and time
//! limits: a script that breaks one fails its node with the limit's name, its host is replaced,
//! and the process that asked goes on.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use walkoff_dataflow::execution::ScriptKind;
use walkoff_dataflow::script_host::ScriptHosts;
use walkoff_dataflow::{ScriptHostConfig, ScriptJob, ScriptLimits};
use walkoff_schema::Outcome;

/// A condition that allocates gigabytes in one native call, between two of Starlark's checks.
const MEMORY_BOMB: &str = "s = \"a\" * 2000000000\nresult = len(s * 2000000000)";

fn hosts(memory_mib: u64, hosts: usize) -> ScriptHosts {
    ScriptHosts::new(ScriptHostConfig {
        hosts,
        ..ScriptHostConfig::walkoff(PathBuf::from(env!("CARGO_BIN_EXE_walkoff")), memory_mib)
    })
}

fn transform(code: &str) -> ScriptJob {
    ScriptJob {
        execution_id: "e".into(),
        node_id: "n".into(),
        attempt: 1,
        kind: ScriptKind::Transform,
        code: Arc::from(code),
        parents: vec![("a".into(), json!(20))],
        children: Vec::new(),
    }
}

fn outcome_error(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failure { error, retryable } => {
            assert!(!retryable, "a broken limit is not retried: {error}");
            error
        }
        Outcome::Success { result } => panic!("expected a failure, got {result}"),
    }
}

fn outcome_result(outcome: &Outcome) -> &Value {
    match outcome {
        Outcome::Success { result } => result,
        Outcome::Failure { error, .. } => panic!("expected a result, got {error}"),
    }
}

#[tokio::test]
async fn a_script_past_its_memory_limit_fails_its_node_and_its_host_is_replaced() {
    let pool = hosts(256, 1);
    let limits = ScriptLimits::default();
    let result = pool.run(transform("result = a.result * 2"), limits).await;
    assert_eq!(outcome_result(&result.outcome), &json!(40));
    let bomb = pool.run(transform(MEMORY_BOMB), limits).await;
    assert_eq!(
        outcome_error(&bomb.outcome),
        "script exceeded its memory limit of 256 MiB"
    );
    // One host in the pool: the next script runs in its replacement.
    let after = pool.run(transform("result = a.result + 1"), limits).await;
    assert_eq!(outcome_result(&after.outcome), &json!(21));
}

/// The limit is the one set, from the host's first byte: a script may use up to it and not
/// beyond, and hosts running thousands of scripts do not fail by themselves (mimalloc's arena,
/// reserved at start, once counted as a gigabyte used — so a 300 MB string passed a 128 MiB limit,
/// and the first allocation past the arena failed whatever the script).
#[tokio::test]
async fn a_hosts_memory_limit_holds_at_its_value() {
    let pool = hosts(128, 1);
    // Starlark's own heap check must not be what stops it.
    let limits = ScriptLimits {
        max_heap_bytes: 8 << 30,
        ..Default::default()
    };
    let within = pool
        .run(transform("result = len(\"a\" * 50000000)"), limits)
        .await;
    assert_eq!(outcome_result(&within.outcome), &json!(50_000_000));
    let beyond = pool
        .run(transform("result = len(\"a\" * 300000000)"), limits)
        .await;
    assert_eq!(
        outcome_error(&beyond.outcome),
        "script exceeded its memory limit of 128 MiB"
    );
    for i in 0..2000 {
        let result = pool
            .run(transform(&format!("result = [a.result] * {i}")), limits)
            .await;
        assert!(
            matches!(result.outcome, Outcome::Success { .. }),
            "script {i}: {:?}",
            result.outcome
        );
    }
}

#[tokio::test]
async fn a_script_stuck_in_one_long_operation_is_killed_at_its_time_limit() {
    // Starlark checks its limits only between operations; one long string operation gives it no
    // chance to, so the worker kills the host.
    let pool = hosts(2048, 1);
    let limits = ScriptLimits {
        max_duration: Duration::from_millis(1),
        max_heap_bytes: 8 << 30,
        ..Default::default()
    };
    let slow = pool
        .run(
            transform("result = len((\"a\" * 100000000).upper().lower().upper().lower())"),
            limits,
        )
        .await;
    assert_eq!(
        outcome_error(&slow.outcome),
        "script exceeded its time limit of 1 ms"
    );
    let after = pool
        .run(transform("result = a.result - 1"), ScriptLimits::default())
        .await;
    assert_eq!(outcome_result(&after.outcome), &json!(19));
}

#[tokio::test]
async fn scripts_run_side_by_side_in_as_many_hosts() {
    let pool = Arc::new(hosts(256, 2));
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(
                    transform(&format!("result = a.result + {i}")),
                    ScriptLimits::default(),
                )
                .await
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let result = run.await.unwrap();
        assert_eq!(outcome_result(&result.outcome), &json!(20 + i));
    }
}

/// `walkoff run`, as a user runs it: the bomb fails its node, the process survives it and runs
/// the other branch's scripts to the end.
#[test]
fn walkoff_run_survives_a_memory_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.json");
    let workflow = json!({
        "id": "bomb", "name": "bomb", "start": "hello",
        "nodes": [
            {"label": "hello", "kind": "action", "app": "basics", "action": "hello_world"},
            {"label": "bomb", "kind": "transform", "code": MEMORY_BOMB},
            {"label": "wait", "kind": "action", "app": "basics", "action": "pause",
             "parameters": [{"name": "seconds", "value": 0.3}]},
            {"label": "first", "kind": "transform", "code": "result = 1 + 2"},
            {"label": "second", "kind": "condition",
             "code": "if first.result == 3:\n    selected_node = third"},
            {"label": "third", "kind": "transform", "code": "result = len(second.result) + 1"}
        ],
        "branches": [
            {"from": "hello", "to": "bomb"},
            {"from": "hello", "to": "wait"},
            {"from": "wait", "to": "first"},
            {"from": "first", "to": "second"},
            {"from": "second", "to": "third"}
        ]
    });
    std::fs::write(&path, serde_json::to_string_pretty(&workflow).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["run", path.to_str().unwrap(), "--json"])
        .env("WALKOFF_SCRIPT_MEMORY_MIB", "128")
        .output()
        .expect("run walkoff");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{doc}");
    assert_eq!(doc["status"], "FAILED");
    assert_eq!(doc["nodes"]["bomb"]["status"], "FAILURE");
    assert_eq!(
        doc["nodes"]["bomb"]["error"],
        "script exceeded its memory limit of 128 MiB"
    );
    assert_eq!(doc["nodes"]["third"]["status"], "SUCCESS", "{doc}");
    // The condition selected "third" by name.
    assert_eq!(doc["nodes"]["third"]["result"], 6);
}

#[test]
fn a_bad_script_memory_setting_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["run", "examples/triage.json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("WALKOFF_SCRIPT_MEMORY_MIB", "lots")
        .output()
        .expect("run walkoff");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WALKOFF_SCRIPT_MEMORY_MIB"));
}
