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
            "return_plus_one" => {
                let number = param(&parameters, "number")?;
                Ok(match (number.as_i64(), number.as_f64()) {
                    (Some(i), _) => json!(i + 1),
                    (None, Some(f)) => json!(f + 1.0),
                    _ => return Err(ActionError::permanent("'number' is not a number")),
                })
            }
            "pause" => {
                let seconds = param(&parameters, "seconds")?.as_f64().unwrap_or(0.0);
                tokio::time::sleep(std::time::Duration::from_secs_f64(seconds.max(0.0))).await;
                Ok(parameters["seconds"].clone())
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
