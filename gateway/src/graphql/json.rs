//! The `JSON` scalar. async-graphql's own (for `serde_json::Value`) converts through serde, and
//! with serde_json's `arbitrary_precision` (which starlark turns on for the whole build) a number
//! would come out as `{"$serde_json::private::Number": "10"}`. This one maps value by value.

use async_graphql::{InputValueError, InputValueResult, Name, Scalar, ScalarType, Value};
use serde_json::Value as JsonValue;

/// Any JSON value: a result, parameters, trigger data, a workflow document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Json(pub JsonValue);

/// A scalar that can represent any JSON value.
#[Scalar(name = "JSON")]
impl ScalarType for Json {
    fn parse(value: Value) -> InputValueResult<Self> {
        to_json(value).map(Json).map_err(InputValueError::custom)
    }

    fn to_value(&self) -> Value {
        to_graphql(&self.0)
    }
}

fn to_graphql(value: &JsonValue) -> Value {
    match value {
        JsonValue::Null => Value::Null,
        JsonValue::Bool(b) => Value::Boolean(*b),
        JsonValue::Number(n) => Value::Number(n.clone()),
        JsonValue::String(s) => Value::String(s.clone()),
        JsonValue::Array(items) => Value::List(items.iter().map(to_graphql).collect()),
        JsonValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (Name::new(k), to_graphql(v)))
                .collect(),
        ),
    }
}

fn to_json(value: Value) -> Result<JsonValue, &'static str> {
    Ok(match value {
        Value::Null => JsonValue::Null,
        Value::Boolean(b) => JsonValue::Bool(b),
        Value::Number(n) => JsonValue::Number(n),
        Value::String(s) => JsonValue::String(s),
        Value::Enum(name) => JsonValue::String(name.to_string()),
        Value::List(items) => {
            JsonValue::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::Object(fields) => JsonValue::Object(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k.to_string(), to_json(v)?)))
                .collect::<Result<serde_json::Map<_, _>, &str>>()?,
        ),
        Value::Binary(_) => return Err("binary data is not JSON"),
    })
}

impl From<JsonValue> for Json {
    fn from(value: JsonValue) -> Self {
        Json(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_numbers_both_ways() {
        let value: JsonValue = serde_json::from_str(
            r#"{"n": 10, "f": 2.5, "big": 18446744073709551615, "l": [1, "a", null, true]}"#,
        )
        .unwrap();
        let graphql = Json(value.clone()).to_value();
        assert_eq!(
            serde_json::to_string(&graphql).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        assert_eq!(Json::parse(graphql).unwrap(), Json(value));
    }
}
