//! Sealed values: a global's value as it travels through walkoff — encrypted, opened only by the
//! executor that runs the action using it. Everything between (the gateway's store, Redis, the
//! workers, events) sees `{"$walkoff_sealed": "v1:<global id>:<base64 nonce and ciphertext>"}`,
//! and events show it as `"***"`.

use serde_json::{Map, Value};

/// The one field of a sealed value.
pub const SEALED_FIELD: &str = "$walkoff_sealed";

/// What events show in place of a sealed value.
pub const REDACTED: &str = "***";

/// The sealed text of `value`, when it is a sealed value.
pub fn sealed_text(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(SEALED_FIELD)?.as_str(),
        _ => None,
    }
}

pub fn is_sealed(value: &Value) -> bool {
    sealed_text(value).is_some()
}

/// Parameters fit for an event: sealed values (at any depth) replaced by `"***"`.
pub fn redact_sealed(parameters: &mut Map<String, Value>) {
    for value in parameters.values_mut() {
        redact_value(value);
    }
}

fn redact_value(value: &mut Value) {
    if is_sealed(value) {
        *value = Value::String(REDACTED.into());
        return;
    }
    match value {
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => map.values_mut().for_each(redact_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_values_are_redacted_at_any_depth() {
        let sealed = json!({SEALED_FIELD: "v1:g:abc"});
        let mut parameters = json!({"a": sealed, "b": [1, {"c": sealed}], "d": "plain"})
            .as_object()
            .unwrap()
            .clone();
        redact_sealed(&mut parameters);
        assert_eq!(
            Value::Object(parameters),
            json!({"a": "***", "b": [1, {"c": "***"}], "d": "plain"})
        );
        // An object that merely has the field among others is not sealed.
        assert!(!is_sealed(&json!({SEALED_FIELD: "x", "other": 1})));
    }
}
