//! `walkoff autoscale` against a real Docker Swarm: every interval, for each app service (label
//! `walkoff.app=NAME@VERSION`), what it needs to decide — the backlog from Redis, its replicas,
//! its running tasks' CPU from Docker's stats, what the nodes have not reserved — then the
//! decision of [`crate::decide`], carried out by updating the service's replicas. Each decision
//! that changes something is logged with its reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{Service, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskState};
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

/// CPU and memory of every ready, active node, less what `running` tasks reserve.
async fn free_resources(docker: &Docker, running: &[Task]) -> Result<Resources, AutoscaleError> {
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
    for task in running {
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

/// A container's CPU counters at one moment: its own use and the whole host's, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    used: u64,
    system: u64,
    cpus: u32,
}

/// A container's counters now (one-shot: no waiting for Docker's second sample) and its memory.
async fn sample(docker: &Docker, container: &str) -> Option<(CpuSample, i64)> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker.stats(container, Some(options)).next().await?.ok()?;
    let cpu = stats.cpu_stats.as_ref()?;
    let sample = CpuSample {
        used: cpu.cpu_usage.as_ref()?.total_usage?,
        system: cpu.system_cpu_usage?,
        cpus: cpu.online_cpus.unwrap_or(1).max(1),
    };
    let memory = stats.memory_stats.and_then(|m| m.usage).unwrap_or(0) as i64;
    Some((sample, memory))
}

/// CPU used between two samples, as a fraction of `limit_cpus` (of all CPUs without a limit).
fn cpu_between(before: CpuSample, now: CpuSample, limit_cpus: f64) -> f64 {
    let used = now.used.saturating_sub(before.used) as f64;
    let system = now.system.saturating_sub(before.system) as f64;
    if system <= 0.0 {
        return 0.0;
    }
    let used_cpus = used / system * now.cpus as f64;
    used_cpus
        / if limit_cpus > 0.0 {
            limit_cpus
        } else {
            now.cpus as f64
        }
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

/// What the autoscaler has seen and done, per service, for `/metrics`.
#[derive(Debug, Clone, Default)]
struct ServiceMetrics {
    backlog: u64,
    replicas: u32,
    scaled_up: u64,
    scaled_down: u64,
    no_room: u64,
}

/// The metrics of every service, shared with the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Mutex<BTreeMap<String, ServiceMetrics>>>);

type Samples = Vec<(&'static str, u64)>;
/// A metric family: name, type, help, and its samples (extra labels, value) for one service.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ServiceMetrics) -> Samples,
);

impl Metrics {
    fn record(&self, pass: &Pass) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let m = all.entry(pass.service.clone()).or_default();
        m.backlog = pass.backlog;
        m.replicas = pass.replicas;
        match &pass.decision {
            Decision::Scale { from, to, .. } => {
                m.replicas = *to;
                if to > from {
                    m.scaled_up += 1;
                } else {
                    m.scaled_down += 1;
                }
            }
            Decision::Hold { reason } if reason.contains("no node has room") => m.no_room += 1,
            Decision::Hold { .. } => {}
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let families: [Family; 4] = [
            (
                "walkoff_autoscale_backlog",
                "gauge",
                "Requests waiting for the app's executors or in their hands.",
                |m| vec![("", m.backlog)],
            ),
            (
                "walkoff_autoscale_replicas",
                "gauge",
                "Replicas the service is set to.",
                |m| vec![("", m.replicas as u64)],
            ),
            (
                "walkoff_autoscale_scaled_total",
                "counter",
                "Times the autoscaler changed the service's replicas.",
                |m| {
                    vec![
                        (",direction=\"up\"", m.scaled_up),
                        (",direction=\"down\"", m.scaled_down),
                    ]
                },
            ),
            (
                "walkoff_autoscale_no_room_total",
                "counter",
                "Passes that wanted another replica no node had room for.",
                |m| vec![("", m.no_room)],
            ),
        ];
        let mut text = String::new();
        for (name, kind, help, samples) in families {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, m) in all.iter() {
                for (labels, value) in samples(m) {
                    let _ = writeln!(text, "{name}{{service=\"{service}\"{labels}}} {value}");
                }
            }
        }
        text
    }
}

/// Answer every HTTP request on `listener` with the metrics (`GET /metrics`, or anything).
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Metrics) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut request)).await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// The autoscaler of a swarm: one [`Autoscaler`] per app service, kept between passes.
pub struct SwarmAutoscaler {
    docker: Docker,
    keys: RedisKeys,
    scalers: HashMap<String, Autoscaler>,
    /// Each container's CPU counters at the last pass.
    cpu: HashMap<String, CpuSample>,
    pub metrics: Metrics,
}

