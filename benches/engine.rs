//! Engine benchmarks: compile+validate of large random DAGs, and the in-process runtime's overhead
//! per node (a chain of no-op actions) and per shard (one wide parallel action).
//!
//! Run: `cargo bench --bench engine`. Figures are recorded in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use divan::Bencher;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use walkoff_dataflow::{compile, Bus, MemoryBus, PlanDigest, Runtime, RuntimeConfig};
use walkoff_executors::{ExecutorConfig, LocalExecutor};
use walkoff_schema::{AppCatalog, Workflow};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

/// A random DAG of `n` nodes: basics actions, some passing a parent's result on, and one transform
/// in twenty. Each node has one to three parents among the fifty before it.
fn random_dag(n: usize, seed: u64) -> Workflow {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut nodes = Vec::with_capacity(n);
    let mut branches = Vec::with_capacity(n * 2);
    for i in 0..n {
        let label = format!("n{i}");
        let mut parents: Vec<usize> = if i == 0 {
            Vec::new()
        } else {
            (0..rng.random_range(1..=3))
                .map(|_| rng.random_range(i.saturating_sub(50)..i))
                .collect()
        };
        parents.sort_unstable();
        parents.dedup();
        let node = match (i, rng.random_range(0..20)) {
            (0, _) | (_, 0..=9) => {
                json!({"label": label, "kind": "action", "app": "basics", "action": "hello_world"})
            }
            (_, 10..=18) => {
                json!({"label": label, "kind": "action", "app": "basics", "action": "echo_string",
                "parameters": [{"name": "call", "variant": "ACTION_RESULT", "value": format!("n{}", parents[0])}]})
            }
            _ => json!({"label": label, "kind": "transform",
                "code": format!("result = str(n{}.result).upper()", parents[0])}),
        };
        nodes.push(node);
        for p in parents {
            branches.push(json!({"from": format!("n{p}"), "to": format!("n{i}")}));
        }
    }
    Workflow::from_canonical(
        json!({"id": "dag", "name": "dag", "start": "n0", "nodes": nodes, "branches": branches}),
    )
    .unwrap()
}

fn catalog() -> &'static AppCatalog {
    static CATALOG: OnceLock<AppCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| walkoff_apps::builtin_registry().catalog())
}

#[divan::bench(args = [10_000, 100_000], sample_count = 5, sample_size = 1)]
fn compile_and_validate(bencher: Bencher, n: usize) {
    let workflow = Arc::new(random_dag(n, 7));
    bencher.bench(|| {
        let plan = compile(Arc::clone(&workflow), catalog(), None).expect("valid");
        divan::black_box(plan.nodes.len())
    });
}

/// A runtime with the built-in apps on an in-memory bus, kept across iterations.
struct Engine {
    tokio: tokio::runtime::Runtime,
    bus: Arc<MemoryBus>,
    runtime: Runtime,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bus = MemoryBus::new();
        let runtime = tokio.block_on(async {
            let dyn_bus: Arc<dyn Bus> = bus.clone();
            let registry = walkoff_apps::builtin_registry();
            let executor = LocalExecutor::new(
                Arc::clone(&dyn_bus),
                &registry,
                ExecutorConfig::default().concurrency,
            );
            Runtime::start(
                dyn_bus,
                Arc::new(executor),
                Arc::new(registry.catalog()),
                RuntimeConfig::default(),
            )
        });
        Engine {
            tokio,
            bus,
            runtime,
        }
    })
}

/// Submit `workflow` and wait for its final event.
fn run_to_end(engine: &Engine, workflow: &Arc<Workflow>) {
    engine.tokio.block_on(async {
        let id = engine
            .runtime
            .submit(
                Arc::clone(workflow),
                BTreeMap::new(),
                &BTreeMap::<String, Value>::new(),
            )
            .await
            .unwrap();
        let mut events = Box::pin(engine.runtime.events(&id, 1));
        let mut last = None;
        while let Some(event) = events.next().await {
            last = Some(event.unwrap());
        }
        assert_eq!(
            last.and_then(|e| e.workflow_status()),
            Some(walkoff_schema::WorkflowStatus::Completed)
        );
        engine.bus.forget_events(&id);
    });
}

