//! `walkoff run`: run one workflow in-process on the in-memory bus, print its progress, and exit
//! with its outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use futures::StreamExt;
use serde_json::Value;
use walkoff_dataflow::{
    compile, Bus, ExecutionSummary, MemoryBus, Runtime, RuntimeConfig, SubmitError,
};
use walkoff_executors::{ExecutorConfig, LocalExecutor};
use walkoff_schema::{load_workflow_file, EventKind, NodeStatus, WorkflowStatus};

use crate::EXIT_INVALID;

#[derive(Args)]
pub struct RunArgs {
    /// The workflow file (walkoff or WALKOFF 1.0 JSON).
    file: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Print one JSON document at the end instead of a line per status change.
    #[arg(long)]
    json: bool,
}

/// What a user gives an execution on the command line (`run` and `submit`).
#[derive(Args)]
pub struct InputArgs {
    /// Override a workflow variable: NAME=JSON (text that is not JSON is taken as a string).
    #[arg(long = "var", value_name = "NAME=JSON")]
    vars: Vec<String>,
    /// Give a global's value: NAME=JSON.
    #[arg(long = "global", value_name = "NAME=JSON")]
    globals: Vec<String>,
    /// Data for a trigger, delivered when it is reached: LABEL=JSON (or id=JSON).
    #[arg(long = "trigger", value_name = "LABEL=JSON")]
    triggers: Vec<String>,
}

