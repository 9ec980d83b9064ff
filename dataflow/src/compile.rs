//! Compile a workflow into a [`Plan`]: validate it, then turn each node into an operator wired to its
//! parents and children.

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::DiGraph;
use petgraph::Direction;
use serde_json::Value;
use walkoff_schema::validate::validate_with_graph;
use walkoff_schema::{
    AppCatalog, AppRef, NodeKind, Parameter, Problems, RetryPolicy, ValidationContext, Variant,
    Workflow,
};

use crate::plans::PlanDigest;
use crate::script::StarlarkChecker;

/// Shards of one parallel action in flight at once, unless the node says otherwise.
pub const DEFAULT_PARALLEL_CONCURRENCY: usize = 16;
/// Per-attempt action timeout, unless the node says otherwise.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a trigger waits for its data, unless the node says otherwise: a week, for a person
/// to answer; then it fails, so an execution nobody answers does not stay in memory for ever.
pub const DEFAULT_TRIGGER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A compiled workflow: the petgraph of operators, plus the lookups the runtime needs.
#[derive(Debug)]
pub struct Plan {
    pub workflow: Arc<Workflow>,
    /// The workflow's digest: plans of equal workflows are interchangeable.
    pub digest: PlanDigest,
    /// Edges between plan nodes; a node's weight is its index in `nodes`.
    pub graph: DiGraph<usize, ()>,
    pub nodes: Vec<PlanNode>,
    pub start: usize,
    pub by_id: FxHashMap<String, usize>,
    pub by_label: FxHashMap<String, usize>,
    /// Workflow variable defaults, by id and by name.
    pub variables: HashMap<String, Value>,
}

#[derive(Debug)]
pub struct PlanNode {
    pub id: String,
    pub label: String,
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
    pub op: Operator,
}

/// One operator per node kind.
#[derive(Debug)]
pub enum Operator {
    Action(ActionOp),
    Parallel(ParallelOp),
    Condition(ScriptOp),
    Transform(ScriptOp),
    Trigger(TriggerOp),
}

impl Operator {
    /// What the operator does, in a few words (`action basics.echo_string 1.0.0`, `condition`).
    pub fn describe(&self) -> String {
        match self {
            Operator::Action(a) => format!("action {}.{} {}", a.app.name, a.action, a.app.version),
            Operator::Parallel(p) => format!(
                "parallel action {}.{} {} over '{}', {} at once",
                p.action.app.name, p.action.action, p.action.app.version, p.split, p.concurrency
            ),
            Operator::Condition(_) => "condition".into(),
            Operator::Transform(_) => "transform".into(),
            Operator::Trigger(_) => "trigger".into(),
        }
    }
}

#[derive(Debug)]
pub struct ActionOp {
    pub app: AppRef,
    pub action: String,
    pub priority: u8,
    pub parameters: Vec<ParamSource>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Debug)]
pub struct ParamSource {
    pub name: String,
    pub source: Source,
}

#[derive(Debug)]
pub enum Source {
    Static(Value),
    NodeResult {
        node: usize,
        pointer: Option<String>,
    },
    Variable(String),
    Global(String),
}

#[derive(Debug)]
pub struct ParallelOp {
    pub action: ActionOp,
    /// The parameter whose list is split into shards.
    pub split: String,
    pub concurrency: usize,
}

#[derive(Debug)]
pub struct ScriptOp {
    pub code: Arc<str>,
}

#[derive(Debug)]
pub struct TriggerOp {
    pub schema: Arc<jsonschema::Validator>,
    /// How long the trigger waits for its data once reached.
    pub timeout: Duration,
}

impl Plan {
    /// The compiled graph in Graphviz's DOT language (`walkoff plan FILE --dot | dot -Tsvg`):
    /// one node per operator, shaped by kind (action: box, parallel action: double box,
    /// condition: diamond, transform: ellipse, trigger: house), the start in bold, the edges of
    /// the plan's graph, and the plan's digest as the graph's comment.
    pub fn to_dot(&self) -> String {
        fn quoted(text: &str) -> String {
            format!(
                "\"{}\"",
                text.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        }
        let mut dot = format!(
            "digraph {} {{\n  comment={};\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n",
            quoted(&self.workflow.name),
            quoted(&self.digest.to_string())
        );
        for (i, node) in self.nodes.iter().enumerate() {
            let shape = match &node.op {
                Operator::Action(_) => "box",
                Operator::Parallel(_) => "box, peripheries=2",
                Operator::Condition(_) => "diamond",
                Operator::Transform(_) => "ellipse",
                Operator::Trigger(_) => "house",
            };
            let bold = if i == self.start { ", style=bold" } else { "" };
            dot.push_str(&format!(
                "  n{i} [label={}, shape={shape}{bold}];\n",
                quoted(&format!("{}\n{}", node.label, node.op.describe()))
            ));
        }
        let mut edges: Vec<(usize, usize)> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(from, to)| (self.graph[from], self.graph[to]))
            .collect();
        edges.sort_unstable();
        for (from, to) in edges {
            dot.push_str(&format!("  n{from} -> n{to};\n"));
        }
        dot.push_str("}\n");
        dot
    }

    /// Find a node by id, or else by label.
    pub fn find(&self, id_or_label: &str) -> Option<usize> {
        self.by_id
            .get(id_or_label)
            .or_else(|| self.by_label.get(id_or_label))
            .copied()
    }

