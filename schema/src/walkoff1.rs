//! WALKOFF 1.0 workflow JSON: import into the canonical model and export back.
//!
//! Import maps the fields the engine understands and keeps every other field in `walkoff_extra`,
//! so `export(import(x))` contains every field of `x` with its value, and importing that export again
//! yields the same model.

use serde_json::{json, Map, Value};

use crate::model::{
    ActionNode, Branch, Node, NodeKind, Parameter, Position, RetryPolicy, ScriptNode, TriggerNode,
    Variant, Workflow, WorkflowVariable, DEFAULT_PRIORITY,
};
use crate::LoadError;

const NODE_LISTS: [(&str, &str); 4] = [
    ("actions", "action"),
    ("conditions", "condition"),
    ("transforms", "transform"),
    ("triggers", "trigger"),
];

/// Builtin app name WALKOFF 1.0 gives conditions, transforms and triggers.
const BUILTIN_APP: &str = "Builtin";

/// True when `value` looks like a WALKOFF 1.0 workflow rather than our canonical format.
pub fn is_walkoff1(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    if object.contains_key("nodes") {
        return false;
    }
    object.get("walkoff_type_").and_then(Value::as_str) == Some("workflow")
        || object.contains_key("id_")
        || NODE_LISTS
            .iter()
            .any(|(list, _)| object.contains_key(*list))
}

struct Fields {
    path: String,
    rest: Map<String, Value>,
}