impl SwarmAutoscaler {
    /// Docker from `DOCKER_HOST` (or the local socket), its API version agreed with the daemon.
    pub async fn connect(prefix: &str) -> Result<SwarmAutoscaler, AutoscaleError> {
        let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
        Ok(SwarmAutoscaler {
            docker,
            keys: RedisKeys::new(prefix),
            scalers: HashMap::new(),
            cpu: HashMap::new(),
            metrics: Metrics::default(),
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
        // Containers gone since the last pass are forgotten below (only those seen now are kept).
        let mut seen_containers = std::collections::HashSet::new();
        // Every task meant to run, read once: what they reserve, and each service's containers.
        let running = ListTasksOptionsBuilder::new()
            .filters(&HashMap::from([("desired-state", vec!["running"])]))
            .build();
        let running = self.docker.list_tasks(Some(running)).await?;
        let free = free_resources(&self.docker, &running).await?;
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
            let containers: Vec<String> = running
                .iter()
                .filter(|t| t.service_id.is_some() && t.service_id == service.id)
                .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
                .filter_map(|t| {
                    t.status
                        .as_ref()?
                        .container_status
                        .as_ref()?
                        .container_id
                        .clone()
                })
                .collect();
            // CPU from the counters' change since the last pass (a pass never waits for a
            // second sample); a task's first pass counts it idle.
            let limit_cpus = limit.nano_cpus as f64 / 1e9;
            let samples =
                futures::future::join_all(containers.iter().map(|c| sample(&self.docker, c))).await;
            let mut tasks = Vec::new();
            seen_containers.extend(containers.iter().cloned());
            for (container, sampled) in containers.iter().zip(samples) {
                let Some((now, memory_bytes)) = sampled else {
                    continue;
                };
                let cpu_of_limit = self
                    .cpu
                    .insert(container.clone(), now)
                    .map_or(0.0, |before| cpu_between(before, now, limit_cpus));
                tasks.push(TaskUsage {
                    cpu_of_limit,
                    memory_bytes,
                });
            }
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
            let pass = Pass {
                service: name,
                backlog,
                replicas: seen.replicas,
                decision,
            };
            self.metrics.record(&pass);
            passes.push(pass);
        }
        self.cpu
            .retain(|container, _| seen_containers.contains(container));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_counters_change_as_a_share_of_the_limit() {
        let before = CpuSample {
            used: 0,
            system: 0,
            cpus: 2,
        };
        // One of the host's two CPUs used for the whole second between the samples.
        let now = CpuSample {
            used: 1_000_000_000,
            system: 2_000_000_000,
            cpus: 2,
        };
        assert_eq!(cpu_between(before, now, 2.0), 0.5);
        assert_eq!(cpu_between(before, now, 0.5), 2.0);
        assert_eq!(cpu_between(before, now, 0.0), 0.5);
        assert_eq!(cpu_between(now, now, 1.0), 0.0);
    }

    #[test]
    fn metrics_count_each_service_s_scalings_and_show_its_backlog_and_replicas() {
        let metrics = Metrics::default();
        let pass = |backlog, replicas, decision| Pass {
            service: "walkoff_app_basics_1_0_0".into(),
            backlog,
            replicas,
            decision,
        };
        metrics.record(&pass(
            60,
            1,
            Decision::Scale {
                from: 1,
                to: 3,
                reason: String::new(),
            },
        ));
        metrics.record(&pass(
            60,
            3,
            Decision::Hold {
                reason: "wants 4, but no node has room for another".into(),
            },
        ));
        metrics.record(&pass(
            0,
            3,
            Decision::Scale {
                from: 3,
                to: 1,
                reason: String::new(),
            },
        ));
        let text = metrics.render();
        for line in [
            "# TYPE walkoff_autoscale_backlog gauge",
            "walkoff_autoscale_backlog{service=\"walkoff_app_basics_1_0_0\"} 0",
            "walkoff_autoscale_replicas{service=\"walkoff_app_basics_1_0_0\"} 1",
            "walkoff_autoscale_scaled_total{service=\"walkoff_app_basics_1_0_0\",direction=\"up\"} 1",
            "walkoff_autoscale_scaled_total{service=\"walkoff_app_basics_1_0_0\",direction=\"down\"} 1",
            "walkoff_autoscale_no_room_total{service=\"walkoff_app_basics_1_0_0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
