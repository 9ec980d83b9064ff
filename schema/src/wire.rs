//! Messages that travel between the roles: action requests to executors, results and control
//! messages to workers, and status events to whoever listens.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Workflow;

pub type ExecutionId = String;

/// The status of one node of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    Pending,
    Executing,
    AwaitingData,
    Success,
    Failure,
    Skipped,
    Aborted,
}

impl NodeStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStatus::Success | NodeStatus::Failure | NodeStatus::Skipped | NodeStatus::Aborted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "PENDING",
            NodeStatus::Executing => "EXECUTING",
            NodeStatus::AwaitingData => "AWAITING_DATA",
            NodeStatus::Success => "SUCCESS",
            NodeStatus::Failure => "FAILURE",
            NodeStatus::Skipped => "SKIPPED",
            NodeStatus::Aborted => "ABORTED",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a whole execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowStatus {
    Pending,
    Executing,
    Completed,
    Failed,
    Aborted,
}

impl WorkflowStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Aborted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "PENDING",
            WorkflowStatus::Executing => "EXECUTING",
            WorkflowStatus::Completed => "COMPLETED",
            WorkflowStatus::Failed => "FAILED",
            WorkflowStatus::Aborted => "ABORTED",
        }
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies an app version, the unit executors serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppRef {
    pub name: String,
    pub version: String,
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// One attempt at one action (or one shard of a parallel action), sent to the app's executors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub execution_id: ExecutionId,
    pub workflow_id: String,
    pub node_id: String,
    pub label: String,
    pub app: AppRef,
    pub action: String,
    /// 1 (lowest) to 5 (highest); higher is served first.
    pub priority: u8,
    /// Resolved parameter values by name.
    pub parameters: Map<String, Value>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The shard index of a parallel action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    pub timeout_ms: u64,
    /// How many times this request has been handed to an executor, counting hand-outs to executors
    /// that died before answering (1 the first time).
    #[serde(default = "first_delivery", skip_serializing_if = "is_first_delivery")]
    pub delivery: u32,
    /// Deliveries allowed before the request is dead-lettered and its node fails (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_deliveries: u32,
    /// The stream the result goes to (distributed mode); apps in other languages write it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

fn first_delivery() -> u32 {
    1
}

fn is_first_delivery(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The outcome of one attempt, sent back to the workers. Conditions and transforms report theirs the
/// same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub execution_id: ExecutionId,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    pub attempt: u32,
    pub outcome: Outcome,
    #[serde(with = "crate::timestamp")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub finished_at: DateTime<Utc>,
}

/// (`Serialize` and `Deserialize` are the derived ones, reached through `crate::tagged`, which
/// reads the common field order without buffering.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", remote = "Self")]
pub enum Outcome {
    Success {
        result: Value,
    },
    Failure {
        error: String,
        /// False when another attempt cannot help (bad parameters, unknown action).
        retryable: bool,
    },
}

/// What a worker is told: start an execution, a result, trigger data, an abort.
///
/// (`Serialize` and `Deserialize` are the derived ones, reached through `crate::tagged`, which
/// reads the common field order without buffering.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", remote = "Self")]
pub enum ControlMessage {
    Start(Box<StartExecution>),
    Result(NodeResult),
    /// Several results in one message (an executor's batch, all for one control partition);
    /// applied as if each had come alone, in order.
    Results {
        results: Vec<NodeResult>,
    },
    Trigger {
        execution_id: ExecutionId,
        /// The trigger node's id or label.
        node: String,
        data: Value,
    },
    Abort {
        execution_id: ExecutionId,
    },
    /// A parallel shard or an action waiting out its retry back-off is due.
    Retry {
        execution_id: ExecutionId,
        node_id: String,
        shard: Option<u32>,
        attempt: u32,
    },
    /// A trigger's wait is over: unless its data came, it fails.
    TriggerTimeout {
        execution_id: ExecutionId,
        node_id: String,
    },
}

impl ControlMessage {
    pub fn execution_id(&self) -> &str {
        match self {
            ControlMessage::Start(s) => &s.execution_id,
            ControlMessage::Result(r) => &r.execution_id,
            ControlMessage::Results { results } => {
                results.first().map_or("", |r| r.execution_id.as_str())
            }
            ControlMessage::Trigger { execution_id, .. }
            | ControlMessage::Abort { execution_id }
            | ControlMessage::Retry { execution_id, .. }
            | ControlMessage::TriggerTimeout { execution_id, .. } => execution_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartExecution {
    pub execution_id: ExecutionId,
    pub workflow: Arc<Workflow>,
    /// Workflow variable overrides, by variable name or id.
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    /// Global values, by global name or id.
    #[serde(default)]
    pub globals: BTreeMap<String, Value>,
}

/// A status change, numbered per execution so a subscriber can resume from any point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub execution_id: ExecutionId,
    /// Strictly increasing within an execution, starting at 1.
    pub seq: u64,
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Workflow {
        workflow_id: String,
        status: WorkflowStatus,
        /// Why an execution failed before any node ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Node(NodeEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    pub node_id: String,
    pub label: String,
    pub status: NodeStatus,
    /// The attempt this status belongs to (0 for nodes that never ran).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// The workflow status, when this is a workflow event.
    pub fn workflow_status(&self) -> Option<WorkflowStatus> {
        match &self.kind {
            EventKind::Workflow { status, .. } => Some(*status),
            EventKind::Node(_) => None,
        }
    }

    /// True for the last event of an execution.
    pub fn is_final(&self) -> bool {
        self.workflow_status()
            .is_some_and(WorkflowStatus::is_terminal)
    }
}

impl crate::tagged::TaggedEnum for Outcome {
    const EXPECTING: &'static str = "an action's outcome";

    fn reads_directly(tag: &str) -> bool {
        tag == "success"
    }

    fn read_variant<'de, A: serde::de::MapAccess<'de>>(
        _tag: &str,
        rest: A,
    ) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Success {
            result: Value,
        }
        crate::tagged::read_rest::<Success, A>(rest).map(|s| Outcome::Success { result: s.result })
    }
}

impl crate::tagged::TaggedEnum for ControlMessage {
    const EXPECTING: &'static str = "a control message";

    fn reads_directly(tag: &str) -> bool {
        matches!(tag, "result" | "results" | "start")
    }

    fn read_variant<'de, A: serde::de::MapAccess<'de>>(
        tag: &str,
        rest: A,
    ) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Results {
            results: Vec<NodeResult>,
        }
        match tag {
            "result" => crate::tagged::read_rest(rest).map(ControlMessage::Result),
            "results" => crate::tagged::read_rest::<Results, A>(rest)
                .map(|r| ControlMessage::Results { results: r.results }),
            // "start", the one other variant read directly.
            _ => crate::tagged::read_rest(rest).map(|s| ControlMessage::Start(Box::new(s))),
        }
    }
}

crate::tagged::serde_through_tagged!(Outcome);
crate::tagged::serde_through_tagged!(ControlMessage);
