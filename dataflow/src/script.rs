//! Starlark evaluation for conditions and transforms, under tick, heap, call-stack and time limits.
//!
//! Direct parents are visible by label (spaces become `_`) as structs with `.result`; a condition also
//! sees its children by label, as structs with `.id_` and `.label`. WALKOFF 1.0 code such as
//! `if a.result > b.result: selected_node = left` runs unchanged.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect, DialectTypes};
use starlark::values::structs::AllocStruct;
use walkoff_schema::{ScriptChecker, ScriptSyntaxError};

/// Resource limits applied to every evaluation.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ScriptLimits {
    /// Function calls plus loop iterations.
    pub max_ticks: u64,
    pub max_heap_bytes: usize,
    pub max_call_depth: usize,
    pub max_duration: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_ticks: 2_000_000,
            max_heap_bytes: 64 << 20,
            max_call_depth: 64,
            max_duration: Duration::from_secs(1),
        }
    }
}

fn dialect() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        enable_f_strings: true,
        enable_load: false,
        enable_types: DialectTypes::Disable,
        ..Dialect::Extended
    }
}

fn globals() -> &'static Globals {
    static GLOBALS: OnceLock<Globals> = OnceLock::new();
    GLOBALS.get_or_init(|| {
        GlobalsBuilder::extended_by(&[
            LibraryExtension::StructType,
            LibraryExtension::Json,
            LibraryExtension::Map,
            LibraryExtension::Filter,
            LibraryExtension::Partial,
            LibraryExtension::Debug,
        ])
        .build()
    })
}

fn parse(code: &str) -> Result<AstModule, ScriptSyntaxError> {
    AstModule::parse("script", code.to_string(), &dialect()).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| {
                let pos = s.resolve_span().begin;
                (pos.line + 1, pos.column + 1)
            })
            .unwrap_or((1, 1));
        ScriptSyntaxError {
            line,
            column,
            message: e.without_diagnostic().to_string(),
        }
    })
}

/// Checks Starlark syntax for validation.
pub struct StarlarkChecker;

impl ScriptChecker for StarlarkChecker {
    fn check(&self, code: &str) -> Result<(), ScriptSyntaxError> {
        parse(code).map(|_| ())
    }
}

/// The named values a script sees.
pub struct ScriptInputs<'a> {
    /// Direct parents: (label, result).
    pub parents: &'a [(String, Value)],
    /// Children a condition may select: (label, id).
    pub children: &'a [(String, String)],
}

/// What a script assigned to the variables the caller asked for.
pub type ScriptOutputs = Vec<Option<ScriptValue>>;

/// A value a script assigned: JSON, or a reference to a child (a struct with `.label`), or a list of
/// those.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptValue {
    Json(Value),
    Children(Vec<String>),
}

/// Evaluate `code` and read back the variables named in `outputs`.
pub fn evaluate(
    code: &str,
    inputs: &ScriptInputs<'_>,
    outputs: &[&str],
    limits: &ScriptLimits,
) -> Result<ScriptOutputs, String> {
    let ast = parse(code).map_err(|e| {
        format!(
            "syntax error at line {}, column {}: {}",
            e.line, e.column, e.message
        )
    })?;
    Module::with_temp_heap(|module| {
        let heap = module.heap();
        for (label, result) in inputs.parents {
            let value = heap.alloc(AllocStruct([("result", result)]));
            module.set(&walkoff_schema::validate::script_name(label), value);
        }
        for (label, id) in inputs.children {
            let value = heap.alloc(AllocStruct([
                ("id_", id.as_str()),
                ("label", label.as_str()),
            ]));
            module.set(&walkoff_schema::validate::script_name(label), value);
        }
        let deadline = Instant::now() + limits.max_duration;
        let outcome = {
            let mut eval = Evaluator::new(&module);
            eval.set_max_tick_count(limits.max_ticks)
                .and_then(|_| eval.set_max_heap_size(limits.max_heap_bytes))
                .and_then(|_| eval.set_max_callstack_size(limits.max_call_depth))
                .map_err(|e| format!("could not set script limits: {e}"))?;
            eval.set_check_cancelled(Box::new(move || Instant::now() > deadline));
            let result = eval.eval_module(ast, globals());
            let ticks = eval.get_total_tick_count();
            result.map_err(|e| explain_failure(e, ticks, deadline, limits))
        };
        outcome?;
        let mut values = Vec::with_capacity(outputs.len());
        for name in outputs {
            values.push(match module.get(name) {
                None => None,
                Some(v) => Some(to_script_value(v, name)?),
            });
        }
        Ok(values)
    })
}

fn explain_failure(
    e: starlark::Error,
    ticks: u64,
    deadline: Instant,
    limits: &ScriptLimits,
) -> String {
    let location = e
        .span()
        .map(|s| {
            let pos = s.resolve_span().begin;
            format!(" at line {}, column {}", pos.line + 1, pos.column + 1)
        })
        .unwrap_or_default();
    let text = e.without_diagnostic().to_string();
    if ticks > limits.max_ticks {
        format!(
            "script stopped{location}: it exceeded the tick limit of {} (function calls and loop iterations)",
            limits.max_ticks
        )
    } else if Instant::now() > deadline {
        format!(
            "script stopped{location}: it exceeded the time limit of {} ms",
            limits.max_duration.as_millis()
        )
    } else if text.to_lowercase().contains("heap") {
        format!(
            "script stopped{location}: it exceeded the heap limit of {} bytes",
            limits.max_heap_bytes
        )
    } else if text.to_lowercase().contains("stack") {
        format!(
            "script stopped{location}: it exceeded the call-stack limit of {} frames",
            limits.max_call_depth
        )
    } else {
        format!("script error{location}: {text}")
    }
}

fn to_script_value(value: starlark::values::Value<'_>, name: &str) -> Result<ScriptValue, String> {
    if let Some(label) = child_label(value) {
        return Ok(ScriptValue::Children(vec![label]));
    }
    if value.get_type() == "list" || value.get_type() == "tuple" {
        let items: Vec<starlark::values::Value<'_>> =
            starlark::values::list::ListRef::from_value(value)
                .map(|l| l.content().to_vec())
                .or_else(|| {
                    starlark::values::tuple::TupleRef::from_value(value)
                        .map(|t| t.content().to_vec())
                })
                .unwrap_or_default();
        if !items.is_empty() {
            let labels: Option<Vec<String>> = items.iter().map(|v| child_label(*v)).collect();
            if let Some(labels) = labels {
                return Ok(ScriptValue::Children(labels));
            }
        }
    }
    value.to_json_value().map(ScriptValue::Json).map_err(|e| {
        format!(
            "'{name}' holds a {} that cannot be turned into JSON: {e}",
            value.get_type()
        )
    })
}

/// The label of a child struct (`struct(id_=..., label=...)`).
fn child_label(value: starlark::values::Value<'_>) -> Option<String> {
    let s = starlark::values::structs::StructRef::from_value(value)?;
    let mut label = None;
    let mut has_id = false;
    for (k, v) in s.iter() {
        match k.as_str() {
            "label" => label = v.unpack_str().map(str::to_string),
            "id_" => has_id = true,
            _ => {}
        }
    }
    if has_id {
        label
    } else {
        None
    }
}
