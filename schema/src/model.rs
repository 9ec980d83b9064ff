//! The canonical workflow model.
//!
//! This is what the compiler consumes and what `walkoff` writes. WALKOFF 1.0 workflow JSON is
//! converted to and from it by [`crate::walkoff1`]; fields that only WALKOFF 1.0 knows about are kept
//! in `walkoff_extra` maps so that an import followed by an export loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The default priority of an action, as in WALKOFF 1.0 (1 = lowest, 5 = highest).
pub const DEFAULT_PRIORITY: u8 = 3;

/// A workflow: nodes joined by branches, entered at `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Id of the node the execution starts at.
    pub start: String,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub branches: Vec<Branch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<WorkflowVariable>,
    /// WALKOFF 1.0 fields with no meaning to the engine (permissions, errors, is_valid, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub walkoff_extra: Map<String, Value>,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Stable id; parameters refer to nodes by id. Defaults to the label in hand-written files.
    #[serde(default)]
    pub id: String,
    /// The user-facing name, unique in the workflow: scripts address nodes by label.
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    #[serde(flatten)]
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub walkoff_extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeKind {
    /// An app action; a parallel action when `parallelized` is set.
    Action(ActionNode),
    /// Starlark code that assigns `selected_node`.
    Condition(ScriptNode),
    /// Starlark code that assigns `result`.
    Transform(ScriptNode),
    /// Waits for data delivered from outside, validated against `schema`.
    Trigger(TriggerNode),
}

impl NodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Action(a) if a.parallelized => "parallel action",
            NodeKind::Action(_) => "action",
            NodeKind::Condition(_) => "condition",
            NodeKind::Transform(_) => "transform",
            NodeKind::Trigger(_) => "trigger",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionNode {
    pub app: String,
    /// Empty means "the newest version the catalog knows".
    #[serde(default)]
    pub app_version: String,
    pub action: String,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// A parallel action: its one `parallelized` parameter is split into shards.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parallelized: bool,
    /// Shards of a parallel action in flight at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Per-attempt timeout in milliseconds (default five minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How often an action is attempted and how long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the second attempt, in milliseconds; doubles after each further attempt.
    #[serde(default)]
    pub backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff_ms: 0,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next_attempt` (2 or more).
    pub fn backoff_before(&self, next_attempt: u32) -> std::time::Duration {
        let doublings = next_attempt.saturating_sub(2).min(16);
        std::time::Duration::from_millis(self.backoff_ms.saturating_mul(1 << doublings))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptNode {
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerNode {
    /// JSON Schema the delivered data must satisfy; `{}` accepts anything.
    #[serde(default = "empty_object")]
    pub schema: Value,
    /// How long the trigger waits for data once reached, in milliseconds (default a week); then
    /// it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Where the editor draws a node; numbers are kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub x: serde_json::Number,
    pub y: serde_json::Number,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Id of the source node.
    pub from: String,
    /// Id of the destination node.
    pub to: String,
}

/// Where a parameter's value comes from: WALKOFF 1.0's four variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Variant {
    /// `value` is used as it is.
    #[default]
    StaticValue,
    /// `value` is a node id; the parameter gets that node's result (or `pointer` into it).
    ActionResult,
    /// `value` is a workflow variable id (or name).
    WorkflowVariable,
    /// `value` is a global's id (or name).
    Global,
}

impl Variant {
    pub fn as_str(&self) -> &'static str {
        match self {
            Variant::StaticValue => "STATIC_VALUE",
            Variant::ActionResult => "ACTION_RESULT",
            Variant::WorkflowVariable => "WORKFLOW_VARIABLE",
            Variant::Global => "GLOBAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(default)]
    pub variant: Variant,
    #[serde(default)]
    pub value: Value,
    /// For `ACTION_RESULT`: a JSON Pointer (RFC 6901) into the referenced result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub parallelized: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Parameter {
    /// The referenced id for reference variants (`None` for static values or non-string values).
    pub fn reference(&self) -> Option<&str> {
        match self.variant {
            Variant::StaticValue => None,
            _ => self.value.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowVariable {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Workflow {
    /// Parse our canonical JSON. Hand-written files may omit node and variable ids; they default to
    /// the label and name.
    pub fn from_canonical(value: Value) -> Result<Workflow, serde_json::Error> {
        let mut workflow: Workflow = serde_json::from_value(value)?;
        workflow.fill_default_ids();
        Ok(workflow)
    }

    /// Give nodes without an id their label, and variables without an id their name.
    pub fn fill_default_ids(&mut self) {
        for node in &mut self.nodes {
            if node.id.is_empty() {
                node.id = node.label.clone();
            }
        }
        for variable in &mut self.variables {
            if variable.id.is_empty() {
                variable.id = variable.name.clone();
            }
        }
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

impl Workflow {
    /// A copy with every id replaced by one from `fresh` (the workflow's, its nodes', branches',
    /// parameters' and variables'), and every reference to an old id rewired: the start, branch
    /// ends, `ACTION_RESULT` and `WORKFLOW_VARIABLE` parameters. Scripts name nodes by label, so
    /// they need no change. How WALKOFF's copy and import keep a workflow apart from its source.
    pub fn with_new_ids(&self, mut fresh: impl FnMut() -> String) -> Workflow {
        let mut copy = self.clone();
        copy.id = fresh();
        let nodes: std::collections::HashMap<String, String> =
            copy.nodes.iter().map(|n| (n.id.clone(), fresh())).collect();
        let variables: std::collections::HashMap<String, String> = copy
            .variables
            .iter()
            .map(|v| (v.id.clone(), fresh()))
            .collect();
        let rewire = |map: &std::collections::HashMap<String, String>, id: &mut String| {
            if let Some(new) = map.get(id.as_str()) {
                id.clone_from(new);
            }
        };
        rewire(&nodes, &mut copy.start);
        for node in &mut copy.nodes {
            rewire(&nodes, &mut node.id);
            if let NodeKind::Action(action) = &mut node.kind {
                for parameter in &mut action.parameters {
                    if parameter.id.is_some() {
                        parameter.id = Some(fresh());
                    }
                    let map = match parameter.variant {
                        Variant::ActionResult => &nodes,
                        Variant::WorkflowVariable => &variables,
                        Variant::StaticValue | Variant::Global => continue,
                    };
                    if let Value::String(reference) = &mut parameter.value {
                        rewire(map, reference);
                    }
                }
            }
        }
        for branch in &mut copy.branches {
            rewire(&nodes, &mut branch.from);
            rewire(&nodes, &mut branch.to);
            if branch.id.is_some() {
                branch.id = Some(fresh());
            }
        }
        for variable in &mut copy.variables {
            rewire(&variables, &mut variable.id);
        }
        copy
    }
}
