//! Checks a JSON value against the schema subset our prompts use.

use serde_json::Value;

pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(expected) = schema.get("const") {
        return (expected == value)
            .then_some(())
            .ok_or(format!("{value} is not {expected}"));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let nullable = types(schema).contains(&"null");
        return (values.contains(value) || (nullable && value.is_null()))
            .then_some(())
            .ok_or(format!("{value} not in {values:?}"));
    }
    if let Some(variants) = schema.get("anyOf").and_then(Value::as_array) {
        return variants
            .iter()
            .any(|v| validate(v, value).is_ok())
            .then_some(())
            .ok_or(format!("{value} matches no variant"));
    }
    let types = types(schema);
    if types.is_empty() {
        return Ok(());
    }
    let matched = types.iter().any(|ty| match (*ty, value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        ("string", Value::String(s)) => {
            let n = s.chars().count() as u64;
            schema["maxLength"].as_u64().is_none_or(|max| n <= max)
                && schema["minLength"].as_u64().is_none_or(|min| n >= min)
        }
        ("array", Value::Array(items)) => {
            let n = items.len() as u64;
            schema["maxItems"].as_u64().is_none_or(|max| n <= max)
                && schema["minItems"].as_u64().is_none_or(|min| n >= min)
                && items.iter().all(|item| {
                    schema
                        .get("items")
                        .is_none_or(|s| validate(s, item).is_ok())
                })
        }
        ("object", Value::Object(fields)) => {
            let properties = schema["properties"].as_object();
            let required_present = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .all(|name| fields.contains_key(name));
            let known =
                fields
                    .iter()
                    .all(|(key, field)| match properties.and_then(|p| p.get(key)) {
                        Some(property) => validate(property, field).is_ok(),
                        None => schema["additionalProperties"] != Value::Bool(false),
                    });
            required_present && known
        }
        _ => false,
    });
    if matched {
        Ok(())
    } else {
        Err(format!("{value} does not match {schema}"))
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(ty) => vec![ty.as_str()],
        Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}
