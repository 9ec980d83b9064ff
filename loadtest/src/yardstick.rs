//! How fast the machine is at the moment of a run, measured the way the reference figures the
//! goals were set beside were (`redis-benchmark` `XADD k MAXLEN ~ 100000 * field value` on a plain
//! `redis-server`, 50 clients: 51.8 k ops/s one command at a time, 462 k with 16 in flight). This
//! VM's speed moves by about 2× over hours; a report carrying its yardstick can be set beside the
//! goals and beside a report made at another moment.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::deployment::{start_redis, Persistence, Tracked};

/// The reference figures' `XADD`s per second, 50 clients with one command in flight each.
pub const REFERENCE_XADD_PER_S: f64 = 51_800.0;
/// The same with 16 commands in flight per client: mostly the server's CPU.
pub const REFERENCE_XADD_PIPELINED_PER_S: f64 = 462_000.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MachineSpeed {
    /// `XADD`s per second from 50 clients, one command in flight each.
    pub xadd_per_s: f64,
    /// `XADD`s per second from 50 clients, 16 in flight each.
    pub xadd_pipelined_per_s: f64,
    /// `xadd_pipelined_per_s` over the reference's: below 1, the machine is slower now than when
    /// the reference figures were measured.
    pub vs_reference: f64,
}

/// Measure on a `redis-server` of its own, with nothing else of the harness running.
pub fn measure() -> anyhow::Result<MachineSpeed> {
    let dir = tempfile::tempdir()?;
    let (mut server, port) = start_redis(dir.path(), Persistence::None)?;
    let measured = xadd_per_s(port, 100_000, 1).and_then(|one_at_a_time| {
        let pipelined = xadd_per_s(port, 400_000, 16)?;
        Ok(MachineSpeed {
            xadd_per_s: one_at_a_time.round(),
            xadd_pipelined_per_s: pipelined.round(),
            vs_reference: crate::stats::round(pipelined / REFERENCE_XADD_PIPELINED_PER_S),
        })
    });
    server.stop(Duration::from_secs(5));
    measured
}

/// `redis-benchmark`'s requests per second for `requests` `XADD`s from 50 clients.
fn xadd_per_s(port: u16, requests: usize, pipeline: usize) -> anyhow::Result<f64> {
    let child = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            "50",
            "--csv",
        ])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string()])
        .args(["XADD", "k", "MAXLEN", "~", "100000", "*", "field", "value"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("redis-benchmark must be installed (apt-get install redis-tools)")?;
    let _tracked = Tracked::new(&child);
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_csv_rps(&String::from_utf8_lossy(&output.stdout))
}

/// The `rps` column of `redis-benchmark --csv`'s one result line.
fn parse_csv_rps(csv: &str) -> anyhow::Result<f64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = header
        .iter()
        .position(|h| h.trim_matches('"') == "rps")
        .with_context(|| format!("no rps column in redis-benchmark's output: {csv:?}"))?;
    let row = lines
        .next()
        .with_context(|| format!("no result in redis-benchmark's output: {csv:?}"))?;
    let value = row
        .split("\",\"")
        .nth(column)
        .map(|v| v.trim_matches('"'))
        .with_context(|| format!("no rps value in {row:?}"))?;
    value
        .parse()
        .with_context(|| format!("rps {value:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rps_column_is_read_from_redis_benchmarks_csv() {
        // Its test name holds spaces and the command's own commas are not split on.
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                   \"XADD k MAXLEN ~ 100000 * field value\",\"298507.47\",\"2.451\",\"0.928\"\n";
        assert_eq!(parse_csv_rps(csv).unwrap(), 298_507.47);
        let err = parse_csv_rps("Could not connect to Redis at 127.0.0.1:1").unwrap_err();
        assert!(format!("{err:#}").contains("rps"), "{err:#}");
    }
}
