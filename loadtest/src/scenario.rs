//! The workloads: each scenario as a walkoff workflow on the diagnostics app, and how many
//! executions and actions one run holds.

use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use walkoff_schema::Workflow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// N sequential no-op actions.
    Chain,
    /// One parallel action over N items, then a join.
    Fanout,
    /// N executions of a 3-step workflow submitted at once.
    Concurrent,
    /// A random DAG of N nodes with conditions, transforms and joins.
    Branching,
    /// The concurrent scenario (steps of 50 ms) while a worker and an executor are killed.
    Chaos,
    /// Gateway mode: `executeWorkflow` of a 3-step workflow 10 × N times, then N subscribers on
    /// one execution and N subscribers on N executions (event-to-client latency, drops, memory).
    Subscribers,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Chain => "chain",
            ScenarioKind::Fanout => "fanout",
            ScenarioKind::Concurrent => "concurrent",
            ScenarioKind::Branching => "branching",
            ScenarioKind::Chaos => "chaos",
            ScenarioKind::Subscribers => "subscribers",
        }
    }
}

/// One run's work.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: ScenarioKind,
    pub size: usize,
    pub workflow: Workflow,
    /// Executions submitted at once.
    pub executions: usize,
    /// Actions (shards included) one execution runs, at most.
    pub actions_per_execution: usize,
    /// What per-step overhead divides by: sequential steps for a chain, actions otherwise.
    pub steps: usize,
}

fn noop(label: &str) -> Value {
    json!({"label": label, "kind": "action", "app": "diagnostics", "action": "noop"})
}

fn edges(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Array(
        pairs
            .into_iter()
            .map(|(from, to)| json!({"from": from, "to": to}))
            .collect(),
    )
}

fn build(doc: Value) -> Workflow {
    Workflow::from_canonical(doc).expect("generated workflows are valid")
}

/// A chain of `n` no-op actions.
pub fn chain(n: usize, id: &str, step: Value) -> Workflow {
    let n = n.max(1);
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let mut node = step.clone();
            node["label"] = json!(format!("s{i}"));
            node
        })
        .collect();
    build(json!({
        "id": id, "name": id, "start": "s0", "nodes": nodes,
        "branches": edges((1..n).map(|i| (format!("s{}", i - 1), format!("s{i}")))),
    }))
}

/// The workload of `kind` at `size`; `seed` makes branching DAGs reproducible.
pub fn workload(kind: ScenarioKind, size: usize, seed: u64) -> Workload {
    let size = size.max(1);
    match kind {
        ScenarioKind::Chain => Workload {
            kind,
            size,
            workflow: chain(size, "chain", noop("")),
            executions: 1,
            actions_per_execution: size,
            steps: size,
        },
        ScenarioKind::Fanout => {
            let items: Vec<usize> = (0..size).collect();
            let workflow = build(json!({
                "id": "fanout", "name": "fanout", "start": "fan",
                "nodes": [
                    {"label": "fan", "kind": "action", "app": "diagnostics", "action": "noop",
                     "parallelized": true, "concurrency": size.min(4096),
                     "parameters": [{"name": "value", "value": items, "parallelized": true}]},
                    {"label": "join", "kind": "transform", "code": "result = len(fan.result)"}
                ],
                "branches": [{"from": "fan", "to": "join"}]
            }));
            Workload {
                kind,
                size,
                workflow,
                executions: 1,
                actions_per_execution: size,
                steps: size,
            }
        }
        ScenarioKind::Concurrent => Workload {
            kind,
            size,
            workflow: chain(3, "three-steps", noop("")),
            executions: size,
            actions_per_execution: 3,
            steps: 3 * size,
        },
        ScenarioKind::Subscribers => Workload {
            kind,
            size,
            workflow: chain(3, "three-steps", noop("")),
            executions: 10 * size,
            actions_per_execution: 3,
            steps: 30 * size,
        },
        ScenarioKind::Chaos => Workload {
            kind,
            size,
            workflow: chain(
                3,
                "three-slow-steps",
                json!({"kind": "action", "app": "diagnostics", "action": "sleep",
                       "parameters": [{"name": "ms", "value": 50}]}),
            ),
            executions: size,
            actions_per_execution: 3,
            steps: 3 * size,
        },
        ScenarioKind::Branching => {
            let (workflow, actions) = branching(size, seed);
            Workload {
                kind,
                size,
                workflow,
                executions: 1,
                actions_per_execution: actions,
                steps: actions,
            }
        }
    }
}

