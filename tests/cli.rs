//! The `walkoff` binary, driven as a user drives it: exit codes, output, triggers, variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn walkoff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run walkoff")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

fn write(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    path
}

const APPROVE: &str = "approval={\"approved\": true}";

#[test]
fn run_json_prints_every_node_and_exits_zero_when_completed() {
    let out = walkoff(&[
        "run",
        "examples/triage.json",
        "--trigger",
        APPROVE,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["status"], "COMPLETED");
    assert_eq!(doc["workflow_id"], "alert-triage");
    assert!(doc["execution_id"].as_str().unwrap().len() >= 32);
    let nodes = doc["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 11);
    for (label, node) in nodes {
        for key in [
            "id",
            "status",
            "result",
            "error",
            "attempts",
            "started_at",
            "finished_at",
        ] {
            assert!(node.get(key).is_some(), "{label} lacks {key}");
        }
    }
    assert_eq!(nodes["severity"]["result"], "escalate");
    assert_eq!(nodes["close_ticket"]["status"], "SKIPPED");
    assert_eq!(nodes["scan ports"]["result"], json!([22, 80, 443]));
    assert_eq!(nodes["report"]["result"], "3 ports scanned: 22, 80, 443");
    assert_eq!(nodes["approval"]["result"], json!({"approved": true}));
    assert_eq!(nodes["wrap up"]["result"], "ECHOING: ON-CALL");
    assert_eq!(nodes["escalate"]["attempts"], 1);
}

#[test]
fn run_prints_a_line_per_status_change() {
    let out = walkoff(&["run", "examples/triage.json", "--trigger", APPROVE]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "workflow EXECUTING",
        "AWAITING_DATA",
        "SKIPPED",
        "=> \"escalate\"",
        "workflow COMPLETED",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.lines().filter(|l| l.contains("severity")).count() >= 2);
}

#[test]
fn variables_override_defaults() {
    let out = walkoff(&[
        "run",
        "examples/triage.json",
        "--var",
        "threshold=100",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["nodes"]["severity"]["result"], "close_ticket");
    assert_eq!(doc["nodes"]["escalate"]["status"], "SKIPPED");
    assert_eq!(doc["nodes"]["approval"]["status"], "SKIPPED");
    assert_eq!(
        doc["nodes"]["wrap up"]["result"],
        "ECHOING: closed as low severity"
    );
}

#[test]
fn a_trigger_without_data_aborts_with_a_message_and_exit_one() {
    let out = walkoff(&["run", "examples/triage.json", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("trigger 'approval' awaits data"),
        "{}",
        stderr(&out)
    );
    let doc = json_out(&out);
    assert_eq!(doc["status"], "ABORTED");
    assert_eq!(doc["nodes"]["approval"]["status"], "ABORTED");
    assert_eq!(doc["nodes"]["wrap up"]["status"], "ABORTED");
}

#[test]
fn a_failed_node_fails_the_workflow_with_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fail.json",
        &json!({
            "id": "f", "name": "f", "start": "parse",
            "nodes": [
                {"label": "parse", "kind": "action", "app": "basics", "action": "string_to_json",
                 "parameters": [{"name": "call", "value": "{not json"}]},
                {"label": "next", "kind": "action", "app": "basics", "action": "hello_world"}
            ],
            "branches": [{"from": "parse", "to": "next"}]
        }),
    );
    let out = walkoff(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json_out(&out);
    assert_eq!(doc["status"], "FAILED");
    assert_eq!(doc["nodes"]["parse"]["status"], "FAILURE");
    assert!(doc["nodes"]["parse"]["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(doc["nodes"]["next"]["status"], "SKIPPED");
}

#[test]
fn invalid_workflows_print_every_problem_and_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.json",
        &json!({
            "id": "b", "name": "b", "start": "missing",
            "nodes": [
                {"label": "a", "kind": "action", "app": "basics", "action": "echo_string"},
                {"label": "b", "kind": "action", "app": "nmap", "action": "scan"},
                {"label": "c", "kind": "transform", "code": "result = ("}
            ],
            "branches": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]
        }),
    );
    let path = path.to_str().unwrap();
    let out = walkoff(&["validate", path]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    for code in [
        "[unknown_start]",
        "[missing_parameter] node 'a'",
        "[unknown_app] node 'b'",
        "[cycle]",
        "[script_syntax] node 'c' (c) code at line 1",
    ] {
        assert!(text.contains(code), "missing {code} in\n{text}");
    }
    assert!(text.contains("5 problem(s)"), "{text}");

    let out = walkoff(&["validate", path, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc = json_out(&out);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 5);
    assert_eq!(doc["problems"][0]["code"], "unknown_start");

    let out = walkoff(&["run", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[cycle]"));
}

#[test]
fn valid_workflows_in_both_formats_validate() {
    for file in [
        "examples/triage.json",
        "examples/walkoff1/semantics-mix.json",
    ] {
        let out = walkoff(&["validate", file]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stdout(&out));
        assert!(stdout(&out).contains(": valid"));
    }
}

/// A WALKOFF 1.0 export carries bookkeeping (validation results, the run's ids, an `id_` on
/// each position): accepted, and named as ignored — warnings, never errors.
#[test]
fn a_walkoff1_export_with_its_bookkeeping_validates_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc: Value = serde_json::from_str(
        &std::fs::read_to_string("examples/walkoff1/semantics-mix.json").unwrap(),
    )
    .unwrap();
    doc["execution_id"] = json!("5f1c9a62-0000-4000-8000-000000000000");
    doc["actions"][0]["position"]["id_"] = json!("0c0c0c0c-0000-4000-8000-000000000000");
    doc["branches"][0]["errors"] = json!([]);
    let path = dir.path().join("export.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let path = path.to_str().unwrap();
    let out = walkoff(&["validate", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    for warning in [
        "warning: workflow.execution_id: ignored",
        "warning: actions[0].position.id_: ignored",
        "warning: branches[0].errors: ignored",
    ] {
        assert!(text.contains(warning), "missing {warning} in\n{text}");
    }
    let doc = json_out(&walkoff(&["validate", path, "--json"]));
    assert_eq!(doc["valid"], true);
    assert!(doc["warnings"].as_array().unwrap().len() >= 3, "{doc}");
}

#[test]
fn bad_arguments_exit_two_and_name_the_problem() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["run", "examples/triage.json", "--var", "novalue"],
            "expected NAME=JSON",
        ),
        (
            &["run", "examples/triage.json", "--var", "nope=1"],
            "unknown workflow variable 'nope'",
        ),
        (
            &["run", "examples/triage.json", "--trigger", "nobody={}"],
            "--trigger nobody: no node has this label",
        ),
        (
            &[
                "run",
                "examples/triage.json",
                "--trigger",
                "approval={\"approved\": 3}",
            ],
            "does not match its schema",
        ),
        (&["run", "does/not/exist.json"], "does/not/exist.json"),
    ];
    for (args, message) in cases {
        let out = walkoff(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let out = walkoff(&["run", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not valid JSON at line 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_walkoff1_workflow_runs_and_converts_both_ways() {
    let out = walkoff(&[
        "run",
        "examples/walkoff1/semantics-mix.json",
        "--trigger",
        "approval={\"ok\": 1}",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["nodes"]["start number"]["result"], 10);
    assert_eq!(doc["nodes"]["big enough"]["result"], "left");
    assert_eq!(doc["nodes"]["right"]["status"], "SKIPPED");
    assert_eq!(doc["nodes"]["shout"]["result"], "ECHOING: WENT LEFT");
    assert_eq!(
        doc["nodes"]["echo transformed"]["result"],
        "ECHOING: ECHOING: WENT LEFT"
    );
    assert_eq!(doc["nodes"]["echo array"]["result"], json!([1, 2, 3]));
    assert_eq!(doc["nodes"]["after trigger"]["result"], json!({"ok": 1}));

    let dir = tempfile::tempdir().unwrap();
    let canonical = walkoff(&[
        "convert",
        "examples/walkoff1/semantics-mix.json",
        "--to",
        "walkoff",
    ]);
    assert_eq!(canonical.status.code(), Some(0));
    let path = write(dir.path(), "canonical.json", &json_out(&canonical));
    let back = walkoff(&["convert", path.to_str().unwrap(), "--to", "walkoff1"]);
    let original: Value = serde_json::from_str(
        &std::fs::read_to_string("examples/walkoff1/semantics-mix.json").unwrap(),
    )
    .unwrap();
    assert_eq!(json_out(&back), original);
}

#[test]
fn the_readme_example_workflow_is_valid_and_runs() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("{\"id\": \"demo\"").expect("README example");
    let end = start + readme[start..].find("\n```").unwrap();
    let doc: Value = serde_json::from_str(&readme[start..end]).expect("README example is JSON");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "demo.json", &doc);
    let path = path.to_str().unwrap();
    assert_eq!(walkoff(&["validate", path]).status.code(), Some(0));
    let out = walkoff(&["run", path, "--trigger", "approve={\"ok\": true}", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_out(&out);
    assert_eq!(doc["nodes"]["scan"]["result"], json!([22, 443]));
    assert_eq!(doc["nodes"]["close"]["status"], "SKIPPED");
}

fn pause_workflow(dir: &Path, seconds: f64, timeout_ms: u64, attempts: u32) -> PathBuf {
    write(
        dir,
        "pause.json",
        &json!({
            "id": "p", "name": "p", "start": "wait",
            "nodes": [
                {"label": "wait", "kind": "action", "app": "basics", "action": "pause",
                 "timeout_ms": timeout_ms, "retry": {"attempts": attempts},
                 "parameters": [{"name": "seconds", "value": seconds}]},
                {"label": "after", "kind": "action", "app": "basics", "action": "hello_world"}
            ],
            "branches": [{"from": "wait", "to": "after"}]
        }),
    )
}

#[test]
fn an_action_past_its_timeout_is_retried_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = pause_workflow(dir.path(), 5.0, 50, 2);
    let out = walkoff(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json_out(&out);
    assert_eq!(doc["nodes"]["wait"]["status"], "FAILURE");
    assert_eq!(doc["nodes"]["wait"]["attempts"], 2);
    assert_eq!(
        doc["nodes"]["wait"]["error"],
        "timed out after 50 ms (after 2 attempts)"
    );
    assert_eq!(doc["nodes"]["after"]["status"], "SKIPPED");
}

#[test]
fn ctrl_c_aborts_the_execution() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = pause_workflow(dir.path(), 60.0, 120_000, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["run", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Once the action is running, the interrupt handler is in place.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("wait") && line.contains("EXECUTING") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let text = rest.join("\n");
    assert!(text.contains("wait") && text.contains("ABORTED"), "{text}");
    assert!(text.contains("workflow ABORTED"), "{text}");
    assert!(rest.last().unwrap().ends_with(": ABORTED"), "{text}");
}

#[test]
fn trigger_data_may_name_the_trigger_by_id() {
    let out = walkoff(&[
        "run",
        "examples/walkoff1/semantics-mix.json",
        "--trigger",
        "b605c4c1-2766-5661-97e9-37178f209bf7={\"by\": \"id\"}",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json_out(&out)["nodes"]["approval"]["result"],
        json!({"by": "id"})
    );
}

#[test]
fn plan_shows_the_compiled_graph_as_text_and_as_dot() {
    let out = walkoff(&["plan", "examples/triage.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("greet (start): action basics.hello_world 1.0.0 -> alert, threshold\n"),
        "{text}"
    );
    assert!(
        text.contains("severity: condition -> escalate, close_ticket\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 12);
    let digest = text.lines().last().unwrap();
    assert!(digest.starts_with("digest: sha256:"), "{text}");
    assert_eq!(digest.len(), "digest: sha256:".len() + 64, "{text}");

    let out = walkoff(&["plan", "examples/triage.json", "--dot"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph \"Alert triage\" {\n"), "{dot}");
    // The same plan, by the same digest.
    let comment = format!("  comment=\"{}\";\n", &digest["digest: ".len()..]);
    assert!(dot.contains(&comment), "{dot}");
    assert!(dot.ends_with("}\n"));
    let nodes: Vec<&str> = dot.lines().filter(|l| l.contains(" [label=")).collect();
    assert_eq!(nodes.len(), 11, "{dot}");
    assert!(
        nodes
            .iter()
            .any(|l| l.contains("\"severity\\ncondition\", shape=diamond")),
        "{dot}"
    );
    assert!(
        nodes
            .iter()
            .any(|l| l.contains("\"greet\\n") && l.contains("style=bold")),
        "{dot}"
    );
    // One DOT edge per branch of the file.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string("examples/triage.json").unwrap()).unwrap();
    let edges = dot.lines().filter(|l| l.contains(" -> ")).count();
    assert_eq!(edges, doc["branches"].as_array().unwrap().len(), "{dot}");

    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.json",
        &json!({"id": "b", "name": "b", "start": "ghost",
                "nodes": [{"label": "a", "kind": "action", "app": "basics", "action": "hello_world"}]}),
    );
    let out = walkoff(&["plan", bad.to_str().unwrap(), "--dot"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));
}
