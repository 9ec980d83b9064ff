//! Validation: every problem of a workflow at once, each with a stable code, the node it concerns
//! and a plain message.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use serde_json::Value;

use crate::app_api::{ActionApi, AppCatalog};
use crate::model::{ActionNode, Node, NodeKind, Variant, Workflow};

/// What kind of problem; the string form is stable and part of the CLI's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    UnknownStart,
    DuplicateId,
    DuplicateLabel,
    EmptyLabel,
    DanglingBranch,
    Cycle,
    UnknownApp,
    UnknownAction,
    UnknownParameter,
    DuplicateParameter,
    MissingParameter,
    InvalidStaticValue,
    InvalidParameterSchema,
    UnknownNodeReference,
    NotAnAncestor,
    InvalidPointer,
    UnknownWorkflowVariable,
    UnknownGlobal,
    InvalidParallel,
    InvalidSetting,
    ConditionWithoutChildren,
    ScriptSyntax,
    InvalidTriggerSchema,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::UnknownStart => "unknown_start",
            ProblemCode::DuplicateId => "duplicate_id",
            ProblemCode::DuplicateLabel => "duplicate_label",
            ProblemCode::EmptyLabel => "empty_label",
            ProblemCode::DanglingBranch => "dangling_branch",
            ProblemCode::Cycle => "cycle",
            ProblemCode::UnknownApp => "unknown_app",
            ProblemCode::UnknownAction => "unknown_action",
            ProblemCode::UnknownParameter => "unknown_parameter",
            ProblemCode::DuplicateParameter => "duplicate_parameter",
            ProblemCode::MissingParameter => "missing_parameter",
            ProblemCode::InvalidStaticValue => "invalid_static_value",
            ProblemCode::InvalidParameterSchema => "invalid_parameter_schema",
            ProblemCode::UnknownNodeReference => "unknown_node_reference",
            ProblemCode::NotAnAncestor => "not_an_ancestor",
            ProblemCode::InvalidPointer => "invalid_pointer",
            ProblemCode::UnknownWorkflowVariable => "unknown_workflow_variable",
            ProblemCode::UnknownGlobal => "unknown_global",
            ProblemCode::InvalidParallel => "invalid_parallel",
            ProblemCode::InvalidSetting => "invalid_setting",
            ProblemCode::ConditionWithoutChildren => "condition_without_children",
            ProblemCode::ScriptSyntax => "script_syntax",
            ProblemCode::InvalidTriggerSchema => "invalid_trigger_schema",
        }
    }
}