fn chain(n: usize) -> Workflow {
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"label": format!("n{i}"), "kind": "action", "app": "basics", "action": "hello_world"}))
        .collect();
    let branches: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}))
        .collect();
    Workflow::from_canonical(json!({"id": "chain", "name": "chain", "start": "n0", "nodes": nodes, "branches": branches}))
        .unwrap()
}

fn fan_out(shards: usize, concurrency: usize) -> Workflow {
    let items: Vec<usize> = (0..shards).collect();
    Workflow::from_canonical(json!({"id": "fan", "name": "fan", "start": "fan", "nodes": [
        {"label": "fan", "kind": "action", "app": "basics", "action": "echo_array", "parallelized": true,
         "concurrency": concurrency,
         "parameters": [{"name": "data", "value": items, "parallelized": true}]}
    ]}))
    .unwrap()
}

/// What a worker pays per start: compiling the start's workflow (before plans were cached by
/// digest, every start) or finding the cached plan (one SHA-256 digest of the workflow's JSON and
/// a cache lookup). A chain of 100 plain actions, and the triage example (11 nodes: conditions,
/// transforms, a trigger with a schema, a parallel action).
#[divan::bench(args = ["chain-100 compile", "chain-100 digest", "triage compile", "triage digest"], sample_count = 50, sample_size = 10)]
fn plan_of_a_start(bencher: Bencher, case: &str) {
    let (name, how) = case.split_once(' ').unwrap();
    let workflow = Arc::new(match name {
        "chain-100" => chain(100),
        _ => {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/triage.json");
            walkoff_schema::load_workflow(&std::fs::read_to_string(path).unwrap())
                .unwrap()
                .0
        }
    });
    match how {
        "compile" => bencher.bench(|| {
            let plan = compile(Arc::clone(&workflow), catalog(), None).expect("valid");
            divan::black_box(plan.nodes.len())
        }),
        _ => bencher.bench(|| divan::black_box(PlanDigest::of(&workflow))),
    }
}

/// Per-node overhead: divide the time by the chain's 1000 nodes.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn runtime_chain_1000(bencher: Bencher) {
    let engine = engine();
    let workflow = Arc::new(chain(1000));
    bencher.bench(|| run_to_end(engine, &workflow));
}

/// Per-shard overhead: divide the time by the 10,000 shards. Default concurrency (16) and wide (1024).
#[divan::bench(args = [16, 1024], sample_count = 10, sample_size = 1)]
fn runtime_parallel_10000_shards(bencher: Bencher, concurrency: usize) {
    let engine = engine();
    let workflow = Arc::new(fan_out(10_000, concurrency));
    bencher.bench(|| run_to_end(engine, &workflow));
}

/// One condition, start to result, evaluated where the `walkoff` binary evaluates it (a script
/// host: a line of JSON each way through a pipe) and, for comparison, in this process.
#[divan::bench(args = ["in-process", "script-host"], sample_count = 200, sample_size = 10)]
fn condition(bencher: Bencher, isolation: &str) {
    use walkoff_dataflow::execution::ScriptKind;
    use walkoff_dataflow::{ScriptHostConfig, ScriptIsolation, ScriptJob, ScriptLimits};
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let isolation = match isolation {
        "in-process" => ScriptIsolation::InProcess,
        _ => ScriptIsolation::Hosts(Arc::new(walkoff_dataflow::script_host::ScriptHosts::new(
            ScriptHostConfig {
                hosts: 1,
                ..ScriptHostConfig::walkoff(
                    env!("CARGO_BIN_EXE_walkoff").into(),
                    walkoff_dataflow::script_host::DEFAULT_HOST_MEMORY_MIB,
                )
            },
        ))),
    };
    let job = ScriptJob {
        execution_id: "bench".into(),
        node_id: "severity".into(),
        attempt: 1,
        kind: ScriptKind::Condition,
        code: Arc::from(
            "if alert.result[\"score\"] >= 5:\n    selected_node = escalate\nelse:\n    selected_node = close",
        ),
        parents: vec![("alert".into(), json!({"score": 7, "host": "10.0.0.1"}))],
        children: vec![
            ("escalate".into(), "escalate".into()),
            ("close".into(), "close".into()),
        ],
    };
    let limits = ScriptLimits::default();
    // The host starts with the first evaluation, not inside the measurement.
    tokio.block_on(isolation.run(job.clone(), limits));
    bencher.bench_local(|| tokio.block_on(isolation.run(job.clone(), limits)));
}
