//! How an app's executor service scales: between `min` and `max` replicas, one replica per
//! `backlog_per_replica` waiting requests, down only after a quiet period, each replica reserving
//! and limited to the resources its `api.yaml` asks for.
//!
//! ```yaml
//! deploy:
//!   replicas: {min: 1, max: 8}
//!   backlog_per_replica: 20
//!   quiet_seconds: 30
//!   resources:
//!     reservations: {cpus: 0.25, memory: 64M}
//!     limits: {cpus: 1, memory: 256M}
//! ```
//!
//! WALKOFF's `api.yaml` has no such section (its umpire scaled every app alike); a file without it
//! gets [`ScalePolicy::default`]. The same settings can come from a service's labels
//! (`walkoff.autoscale.min`, `.max`, `.backlog_per_replica`, `.quiet_seconds`), which win.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use walkoff_schema::AppApi;

/// CPU in billionths of a core and memory in bytes, as Docker counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

impl Resources {
    /// How many of `each` fit in `self`; a dimension `each` does not use does not limit it.
    pub fn how_many_fit(&self, each: Resources) -> u32 {
        let fit = |free: i64, one: i64| {
            if one <= 0 {
                u32::MAX
            } else {
                u32::try_from((free.max(0) / one).min(u32::MAX as i64)).unwrap_or(u32::MAX)
            }
        };
        fit(self.nano_cpus, each.nano_cpus).min(fit(self.memory_bytes, each.memory_bytes))
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} CPU, {} MiB",
            self.nano_cpus as f64 / 1e9,
            self.memory_bytes / (1 << 20)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    pub min: u32,
    pub max: u32,
    /// Waiting requests one replica is expected to keep up with.
    pub backlog_per_replica: u32,
    /// How long the backlog must have wanted fewer replicas before any is stopped.
    pub quiet: Duration,
    /// What each replica reserves on its node (Swarm places a task only where this is free).
    pub reservation: Resources,
    /// What each replica may use at most.
    pub limit: Resources,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            min: 1,
            max: 4,
            backlog_per_replica: 20,
            quiet: Duration::from_secs(30),
            reservation: Resources {
                nano_cpus: 100_000_000,
                memory_bytes: 32 << 20,
            },
            limit: Resources {
                nano_cpus: 1_000_000_000,
                memory_bytes: 256 << 20,
            },
        }
    }
}

/// A setting that cannot be used, named by where it is (`deploy.replicas.max`, a label).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PolicyError {
    pub field: String,
    pub problem: String,
}

fn problem(field: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A count: a whole number (YAML may write it as a string, as labels always do).
fn count(value: &Value, field: &str) -> Result<u32, PolicyError> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    number
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| problem(field, format!("expected a whole number, found {value}")))
}

/// CPUs as Docker writes them (`0.25`, `"1.5"`), in billionths of a core.
pub fn parse_cpus(value: &Value, field: &str) -> Result<i64, PolicyError> {
    let cpus = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match cpus {
        Some(c) if c.is_finite() && (0.0..=1024.0).contains(&c) => Ok((c * 1e9).round() as i64),
        _ => Err(problem(
            field,
            format!("expected a number of CPUs between 0 and 1024, found {value}"),
        )),
    }
}

/// Memory as Docker writes it: bytes, or a number with `K`, `M`, `G` (powers of 1024, with or
/// without `B` or `iB`).
pub fn parse_memory(value: &Value, field: &str) -> Result<i64, PolicyError> {
    let wrong = || {
        problem(
            field,
            format!("expected bytes or a size such as 64M or 1G, found {value}"),
        )
    };
    let text = match value {
        Value::Number(n) => return n.as_i64().filter(|b| *b >= 0).ok_or_else(wrong),
        Value::String(s) => s.trim().to_ascii_uppercase(),
        _ => return Err(wrong()),
    };
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: i64 = match unit.trim().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(wrong()),
    };
    let number: f64 = number.parse().map_err(|_| wrong())?;
    let bytes = number * scale as f64;
    if bytes.is_finite() && (0.0..=i64::MAX as f64).contains(&bytes) {
        Ok(bytes as i64)
    } else {
        Err(wrong())
    }
}