/// One problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ProblemCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The field or parameter concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Line and column inside a script, for Starlark errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn workflow(code: ProblemCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            node_id: None,
            label: None,
            field: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn node(code: ProblemCode, node: &Node, message: impl Into<String>) -> Problem {
        Problem {
            node_id: Some(node.id.clone()),
            label: Some(node.label.clone()),
            ..Problem::workflow(code, message)
        }
    }

    fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.code.as_str())?;
        if let (Some(label), Some(id)) = (&self.label, &self.node_id) {
            write!(f, " node '{label}' ({id})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " at line {line}, column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems of one workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

/// A syntax error in a condition or transform script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Checks script syntax; the dataflow crate provides the Starlark implementation.
pub trait ScriptChecker {
    fn check(&self, code: &str) -> Result<(), ScriptSyntaxError>;
}

/// What validation checks a workflow against.
pub struct ValidationContext<'a> {
    pub catalog: &'a AppCatalog,
    /// Names or ids of the globals that exist; `None` skips the global checks.
    pub globals: Option<&'a BTreeSet<String>>,
    pub scripts: &'a dyn ScriptChecker,
}

/// Compiled JSON Schemas of app parameters, shared across nodes that use the same action.
type SchemaCache = HashMap<(String, String, String, String), Option<jsonschema::Validator>>;

/// The workflow graph as validation and compilation see it: one petgraph node per workflow node.
pub struct WorkflowGraph {
    pub graph: DiGraph<usize, ()>,
    pub index_of: HashMap<String, NodeIndex>,
}

impl WorkflowGraph {
    fn parents(&self, index: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph
            .neighbors_directed(index, petgraph::Direction::Incoming)
    }
}

/// Check `workflow` and return every problem found; an empty list means it is valid.
pub fn validate(workflow: &Workflow, ctx: &ValidationContext<'_>) -> Vec<Problem> {
    validate_with_graph(workflow, ctx).0
}

/// Like [`validate`], also returning the graph built on the way (for the compiler).
pub fn validate_with_graph(
    workflow: &Workflow,
    ctx: &ValidationContext<'_>,
) -> (Vec<Problem>, WorkflowGraph) {
    let mut problems = Vec::new();

    // Ids and labels.
    let mut graph = DiGraph::with_capacity(workflow.nodes.len(), workflow.branches.len());
    let mut index_of: HashMap<String, NodeIndex> = HashMap::with_capacity(workflow.nodes.len());
    let mut labels: HashMap<String, &Node> = HashMap::with_capacity(workflow.nodes.len());
    for (i, node) in workflow.nodes.iter().enumerate() {
        let index = graph.add_node(i);
        if index_of.insert(node.id.clone(), index).is_some() {
            problems.push(Problem::node(
                ProblemCode::DuplicateId,
                node,
                format!("another node already has the id '{}'", node.id),
            ));
        }
        if node.label.trim().is_empty() {
            problems.push(Problem::node(
                ProblemCode::EmptyLabel,
                node,
                "every node needs a label: scripts address nodes by label",
            ));
            continue;
        }
        let script_name = script_name(&node.label);
        if let Some(other) = labels.insert(script_name.clone(), node) {
            let message = if other.label == node.label {
                format!(
                    "the label '{}' is also used by node {}; scripts address nodes by label, so labels must be unique",
                    node.label, other.id
                )
            } else {
                format!(
                    "the label '{}' becomes '{script_name}' in scripts, the same as node '{}' ({})",
                    node.label, other.label, other.id
                )
            };
            problems.push(Problem::node(ProblemCode::DuplicateLabel, node, message));
        }
    }

    if !index_of.contains_key(&workflow.start) {
        problems.push(
            Problem::workflow(
                ProblemCode::UnknownStart,
                format!(
                    "the start node '{}' is not a node of this workflow",
                    workflow.start
                ),
            )
            .field("start"),
        );
    }

    for (i, branch) in workflow.branches.iter().enumerate() {
        let from = index_of.get(&branch.from);
        let to = index_of.get(&branch.to);
        for (end, id, found) in [("from", &branch.from, from), ("to", &branch.to, to)] {
            if found.is_none() {
                problems.push(
                    Problem::workflow(
                        ProblemCode::DanglingBranch,
                        format!("branch {} ({} -> {}) points {end} '{id}', which is not a node of this workflow",
                            branch.id.as_deref().unwrap_or(&i.to_string()), branch.from, branch.to),
                    )
                    .field(format!("branches[{i}].{end}")),
                );
            }
        }
        if let (Some(&from), Some(&to)) = (from, to) {
            graph.add_edge(from, to, ());
        }
    }
    let wg = WorkflowGraph { graph, index_of };

    // Cycles: every strongly connected component with more than one node, or a self-loop.
    for component in petgraph::algo::tarjan_scc(&wg.graph) {
        let is_cycle =
            component.len() > 1 || wg.graph.find_edge(component[0], component[0]).is_some();
        if is_cycle {
            let mut members: Vec<&Node> = component
                .iter()
                .map(|&ix| &workflow.nodes[wg.graph[ix]])
                .collect();
            members.sort_by_key(|n| wg.index_of[&n.id]);
            let names: Vec<String> = members.iter().map(|n| format!("'{}'", n.label)).collect();
            problems.push(Problem::node(
                ProblemCode::Cycle,
                members[0],
                format!("these nodes form a cycle: {}", names.join(", ")),
            ));
        }
    }

    let variables: HashSet<&str> = workflow
        .variables
        .iter()
        .flat_map(|v| [v.id.as_str(), v.name.as_str()])
        .collect();
    let mut schemas = SchemaCache::new();
    let mut ancestor_search = AncestorSearch::new(wg.graph.node_count());

    for node in &workflow.nodes {
        let index = wg.index_of[&node.id];
        match &node.kind {
            NodeKind::Action(action) => check_action(
                node,
                action,
                index,
                &wg,
                workflow,
                ctx,
                &variables,
                &mut schemas,
                &mut ancestor_search,
                &mut problems,
            ),
            NodeKind::Condition(script) => {
                let has_children = wg
                    .graph
                    .neighbors_directed(index, petgraph::Direction::Outgoing)
                    .next()
                    .is_some();
                if !has_children {
                    problems.push(Problem::node(
                        ProblemCode::ConditionWithoutChildren,
                        node,
                        "a condition selects among its children, but this one has none",
                    ));
                }
                check_script(node, &script.code, "code", ctx, &mut problems);
            }
            NodeKind::Transform(script) => {
                check_script(node, &script.code, "code", ctx, &mut problems)
            }
            NodeKind::Trigger(trigger) => {
                if let Err(e) = jsonschema::validator_for(&trigger.schema) {
                    problems.push(
                        Problem::node(
                            ProblemCode::InvalidTriggerSchema,
                            node,
                            format!("the trigger schema is not a valid JSON Schema: {e}"),
                        )
                        .field("schema"),
                    );
                }
                at_least_one(node, "timeout_ms", trigger.timeout_ms, &mut problems);
            }
        }
    }
    (problems, wg)
}

/// A count or duration setting given as 0, where it must be at least 1.
fn at_least_one(node: &Node, field: &str, value: Option<u64>, problems: &mut Vec<Problem>) {
    if value == Some(0) {
        problems.push(
            Problem::node(
                ProblemCode::InvalidSetting,
                node,
                format!("{field} must be at least 1"),
            )
            .field(field),
        );
    }
}

/// The name a node's label has inside scripts: spaces become underscores.
pub fn script_name(label: &str) -> String {
    label.trim().replace(' ', "_")
}

fn check_script(
    node: &Node,
    code: &str,
    field: &str,
    ctx: &ValidationContext<'_>,
    problems: &mut Vec<Problem>,
) {
    if let Err(e) = ctx.scripts.check(code) {
        problems.push(Problem {
            line: Some(e.line),
            column: Some(e.column),
            ..Problem::node(ProblemCode::ScriptSyntax, node, e.message).field(field)
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn check_action(
    node: &Node,
    action: &ActionNode,
    index: NodeIndex,
    wg: &WorkflowGraph,
    workflow: &Workflow,
    ctx: &ValidationContext<'_>,
    variables: &HashSet<&str>,
    schemas: &mut SchemaCache,
    ancestors: &mut AncestorSearch,
    problems: &mut Vec<Problem>,
) {
    if !(1..=5).contains(&action.priority) {
        problems.push(
            Problem::node(
                ProblemCode::InvalidSetting,
                node,
                format!("priority must be 1 to 5, found {}", action.priority),
            )
            .field("priority"),
        );
    }
    at_least_one(
        node,
        "concurrency",
        action.concurrency.map(|c| c as u64),
        problems,
    );
    at_least_one(node, "timeout_ms", action.timeout_ms, problems);
    if action.retry.is_some_and(|r| r.attempts == 0) {
        problems.push(
            Problem::node(
                ProblemCode::InvalidSetting,
                node,
                "retry.attempts counts the first attempt too, so it must be at least 1",
            )
            .field("retry.attempts"),
        );
    }

    // References do not need the app's API.
    let mut seen = HashSet::new();
    for parameter in &action.parameters {
        let field = format!("parameter '{}'", parameter.name);
        if !seen.insert(parameter.name.as_str()) {
            problems.push(
                Problem::node(
                    ProblemCode::DuplicateParameter,
                    node,
                    "this parameter is given more than once",
                )
                .field(field.clone()),
            );
        }
        match parameter.variant {
            Variant::StaticValue => {}
            Variant::ActionResult => match parameter.value.as_str() {
                None => problems.push(
                    Problem::node(
                        ProblemCode::UnknownNodeReference,
                        node,
                        "an ACTION_RESULT parameter's value must be a node id",
                    )
                    .field(field.clone()),
                ),
                Some(target) => match wg.index_of.get(target) {
                    None => problems.push(
                        Problem::node(
                            ProblemCode::UnknownNodeReference,
                            node,
                            format!(
                                "refers to node '{target}', which is not a node of this workflow"
                            ),
                        )
                        .field(field.clone()),
                    ),
                    Some(&target_index) => {
                        if !ancestors.is_ancestor(wg, target_index, index) {
                            let target_node = &workflow.nodes[wg.graph[target_index]];
                            problems.push(
                                Problem::node(
                                    ProblemCode::NotAnAncestor,
                                    node,
                                    format!(
                                        "uses the result of '{}' ({}), which does not run before this node (it is not an ancestor)",
                                        target_node.label, target_node.id
                                    ),
                                )
                                .field(field.clone()),
                            );
                        }
                    }
                },
            },
            Variant::WorkflowVariable => {
                let known = parameter
                    .value
                    .as_str()
                    .is_some_and(|v| variables.contains(v));
                if !known {
                    problems.push(
                        Problem::node(
                            ProblemCode::UnknownWorkflowVariable,
                            node,
                            format!("refers to workflow variable {}, which this workflow does not define", parameter.value),
                        )
                        .field(field.clone()),
                    );
                }
            }
            Variant::Global => {
                if let Some(globals) = ctx.globals {
                    let known = parameter
                        .value
                        .as_str()
                        .is_some_and(|g| globals.contains(g));
                    if !known {
                        problems.push(
                            Problem::node(
                                ProblemCode::UnknownGlobal,
                                node,
                                format!(
                                    "refers to global {}, which does not exist",
                                    parameter.value
                                ),
                            )
                            .field(field.clone()),
                        );
                    }
                }
            }
        }
        if let Some(pointer) = &parameter.pointer {
            if parameter.variant != Variant::ActionResult {
                problems.push(
                    Problem::node(
                        ProblemCode::InvalidPointer,
                        node,
                        "a pointer only applies to ACTION_RESULT parameters",
                    )
                    .field(field.clone()),
                );
            } else if !(pointer.is_empty() || pointer.starts_with('/')) {
                problems.push(
                    Problem::node(
                        ProblemCode::InvalidPointer,
                        node,
                        format!(
                            "'{pointer}' is not a JSON Pointer: it must be empty or start with '/'"
                        ),
                    )
                    .field(field.clone()),
                );
            }
        }
    }

    let Some(api) = ctx.catalog.get(&action.app, &action.app_version) else {
        let versions = ctx.catalog.versions(&action.app);
        let message = if versions.is_empty() {
            format!("the app '{}' is not installed", action.app)
        } else {
            format!(
                "the app '{}' has no version '{}' (installed: {})",
                action.app,
                action.app_version,
                versions.join(", ")
            )
        };
        problems.push(Problem::node(ProblemCode::UnknownApp, node, message).field("app"));
        return;
    };
    let Some(action_api) = api.action(&action.action) else {
        let known: Vec<&str> = api.actions.iter().map(|a| a.name.as_str()).collect();
        problems.push(
            Problem::node(
                ProblemCode::UnknownAction,
                node,
                format!(
                    "the app '{}' {} has no action '{}' (it has: {})",
                    api.name,
                    api.app_version,
                    action.action,
                    known.join(", ")
                ),
            )
            .field("action"),
        );
        return;
    };

    for parameter in &action.parameters {
        let field = format!("parameter '{}'", parameter.name);
        let Some(parameter_api) = action_api.parameter(&parameter.name) else {
            let known: Vec<&str> = action_api
                .parameters
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            problems.push(
                Problem::node(
                    ProblemCode::UnknownParameter,
                    node,
                    format!(
                        "the action '{}' has no such parameter (it takes: {})",
                        action.action,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
                .field(field),
            );
            continue;
        };
        if parameter.parallelized && !parameter_api.parallelizable {
            problems.push(
                Problem::node(
                    ProblemCode::InvalidParallel,
                    node,
                    format!("the parameter is marked parallelized, but the action '{}' does not declare it parallelizable", action.action),
                )
                .field(field.clone()),
            );
        }
        if parameter.variant == Variant::StaticValue {
            check_static_value(
                node,
                api.name.as_str(),
                &api.app_version,
                action_api,
                parameter_api,
                &parameter.value,
                field,
                schemas,
                problems,
            );
        }
    }
    for parameter_api in action_api.parameters.iter().filter(|p| p.required) {
        if !action
            .parameters
            .iter()
            .any(|p| p.name == parameter_api.name)
        {
            problems.push(
                Problem::node(
                    ProblemCode::MissingParameter,
                    node,
                    format!("the action '{}' requires this parameter", action.action),
                )
                .field(format!("parameter '{}'", parameter_api.name)),
            );
        }
    }

    let parallelized: Vec<&str> = action
        .parameters
        .iter()
        .filter(|p| p.parallelized)
        .map(|p| p.name.as_str())
        .collect();
    match (action.parallelized, parallelized.len()) {
        (true, 1) | (false, 0) => {}
        (true, 0) => problems.push(Problem::node(
            ProblemCode::InvalidParallel,
            node,
            "a parallel action needs exactly one parallelized parameter, and this one has none",
        )),
        (true, _) => problems.push(Problem::node(
            ProblemCode::InvalidParallel,
            node,
            format!(
                "a parallel action needs exactly one parallelized parameter, and this one has {}: {}",
                parallelized.len(),
                parallelized.join(", ")
            ),
        )),
        (false, _) => problems.push(Problem::node(
            ProblemCode::InvalidParallel,
            node,
            format!(
                "parameter(s) {} are marked parallelized, but the action is not a parallel action (set parallelized on the node)",
                parallelized.join(", ")
            ),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_static_value(
    node: &Node,
    app: &str,
    version: &str,
    action_api: &ActionApi,
    parameter_api: &crate::app_api::ParameterApi,
    value: &Value,
    field: String,
    schemas: &mut SchemaCache,
    problems: &mut Vec<Problem>,
) {
    let key = (
        app.to_string(),
        version.to_string(),
        action_api.name.clone(),
        parameter_api.name.clone(),
    );
    let validator = schemas.entry(key).or_insert_with(|| {
        parameter_api
            .json_schema
            .as_ref()
            .and_then(|schema| jsonschema::draft4::new(schema).ok())
    });
    let Some(validator) = validator else {
        if let Some(schema) = &parameter_api.json_schema {
            if let Err(e) = jsonschema::draft4::new(schema) {
                problems.push(
                    Problem::node(
                        ProblemCode::InvalidParameterSchema,
                        node,
                        format!("the app's JSON Schema for this parameter is invalid: {e}"),
                    )
                    .field(field),
                );
            }
        }
        return;
    };
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if !errors.is_empty() {
        problems.push(
            Problem::node(
                ProblemCode::InvalidStaticValue,
                node,
                format!(
                    "the value {value} does not match the parameter's schema: {}",
                    errors.join("; ")
                ),
            )
            .field(field),
        );
    }
}

/// Reusable backward search: is `target` an ancestor of `node`?
struct AncestorSearch {
    visited: Vec<u32>,
    generation: u32,
    stack: Vec<NodeIndex>,
}

impl AncestorSearch {
    fn new(nodes: usize) -> AncestorSearch {
        AncestorSearch {
            visited: vec![0; nodes],
            generation: 0,
            stack: Vec::new(),
        }
    }

    fn is_ancestor(&mut self, wg: &WorkflowGraph, target: NodeIndex, node: NodeIndex) -> bool {
        if target == node {
            return false;
        }
        // Most references name a direct parent.
        if wg.parents(node).any(|p| p == target) {
            return true;
        }
        self.generation += 1;
        self.stack.clear();
        self.stack.push(node);
        self.visited[node.index()] = self.generation;
        while let Some(current) = self.stack.pop() {
            for parent in wg.parents(current) {
                if parent == target {
                    return true;
                }
                if self.visited[parent.index()] != self.generation {
                    self.visited[parent.index()] = self.generation;
                    self.stack.push(parent);
                }
            }
        }
        false
    }
}
