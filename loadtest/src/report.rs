//! Reports: one JSON document per scenario and size, a Markdown summary, and SVG charts (latency
//! histogram, throughput over time, cost against size for a sweep).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::deployment::ChaosReport;
use crate::gateway::SubscriberCase;
use crate::stats::{median, throughput_over_time, Run, Summary};
use crate::yardstick::{MachineSpeed, REFERENCE_XADD_PER_S, REFERENCE_XADD_PIPELINED_PER_S};

/// The results of one scenario at one size.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub size: usize,
    pub mode: String,
    pub workers: usize,
    pub executors: usize,
    /// Actions each executor runs at once (redis mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_concurrency: Option<usize>,
    pub results: BTreeMap<String, Summary>,
    /// Per peer: its wall time over walkoff's (above 1: walkoff is faster).
    pub ratio: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosReport>,
    /// Per peer that could not finish the workload: why (its error's last line).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_failures: BTreeMap<String, String>,
    /// Resident memory of walkoff's processes after each measured run (a soak shows no growth).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss_after_each_run_mb: Vec<f64>,
    /// Executions each measured run completes.
    pub executions_per_run: usize,
    /// Redis's memory (`used_memory`) after each measured run (redis mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_mb_after_each_run: Vec<f64>,
    /// Executions in flight at once (gateway mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
    /// The subscribers scenario's cases (gateway mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribers: Vec<SubscriberCase>,
    /// The machine's speed right before the runs (`--yardstick`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineSpeed>,
    /// The raw runs, for charts; not in the JSON.
    #[serde(skip)]
    pub runs: BTreeMap<String, Vec<Run>>,
}

impl Report {
    pub fn compute_ratios(&mut self) {
        let Some(ours) = self.results.get("walkoff").map(|s| s.wall_ms) else {
            return;
        };
        for (engine, summary) in &self.results {
            if engine != "walkoff" && ours > 0.0 {
                self.ratio
                    .insert(engine.clone(), crate::stats::round(summary.wall_ms / ours));
            }
        }
    }
}

pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "## {} {} ({} mode{})\n\n",
            r.scenario,
            r.size,
            r.mode,
            if r.mode == "redis" {
                format!(
                    ", {} workers, {} executors{}",
                    r.workers,
                    r.executors,
                    r.executor_concurrency
                        .map(|c| format!(" × {c} actions at once"))
                        .unwrap_or_default()
                )
            } else if let Some(in_flight) = r.in_flight {
                format!(
                    ": walkoff serve over HTTP and WebSockets, {in_flight} executions in flight, \
                     each subscribed to before it is executed"
                )
            } else {
                String::new()
            }
        ));
        out.push_str("| engine | wall ms | per step ms | executions/s | actions/s | p50 ms | p99 ms | max ms | peak RSS MB | CPU s |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (engine, s) in &r.results {
            out.push_str(&format!(
                "| {engine} | {:.1} | {:.3} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
                s.wall_ms,
                s.per_step_ms,
                s.throughput_per_s,
                s.actions_per_s,
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                s.peak_rss_mb,
                s.cpu_s
            ));
        }
        for (peer, ratio) in &r.ratio {
            if peer == "floor" {
                out.push_str(&format!(
                    "\nwalkoff / floor (the bare two-hop round trip through Redis Streams on this \
                     machine, no engine work): **{:.1}×**\n",
                    1.0 / ratio
                ));
            } else if peer == "durable-floor" {
                out.push_str(&format!(
                    "\nwalkoff / durable floor (the same round trip with the Redis writes of a \
                     durable step — log, events, request, result, acknowledgements, fences — and \
                     no engine work): **{:.1}×**\n",
                    1.0 / ratio
                ));
            } else {
                out.push_str(&format!("\n{peer} / walkoff wall time: **{ratio:.1}×**\n"));
            }
        }
        if let Some(machine) = &r.machine {
            out.push_str(&format!(
                "\nMachine: `redis-benchmark` XADD {:.1} k/s (50 clients), {:.0} k/s (16 in flight \
                 each): **{:.2}×** the speed at which the goals' reference figures were measured \
                 ({:.1} k / {:.0} k).\n",
                machine.xadd_per_s / 1000.0,
                machine.xadd_pipelined_per_s / 1000.0,
                machine.vs_reference,
                REFERENCE_XADD_PER_S / 1000.0,
                REFERENCE_XADD_PIPELINED_PER_S / 1000.0,
            ));
        }
        for (peer, why) in &r.peer_failures {
            out.push_str(&format!("\n{peer} did not finish: {why}\n"));
        }
        if let Some(chaos) = &r.chaos {
            out.push_str(&format!(
                "\nChaos: killed {} at {:.0} ms; lost {} (must be 0); nodes whose end was committed twice {} (must be 0); actions run again because their executor died {} (expected: delivery is at least once); longest pause in completions after the kill {:.0} ms.\n",
                chaos.killed.join(" and "),
                chaos.killed_at_ms,
                chaos.lost,
                chaos.duplicate_final_events,
                chaos.actions_handed_out_again,
                chaos.recovery_ms
            ));
        }
        if !r.subscribers.is_empty() {
            out.push_str("\n| run | subscribers on | subscribers | executions | events delivered | dropped | failed | p50 ms | p99 ms | max ms | server RSS before / subscribed MB | per subscription KB | server / client CPU µs per event delivered |\n");
            out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for c in &r.subscribers {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} |\n",
                    c.run,
                    c.case,
                    c.subscribers,
                    c.executions,
                    c.events_delivered,
                    c.dropped,
                    c.failed,
                    c.p50_ms,
                    c.p99_ms,
                    c.max_ms,
                    c.server_rss_before_mb,
                    c.server_rss_subscribed_mb,
                    c.memory_per_subscription_kb,
                    c.server_cpu_ms * 1000.0 / c.events_delivered.max(1) as f64,
                    c.client_cpu_ms * 1000.0 / c.events_delivered.max(1) as f64
                ));
            }
            out.push_str("\nLatency: from an event's commit (its `at`) to its arrival at the subscriber's socket.\n");
            // Each run's one-execution case beside the floor measured right after it.
            let pairs: Vec<(&SubscriberCase, &SubscriberCase)> = r
                .subscribers
                .iter()
                .filter(|c| c.executions == 1 && !c.case.contains("floor"))
                .filter_map(|one| {
                    r.subscribers
                        .iter()
                        .find(|c| c.run == one.run && c.case.contains("floor"))
                        .map(|floor| (one, floor))
                })
                .collect();
            if !pairs.is_empty() {
                let ratio = |f: fn(&SubscriberCase) -> f64| -> Vec<f64> {
                    pairs
                        .iter()
                        .map(|(one, floor)| f(one) / f(floor).max(0.001))
                        .collect()
                };
                let p99 = ratio(|c| c.p99_ms);
                let p50 = ratio(|c| c.p50_ms);
                let walkoff_p99: Vec<f64> = pairs.iter().map(|(one, _)| one.p99_ms).collect();
                let floor_p99: Vec<f64> = pairs.iter().map(|(_, floor)| floor.p99_ms).collect();
                out.push_str(&format!(
                    "\nOne execution, median of {} runs: p99 {:.1} ms, floor {:.1} ms; walkoff / \
                     floor (the same fan-out from a bare WebSocket broadcaster, same client) p99 \
                     **{:.1}×**, p50 {:.1}× (each run: {}).\n",
                    pairs.len(),
                    median(&walkoff_p99),
                    median(&floor_p99),
                    median(&p99),
                    median(&p50),
                    p99.iter()
                        .map(|r| format!("{r:.1}×"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let memory = [
            (
                "Resident memory of walkoff's processes",
                &r.rss_after_each_run_mb,
            ),
            ("Redis used_memory", &r.redis_mb_after_each_run),
        ];
        for (what, values) in memory {
            if values.len() >= 10 {
                // A soak: where it starts, where it is after a tenth of the runs (warm-up), its
                // highest, and where it ends.
                let warm = values[values.len() / 10];
                let max = values.iter().copied().fold(0.0f64, f64::max);
                out.push_str(&format!(
                    "\n{what} after each of {} runs of {} executions (MB): first {:.1}, after a tenth {:.1}, highest {:.1}, last {:.1} (every value in report.json).\n",
                    values.len(),
                    r.executions_per_run,
                    values[0],
                    warm,
                    max,
                    values[values.len() - 1]
                ));
            } else if !values.is_empty() {
                out.push_str(&format!("\n{what} after each run (MB): {values:?}\n"));
            }
        }
        out.push('\n');
    }
    out
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

type Chart = anyhow::Result<()>;

/// Latency distribution per engine: the share of executions in each of 30 buckets.
pub fn latency_histogram(report: &Report, path: &Path) -> Chart {
    let all: Vec<f64> = report
        .runs
        .values()
        .flatten()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    let top = all.iter().copied().fold(0.0f64, f64::max).max(0.001) * 1.05;
    let buckets = 30usize;
    let width = top / buckets as f64;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} {}: latency distribution", report.scenario, report.size),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..top, 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("share of executions")
        .draw()?;
    for (i, (engine, runs)) in report.runs.iter().enumerate() {
        let latencies: Vec<f64> = runs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
        if latencies.is_empty() {
            continue;
        }
        let mut counts = vec![0usize; buckets];
        for l in &latencies {
            counts[((l / width) as usize).min(buckets - 1)] += 1;
        }
        let color = COLORS[i % COLORS.len()];
        let total = latencies.len() as f64;
        chart
            .draw_series(counts.iter().enumerate().map(|(b, &c)| {
                let x0 = b as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, c as f64 / total)],
                    color.mix(0.5).filled(),
                )
            }))?
            .label(engine.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Completions per second over time, per engine (the last measured run of each).
pub fn throughput_chart(report: &Report, path: &Path) -> Chart {
    let series: Vec<(String, Vec<(f64, f64)>)> = report
        .runs
        .iter()
        .filter_map(|(engine, runs)| {
            let run = runs.last()?;
            let bucket = (run.wall_ms / 40.0).max(1.0);
            Some((
                engine.clone(),
                throughput_over_time(&run.completions_ms, bucket),
            ))
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let y_max = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    line_chart(
        path,
        &format!("{} {}: completions over time", report.scenario, report.size),
        (
            "time since submission (s)",
            "executions completed per second",
        ),
        (x_max, y_max),
        series,
    )
}

/// Lines on linear axes from 0, one colour and legend entry per series.
fn line_chart(
    path: &Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    (x_max, y_max): (f64, f64),
    series: Vec<(String, Vec<(f64, f64)>)>,
) -> Chart {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max.max(0.001), 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Memory after each run, against executions completed so far: flat after warm-up is a
/// bounded process (a soak: `--repeat` in the hundreds).
pub fn memory_chart(report: &Report, path: &Path) -> Chart {
    let per_run = report.executions_per_run.max(1);
    let mut series = vec![(
        "walkoff processes' resident memory (MB)",
        &report.rss_after_each_run_mb,
    )];
    if !report.redis_mb_after_each_run.is_empty() {
        series.push(("Redis used_memory (MB)", &report.redis_mb_after_each_run));
    }
    let points = |values: &Vec<f64>| -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, mb)| (((i + 1) * per_run) as f64 / 1000.0, *mb))
            .collect()
    };
    let x_max = (report.rss_after_each_run_mb.len() * per_run) as f64 / 1000.0 * 1.05;
    let y_max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.2;
    line_chart(
        path,
        &format!(
            "{} {} ({}): memory over {} runs",
            report.scenario,
            report.size,
            report.mode,
            report.rss_after_each_run_mb.len()
        ),
        ("thousands of executions completed", "MB"),
        (x_max, y_max),
        series
            .into_iter()
            .map(|(label, values)| (label.to_string(), points(values)))
            .collect(),
    )
}

/// Per-step cost against size, per engine, on log–log axes.
pub fn sweep_chart(reports: &[Report], path: &Path) -> Chart {
    let mut engines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in reports {
        for (engine, s) in &r.results {
            engines
                .entry(engine.clone())
                .or_default()
                .push((r.size as f64, s.per_step_ms.max(1e-4)));
        }
    }
    let sizes: Vec<f64> = reports.iter().map(|r| r.size as f64).collect();
    let (x_min, x_max) = (
        sizes.iter().copied().fold(f64::MAX, f64::min).max(1.0),
        sizes.iter().copied().fold(0.0f64, f64::max).max(2.0),
    );
    let costs: Vec<f64> = engines.values().flatten().map(|p| p.1).collect();
    // Whole decades, so the log axis has a labelled tick at each end.
    let decade_below = |x: f64| 10f64.powf(x.log10().floor());
    let (y_min, y_max) = (
        decade_below(costs.iter().copied().fold(f64::MAX, f64::min).min(1.0)),
        decade_below(costs.iter().copied().fold(0.0f64, f64::max).max(1e-3)) * 10.0,
    );
    let scenario = reports.first().map_or("", |r| r.scenario.as_str());
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: cost per step against size"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max * 1.5).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("size")
        .y_desc("ms per step")
        .draw()?;
    for (i, (engine, points)) in engines.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(engine)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Write `report.json`, `summary.md` and the charts into `dir`.
pub fn write(reports: &[Report], dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let json = if reports.len() == 1 {
        serde_json::to_string_pretty(&reports[0])?
    } else {
        serde_json::to_string_pretty(&serde_json::json!({ "sweep": reports }))?
    };
    std::fs::write(dir.join("report.json"), json)?;
    written.push("report.json".to_string());
    let mut summary = markdown(reports);
    for r in reports {
        let stem = format!("{}-{}", r.scenario, r.size);
        latency_histogram(r, &dir.join(format!("{stem}-latency.svg")))?;
        throughput_chart(r, &dir.join(format!("{stem}-throughput.svg")))?;
        written.push(format!("{stem}-latency.svg"));
        written.push(format!("{stem}-throughput.svg"));
        summary.push_str(&format!(
            "![latency]({stem}-latency.svg)\n![throughput]({stem}-throughput.svg)\n\n"
        ));
        // A soak: enough runs to see whether memory settles.
        if r.rss_after_each_run_mb.len() >= 10 {
            let name = format!("{stem}-memory.svg");
            memory_chart(r, &dir.join(&name))?;
            summary.push_str(&format!("![memory over runs]({name})\n\n"));
            written.push(name);
        }
    }
    if reports.len() > 1 {
        let name = format!(
            "{}-sweep.svg",
            reports.first().map_or("sweep", |r| r.scenario.as_str())
        );
        sweep_chart(reports, &dir.join(&name))?;
        summary.push_str(&format!("![cost against size]({name})\n"));
        written.push(name);
    }
    std::fs::write(dir.join("summary.md"), summary)?;
    written.push("summary.md".to_string());
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    fn report(size: usize, ours: f64, theirs: f64) -> Report {
        let run = |wall: f64| Run {
            wall_ms: wall,
            latencies_ms: vec![wall / 2.0, wall],
            completions_ms: vec![wall / 2.0, wall],
            lost: 0,
        };
        let mut results = BTreeMap::new();
        let mut runs = BTreeMap::new();
        for (engine, wall) in [("walkoff", ours), ("celery", theirs)] {
            results.insert(
                engine.to_string(),
                summarize(&[run(wall)], None, 2, size, size, Vec::new(), None),
            );
            runs.insert(engine.to_string(), vec![run(wall)]);
        }
        let mut r = Report {
            scenario: "chain".into(),
            size,
            mode: "redis".into(),
            workers: 2,
            executors: 2,
            executor_concurrency: Some(8),
            results,
            ratio: BTreeMap::new(),
            chaos: None,
            peer_failures: BTreeMap::new(),
            rss_after_each_run_mb: Vec::new(),
            redis_mb_after_each_run: Vec::new(),
            executions_per_run: 1,
            in_flight: None,
            subscribers: Vec::new(),
            machine: None,
            runs,
        };
        r.compute_ratios();
        r
    }

    #[test]
    fn the_json_document_has_the_documented_shape() {
        let r = report(100, 50.0, 270.0);
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(doc["scenario"], "chain");
        assert_eq!(doc["size"], 100);
        assert_eq!(doc["mode"], "redis");
        for engine in ["walkoff", "celery"] {
            for key in [
                "wall_ms",
                "per_step_ms",
                "throughput_per_s",
                "p50_ms",
                "p99_ms",
                "peak_rss_mb",
            ] {
                assert!(doc["results"][engine][key].is_number(), "{engine}.{key}");
            }
        }
        assert_eq!(doc["ratio"]["celery"], 5.4);
        assert!(doc.get("runs").is_none());
        assert!(doc.get("machine").is_none());
    }

    #[test]
    fn the_machines_yardstick_is_set_beside_the_reference() {
        let mut r = report(100, 50.0, 270.0);
        r.machine = Some(MachineSpeed {
            xadd_per_s: 47_025.0,
            xadd_pipelined_per_s: 244_858.0,
            vs_reference: 0.53,
        });
        let md = markdown(std::slice::from_ref(&r));
        assert!(
            md.contains("XADD 47.0 k/s (50 clients), 245 k/s (16 in flight each): **0.53×**"),
            "{md}"
        );
        assert!(md.contains("(51.8 k / 462 k)"), "{md}");
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(doc["machine"]["vs_reference"], 0.53);
    }

    #[test]
    fn a_peer_that_did_not_finish_is_reported_with_its_reason() {
        let mut r = report(100, 50.0, 270.0);
        r.results.remove("celery");
        r.ratio.clear();
        r.peer_failures.insert(
            "celery".into(),
            "celery.exceptions.TimeoutError: The operation timed out.".into(),
        );
        let md = markdown(std::slice::from_ref(&r));
        assert!(md.contains("| walkoff | 50.0 |"), "{md}");
        assert!(
            md.contains("celery did not finish: celery.exceptions.TimeoutError"),
            "{md}"
        );
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(
            doc["peer_failures"]["celery"],
            "celery.exceptions.TimeoutError: The operation timed out."
        );
    }

    #[test]
    fn reports_render_to_markdown_and_svg() {
        let reports = vec![report(10, 5.0, 30.0), report(100, 50.0, 270.0)];
        let md = markdown(&reports);
        assert!(md.contains("| walkoff | 50.0 | 0.500 |"), "{md}");
        assert!(md.contains("celery / walkoff wall time: **5.4×**"), "{md}");
        let dir = tempfile::tempdir().unwrap();
        let written = write(&reports, dir.path()).unwrap();
        assert!(written.contains(&"chain-sweep.svg".to_string()));
        for name in &written {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(!text.is_empty(), "{name}");
            if name.ends_with(".svg") {
                assert!(text.starts_with("<svg"), "{name}");
            }
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["sweep"].as_array().unwrap().len(), 2);
    }
}