impl Fields {
    fn new(path: String, value: &Value) -> Result<Fields, LoadError> {
        match value {
            Value::Object(map) => Ok(Fields {
                path,
                rest: map.clone(),
            }),
            other => Err(LoadError::Walkoff1 {
                path,
                message: format!("expected an object, found {}", json_kind(other)),
            }),
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> LoadError {
        LoadError::Walkoff1 {
            path: format!("{}.{field}", self.path),
            message: message.into(),
        }
    }

    fn take(&mut self, field: &str) -> Option<Value> {
        self.rest.remove(field)
    }

    fn required_string(&mut self, field: &str) -> Result<String, LoadError> {
        match self.take(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(
                field,
                format!("expected a string, found {}", json_kind(&other)),
            )),
            None => Err(self.error(field, "missing required field")),
        }
    }

    fn optional_string(&mut self, field: &str) -> Result<Option<String>, LoadError> {
        match self.take(field) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Null) | None => Ok(None),
            Some(other) => Err(self.error(
                field,
                format!("expected a string, found {}", json_kind(&other)),
            )),
        }
    }

    fn optional_bool(&mut self, field: &str) -> Result<bool, LoadError> {
        match self.take(field) {
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::Null) | None => Ok(false),
            Some(other) => Err(self.error(
                field,
                format!("expected a boolean, found {}", json_kind(&other)),
            )),
        }
    }

    fn optional_typed<T: serde::de::DeserializeOwned>(
        &mut self,
        field: &str,
    ) -> Result<Option<T>, LoadError> {
        match self.take(field) {
            Some(Value::Null) | None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| self.error(field, e.to_string())),
        }
    }

    fn list(&mut self, field: &str) -> Result<Vec<Value>, LoadError> {
        match self.take(field) {
            Some(Value::Array(items)) => Ok(items),
            Some(Value::Null) | None => Ok(Vec::new()),
            Some(other) => Err(self.error(
                field,
                format!("expected a list, found {}", json_kind(&other)),
            )),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Convert a WALKOFF 1.0 workflow document into the canonical model.
pub fn import(value: &Value) -> Result<Workflow, LoadError> {
    let mut wf = Fields::new("workflow".into(), value)?;
    let id = wf.required_string("id_")?;
    let name = wf.optional_string("name")?.unwrap_or_default();
    let description = wf.optional_string("description")?;
    let tags: Vec<String> = wf.optional_typed("tags")?.unwrap_or_default();
    let start = wf.required_string("start")?;

    let mut nodes = Vec::new();
    for (list, kind) in NODE_LISTS {
        for (i, item) in wf.list(list)?.iter().enumerate() {
            nodes.push(import_node(format!("{list}[{i}]"), kind, item)?);
        }
    }
    let mut branches = Vec::new();
    for (i, item) in wf.list("branches")?.iter().enumerate() {
        let mut b = Fields::new(format!("branches[{i}]"), item)?;
        let branch = Branch {
            id: b.optional_string("id_")?,
            from: b.required_string("source_id")?,
            to: b.required_string("destination_id")?,
        };
        drop_walkoff_type(&mut b, "branch");
        drop_bookkeeping(&mut b, &[]);
        reject_unknown(&b)?;
        branches.push(branch);
    }
    let mut variables = Vec::new();
    for (i, item) in wf.list("workflow_variables")?.iter().enumerate() {
        let mut v = Fields::new(format!("workflow_variables[{i}]"), item)?;
        let variable = WorkflowVariable {
            id: v.required_string("id_")?,
            name: v.required_string("name")?,
            value: v.take("value").unwrap_or(Value::Null),
            description: v.optional_string("description")?,
        };
        drop_walkoff_type(&mut v, "workflow_variable");
        drop_bookkeeping(&mut v, &[]);
        reject_unknown(&v)?;
        variables.push(variable);
    }
    Ok(Workflow {
        id,
        name,
        description,
        tags,
        start,
        nodes,
        branches,
        variables,
        walkoff_extra: wf.rest,
    })
}

/// Sub-objects whose unknown fields we do not keep; a field we would drop is an error instead.
fn reject_unknown(fields: &Fields) -> Result<(), LoadError> {
    match fields.rest.keys().next() {
        Some(key) => Err(fields.error(key, "unknown field")),
        None => Ok(()),
    }
}

/// What WALKOFF 1.0's API computes or sets per run on its objects (validation results, the run's
/// ids): written by its exporter, with no meaning here.
const BOOKKEEPING: [&str; 4] = ["errors", "is_valid", "execution_id", "workflow_id"];

/// Drop WALKOFF 1.0's bookkeeping (and `also`) from a sub-object whose unknown fields are
/// refused; [`ignored_fields`] lists what was dropped or has no effect.
fn drop_bookkeeping(fields: &mut Fields, also: &[&str]) {
    for key in BOOKKEEPING.iter().chain(also) {
        fields.rest.remove(*key);
    }
}

/// (kind of object, field) → (how many objects have it, the first one's path).
type Ignored = ((&'static str, &'static str), (usize, String));

/// The fields of a WALKOFF 1.0 document that import accepts without using them: warnings for
/// whoever imports it, never errors. One line per field and kind of object (`is_valid on 9
/// nodes (first actions[0])`), so an export full of bookkeeping stays readable.
pub fn ignored_fields(value: &Value) -> Vec<String> {
    let mut seen: Vec<Ignored> = Vec::new();
    let mut note = |kind: &'static str, path: &str, object: &Value, keys: &[&'static str]| {
        let Some(object) = object.as_object() else {
            return;
        };
        for &key in keys
            .iter()
            .filter(|k| object.get(**k).is_some_and(|v| !v.is_null()))
        {
            match seen.iter_mut().find(|(k, _)| *k == (kind, key)) {
                Some((_, (count, _))) => *count += 1,
                None => seen.push(((kind, key), (1, path.to_string()))),
            }
        }
    };
    note("workflow", "workflow", value, &BOOKKEEPING);
    note("workflow", "workflow", value, &["permissions"]);
    let items = |list: &str| {
        value
            .get(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (list, _) in NODE_LISTS {
        for (i, node) in items(list).iter().enumerate() {
            let path = format!("{list}[{i}]");
            note("node", &path, node, &BOOKKEEPING);
            if let Some(position) = node.get("position") {
                let mut keys = vec!["id_"];
                keys.extend(BOOKKEEPING);
                note("position", &format!("{path}.position"), position, &keys);
            }
            if let Some(parameters) = node.get("parameters").and_then(Value::as_array) {
                for (j, parameter) in parameters.iter().enumerate() {
                    let path = format!("{path}.parameters[{j}]");
                    note("parameter", &path, parameter, &BOOKKEEPING);
                }
            }
        }
    }
    for (list, kind) in [
        ("branches", "branch"),
        ("workflow_variables", "workflow variable"),
    ] {
        for (i, item) in items(list).iter().enumerate() {
            note(kind, &format!("{list}[{i}]"), item, &BOOKKEEPING);
        }
    }
    seen.into_iter()
        .map(|((kind, key), (count, first))| {
            let why = if key == "permissions" {
                "not applied (walkoff's own permissions decide who may do what)"
            } else {
                "ignored (WALKOFF 1.0 bookkeeping, no meaning here)"
            };
            if count == 1 {
                format!("{first}.{key}: {why}")
            } else {
                format!("{key} on {count} {kind}s (first {first}): {why}")
            }
        })
        .collect()
}

/// `walkoff_type_` on sub-objects is implied by their place; it is regenerated on export.
fn drop_walkoff_type(fields: &mut Fields, expected: &str) {
    if fields.rest.get("walkoff_type_").and_then(Value::as_str) == Some(expected) {
        fields.rest.remove("walkoff_type_");
    }
}

fn import_node(path: String, kind: &str, value: &Value) -> Result<Node, LoadError> {
    let mut f = Fields::new(path, value)?;
    let id = f.required_string("id_")?;
    let label = f.required_string("label")?;
    let position = match f.take("position") {
        None | Some(Value::Null) => None,
        Some(p) => {
            let mut pf = Fields::new(format!("{}.position", f.path), &p)?;
            let x = take_number(&mut pf, "x")?;
            let y = take_number(&mut pf, "y")?;
            drop_walkoff_type(&mut pf, "position");
            drop_bookkeeping(&mut pf, &["id_"]);
            reject_unknown(&pf)?;
            Some(Position { x, y })
        }
    };
    let node_kind = match kind {
        "action" => {
            let action = f.required_string("name")?;
            let app = f.required_string("app_name")?;
            let app_version = f.optional_string("app_version")?.unwrap_or_default();
            let priority = match f.take("priority") {
                None | Some(Value::Null) => DEFAULT_PRIORITY,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(p @ 1..=5) => p as u8,
                    _ => return Err(f.error("priority", format!("must be 1 to 5, found {n}"))),
                },
                Some(other) => {
                    return Err(f.error(
                        "priority",
                        format!("expected a number, found {}", json_kind(&other)),
                    ))
                }
            };
            let parallelized = f.optional_bool("parallelized")?;
            let mut parameters = Vec::new();
            for (i, item) in f.list("parameters")?.iter().enumerate() {
                parameters.push(import_parameter(
                    format!("{}.parameters[{i}]", f.path),
                    item,
                )?);
            }
            NodeKind::Action(ActionNode {
                app,
                app_version,
                action,
                priority,
                parameters,
                parallelized,
                concurrency: f.optional_typed("concurrency")?,
                timeout_ms: f.optional_typed("timeout_ms")?,
                retry: f.optional_typed::<RetryPolicy>("retry")?,
            })
        }
        "condition" => NodeKind::Condition(ScriptNode {
            code: f.required_string("conditional")?,
        }),
        "transform" => NodeKind::Transform(ScriptNode {
            code: f.required_string("transform")?,
        }),
        _ => NodeKind::Trigger(TriggerNode {
            // WALKOFF 1.0's API drops `trigger_schema`; a missing schema accepts any data.
            schema: f.take("trigger_schema").unwrap_or_else(|| json!({})),
            timeout_ms: f.optional_typed("timeout_ms")?,
        }),
    };
    Ok(Node {
        id,
        label,
        position,
        kind: node_kind,
        walkoff_extra: f.rest,
    })
}

fn take_number(fields: &mut Fields, field: &str) -> Result<serde_json::Number, LoadError> {
    match fields.take(field) {
        Some(Value::Number(n)) => Ok(n),
        Some(other) => Err(fields.error(
            field,
            format!("expected a number, found {}", json_kind(&other)),
        )),
        None => Err(fields.error(field, "missing required field")),
    }
}

fn import_parameter(path: String, value: &Value) -> Result<Parameter, LoadError> {
    let mut f = Fields::new(path, value)?;
    let name = f.required_string("name")?;
    let variant = match f.take("variant") {
        None | Some(Value::Null) => Variant::StaticValue,
        Some(v) => serde_json::from_value::<Variant>(v.clone()).map_err(|_| {
            f.error(
                "variant",
                format!(
                    "unknown variant {v}; expected STATIC_VALUE, ACTION_RESULT, WORKFLOW_VARIABLE or GLOBAL"
                ),
            )
        })?,
    };
    let parameter = Parameter {
        name,
        variant,
        value: f.take("value").unwrap_or(Value::Null),
        pointer: f.optional_string("pointer")?,
        parallelized: f.optional_bool("parallelized")?,
        id: f.optional_string("id_")?,
    };
    drop_walkoff_type(&mut f, "parameter");
    drop_bookkeeping(&mut f, &[]);
    reject_unknown(&f)?;
    Ok(parameter)
}

/// Convert the canonical model into a WALKOFF 1.0 workflow document.
pub fn export(workflow: &Workflow) -> Value {
    let mut out = Map::new();
    out.insert("id_".into(), json!(workflow.id));
    out.insert("name".into(), json!(workflow.name));
    if let Some(d) = &workflow.description {
        out.insert("description".into(), json!(d));
    }
    out.insert("tags".into(), json!(workflow.tags));
    out.insert("start".into(), json!(workflow.start));
    for (list, _) in NODE_LISTS {
        out.insert(list.into(), Value::Array(Vec::new()));
    }
    for node in &workflow.nodes {
        let list = match node.kind {
            NodeKind::Action(_) => "actions",
            NodeKind::Condition(_) => "conditions",
            NodeKind::Transform(_) => "transforms",
            NodeKind::Trigger(_) => "triggers",
        };
        if let Some(Value::Array(items)) = out.get_mut(list) {
            items.push(export_node(node));
        }
    }
    out.insert(
        "branches".into(),
        workflow
            .branches
            .iter()
            .map(|b| {
                let mut m = Map::new();
                if let Some(id) = &b.id {
                    m.insert("id_".into(), json!(id));
                }
                m.insert("source_id".into(), json!(b.from));
                m.insert("destination_id".into(), json!(b.to));
                m.insert("walkoff_type_".into(), json!("branch"));
                Value::Object(m)
            })
            .collect(),
    );
    out.insert(
        "workflow_variables".into(),
        workflow
            .variables
            .iter()
            .map(|v| {
                let mut m = Map::new();
                m.insert("id_".into(), json!(v.id));
                m.insert("name".into(), json!(v.name));
                m.insert("value".into(), v.value.clone());
                if let Some(d) = &v.description {
                    m.insert("description".into(), json!(d));
                }
                m.insert("walkoff_type_".into(), json!("workflow_variable"));
                Value::Object(m)
            })
            .collect(),
    );
    for (k, v) in &workflow.walkoff_extra {
        out.insert(k.clone(), v.clone());
    }
    out.entry("walkoff_type_").or_insert(json!("workflow"));
    Value::Object(out)
}

fn export_node(node: &Node) -> Value {
    let mut m = Map::new();
    m.insert("id_".into(), json!(node.id));
    m.insert("label".into(), json!(node.label));
    if let Some(p) = &node.position {
        m.insert(
            "position".into(),
            json!({"x": p.x, "y": p.y, "walkoff_type_": "position"}),
        );
    }
    let (walkoff_type, builtin_name) = match &node.kind {
        NodeKind::Action(a) => {
            m.insert("name".into(), json!(a.action));
            m.insert("app_name".into(), json!(a.app));
            m.insert("app_version".into(), json!(a.app_version));
            m.insert("priority".into(), json!(a.priority));
            m.insert("parallelized".into(), json!(a.parallelized));
            m.insert(
                "parameters".into(),
                a.parameters.iter().map(export_parameter).collect(),
            );
            if let Some(c) = a.concurrency {
                m.insert("concurrency".into(), json!(c));
            }
            if let Some(t) = a.timeout_ms {
                m.insert("timeout_ms".into(), json!(t));
            }
            if let Some(r) = &a.retry {
                m.insert("retry".into(), json!(r));
            }
            ("action", None)
        }
        NodeKind::Condition(s) => {
            m.insert("conditional".into(), json!(s.code));
            ("condition", Some("Condition"))
        }
        NodeKind::Transform(s) => {
            m.insert("transform".into(), json!(s.code));
            ("transform", Some("Transform"))
        }
        NodeKind::Trigger(t) => {
            m.insert("trigger_schema".into(), t.schema.clone());
            if let Some(timeout) = t.timeout_ms {
                m.insert("timeout_ms".into(), json!(timeout));
            }
            ("trigger", Some("Trigger"))
        }
    };
    for (k, v) in &node.walkoff_extra {
        m.insert(k.clone(), v.clone());
    }
    if let Some(name) = builtin_name {
        m.entry("name").or_insert(json!(name));
        m.entry("app_name").or_insert(json!(BUILTIN_APP));
        m.entry("app_version").or_insert(json!("1.0.0"));
    }
    m.entry("walkoff_type_").or_insert(json!(walkoff_type));
    Value::Object(m)
}

fn export_parameter(p: &Parameter) -> Value {
    let mut m = Map::new();
    if let Some(id) = &p.id {
        m.insert("id_".into(), json!(id));
    }
    m.insert("name".into(), json!(p.name));
    m.insert("variant".into(), json!(p.variant.as_str()));
    m.insert("value".into(), p.value.clone());
    if let Some(ptr) = &p.pointer {
        m.insert("pointer".into(), json!(ptr));
    }
    m.insert("parallelized".into(), json!(p.parallelized));
    m.insert("walkoff_type_".into(), json!("parameter"));
    Value::Object(m)
}
