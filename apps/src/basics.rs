//! `basics`: WALKOFF's basic app, with the same actions and results.

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use walkoff_executors::{ActionError, App};
use walkoff_schema::AppApi;

/// The app's definition, in WALKOFF `api.yaml` format.
pub const API_YAML: &str = include_str!("../basics/api.yaml");

pub struct Basics {
    api: AppApi,
}

impl Basics {
    pub fn new() -> Basics {
        Basics {
            api: AppApi::from_yaml(API_YAML).expect("apps/basics/api.yaml is valid"),
        }
    }
}

impl Default for Basics {
    fn default() -> Self {
        Basics::new()
    }
}

/// A parameter the schema check has already guaranteed.
fn param<'a>(parameters: &'a Map<String, Value>, name: &str) -> Result<&'a Value, ActionError> {
    parameters
        .get(name)
        .ok_or_else(|| ActionError::permanent(format!("missing parameter '{name}'")))
}

/// The longest `pause`: a day (an action's own timeout usually ends it far sooner).
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `number + 1`, exact for every integer JSON carries (`i64::MAX + 1` is a `u64`).
fn plus_one(number: &Value) -> Result<Value, ActionError> {
    if let Some(i) = number.as_i64() {
        return Ok(match i.checked_add(1) {
            Some(n) => json!(n),
            None => json!(i as u64 + 1),
        });
    }
    if let Some(u) = number.as_u64() {
        return u.checked_add(1).map(|n| json!(n)).ok_or_else(|| {
            ActionError::permanent(format!("'number' + 1 is beyond 64 bits ({u})"))
        });
    }
    match number.as_f64() {
        Some(f) if (f + 1.0).is_finite() => Ok(json!(f + 1.0)),
        Some(f) => Err(ActionError::permanent(format!(
            "'number' + 1 is not finite ({f})"
        ))),
        None => Err(ActionError::permanent("'number' is not a number")),
    }
}

#[async_trait]
impl App for Basics {
    fn api(&self) -> &AppApi {
        &self.api
    }

    async fn call(
        &self,
        action: &str,
        parameters: Map<String, Value>,
    ) -> Result<Value, ActionError> {
        match action {
            "hello_world" => Ok(json!("Hello World")),
            "random_number" => Ok(json!(rand::random::<f64>())),
            "string_to_json" => {
                let call = param(&parameters, "call")?.as_str().unwrap_or_default();
                serde_json::from_str(call)
                    .map_err(|e| ActionError::permanent(format!("'call' is not valid JSON: {e}")))
            }
            "echo_string" => {
                let call = param(&parameters, "call")?.as_str().unwrap_or_default();
                Ok(json!(format!("ECHOING: {call}")))
            }
            "return_plus_one" => plus_one(param(&parameters, "number")?),
            "pause" => {
                let seconds = param(&parameters, "seconds")?;
                let wait = seconds
                    .as_f64()
                    .filter(|s| *s >= 0.0)
                    .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                    .filter(|wait| *wait <= MAX_PAUSE)
                    .ok_or_else(|| {
                        ActionError::permanent(format!(
                            "'seconds' must be between 0 and {} (a day), not {seconds}",
                            MAX_PAUSE.as_secs()
                        ))
                    })?;
                tokio::time::sleep(wait).await;
                Ok(seconds.clone())
            }
            "echo_array" | "echo_json" => Ok(param(&parameters, "data")?.clone()),
            "sample_report_data" => Ok(json!(SAMPLE_REPORT)),
            other => Err(ActionError::permanent(format!(
                "basics has no action '{other}'"
            ))),
        }
    }
}

const SAMPLE_REPORT: &str = "Hostname,Open ports,Vulnerabilities,Severity\n\
web-01,3,2,medium\n\
web-02,2,0,low\n\
db-01,1,4,high\n\
mail-01,4,1,medium\n";