/// A random DAG of `n` nodes: actions (most), conditions selecting some of their children, and
/// transforms; nodes with several parents join. Returns the workflow and its action count.
pub fn branching(n: usize, seed: u64) -> (Workflow, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let label = |i: usize| format!("n{i}");
    // Parents among the last 64 nodes keep the graph deep and wide at once.
    let parents: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            if i == 0 {
                return Vec::new();
            }
            let count = rng.random_range(1..=3.min(i));
            let mut picks: Vec<usize> = (0..count)
                .map(|_| i - 1 - rng.random_range(0..i.min(64)))
                .collect();
            picks.sort_unstable();
            picks.dedup();
            picks
        })
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (child, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(child);
        }
    }
    let mut nodes = Vec::with_capacity(n);
    let mut actions = 0;
    for (i, kids) in children.iter().enumerate() {
        let roll: f64 = rng.random();
        let node = if i > 0 && roll < 0.15 && !kids.is_empty() {
            // Select each child with probability 3/4 (at least one).
            let mut picked: Vec<String> = kids
                .iter()
                .filter(|_| rng.random_bool(0.75))
                .map(|&c| label(c))
                .collect();
            if picked.is_empty() {
                picked.push(label(kids[0]));
            }
            json!({"label": label(i), "kind": "condition",
                   "code": format!("selected_node = [{}]", picked.join(", "))})
        } else if i > 0 && roll < 0.30 {
            json!({"label": label(i), "kind": "transform", "code": "result = 1"})
        } else {
            actions += 1;
            noop(&label(i))
        };
        nodes.push(node);
    }
    let branches = edges(
        parents
            .iter()
            .enumerate()
            .flat_map(|(c, ps)| ps.iter().map(move |&p| (label(p), label(c)))),
    );
    let workflow = build(json!({
        "id": format!("branching-{n}"), "name": "branching", "start": "n0",
        "nodes": nodes, "branches": branches,
    }));
    (workflow, actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn compiles(workflow: &Workflow) {
        let catalog = walkoff_apps::builtin_registry().catalog();
        walkoff_dataflow::compile(Arc::new(workflow.clone()), &catalog, None)
            .unwrap_or_else(|p| panic!("{} does not compile: {p}", workflow.id));
    }

    #[test]
    fn every_scenario_is_a_valid_workflow_of_the_asked_size() {
        for kind in ScenarioKind::value_variants() {
            for size in [1, 10, 200] {
                let w = workload(*kind, size, 7);
                compiles(&w.workflow);
                assert_eq!(w.size, size);
                match kind {
                    ScenarioKind::Chain => assert_eq!(w.workflow.nodes.len(), size),
                    ScenarioKind::Fanout => assert_eq!(w.actions_per_execution, size),
                    ScenarioKind::Concurrent | ScenarioKind::Chaos => {
                        assert_eq!((w.executions, w.workflow.nodes.len()), (size, 3))
                    }
                    ScenarioKind::Branching => assert_eq!(w.workflow.nodes.len(), size),
                    ScenarioKind::Subscribers => {
                        assert_eq!((w.executions, w.workflow.nodes.len()), (10 * size, 3))
                    }
                }
            }
        }
    }

    #[test]
    fn branching_dags_are_reproducible_and_mix_node_kinds() {
        let (a, actions) = branching(2000, 42);
        let (b, _) = branching(2000, 42);
        assert_eq!(a, b, "the same seed gives the same DAG");
        let (c, _) = branching(2000, 43);
        assert_ne!(a, c);
        let kinds = |k: &str| {
            serde_json::to_value(&a).unwrap()["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["kind"] == k)
                .count()
        };
        assert_eq!(kinds("action"), actions);
        assert!(kinds("condition") > 100 && kinds("transform") > 100);
        // Joins: some node has several parents.
        let mut parents = std::collections::HashMap::new();
        for b in &a.branches {
            *parents.entry(b.to.clone()).or_insert(0) += 1;
        }
        assert!(parents.values().any(|&n| n > 1));
        compiles(&a);
    }
}
