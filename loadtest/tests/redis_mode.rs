//! The harness in redis mode, as a user runs it: its own `redis-server`, workers and executors,
//! the floors measured beside walkoff on the same server, the machine's yardstick, one JSON document.

use std::process::Command;

/// Run the harness with `args` and `--json`, as a user would; the document it printed.
fn run_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_walkoff-loadtest"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_chain_runs_beside_its_floors_and_reports_them() {
    let doc = run_json(&[
        "chain",
        "--size",
        "5",
        "--mode",
        "redis",
        "--repeat",
        "2",
        "--compare",
        "floor",
        "--compare",
        "durable-floor",
        "--yardstick",
    ]);
    assert_eq!(doc["scenario"], "chain");
    assert_eq!(doc["mode"], "redis");
    for engine in ["walkoff", "floor", "durable-floor"] {
        let result = &doc["results"][engine];
        assert_eq!(result["runs"], 2, "{engine}: {result}");
        let per_step = result["per_step_ms"].as_f64().unwrap();
        assert!(per_step > 0.0, "{engine}: {result}");
    }
    // The usage of the processes it started is part of the report.
    let names: Vec<&str> = doc["results"]["walkoff"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"redis-server"), "{names:?}");
    assert!(doc["ratio"]["floor"].as_f64().unwrap() > 0.0);
    assert!(doc["ratio"]["durable-floor"].as_f64().unwrap() > 0.0);
    // Each floor's answering side ran as a process of its own, and was measured.
    for floor in ["floor", "durable-floor"] {
        let processes = &doc["results"][floor]["processes"];
        assert_eq!(
            processes[0]["name"], "floor answerer",
            "{floor}: {processes}"
        );
    }
    // The machine's speed, measured by the reference figures' yardstick before the runs.
    let machine = &doc["machine"];
    assert!(
        machine["xadd_per_s"].as_f64().unwrap() > 1000.0,
        "{machine}"
    );
    let pipelined = machine["xadd_pipelined_per_s"].as_f64().unwrap();
    assert!(pipelined > 1000.0, "{machine}");
    let vs_reference = machine["vs_reference"].as_f64().unwrap();
    assert!(
        (vs_reference - pipelined / 462_000.0).abs() < 0.01,
        "{machine}"
    );
}

#[test]
fn a_peer_that_cannot_run_the_workload_is_reported_beside_walkoffs_figures() {
    // The floor is a chain's: on a fan-out it fails, and the run still reports walkoff.
    let doc = run_json(&[
        "fanout",
        "--size",
        "10",
        "--mode",
        "redis",
        "--repeat",
        "1",
        "--compare",
        "floor",
    ]);
    assert_eq!(doc["results"]["walkoff"]["runs"], 1, "{doc}");
    assert!(doc["results"].get("floor").is_none(), "{doc}");
    let why = doc["peer_failures"]["floor"].as_str().unwrap_or_default();
    assert!(why.contains("chain"), "{doc}");
}
