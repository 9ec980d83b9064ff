//! What a run measured and the arithmetic on it: latency percentiles (HdrHistogram), throughput,
//! throughput over time, and the CPU time and peak memory of processes.

use hdrhistogram::Histogram;
use serde::Serialize;

/// One measured run of one engine.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// From the first submission to the last completion.
    pub wall_ms: f64,
    /// Per execution, from its submission to its completion.
    pub latencies_ms: Vec<f64>,
    /// When each execution completed, from the first submission.
    pub completions_ms: Vec<f64>,
    /// Executions that did not complete.
    pub lost: usize,
}

/// CPU time and peak resident memory of one process.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessUsage {
    pub name: String,
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
}

/// What the report shows for one engine (the mean over the measured runs; percentiles over all).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub wall_ms: f64,
    pub per_step_ms: f64,
    pub throughput_per_s: f64,
    pub actions_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_memory_mb: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessUsage>,
    /// Each measured run's wall time, to show the spread.
    pub walls_ms: Vec<f64>,
}

/// Latency percentiles in milliseconds, recorded in microseconds with 3 significant digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Latencies in µs, 1 µs to an hour, three significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, latencies_ms: &[f64]) {
    for &ms in latencies_ms {
        let us = (ms * 1000.0).round().max(1.0) as u64;
        histogram.saturating_record(us);
    }
}

/// The latencies of runs a soak has measured, folded into one histogram of fixed size, so the
/// harness's own memory does not grow with every run it keeps (what a soak measures is the
/// engine's memory, in this very process in the embedded mode).
pub struct FoldedRuns {
    histogram: Histogram<u64>,
}

impl Default for FoldedRuns {
    fn default() -> Self {
        FoldedRuns {
            histogram: latency_histogram(),
        }
    }
}

impl FoldedRuns {
    /// Fold every run but the last into the histogram, keeping their wall times.
    pub fn fold(&mut self, runs: &mut [Run]) {
        let Some((_, older)) = runs.split_last_mut() else {
            return;
        };
        for run in older {
            record(&mut self.histogram, &run.latencies_ms);
            run.latencies_ms = Vec::new();
            run.completions_ms = Vec::new();
        }
    }
}

pub fn percentiles(latencies_ms: &[f64]) -> Percentiles {
    percentiles_with(latencies_ms, None)
}

/// Percentiles of these latencies and of those folded before.
pub fn percentiles_with(latencies_ms: &[f64], folded: Option<&FoldedRuns>) -> Percentiles {
    let mut histogram = latency_histogram();
    if let Some(folded) = folded {
        let _ = histogram.add(&folded.histogram);
    }
    record(&mut histogram, latencies_ms);
    if histogram.is_empty() {
        return Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: histogram.max() as f64 / 1000.0,
    }
}

/// Summarise measured runs of a workload with `executions` executions of `steps` steps (in all)
/// and `actions` actions (in all).
pub fn summarize(
    runs: &[Run],
    folded: Option<&FoldedRuns>,
    executions: usize,
    steps: usize,
    actions: usize,
    processes: Vec<ProcessUsage>,
    redis_memory_mb: Option<f64>,
) -> Summary {
    let n = runs.len().max(1) as f64;
    let wall_ms = runs.iter().map(|r| r.wall_ms).sum::<f64>() / n;
    let all: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    let p = percentiles_with(&all, folded);
    let per_s = |count: usize| {
        if wall_ms > 0.0 {
            count as f64 / (wall_ms / 1000.0)
        } else {
            0.0
        }
    };
    Summary {
        wall_ms: round(wall_ms),
        per_step_ms: round(wall_ms / steps.max(1) as f64),
        throughput_per_s: round(per_s(executions)),
        actions_per_s: round(per_s(actions)),
        p50_ms: round(p.p50),
        p90_ms: round(p.p90),
        p99_ms: round(p.p99),
        max_ms: round(p.max),
        peak_rss_mb: round(processes.iter().map(|p| p.peak_rss_mb).sum()),
        cpu_s: round(processes.iter().map(|p| p.cpu_s).sum()),
        runs: runs.len(),
        redis_memory_mb: redis_memory_mb.map(round),
        processes,
        walls_ms: runs.iter().map(|r| round(r.wall_ms)).collect(),
    }
}

