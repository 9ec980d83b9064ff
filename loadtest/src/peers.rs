//! Peers run side by side with walkoff, on the same Redis server: Celery (chain, chord, many
//! chains at once), from a virtualenv the harness makes on first use with pinned versions; and the
//! floors, the Redis Streams round trip a chain step cannot beat, bare and with a durable step's
//! writes (`floor.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::deployment::{Started, Tracked};
use crate::floor::Floor;
use crate::scenario::ScenarioKind;
use crate::stats::{process_tree, process_usage, ProcessUsage, Run};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Celery,
    /// Not an engine: the bare two-hop round trip through Redis Streams, the platform's floor for
    /// a chain step on this machine (chain only).
    Floor,
    /// Not an engine: the same round trip carrying the Redis writes of a durable walkoff step (log,
    /// events, request, result, acknowledgements, fences), with no engine work (chain only).
    DurableFloor,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Celery => "celery",
            Peer::Floor => "floor",
            Peer::DurableFloor => "durable-floor",
        }
    }
}

/// Where the peers' scripts are: `$WALKOFF_LOADTEST_PEERS`, or `loadtest/peers` of the source tree.
fn peers_dir() -> PathBuf {
    std::env::var_os("WALKOFF_LOADTEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("peers"))
}

/// A virtualenv with `requirements`, made once beside the harness binary.
fn virtualenv(peer: &str, requirements: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let venv = exe
        .parent()
        .context("the harness binary has a directory")?
        .join("loadtest-peers")
        .join(format!("{peer}-venv"));
    let python = venv.join("bin/python");
    let marker = venv.join(".requirements");
    let wanted = std::fs::read_to_string(requirements)?;
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    eprintln!(
        "making the {peer} virtualenv in {} (first use)",
        venv.display()
    );
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 with venv must be installed")?;
    if !made.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "-r"])
        .arg(requirements)
        .status()?;
    if !installed.success() {
        bail!("pip install -r {} failed", requirements.display());
    }
    std::fs::write(&marker, wanted)?;
    Ok(python)
}

/// Measured runs of `scenario` on a peer, and its processes' usage.
pub fn run(
    peer: Peer,
    redis_url: &str,
    scenario: ScenarioKind,
    size: usize,
    repeat: usize,
) -> anyhow::Result<(Vec<Run>, Vec<ProcessUsage>)> {
    match peer {
        Peer::Celery => celery(redis_url, scenario, size, repeat),
        Peer::Floor | Peer::DurableFloor if scenario == ScenarioKind::Chain => {
            let floor = if peer == Peer::Floor {
                Floor::Bare
            } else {
                Floor::Durable
            };
            crate::floor::run(floor, redis_url, size, repeat)
        }
        Peer::Floor | Peer::DurableFloor => {
            bail!("the floor is a chain's: compare it with the chain scenario")
        }
    }
}

fn celery(
    redis_url: &str,
    scenario: ScenarioKind,
    size: usize,
    repeat: usize,
) -> anyhow::Result<(Vec<Run>, Vec<ProcessUsage>)> {
    if !matches!(
        scenario,
        ScenarioKind::Chain | ScenarioKind::Fanout | ScenarioKind::Concurrent
    ) {
        bail!(
            "Celery has no faithful form of the {} scenario (its canvas has no conditions, and \
             killing its workers loses tasks by design); compare chain, fanout or concurrent",
            scenario.name()
        );
    }
    let dir = peers_dir().join("celery");
    let python = virtualenv("celery", &dir.join("requirements.txt"))?;
    let celery = python.with_file_name("celery");
    // Two prefork processes: one per core, Celery's default on this machine.
    let worker = Command::new(&celery)
        .args(["-A", "tasks", "worker", "--concurrency=2", "--pool=prefork"])
        .args([
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ])
        .args(["--loglevel=WARNING"])
        .current_dir(&dir)
        .env("WALKOFF_BENCH_REDIS", redis_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the celery worker")?;
    let mut worker = Started::new("celery-worker", worker);
    let bench = Command::new(&python)
        .arg("bench.py")
        .args([scenario.name(), &size.to_string(), &repeat.to_string()])
        .current_dir(&dir)
        .env("WALKOFF_BENCH_REDIS", redis_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run the celery benchmark")?;
    let tracked = Tracked::new(&bench);
    let output = bench
        .wait_with_output()
        .context("run the celery benchmark")?;
    drop(tracked);
    // Usage of the worker and its pool processes, before they stop.
    let usage = worker
        .pid()
        .map(|pid| {
            let tree: Vec<ProcessUsage> = process_tree(pid)
                .into_iter()
                .filter_map(|p| process_usage(p, "celery"))
                .collect();
            vec![ProcessUsage {
                name: format!("celery worker ({} processes)", tree.len()),
                cpu_s: crate::stats::round(tree.iter().map(|u| u.cpu_s).sum()),
                peak_rss_mb: crate::stats::round(tree.iter().map(|u| u.peak_rss_mb).sum()),
            }]
        })
        .unwrap_or_default();
    worker.stop(Duration::from_secs(10));
    if !output.status.success() {
        bail!(
            "the celery benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut runs = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let doc: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("the celery benchmark printed {line:?}"))?;
        let list = |key: &str| -> Vec<f64> {
            doc[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default()
        };
        runs.push(Run {
            wall_ms: doc["wall_ms"].as_f64().unwrap_or(0.0),
            latencies_ms: list("latencies_ms"),
            completions_ms: list("completions_ms"),
            lost: 0,
        });
    }
    Ok((runs, usage))
}
