//! An interrupted load test stops what it started: its `redis-server`, workers and executors.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Children of `parent`, read from `/proc`.
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, then the parent's id.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// Running (not a zombie waiting for its parent to reap it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn sigterm_stops_the_servers_and_processes_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("loadtest.log");
    let mut harness = Command::new(env!("CARGO_BIN_EXE_walkoff-loadtest"))
        .args([
            "chain", "--size", "10", "--mode", "redis", "--repeat", "100000",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let pid = harness.id();
    // Redis, 2 workers and 2 executors, then runs under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let found = children(pid);
        if found.len() >= 5 {
            break found;
        }
        if let Some(status) = harness.try_wait().unwrap() {
            panic!("the load test ended early: {status}\n{}", output());
        }
        assert!(
            Instant::now() < deadline,
            "the load test did not start its processes"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(1));

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = harness.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = harness.kill();
            panic!("the load test ignored SIGTERM\n{}", output());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{}", output());
    let left: Vec<u32> = started.into_iter().filter(|&p| alive(p)).collect();
    for &p in &left {
        // Not ours to leave behind, whatever the assertion says.
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "still running after the load test: {left:?}"
    );
}