/// Split `NAME=JSON`; text that is not JSON becomes a JSON string.
fn parse_assignment(flag: &str, text: &str) -> Result<(String, Value), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("--{flag} {text}: expected NAME=JSON"));
    };
    if name.trim().is_empty() {
        return Err(format!("--{flag} {text}: the name is empty"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((name.trim().to_string(), value))
}

pub(crate) fn parse_all(
    flag: &str,
    items: &[String],
) -> Result<BTreeMap<String, Value>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for item in items {
        match parse_assignment(flag, item) {
            Ok((name, value)) => {
                if out.insert(name.clone(), value).is_some() {
                    errors.push(format!("--{flag} {name} is given more than once"));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Values given as `--var`, `--global` and `--trigger` (each NAME=JSON), or every error at once.
pub(crate) type Inputs = (
    BTreeMap<String, Value>,
    BTreeMap<String, Value>,
    BTreeMap<String, Value>,
);

pub(crate) fn parse_inputs(args: &InputArgs) -> Result<Inputs, ExitCode> {
    match (
        parse_all("var", &args.vars),
        parse_all("global", &args.globals),
        parse_all("trigger", &args.triggers),
    ) {
        (Ok(v), Ok(g), Ok(t)) => Ok((v, g, t)),
        (v, g, t) => {
            let errors = [v.err(), g.err(), t.err()].into_iter().flatten().flatten();
            Err(invalid(errors))
        }
    }
}

/// Compile `workflow` (problems name `file`) and check trigger data against its triggers, which may
/// be named by label or id; the data comes back keyed by label.
pub(crate) fn check_workflow(
    file: &std::path::Path,
    workflow: &Arc<walkoff_schema::Workflow>,
    catalog: &walkoff_schema::AppCatalog,
    globals: Option<&BTreeSet<String>>,
    triggers: BTreeMap<String, Value>,
) -> Result<(walkoff_dataflow::Plan, BTreeMap<String, Value>), ExitCode> {
    let plan = compile(Arc::clone(workflow), catalog, globals).map_err(|problems| {
        invalid(
            problems
                .0
                .iter()
                .map(|p| format!("{}: {p}", file.display())),
        )
    })?;
    let mut errors = Vec::new();
    let mut checked = BTreeMap::new();
    for (name, data) in triggers {
        match plan.find(&name) {
            None => errors.push(format!("--trigger {name}: no node has this label")),
            Some(index) => match walkoff_dataflow::trigger::check(&plan, index, &data) {
                Err(e) => errors.push(format!("--trigger {name}: {e}")),
                Ok(()) => {
                    checked.insert(plan.nodes[index].label.clone(), data);
                }
            },
        }
    }
    if errors.is_empty() {
        Ok((plan, checked))
    } else {
        Err(invalid(errors))
    }
}

pub(crate) fn invalid(lines: impl IntoIterator<Item = String>) -> ExitCode {
    for line in lines {
        eprintln!("error: {line}");
    }
    ExitCode::from(EXIT_INVALID)
}

pub async fn run(args: RunArgs) -> ExitCode {
    let (workflow, _) = match load_workflow_file(&args.file) {
        Ok(loaded) => loaded,
        Err(e) => return invalid([format!("{}: {e}", args.file.display())]),
    };
    let (vars, globals, triggers) = match parse_inputs(&args.inputs) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let registry = walkoff_apps::builtin_registry();
    let catalog = Arc::new(registry.catalog());
    let workflow = Arc::new(workflow);

    // Everything a user gave is checked before anything runs.
    let global_names: BTreeSet<String> = globals.keys().cloned().collect();
    let (_, triggers) = match check_workflow(
        &args.file,
        &workflow,
        &catalog,
        Some(&global_names),
        triggers,
    ) {
        Ok(checked) => checked,
        Err(code) => return code,
    };

    let bus: Arc<dyn Bus> = MemoryBus::new();
    let executor = LocalExecutor::new(
        Arc::clone(&bus),
        &registry,
        ExecutorConfig::default().concurrency,
    );
    let runtime = Runtime::start(
        Arc::clone(&bus),
        Arc::new(executor),
        catalog,
        RuntimeConfig::default(),
    );
    let execution_id = match runtime.submit(workflow, vars, &globals).await {
        Ok(id) => id,
        Err(SubmitError::Bus(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => return invalid([e.to_string()]),
    };

    let mut summary = ExecutionSummary::new(&execution_id);
    let mut events = Box::pin(runtime.events(&execution_id, 1));
    let mut aborting = false;
    let mut interrupt = Interrupt::listen();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = interrupt.recv(), if !aborting => {
                aborting = true;
                eprintln!("interrupted: aborting execution {execution_id}");
                let _ = runtime.abort(&execution_id).await;
                continue;
            }
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: lost the event stream: {e}");
                return ExitCode::FAILURE;
            }
        };
        summary.apply(&event);
        if !args.json {
            print_event(&event);
        }
        if let EventKind::Node(node) = &event.kind {
            if node.status == NodeStatus::AwaitingData && node.shard.is_none() {
                match triggers.get(&node.label) {
                    Some(data) => {
                        if let Err(e) = runtime
                            .trigger(&execution_id, &node.node_id, data.clone())
                            .await
                        {
                            eprintln!("error: trigger '{}': {e}", node.label);
                        }
                    }
                    None if !aborting => {
                        aborting = true;
                        eprintln!(
                            "trigger '{}' awaits data, and none was given (--trigger '{}=JSON'): aborting",
                            node.label, node.label
                        );
                        let _ = runtime.abort(&execution_id).await;
                    }
                    None => {}
                }
            }
        }
    }

    runtime.shutdown().await;
    bus.close().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        println!("execution {execution_id}: {}", summary.status);
    }
    exit_code(summary.status)
}

/// 0 for a completed execution, 1 for any other end.
pub(crate) fn exit_code(status: WorkflowStatus) -> ExitCode {
    match status {
        WorkflowStatus::Completed => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

pub(crate) fn print_event(event: &walkoff_schema::Event) {
    let time = event.at.format("%H:%M:%S%.3f");
    match &event.kind {
        EventKind::Workflow { status, error, .. } => match error {
            Some(e) => println!("{time}  workflow {status}: {e}"),
            None => println!("{time}  workflow {status}"),
        },
        EventKind::Node(node) => {
            let label = match node.shard {
                Some(shard) => format!("{}[{shard}]", node.label),
                None => node.label.clone(),
            };
            let mut line = format!("{time}  {label:<24} {:<13}", node.status.as_str());
            if node.attempt > 1 {
                line.push_str(&format!(" attempt {}", node.attempt));
            }
            if let Some(params) = &node.parameters {
                if !params.is_empty() {
                    line.push_str(&format!(" {}", Value::Object(params.clone())));
                }
            }
            if let Some(result) = &node.result {
                line.push_str(&format!(" => {}", truncate(&result.to_string(), 200)));
            }
            if let Some(error) = &node.error {
                line.push_str(&format!(" error: {error}"));
            }
            println!("{line}");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// SIGINT and SIGTERM, listened for from creation on, so a signal that comes early is not missed.
pub(crate) struct Interrupt {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupt {
    pub(crate) fn listen() -> Interrupt {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Interrupt {
                signals: signal(SignalKind::interrupt())
                    .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        Interrupt {}
    }

    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        #[cfg(unix)]
        std::future::pending::<()>().await;
    }
}
