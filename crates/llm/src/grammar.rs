//! JSON schema → GBNF, the grammar language llama.cpp constrains sampling
//! with.
//!
//! Covers the subset our prompts use: objects with `properties` (written in
//! the schema's order, `required` honoured, nothing else allowed), strings
//! (`minLength`/`maxLength`), integers, numbers, booleans, `null`, `enum`,
//! `const`, arrays (`items`, `minItems`/`maxItems`), type lists such as
//! `["integer", "null"]`, `anyOf`/`oneOf`, and `{}` for any JSON value.
//! Keywords that would change what is valid but cannot be expressed here
//! (`$ref`, `allOf`, `pattern`, …) are refused rather than ignored.
//!
//! The output is compact JSON: no whitespace except an optional single
//! space after `:` and `,`, so the model spends no tokens on layout. Strings
//! take any Unicode character (Cyrillic included) and JSON escapes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::Value;

/// A schema this converter cannot turn into a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("схема ответа не поддерживается: {0}")]
pub struct SchemaError(String);

/// Keywords that only describe or annotate; a grammar may ignore them.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "format",
    "$schema",
    "$id",
    "$comment",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "strict",
];

/// Keywords this converter understands.
const HANDLED: &[&str] = &[
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

/// Rules every grammar may refer to, written only when used.
const PRIMITIVES: &[(&str, &str)] = &[
    ("sp", r#"" "?"#),
    (
        "char",
        r#"[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#,
    ),
    ("string", r#""\"" char* "\"""#),
    ("digits", r#""0" | [1-9] [0-9]{0,15}"#),
    ("integer", r#""-"? digits"#),
    ("fraction", r#""." [0-9]{1,15}"#),
    ("number", r#""-"? digits fraction?"#),
    ("boolean", r#""true" | "false""#),
    ("null", r#""null""#),
    (
        "value",
        r#"object | array | string | number | boolean | null"#,
    ),
    (
        "object",
        r#""{" (string ":" sp value ("," sp string ":" sp value)*)? "}""#,
    ),
    ("array", r#""[" (value ("," sp value)*)? "]""#),
];

/// Converts `schema` into a GBNF grammar whose start rule is `root`.
pub fn gbnf_from_schema(schema: &Value) -> Result<String, SchemaError> {
    let mut builder = Builder::default();
    let root = builder.visit(schema, "root")?;
    Ok(builder.finish(root))
}

#[derive(Default)]
struct Builder {
    /// Rules made for this schema, in the order they were made.
    rules: Vec<(String, String)>,
    /// Bodies already named, so identical sub-schemas share one rule.
    names_by_body: HashMap<String, String>,
    taken: HashSet<String>,
    /// Primitive rules referred to, directly or through other primitives.
    used: HashSet<&'static str>,
}

impl Builder {
    fn finish(mut self, root: String) -> String {
        let mut out = String::new();
        // A top-level object or array already got the rule name `root`.
        if root != "root" {
            let _ = writeln!(out, "root ::= {root}");
        }
        for (name, body) in &self.rules {
            let _ = writeln!(out, "{name} ::= {body}");
        }
        // Primitives refer to one another; close over those references.
        let mut pending: Vec<&'static str> = self.used.iter().copied().collect();
        while let Some(name) = pending.pop() {
            let body = primitive(name);
            for (other, _) in PRIMITIVES {
                if refers_to(body, other) && self.used.insert(other) {
                    pending.push(other);
                }
            }
        }
        for (name, body) in PRIMITIVES {
            if self.used.contains(name) {
                let _ = writeln!(out, "{name} ::= {body}");
            }
        }
        out
    }

    /// Gives `body` a rule of its own, named after `hint`.
    fn rule(&mut self, hint: &str, body: String) -> String {
        if let Some(name) = self.names_by_body.get(&body) {
            return name.clone();
        }
        let base = rule_name(hint);
        let mut name = base.clone();
        let mut n = 2;
        while self.taken.contains(&name) || PRIMITIVES.iter().any(|(p, _)| *p == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        self.names_by_body.insert(body.clone(), name.clone());
        self.rules.push((name.clone(), body));
        name
    }

    fn primitive(&mut self, name: &'static str) -> String {
        self.used.insert(name);
        name.to_owned()
    }

    /// An expression that matches exactly the JSON texts `schema` allows.
    fn visit(&mut self, schema: &Value, hint: &str) -> Result<String, SchemaError> {
        let object = match schema {
            Value::Bool(true) => return Ok(self.primitive("value")),
            Value::Object(object) => object,
            other => return Err(SchemaError(format!("{hint}: схема {other} не объект"))),
        };
        for key in object.keys() {
            if !HANDLED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                return Err(SchemaError(format!("{hint}: ключевое слово «{key}»")));
            }
        }
        let types: Vec<&str> = match object.get("type") {
            None => Vec::new(),
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| {
                    name.as_str()
                        .ok_or_else(|| SchemaError(format!("{hint}: тип {name} не строка")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(SchemaError(format!("{hint}: тип {other}"))),
        };

        if let Some(value) = object.get("const") {
            return Ok(literal(value));
        }
        if let Some(values) = object.get("enum") {
            let Value::Array(values) = values else {
                return Err(SchemaError(format!("{hint}: enum не массив")));
            };
            let mut alternatives: Vec<String> = values.iter().map(literal).collect();
            // `{"type": ["string", "null"], "enum": ["a", "b"]}` means null
            // is allowed too, even when the list forgets it.
            if types.contains(&"null") && !values.contains(&Value::Null) {
                alternatives.push(literal(&Value::Null));
            }
            if alternatives.is_empty() {
                return Err(SchemaError(format!("{hint}: пустой enum")));
            }
            return Ok(group(&alternatives));
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(variants) = object.get(keyword) {
                let Value::Array(variants) = variants else {
                    return Err(SchemaError(format!("{hint}: {keyword} не массив")));
                };
                let alternatives = variants
                    .iter()
                    .enumerate()
                    .map(|(i, variant)| self.visit(variant, &format!("{hint}-{}", i + 1)))
                    .collect::<Result<Vec<_>, _>>()?;
                if alternatives.is_empty() {
                    return Err(SchemaError(format!("{hint}: пустой {keyword}")));
                }
                return Ok(group(&alternatives));
            }
        }
        if types.is_empty() {
            // No type: whatever the other keywords imply, or any value.
            if object.contains_key("properties") {
                return self.typed(object, "object", hint);
            }
            if object.contains_key("items") {
                return self.typed(object, "array", hint);
            }
            return Ok(self.primitive("value"));
        }
        let alternatives = types
            .iter()
            .map(|ty| self.typed(object, ty, hint))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(group(&alternatives))
    }

    fn typed(
        &mut self,
        schema: &serde_json::Map<String, Value>,
        ty: &str,
        hint: &str,
    ) -> Result<String, SchemaError> {
        match ty {
            "string" => self.string(schema, hint),
            "integer" | "number" => {
                // A known non-negative range saves the model a wrong turn.
                let non_negative = schema
                    .get("minimum")
                    .and_then(Value::as_f64)
                    .is_some_and(|minimum| minimum >= 0.0);
                let name = if ty == "integer" { "integer" } else { "number" };
                if !non_negative {
                    return Ok(self.primitive(name));
                }
                let digits = self.primitive("digits");
                if ty == "integer" {
                    return Ok(digits);
                }
                let fraction = self.primitive("fraction");
                Ok(self.rule(&format!("{hint}-number"), format!("{digits} {fraction}?")))
            }
            "boolean" => Ok(self.primitive("boolean")),
            "null" => Ok(self.primitive("null")),
            "object" => self.object(schema, hint),
            "array" => self.array(schema, hint),
            other => Err(SchemaError(format!("{hint}: тип «{other}»"))),
        }
    }

    fn string(
        &mut self,
        schema: &serde_json::Map<String, Value>,
        hint: &str,
    ) -> Result<String, SchemaError> {
        let min = count(schema, "minLength", hint)?;
        let max = count(schema, "maxLength", hint)?;
        if min.is_none() && max.is_none() {
            return Ok(self.primitive("string"));
        }
        let min = min.unwrap_or(0);
        if max.is_some_and(|max| max < min) {
            return Err(SchemaError(format!("{hint}: maxLength < minLength")));
        }
        let char = self.primitive("char");
        let body = format!(r#""\"" {char}{} "\"""#, repeat(min, max));
        Ok(self.rule(&format!("{hint}-string"), body))
    }

    fn array(
        &mut self,
        schema: &serde_json::Map<String, Value>,
        hint: &str,
    ) -> Result<String, SchemaError> {
        let item = match schema.get("items") {
            Some(items) => self.visit(items, &format!("{hint}-item"))?,
            None => self.primitive("value"),
        };
        let min = count(schema, "minItems", hint)?.unwrap_or(0);
        let max = count(schema, "maxItems", hint)?;
        if max.is_some_and(|max| max < min) {
            return Err(SchemaError(format!("{hint}: maxItems < minItems")));
        }
        let sp = self.primitive("sp");
        let more = |min: u64, max: Option<u64>| format!(r#"("," {sp} {item}){}"#, repeat(min, max));
        let body = match (min, max) {
            (_, Some(0)) => r#""[" "]""#.to_owned(),
            (0, max) => format!(r#""[" ({item} {})? "]""#, more(0, max.map(|max| max - 1))),
            (min, max) => format!(
                r#""[" {item} {} "]""#,
                more(min - 1, max.map(|max| max - 1))
            ),
        };
        Ok(self.rule(hint, body))
    }

    fn object(
        &mut self,
        schema: &serde_json::Map<String, Value>,
        hint: &str,
    ) -> Result<String, SchemaError> {
        let empty = serde_json::Map::new();
        let properties = match schema.get("properties") {
            None => &empty,
            Some(Value::Object(properties)) => properties,
            Some(_) => return Err(SchemaError(format!("{hint}: properties не объект"))),
        };
        let required: Vec<&str> = match schema.get("required") {
            None => Vec::new(),
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(SchemaError(format!("{hint}: required не массив"))),
        };
        if let Some(missing) = required
            .iter()
            .find(|name| !properties.contains_key(**name))
        {
            return Err(SchemaError(format!(
                "{hint}: обязательное поле «{missing}» не описано в properties"
            )));
        }
        if properties.is_empty() {
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            return Ok(if closed {
                r#"("{" "}")"#.to_owned()
            } else {
                self.primitive("object")
            });
        }

        let sp = self.primitive("sp");
        let mut fields = Vec::with_capacity(properties.len());
        for (key, property) in properties {
            let value = self.visit(property, &format!("{hint}-{key}"))?;
            // `"key":` as one literal.
            let mut name = literal(&Value::String(key.clone()));
            name.insert(name.len() - 1, ':');
            fields.push((
                format!("{name} {sp} {value}"),
                required.contains(&key.as_str()),
            ));
        }

        if fields.iter().all(|(_, required)| *required) {
            let body = fields
                .iter()
                .map(|(field, _)| field.as_str())
                .collect::<Vec<_>>()
                .join(r#" "," sp "#);
            return Ok(self.rule(hint, format!(r#""{{" {body} "}}""#)));
        }

        // Optional fields may be left out, so whether a comma comes before a
        // field depends on whether any field came before it. Walking back
        // from the last field: `after` matches fields i.. once one was
        // written, `first` fields i.. when none was yet. Named rules keep
        // the grammar linear in the number of fields.
        let mut after: Option<String> = None;
        let mut first: Option<String> = None;
        for (i, (field, required)) in fields.iter().enumerate().rev() {
            let tail = after.as_deref().map_or(String::new(), |t| format!(" {t}"));
            let first_body = match (required, &first) {
                (true, _) => format!("{field}{tail}"),
                (false, Some(rest)) => format!("({field}{tail} | {rest})"),
                (false, None) => format!("({field}{tail})?"),
            };
            if i == 0 {
                return Ok(self.rule(hint, format!(r#""{{" {first_body} "}}""#)));
            }
            let after_body = if *required {
                format!(r#""," {sp} {field}{tail}"#)
            } else {
                format!(r#"("," {sp} {field})?{tail}"#)
            };
            after = Some(self.rule(&format!("{hint}-after-{i}"), after_body));
            // `first` is needed only where the field before may be left out.
            first = (!fields[i - 1].1).then(|| self.rule(&format!("{hint}-from-{i}"), first_body));
        }
        unreachable!("an object with properties has a first field")
    }
}

fn primitive(name: &str) -> &'static str {
    PRIMITIVES
        .iter()
        .find(|(p, _)| *p == name)
        .map(|(_, body)| *body)
        .unwrap_or_default()
}

/// Whether the GBNF `body` names the rule `name` outside its literals.
fn refers_to(body: &str, name: &str) -> bool {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' => {
                // Skip a literal or a class, escapes included.
                let close = if c == '"' { '"' } else { ']' };
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == close {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '-' => {
                word.push(c);
                continue;
            }
            _ => {}
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    words.push(word);
    words.iter().any(|w| w == name)
}

/// A non-negative integer keyword such as `maxLength`.
fn count(
    schema: &serde_json::Map<String, Value>,
    keyword: &str,
    hint: &str,
) -> Result<Option<u64>, SchemaError> {
    match schema.get(keyword) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| SchemaError(format!("{hint}: {keyword} = {value}"))),
    }
}

/// `{min,max}` in GBNF's short forms.
fn repeat(min: u64, max: Option<u64>) -> String {
    match (min, max) {
        (0, None) => "*".to_owned(),
        (1, None) => "+".to_owned(),
        (0, Some(1)) => "?".to_owned(),
        (min, None) => format!("{{{min},}}"),
        (min, Some(max)) if min == max => format!("{{{min}}}"),
        (min, Some(max)) => format!("{{{min},{max}}}"),
    }
}

fn group(alternatives: &[String]) -> String {
    if alternatives.len() == 1 {
        alternatives[0].clone()
    } else {
        format!("({})", alternatives.join(" | "))
    }
}

/// A GBNF literal matching exactly the JSON text of `value`.
fn literal(value: &Value) -> String {
    let json = value.to_string();
    let mut out = String::with_capacity(json.len() + 2);
    out.push('"');
    for c in json.chars() {
        match c {
            '"' => out.push_str(r#"\""#),
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => {
                let _ = write!(out, r"\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A GBNF rule name (ASCII letters, digits, dashes) close to `hint`.
fn rule_name(hint: &str) -> String {
    let mut name = String::new();
    for c in hint.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    if name.is_empty() {
        "field".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_ascii_and_unique() {
        assert_eq!(rule_name("root-Имя клиента"), "root");
        assert_eq!(rule_name("Имя"), "field");
        assert_eq!(rule_name("root-budget_rub"), "root-budget-rub");
    }

    #[test]
    fn literals_escape_json_for_gbnf() {
        assert_eq!(literal(&json!("да")), r#""\"да\"""#);
        assert_eq!(literal(&json!("a\"b\\c")), r#""\"a\\\"b\\\\c\"""#);
        assert_eq!(literal(&json!(null)), r#""null""#);
        assert_eq!(literal(&json!(3)), r#""3""#);
    }

    #[test]
    fn references_outside_literals_only() {
        assert!(refers_to(primitive("string"), "char"));
        assert!(!refers_to(r#""char" [a-z]"#, "char"));
        assert!(refers_to(primitive("number"), "digits"));
        assert!(!refers_to(primitive("digits"), "integer"));
    }
}
