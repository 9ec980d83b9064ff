//! walkoff on Docker Swarm. So far: each app's scaling policy (from its `api.yaml` or a service's
//! labels), the autoscaler's decisions, and the backlog in Redis they are made from.

pub mod backlog;
pub mod decide;
pub mod policy;

pub use backlog::{app_backlog, Backlog};
pub use decide::{Autoscaler, Decision, Observation, TaskUsage};
pub use policy::{PolicyError, Resources, ScalePolicy};
pub mod docker;
