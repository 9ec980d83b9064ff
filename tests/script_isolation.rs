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
use walkoff_dataflow::{ScriptHostConfig, ScriptIsolation, ScriptJob, ScriptLimits};
use walkoff_schema::Outcome;

/// A condition that allocates gigabytes in one native call, between two of Starlark's checks.
const MEMORY_BOMB: &str = "s = \"a\" * 2000000000\nresult = len(s * 2000000000)";

fn hosts(memory_mib: u64, hosts: usize) -> ScriptIsolation {
    ScriptIsolation::Hosts(Arc::new(ScriptHosts::new(ScriptHostConfig {
        hosts,
        ..ScriptHostConfig::walkoff(PathBuf::from(env!("CARGO_BIN_EXE_walkoff")), memory_mib)
    })))
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
    // Starlark's own heap check must not be what stops it.
    let limits = ScriptLimits {
        max_heap_bytes: 8 << 30,
        ..Default::default()
    };
    // Below 256 MiB hosts map memory as they go; from 256 MiB on their allocator keeps a 64 MiB
    // arena, counted in the limit.
    for (limit_mib, within) in [(128, 40_000_000), (256, 60_000_000)] {
        let pool = hosts(limit_mib, 1);
        let fits = pool
            .run(
                transform(&format!("result = len(\"a\" * {within})")),
                limits,
            )
            .await;
        assert_eq!(outcome_result(&fits.outcome), &json!(within));
        let beyond = pool
            .run(transform("result = len(\"a\" * 300000000)"), limits)
            .await;
        assert_eq!(
            outcome_error(&beyond.outcome),
            format!("script exceeded its memory limit of {limit_mib} MiB")
        );
        for i in 0..2000 {
            let result = pool
                .run(transform(&format!("result = [a.result] * {i}")), limits)
                .await;
            assert!(
                matches!(result.outcome, Outcome::Success { .. }),
                "limit {limit_mib} MiB, script {i}: {:?}",
                result.outcome
            );
        }
    }
}

/// A burst of scripts goes to a host in one request and comes back one answer at a time; a
/// script that takes its host down fails alone, and the ones after it run in a fresh host.
#[tokio::test]
async fn a_burst_runs_in_one_request_and_a_bomb_in_it_fails_alone() {
    let pool = hosts(256, 1);
    let mut jobs: Vec<ScriptJob> = (0..6)
        .map(|i| ScriptJob {
            node_id: format!("n{i}"),
            ..transform(&format!("result = a.result + {i}"))
        })
        .collect();
    jobs[2].code = Arc::from(MEMORY_BOMB);
    let mut results = pool.run_all(jobs, ScriptLimits::default());
    let mut outcomes = std::collections::BTreeMap::new();
    while let Some(result) = results.recv().await {
        outcomes.insert(result.node_id.clone(), result.outcome);
    }
    assert_eq!(outcomes.len(), 6);
    for i in [0, 1, 3, 4, 5] {
        assert_eq!(outcome_result(&outcomes[&format!("n{i}")]), &json!(20 + i));
    }
    assert_eq!(
        outcome_error(&outcomes["n2"]),
        "script exceeded its memory limit of 256 MiB"
    );
}

/// A host that dies as it starts fails the jobs it was given, one by one, each with why; the
/// pool does not start hosts for ever to resend them.
#[tokio::test]
async fn hosts_that_die_at_once_fail_their_jobs_instead_of_retrying_for_ever() {
    let pool = ScriptIsolation::Hosts(Arc::new(ScriptHosts::new(ScriptHostConfig {
        program: PathBuf::from("/bin/false"),
        args: Vec::new(),
        hosts: 1,
        memory_limit_mib: 256,
        env: Vec::new(),
    })));
    // Past a pipe's buffer, so the request cannot be written at all once the host is gone.
    let long = format!("result = 1\n#{}", "x".repeat(100_000));
    let jobs: Vec<ScriptJob> = (0..3)
        .map(|i| ScriptJob {
            node_id: format!("n{i}"),
            ..transform(&long)
        })
        .collect();
    let mut results = pool.run_all(jobs, ScriptLimits::default());
    let mut failed = Vec::new();
    while let Some(result) = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("every job is answered")
    {
        failed.push(outcome_error(&result.outcome).to_string());
    }
    assert_eq!(failed.len(), 3);
    for error in failed {
        assert!(error.starts_with("the script host died"), "{error}");
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
    let pool = hosts(256, 2);
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
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
