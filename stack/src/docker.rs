//! `walkoff autoscale` against a real Docker Swarm: every interval, for each app service (label
//! `walkoff.app=NAME@VERSION`), what it needs to decide — the backlog from Redis, its replicas,
//! its running tasks' CPU from Docker's stats, what the nodes have not reserved — then the
//! decision of [`crate::decide`], carried out by updating the service's replicas. Each decision
//! that changes something is logged with its reason.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{Service, ServiceSpecMode, ServiceSpecModeReplicated, TaskState};
use bollard::query_parameters::{
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, StatsOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use walkoff_dataflow::bus::RedisKeys;
use walkoff_schema::AppRef;

use crate::backlog::app_backlog;
use crate::decide::{Autoscaler, Decision, Observation, TaskUsage};
use crate::policy::{Resources, ScalePolicy};

/// The label naming the app version an executor service serves.
pub const APP_LABEL: &str = "walkoff.app";

#[derive(Debug, thiserror::Error)]
pub enum AutoscaleError {
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

fn resources(object: Option<&bollard::models::ResourceObject>) -> Resources {
    Resources {
        nano_cpus: object.and_then(|r| r.nano_cpus).unwrap_or(0),
        memory_bytes: object.and_then(|r| r.memory_bytes).unwrap_or(0),
    }
}

/// CPU and memory of every ready, active node, less what running tasks reserve.
async fn free_resources(docker: &Docker) -> Result<Resources, AutoscaleError> {
    let mut free = Resources::default();
    for node in docker.list_nodes(None).await? {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(|s| s == bollard::models::NodeState::READY);
        let active = node
            .spec
            .as_ref()
            .and_then(|s| s.availability)
            .is_none_or(|a| a == bollard::models::NodeSpecAvailabilityEnum::ACTIVE);
        if ready && active {
            let capacity = resources(node.description.as_ref().and_then(|d| d.resources.as_ref()));
            free.nano_cpus += capacity.nano_cpus;
            free.memory_bytes += capacity.memory_bytes;
        }
    }
    let running = ListTasksOptionsBuilder::new()
        .filters(&HashMap::from([("desired-state", vec!["running"])]))
        .build();
    for task in docker.list_tasks(Some(running)).await? {
        let reserved = resources(
            task.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.reservations.as_ref()),
        );
        free.nano_cpus -= reserved.nano_cpus;
        free.memory_bytes -= reserved.memory_bytes;
    }
    Ok(free)
}

/// One container's CPU over Docker's last sample, as a fraction of `limit` CPUs, and its memory.
async fn usage(docker: &Docker, container: &str, limit_cpus: f64) -> Option<TaskUsage> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(false)
        .build();
    let stats = docker.stats(container, Some(options)).next().await?.ok()?;
    let now = stats.cpu_stats.as_ref()?;
    let before = stats.precpu_stats.as_ref()?;
    let used = now.cpu_usage.as_ref()?.total_usage? as f64
        - before.cpu_usage.as_ref()?.total_usage.unwrap_or(0) as f64;
    let system = now.system_cpu_usage? as f64 - before.system_cpu_usage.unwrap_or(0) as f64;
    let cpus = now.online_cpus.unwrap_or(1).max(1) as f64;
    let used_cpus = if system > 0.0 {
        used / system * cpus
    } else {
        0.0
    };
    Some(TaskUsage {
        cpu_of_limit: if limit_cpus > 0.0 {
            used_cpus / limit_cpus
        } else {
            used_cpus / cpus
        },
        memory_bytes: stats.memory_stats.and_then(|m| m.usage).unwrap_or(0) as i64,
    })
}

fn replicas(service: &Service) -> u32 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
        .clamp(0, u32::MAX as i64) as u32
}

/// What one pass saw of one service and what it decided.
#[derive(Debug, Clone)]
pub struct Pass {
    pub service: String,
    pub backlog: u64,
    pub replicas: u32,
    pub decision: Decision,
}

/// The autoscaler of a swarm: one [`Autoscaler`] per app service, kept between passes.
pub struct SwarmAutoscaler {
    docker: Docker,
    keys: RedisKeys,
    scalers: HashMap<String, Autoscaler>,
}

impl SwarmAutoscaler {
    /// Docker from `DOCKER_HOST` (or the local socket), its API version agreed with the daemon.
    pub async fn connect(prefix: &str) -> Result<SwarmAutoscaler, AutoscaleError> {
        let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
        Ok(SwarmAutoscaler {
            docker,
            keys: RedisKeys::new(prefix),
            scalers: HashMap::new(),
        })
    }

