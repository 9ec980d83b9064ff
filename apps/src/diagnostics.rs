//! `diagnostics`: actions for exercising a deployment (load tests, failover drills).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use walkoff_executors::{ActionError, App};
use walkoff_schema::AppApi;

/// The app's definition, in WALKOFF `api.yaml` format.
pub const API_YAML: &str = include_str!("../diagnostics/api.yaml");

/// The environment variable that enables `record`: the directory its files go in.
pub const RECORD_DIR_ENV: &str = "WALKOFF_RECORD_DIR";

pub struct Diagnostics {
    api: AppApi,
    /// Where `record` may write; `None`: it writes nothing (file access is off unless an
    /// operator turns it on).
    record_dir: Option<PathBuf>,
}

impl Diagnostics {
    /// Without file access: `record` refuses.
    pub fn new() -> Diagnostics {
        Diagnostics {
            api: AppApi::from_yaml(API_YAML).expect("apps/diagnostics/api.yaml is valid"),
            record_dir: None,
        }
    }

    /// `record` writes inside `dir` only.
    pub fn recording_in(dir: impl Into<PathBuf>) -> Diagnostics {
        Diagnostics {
            record_dir: Some(dir.into()),
            ..Diagnostics::new()
        }
    }

    /// `record` writes inside `$WALKOFF_RECORD_DIR` when it is set, nowhere otherwise.
    pub fn from_env() -> Diagnostics {
        match std::env::var_os(RECORD_DIR_ENV).filter(|dir| !dir.is_empty()) {
            Some(dir) => Diagnostics::recording_in(dir),
            None => Diagnostics::new(),
        }
    }

    /// The file `path` names inside the record directory: a relative path that stays inside.
    fn record_path(&self, path: &str) -> Result<PathBuf, ActionError> {
        let Some(dir) = &self.record_dir else {
            return Err(ActionError::permanent(format!(
                "record writes files only where the operator allows: set {RECORD_DIR_ENV} to a \
                 directory for the process serving the diagnostics app"
            )));
        };
        let relative = Path::new(path);
        let inside = !path.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(ActionError::permanent(format!(
                "'path' must be a relative path inside the record directory, not '{path}'"
            )));
        }
        Ok(dir.join(relative))
    }
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics::new()
    }
}

fn millis(parameters: &Map<String, Value>, name: &str) -> Duration {
    Duration::from_millis(parameters.get(name).and_then(Value::as_u64).unwrap_or(0))
}

#[async_trait]
impl App for Diagnostics {
    fn api(&self) -> &AppApi {
        &self.api
    }

    async fn call(
        &self,
        action: &str,
        parameters: Map<String, Value>,
    ) -> Result<Value, ActionError> {
        match action {
            "noop" => Ok(parameters.get("value").cloned().unwrap_or(Value::Null)),
            "sleep" => {
                let wait = millis(&parameters, "ms");
                tokio::time::sleep(wait).await;
                Ok(json!(wait.as_millis() as u64))
            }
            "record" => {
                let named = parameters
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let path = self.record_path(named)?;
                // A shard of a parallel action gets a one-element list.
                let line = match parameters.get("line") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    Some(Value::String(text)) => text.clone(),
                    _ => String::new(),
                };
                let text = format!("{line}\n");
                let written = tokio::task::spawn_blocking(move || {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut file| file.write_all(text.as_bytes()))
                        .map_err(|e| {
                            ActionError::new(format!("cannot append to {}: {e}", path.display()))
                        })
                })
                .await
                .map_err(|e| ActionError::new(format!("the write did not finish: {e}")))?;
                written?;
                tokio::time::sleep(millis(&parameters, "hold_ms")).await;
                Ok(json!(line))
            }
            other => Err(ActionError::permanent(format!("unknown action '{other}'"))),
        }
    }
}