impl ScalePolicy {
    /// The policy an app's `api.yaml` asks for (its `deploy` section), or the default.
    pub fn from_app(api: &AppApi) -> Result<ScalePolicy, PolicyError> {
        let mut policy = ScalePolicy::default();
        let Some(deploy) = api.extra.get("deploy") else {
            return Ok(policy);
        };
        let deploy = deploy
            .as_object()
            .ok_or_else(|| problem("deploy", "expected a mapping"))?;
        for (key, value) in deploy {
            match key.as_str() {
                "replicas" => {
                    let replicas = value
                        .as_object()
                        .ok_or_else(|| problem("deploy.replicas", "expected {min, max}"))?;
                    for (bound, value) in replicas {
                        let field = format!("deploy.replicas.{bound}");
                        match bound.as_str() {
                            "min" => policy.min = count(value, &field)?,
                            "max" => policy.max = count(value, &field)?,
                            _ => return Err(problem(field, "unknown setting (min, max)")),
                        }
                    }
                }
                "backlog_per_replica" => {
                    policy.backlog_per_replica = count(value, "deploy.backlog_per_replica")?
                }
                "quiet_seconds" => {
                    policy.quiet = Duration::from_secs(count(value, "deploy.quiet_seconds")? as u64)
                }
                "resources" => {
                    let resources = value.as_object().ok_or_else(|| {
                        problem("deploy.resources", "expected {reservations, limits}")
                    })?;
                    for (kind, value) in resources {
                        let target = match kind.as_str() {
                            "reservations" => &mut policy.reservation,
                            "limits" => &mut policy.limit,
                            _ => {
                                return Err(problem(
                                    format!("deploy.resources.{kind}"),
                                    "unknown setting (reservations, limits)",
                                ))
                            }
                        };
                        let fields = value.as_object().ok_or_else(|| {
                            problem(
                                format!("deploy.resources.{kind}"),
                                "expected {cpus, memory}",
                            )
                        })?;
                        for (name, value) in fields {
                            let field = format!("deploy.resources.{kind}.{name}");
                            match name.as_str() {
                                "cpus" => target.nano_cpus = parse_cpus(value, &field)?,
                                "memory" => target.memory_bytes = parse_memory(value, &field)?,
                                _ => return Err(problem(field, "unknown setting (cpus, memory)")),
                            }
                        }
                    }
                }
                _ => {
                    return Err(problem(
                        format!("deploy.{key}"),
                        "unknown setting (replicas, backlog_per_replica, quiet_seconds, resources)",
                    ))
                }
            }
        }
        policy.checked()
    }

    /// This policy with what a service's labels set (`walkoff.autoscale.*`) in place.
    pub fn with_labels(
        mut self,
        labels: &HashMap<String, String>,
    ) -> Result<ScalePolicy, PolicyError> {
        for (label, value) in labels {
            let Some(setting) = label.strip_prefix("walkoff.autoscale.") else {
                continue;
            };
            let value = Value::String(value.clone());
            match setting {
                "min" => self.min = count(&value, label)?,
                "max" => self.max = count(&value, label)?,
                "backlog_per_replica" => self.backlog_per_replica = count(&value, label)?,
                "quiet_seconds" => self.quiet = Duration::from_secs(count(&value, label)? as u64),
                _ => {
                    return Err(problem(
                        label,
                        "unknown setting (min, max, backlog_per_replica, quiet_seconds)",
                    ))
                }
            }
        }
        self.checked()
    }

    fn checked(self) -> Result<ScalePolicy, PolicyError> {
        if self.max < self.min {
            return Err(problem(
                "deploy.replicas.max",
                format!("must be at least min ({})", self.min),
            ));
        }
        if self.max == 0 {
            return Err(problem("deploy.replicas.max", "must be at least 1"));
        }
        if self.backlog_per_replica == 0 {
            return Err(problem("deploy.backlog_per_replica", "must be at least 1"));
        }
        for (what, reserved, limit) in [
            ("cpus", self.reservation.nano_cpus, self.limit.nano_cpus),
            (
                "memory",
                self.reservation.memory_bytes,
                self.limit.memory_bytes,
            ),
        ] {
            if limit > 0 && reserved > limit {
                return Err(problem(
                    format!("deploy.resources.reservations.{what}"),
                    "must not exceed the limit",
                ));
            }
        }
        Ok(self)
    }
}