    /// One look at every app service, and what was done about each.
    pub async fn pass<C: redis::aio::ConnectionLike>(
        &mut self,
        redis: &mut C,
    ) -> Result<Vec<Pass>, AutoscaleError> {
        let apps = ListServicesOptionsBuilder::new()
            .filters(&HashMap::from([("label", vec![APP_LABEL])]))
            .build();
        let services = self.docker.list_services(Some(apps)).await?;
        let free = free_resources(&self.docker).await?;
        let mut passes = Vec::new();
        for service in services {
            let Some(spec) = service.spec.as_ref() else {
                continue;
            };
            let Some(name) = spec.name.clone() else {
                continue;
            };
            let labels = spec.labels.clone().unwrap_or_default();
            let Some((app, version)) = labels.get(APP_LABEL).and_then(|a| a.split_once('@')) else {
                tracing::warn!(service = %name, "label {APP_LABEL} is not NAME@VERSION");
                continue;
            };
            let app = AppRef {
                name: app.into(),
                version: version.into(),
            };
            let task_resources = spec
                .task_template
                .as_ref()
                .and_then(|t| t.resources.as_ref());
            let reservation = resources(task_resources.and_then(|r| r.reservations.as_ref()));
            let limit = task_resources
                .and_then(|r| r.limits.as_ref())
                .map(|l| Resources {
                    nano_cpus: l.nano_cpus.unwrap_or(0),
                    memory_bytes: l.memory_bytes.unwrap_or(0),
                })
                .unwrap_or_default();
            let policy = match (ScalePolicy {
                reservation,
                limit,
                ..ScalePolicy::default()
            })
            .with_labels(&labels)
            {
                Ok(policy) => policy,
                Err(e) => {
                    tracing::warn!(service = %name, "not scaled: {e}");
                    continue;
                }
            };
            let scaler = self
                .scalers
                .entry(name.clone())
                .or_insert_with(|| Autoscaler::new(policy.clone()));
            scaler.policy = policy;

            let backlog = app_backlog(redis, &self.keys, &app).await?.total();
            let running = ListTasksOptionsBuilder::new()
                .filters(&HashMap::from([
                    ("service", vec![name.as_str()]),
                    ("desired-state", vec!["running"]),
                ]))
                .build();
            let containers: Vec<String> = self
                .docker
                .list_tasks(Some(running))
                .await?
                .into_iter()
                .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
                .filter_map(|t| t.status?.container_status?.container_id)
                .collect();
            let limit_cpus = limit.nano_cpus as f64 / 1e9;
            let tasks = futures::future::join_all(
                containers
                    .iter()
                    .map(|c| usage(&self.docker, c, limit_cpus)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            let seen = Observation {
                backlog,
                replicas: replicas(&service),
                tasks,
                free,
            };
            let decision = scaler.decide(&seen, Instant::now());
            if let Decision::Scale { to, .. } = &decision {
                self.scale(&name, *to).await?;
                tracing::info!(service = %name, backlog, from = seen.replicas, to, "{}", decision.reason());
            } else {
                tracing::debug!(service = %name, backlog, replicas = seen.replicas, "{}", decision.reason());
            }
            passes.push(Pass {
                service: name,
                backlog,
                replicas: seen.replicas,
                decision,
            });
        }
        Ok(passes)
    }

    /// Sets a service's replicas (Swarm stops tasks with SIGTERM, and executors finish the
    /// actions they hold within the service's stop grace period).
    async fn scale(&self, service: &str, replicas: u32) -> Result<(), AutoscaleError> {
        let current = self.docker.inspect_service(service, None).await?;
        let version = current.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = current.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas as i64),
            }),
            ..Default::default()
        });
        let options = UpdateServiceOptionsBuilder::new()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        self.docker
            .update_service(service, spec, options, None)
            .await?;
        Ok(())
    }
}

/// Passes every `interval` until `stop` resolves; a pass that fails is logged and the next one
/// tries again (Docker or Redis may be restarting).
pub async fn run<C: redis::aio::ConnectionLike>(
    mut scaler: SwarmAutoscaler,
    mut redis: C,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {
                if let Err(e) = scaler.pass(&mut redis).await {
                    tracing::warn!("autoscale pass failed: {e}");
                }
            }
        }
    }
}
