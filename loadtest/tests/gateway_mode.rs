//! The harness in gateway mode, as a user runs it: its own `walkoff serve`, executions through
//! `executeWorkflow` each followed by a subscription, then the subscribers cases — every event
//! delivered to every subscriber, with latencies and the server's memory per subscription.

use std::process::Command;

#[test]
fn the_subscribers_scenario_reports_throughput_latency_drops_and_memory() {
    let output = Command::new(env!("CARGO_BIN_EXE_walkoff-loadtest"))
        .args([
            "subscribers",
            "--mode",
            "gateway",
            "--size",
            "20",
            "--repeat",
            "1",
            "--in-flight",
            "16",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["mode"], "gateway");
    assert_eq!(doc["in_flight"], 16);
    let walkoff = &doc["results"]["walkoff"];
    assert_eq!(walkoff["runs"], 1, "{walkoff}");
    assert!(walkoff["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(walkoff["processes"][0]["name"], "walkoff serve");

    let cases = doc["subscribers"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{cases:?}");
    // The floor: the same fan-out from a bare WebSocket broadcaster.
    assert!(cases[2]["case"].as_str().unwrap().contains("floor"));
    for (case, executions) in cases.iter().zip([1, 20, 1]) {
        assert_eq!(case["subscribers"], 20, "{case}");
        assert_eq!(case["executions"], executions, "{case}");
        assert_eq!(case["dropped"], 0, "{case}");
        assert_eq!(case["failed"], 0, "{case}");
        // The paced workflow: 20 steps, each with a start and an end, plus the workflow's own
        // events: every subscriber got every one.
        let delivered = case["events_delivered"].as_u64().unwrap();
        assert!(delivered >= 20 * 42, "{case}");
        assert_eq!(delivered % 20, 0, "{case}");
        assert!(case["p99_ms"].as_f64().unwrap() > 0.0, "{case}");
        assert!(
            case["server_rss_subscribed_mb"].as_f64().unwrap() > 0.0,
            "{case}"
        );
    }
}
