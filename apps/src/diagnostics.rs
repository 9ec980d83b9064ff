//! `diagnostics`: actions for exercising a deployment (load tests, failover drills).

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use walkoff_executors::{ActionError, App};
use walkoff_schema::AppApi;

/// The app's definition, in WALKOFF `api.yaml` format.
pub const API_YAML: &str = include_str!("../diagnostics/api.yaml");

pub struct Diagnostics {
    api: AppApi,
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics {
            api: AppApi::from_yaml(API_YAML).expect("apps/diagnostics/api.yaml is valid"),
        }
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
                let path = parameters
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
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
                        .map_err(|e| ActionError::new(format!("cannot append to {path}: {e}")))
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
