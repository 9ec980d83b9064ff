//! Transform nodes: Starlark whose output is what it assigns to `result` (`None` when unassigned).

use std::sync::Arc;

use serde_json::Value;
use walkoff_schema::Outcome;

use crate::condition::script_job;
use crate::execution::{Effects, Execution, ScriptJob, ScriptKind};
use crate::script::{self, ScriptInputs, ScriptLimits, ScriptValue};

pub(crate) fn activate(exec: &mut Execution, index: usize, code: &Arc<str>, fx: &mut Effects) {
    exec.mark_executing(index, 1, None, None, fx);
    let job = script_job(exec, index, code, ScriptKind::Transform);
    fx.scripts.push(job);
}

pub(crate) fn evaluate(job: &ScriptJob, limits: &ScriptLimits) -> Outcome {
    let inputs = ScriptInputs {
        parents: &job.parents,
        children: &[],
    };
    match script::evaluate(&job.code, &inputs, &["result"], limits) {
        Err(error) => Outcome::Failure {
            error,
            retryable: false,
        },
        Ok(mut values) => {
            let result = match values.pop().flatten() {
                None => Value::Null,
                Some(ScriptValue::Json(v)) => v,
                Some(ScriptValue::Children(labels)) => {
                    Value::Array(labels.into_iter().map(Value::String).collect())
                }
            };
            Outcome::Success { result }
        }
    }
}