    /// Global names or ids referenced by the workflow's parameters.
    pub fn referenced_globals(&self) -> BTreeSet<String> {
        let mut globals = BTreeSet::new();
        for node in &self.nodes {
            let action = match &node.op {
                Operator::Action(a) => a,
                Operator::Parallel(p) => &p.action,
                _ => continue,
            };
            for p in &action.parameters {
                if let Source::Global(key) = &p.source {
                    globals.insert(key.clone());
                }
            }
        }
        globals
    }
}

/// Validate `workflow` against `catalog` (and, when given, the set of existing globals) and compile
/// it. Returns every problem found when it is not valid.
pub fn compile(
    workflow: Arc<Workflow>,
    catalog: &AppCatalog,
    globals: Option<&BTreeSet<String>>,
) -> Result<Plan, Problems> {
    let digest = PlanDigest::of(&workflow);
    compile_with_digest(workflow, catalog, globals, digest)
}

/// [`compile`], for a caller that already knows the workflow's digest.
pub(crate) fn compile_with_digest(
    workflow: Arc<Workflow>,
    catalog: &AppCatalog,
    globals: Option<&BTreeSet<String>>,
    digest: PlanDigest,
) -> Result<Plan, Problems> {
    let ctx = ValidationContext {
        catalog,
        globals,
        scripts: &StarlarkChecker,
    };
    let (problems, wg) = validate_with_graph(&workflow, &ctx);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let start = wg.graph[wg.index_of[&workflow.start]];
    let by_id: FxHashMap<String, usize> = workflow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();
    let by_label: FxHashMap<String, usize> = workflow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.label.clone(), i))
        .collect();

    let mut nodes = Vec::with_capacity(workflow.nodes.len());
    for (i, node) in workflow.nodes.iter().enumerate() {
        let index = wg.index_of[&node.id];
        let neighbours = |direction| {
            let mut v: Vec<usize> = wg
                .graph
                .neighbors_directed(index, direction)
                .map(|n| wg.graph[n])
                .collect();
            // petgraph lists neighbours newest edge first; keep the file's order and drop repeats.
            v.sort_unstable();
            v.dedup();
            v
        };
        // The start runs first: an edge into it can only come from a node that never runs.
        let parents = if i == start {
            Vec::new()
        } else {
            neighbours(Direction::Incoming)
        };
        let mut children = neighbours(Direction::Outgoing);
        children.retain(|&c| c != start);
        let op = match &node.kind {
            NodeKind::Action(action) => {
                let api = catalog
                    .get(&action.app, &action.app_version)
                    .expect("validated: the app exists");
                let op = ActionOp {
                    app: AppRef {
                        name: api.name.clone(),
                        version: api.app_version.clone(),
                    },
                    action: action.action.clone(),
                    priority: action.priority,
                    parameters: action
                        .parameters
                        .iter()
                        .map(|p| param_source(p, &by_id))
                        .collect(),
                    timeout: action
                        .timeout_ms
                        .map(Duration::from_millis)
                        .unwrap_or(DEFAULT_ACTION_TIMEOUT),
                    retry: action.retry.unwrap_or_default(),
                };
                if action.parallelized {
                    let split = action
                        .parameters
                        .iter()
                        .find(|p| p.parallelized)
                        .expect("validated: one parallelized parameter")
                        .name
                        .clone();
                    Operator::Parallel(ParallelOp {
                        action: op,
                        split,
                        concurrency: action.concurrency.unwrap_or(DEFAULT_PARALLEL_CONCURRENCY),
                    })
                } else {
                    Operator::Action(op)
                }
            }
            NodeKind::Condition(s) => Operator::Condition(ScriptOp {
                code: s.code.as_str().into(),
            }),
            NodeKind::Transform(s) => Operator::Transform(ScriptOp {
                code: s.code.as_str().into(),
            }),
            NodeKind::Trigger(t) => Operator::Trigger(TriggerOp {
                schema: Arc::new(
                    jsonschema::validator_for(&t.schema).expect("validated: a valid schema"),
                ),
                timeout: t
                    .timeout_ms
                    .map_or(DEFAULT_TRIGGER_TIMEOUT, Duration::from_millis),
            }),
        };
        nodes.push(PlanNode {
            id: node.id.clone(),
            label: node.label.clone(),
            parents,
            children,
            op,
        });
    }
    let variables = workflow
        .variables
        .iter()
        .flat_map(|v| {
            [
                (v.id.clone(), v.value.clone()),
                (v.name.clone(), v.value.clone()),
            ]
        })
        .collect();
    Ok(Plan {
        graph: wg.graph,
        digest,
        workflow,
        nodes,
        start,
        by_id,
        by_label,
        variables,
    })
}

fn param_source(p: &Parameter, by_id: &FxHashMap<String, usize>) -> ParamSource {
    let reference = || p.value.as_str().unwrap_or_default().to_string();
    let source = match p.variant {
        Variant::StaticValue => Source::Static(p.value.clone()),
        Variant::ActionResult => Source::NodeResult {
            node: by_id[p.value.as_str().unwrap_or_default()],
            pointer: p.pointer.clone(),
        },
        Variant::WorkflowVariable => Source::Variable(reference()),
        Variant::Global => Source::Global(reference()),
    };
    ParamSource {
        name: p.name.clone(),
        source,
    }
}