/// Completions per bucket of `bucket_ms`, as (bucket start in s, completions per second).
pub fn throughput_over_time(completions_ms: &[f64], bucket_ms: f64) -> Vec<(f64, f64)> {
    let Some(last) = completions_ms.iter().copied().reduce(f64::max) else {
        return Vec::new();
    };
    let buckets = (last / bucket_ms).floor() as usize + 1;
    let mut counts = vec![0usize; buckets];
    for &t in completions_ms {
        counts[((t.max(0.0)) / bucket_ms).floor() as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as f64 * bucket_ms / 1000.0, c as f64 * 1000.0 / bucket_ms))
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Three significant decimals are plenty for milliseconds.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU seconds (user + system) and peak RSS of a live process, from `/proc`.
pub fn process_usage(pid: u32, name: &str) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Some(ProcessUsage {
        name: name.to_string(),
        cpu_s: round(ticks / clock_ticks()),
        peak_rss_mb: round(peak_kb / 1024.0),
    })
}

/// Kernel clock ticks per second (USER_HZ): 100 on Linux for every architecture we run on.
fn clock_ticks() -> f64 {
    100.0
}

/// The process and its descendants (a Celery worker's pool processes, say).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(child) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let ppid = std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s[s.rfind(')')? + 2..].to_string();
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    });
                if ppid == Some(parent) && !tree.contains(&child) {
                    tree.push(child);
                }
            }
        }
        i += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_latencies() {
        let latencies: Vec<f64> = (1..=1000).map(|i| i as f64).collect();
        let p = percentiles(&latencies);
        // HdrHistogram keeps three significant digits.
        assert!((p.p50 - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p90 - 900.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99 - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() <= 1.0, "{p:?}");
        assert_eq!(percentiles(&[]).p99, 0.0);
        let sub_ms = percentiles(&[0.25, 0.25, 0.5]);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert!((sub_ms.p50 - 0.25).abs() < 0.001, "{sub_ms:?}");
    }

    #[test]
    fn summaries_divide_by_the_right_counts() {
        let runs = vec![
            Run {
                wall_ms: 100.0,
                latencies_ms: vec![10.0, 20.0],
                completions_ms: vec![10.0, 100.0],
                lost: 0,
            },
            Run {
                wall_ms: 300.0,
                latencies_ms: vec![30.0, 40.0],
                completions_ms: vec![30.0, 300.0],
                lost: 0,
            },
        ];
        let usage = vec![
            ProcessUsage {
                name: "a".into(),
                cpu_s: 1.0,
                peak_rss_mb: 10.0,
            },
            ProcessUsage {
                name: "b".into(),
                cpu_s: 0.5,
                peak_rss_mb: 5.0,
            },
        ];
        let s = summarize(&runs, None, 2, 200, 400, usage, Some(3.0));
        assert_eq!(s.wall_ms, 200.0);
        assert_eq!(s.per_step_ms, 1.0);
        assert_eq!(s.throughput_per_s, 10.0);
        assert_eq!(s.actions_per_s, 2000.0);
        assert_eq!((s.cpu_s, s.peak_rss_mb), (1.5, 15.0));
        assert_eq!(s.walls_ms, [100.0, 300.0]);
    }

    #[test]
    fn throughput_is_bucketed_per_second() {
        let series = throughput_over_time(&[0.0, 50.0, 99.0, 100.0, 250.0], 100.0);
        assert_eq!(series, [(0.0, 30.0), (0.1, 10.0), (0.2, 10.0)]);
    }

    #[test]
    fn this_process_has_usage() {
        let me = process_usage(std::process::id(), "me").unwrap();
        assert!(me.peak_rss_mb > 1.0);
        assert!(process_tree(std::process::id()).contains(&std::process::id()));
    }
}
