//! Compiles walkoff workflows into dataflow plans and runs them.
//!
//! `compile` turns a workflow into a [`Plan`] of operators (one module per node kind: [`action`],
//! [`parallel`], [`condition`], [`transform`], [`trigger`]); an [`Execution`] applies messages to
//! one run of a plan; the [`Runtime`] drives executions from a [`Bus`].

mod action;
pub mod bus;
pub mod client;
pub mod compile;
mod condition;
pub mod dispatch;
pub mod events;
pub mod execution;
mod parallel;
pub mod plans;
mod recovery;
pub mod runtime;
pub mod script;
pub mod script_host;
mod transform;
pub mod trigger;

pub use bus::{Bus, BusError, Delivery, DeliveryId, MemoryBus};
pub use client::Client;
pub use compile::{compile, Operator, Plan};
pub use dispatch::{ActionExecutor, BusDispatch};
pub use events::{follow, ExecutionSummary, NodeSummary};
pub use execution::{Effects, Execution, ScriptJob};
pub use plans::PlanDigest;
pub use runtime::{
    new_execution_id, CatalogSource, ControlError, GlobalProvider, Runtime, RuntimeConfig,
    SubmitError,
};
pub use script::{ScriptLimits, StarlarkChecker};
pub use script_host::{isolate_scripts, ScriptHostConfig, ScriptIsolation};
