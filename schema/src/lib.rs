//! The walkoff workflow model: canonical JSON, WALKOFF 1.0 import and export, app API definitions,
//! wire messages and validation.

pub mod app_api;
pub mod model;
pub mod sealed;
mod tagged;
mod timestamp;
pub mod validate;
pub mod walkoff1;
pub mod wire;

pub use app_api::{ActionApi, AppApi, AppCatalog, ParameterApi, Version};
pub use model::*;
pub use validate::{
    validate, Problem, ProblemCode, Problems, ScriptChecker, ScriptSyntaxError, ValidationContext,
};
pub use wire::*;

use serde_json::Value;

/// Errors reading a workflow or an app API document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("not a walkoff workflow at line {line}, column {column}: {message}")]
    Canonical {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("not a WALKOFF 1.0 workflow: {path}: {message}")]
    Walkoff1 { path: String, message: String },
    #[error("unrecognised workflow format: expected a walkoff workflow (with \"nodes\") or a WALKOFF 1.0 workflow (with \"id_\" and \"actions\")")]
    UnknownFormat,
    #[error("invalid app API {location}: {message}")]
    AppApi { location: String, message: String },
}

/// The two workflow file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Our canonical JSON.
    Canonical,
    /// WALKOFF 1.0 workflow JSON.
    Walkoff1,
}

/// Parse a workflow document in either format, detected from its content.
pub fn load_workflow(text: &str) -> Result<(Workflow, Format), LoadError> {
    load_workflow_with_warnings(text).map(|(workflow, format, _)| (workflow, format))
}

/// As [`load_workflow`], with what the document holds that import accepts without using (a
/// WALKOFF 1.0 export's validation results, run ids, permissions): warnings, never errors.
pub fn load_workflow_with_warnings(
    text: &str,
) -> Result<(Workflow, Format, Vec<String>), LoadError> {
    let value: Value = serde_json::from_str(text).map_err(|e| LoadError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    if walkoff1::is_walkoff1(&value) {
        let workflow = walkoff1::import(&value)?;
        return Ok((workflow, Format::Walkoff1, walkoff1::ignored_fields(&value)));
    }
    if !value.get("nodes").is_some_and(Value::is_array) {
        return Err(LoadError::UnknownFormat);
    }
    // Parse the text again, typed, so errors carry a line and column.
    let mut workflow: Workflow = serde_json::from_str(text).map_err(|e| LoadError::Canonical {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    workflow.fill_default_ids();
    Ok((workflow, Format::Canonical, Vec::new()))
}

/// Read and parse a workflow file in either format.
pub fn load_workflow_file(path: &std::path::Path) -> Result<(Workflow, Format), LoadError> {
    load_workflow_file_with_warnings(path).map(|(workflow, format, _)| (workflow, format))
}

/// As [`load_workflow_file`], with the warnings of [`load_workflow_with_warnings`].
pub fn load_workflow_file_with_warnings(
    path: &std::path::Path,
) -> Result<(Workflow, Format, Vec<String>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_workflow_with_warnings(&text)
}

/// Serialise a workflow in the given format.
pub fn dump_workflow(workflow: &Workflow, format: Format) -> Value {
    match format {
        Format::Canonical => serde_json::to_value(workflow).unwrap_or(Value::Null),
        Format::Walkoff1 => walkoff1::export(workflow),
    }
}
