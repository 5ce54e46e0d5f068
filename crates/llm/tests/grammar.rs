//! JSON schema → GBNF: what the grammars accept, checked with a small GBNF
//! recogniser (llama.cpp itself reads them in the model tests).

mod support;

use rop_llm::grammar::gbnf_from_schema;
use serde_json::{json, Value};
use support::gbnf::Grammar;
use support::schema::validate;

fn grammar(schema: &Value) -> Grammar {
    let text = gbnf_from_schema(schema).unwrap();
    Grammar::parse(&text)
}

/// Every text in `good` is accepted and is valid JSON of the schema; every
/// text in `bad` is refused.
fn check(schema: &Value, good: &[&str], bad: &[&str]) {
    let gbnf = gbnf_from_schema(schema).unwrap();
    let grammar = Grammar::parse(&gbnf);
    for text in good {
        assert!(grammar.accepts(text), "refused {text}\n{gbnf}");
        let value: Value = serde_json::from_str(text).unwrap();
        validate(schema, &value).unwrap();
    }
    for text in bad {
        assert!(!grammar.accepts(text), "accepted {text}");
    }
}

fn fields() -> Value {
    json!({
        "type": "object",
        "properties": {
            "greeting_said": {"type": "boolean"},
            "manager_name": {"type": ["string", "null"]},
            "budget": {"type": ["integer", "null"]},
        },
        "required": ["greeting_said", "manager_name", "budget"],
        "additionalProperties": false,
    })
}

#[test]
fn flat_object_keeps_key_order_and_types() {
    check(
        &fields(),
        &[
            r#"{"greeting_said":true,"manager_name":"Анна","budget":300000}"#,
            r#"{"greeting_said": false, "manager_name": null, "budget": null}"#,
            r#"{"greeting_said":true,"manager_name":"","budget":-5}"#,
            r#"{"greeting_said":true,"manager_name":"Ёжик \"Ё\" \\ \n \u0416","budget":0}"#,
        ],
        &[
            // Wrong order, missing and extra keys.
            r#"{"manager_name":null,"greeting_said":true,"budget":null}"#,
            r#"{"greeting_said":true,"budget":null}"#,
            r#"{"greeting_said":true,"manager_name":null,"budget":null,"extra":1}"#,
            // Wrong types and malformed values.
            r#"{"greeting_said":"yes","manager_name":null,"budget":null}"#,
            r#"{"greeting_said":true,"manager_name":null,"budget":1.5}"#,
            r#"{"greeting_said":true,"manager_name":null,"budget":"300"}"#,
            r#"{"greeting_said":true,"manager_name":null,"budget":007}"#,
            r#"{"greeting_said":true,"manager_name":"a\qb","budget":null}"#,
            "{\"greeting_said\":true,\"manager_name\":\"a\nb\",\"budget\":null}",
            // Layout beyond one space after `:` and `,`.
            "{\n\"greeting_said\":true,\"manager_name\":null,\"budget\":null}",
            r#"{"greeting_said":  true,"manager_name":null,"budget":null}"#,
            r#" {"greeting_said":true,"manager_name":null,"budget":null}"#,
        ],
    );
}

#[test]
fn enums_of_russian_words_and_nullable_enums() {
    let schema = json!({
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["выполнен", "не выполнен", "нет данных"]},
            "tone": {"type": ["string", "null"], "enum": ["вежливо", "грубо"]},
            "quoted": {"enum": ["он сказал \"да\"", "a\\b"]},
        },
        "required": ["verdict", "tone", "quoted"],
        "additionalProperties": false,
    });
    check(
        &schema,
        &[
            r#"{"verdict":"выполнен","tone":"грубо","quoted":"он сказал \"да\""}"#,
            r#"{"verdict":"не выполнен","tone":null,"quoted":"a\\b"}"#,
            r#"{"verdict":"нет данных","tone":"вежливо","quoted":"a\\b"}"#,
        ],
        &[
            r#"{"verdict":"выполнено","tone":null,"quoted":"a\\b"}"#,
            r#"{"verdict":"Выполнен","tone":null,"quoted":"a\\b"}"#,
            r#"{"verdict":"выполнен","tone":"нейтрально","quoted":"a\\b"}"#,
            r#"{"verdict":"выполнен","tone":null,"quoted":"ab"}"#,
        ],
    );
}

#[test]
fn nested_arrays_of_objects_with_bounds() {
    let schema = json!({
        "type": "object",
        "properties": {
            "stages": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "maxLength": 10},
                        "done": {"type": "boolean"},
                        "quotes": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 20},
                        },
                    },
                    "required": ["id", "done", "quotes"],
                    "additionalProperties": false,
                },
            },
        },
        "required": ["stages"],
        "additionalProperties": false,
    });
    let stage = |id: &str| format!(r#"{{"id":"{id}","done":true,"quotes":[]}}"#);
    let one = format!(r#"{{"stages":[{}]}}"#, stage("a"));
    let three = format!(
        r#"{{"stages":[{}, {},{}]}}"#,
        stage("a"),
        stage("b"),
        stage("c")
    );
    let four = format!(
        r#"{{"stages":[{},{},{},{}]}}"#,
        stage("a"),
        stage("b"),
        stage("c"),
        stage("d")
    );
    // Twenty Cyrillic characters fit; twenty-one do not.
    let quotes =
        r#"{"stages":[{"id":"приветстви","done":false,"quotes":["Здравствуйте, я Анна", "а"]}]}"#;
    let long = r#"{"stages":[{"id":"x","done":false,"quotes":["Здравствуйте, я Анна!"]}]}"#;
    let long_id = r#"{"stages":[{"id":"приветствие","done":false,"quotes":[]}]}"#;
    check(
        &schema,
        &[&one, &three, quotes],
        &[
            r#"{"stages":[]}"#,
            &four,
            long,
            long_id,
            r#"{"stages":[{}]}"#,
        ],
    );
}

#[test]
fn array_bounds_of_every_kind() {
    let cases = [
        (json!({}), vec![0, 1, 5], vec![]),
        (json!({"minItems": 2}), vec![2, 3, 6], vec![0, 1]),
        (json!({"maxItems": 2}), vec![0, 1, 2], vec![3]),
        (json!({"minItems": 2, "maxItems": 2}), vec![2], vec![1, 3]),
        (json!({"maxItems": 0}), vec![0], vec![1]),
    ];
    for (bounds, good, bad) in cases {
        let mut schema = json!({"type": "array", "items": {"type": "integer"}});
        schema
            .as_object_mut()
            .unwrap()
            .extend(bounds.as_object().unwrap().clone());
        let grammar = grammar(&schema);
        let list = |n: usize| format!("[{}]", vec!["7"; n].join(","));
        for n in good {
            assert!(grammar.accepts(&list(n)), "{schema}: refused {n} items");
        }
        for n in bad {
            assert!(!grammar.accepts(&list(n)), "{schema}: accepted {n} items");
        }
    }
}

#[test]
fn optional_properties_may_be_left_out_in_order() {
    let schema = json!({
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "integer"},
            "c": {"type": "integer"},
            "d": {"type": "integer"},
        },
        "required": ["a", "d"],
        "additionalProperties": false,
    });
    check(
        &schema,
        &[
            r#"{"a":1,"d":4}"#,
            r#"{"a":1,"b":2,"d":4}"#,
            r#"{"a":1,"c":3,"d":4}"#,
            r#"{"a":1, "b":2, "c":3, "d":4}"#,
        ],
        &[
            r#"{"a":1}"#,
            r#"{"d":4}"#,
            r#"{"a":1,,"d":4}"#,
            r#"{"a":1,"c":3,"b":2,"d":4}"#,
            r#"{"a":1"d":4}"#,
        ],
    );

    let all_optional = json!({
        "type": "object",
        "properties": {"x": {"type": "boolean"}, "y": {"type": "null"}, "z": {"const": "z"}},
        "additionalProperties": false,
    });
    check(
        &all_optional,
        &[
            "{}",
            r#"{"x":true}"#,
            r#"{"y":null}"#,
            r#"{"x":false,"z":"z"}"#,
            r#"{"x":true,"y":null,"z":"z"}"#,
        ],
        &[
            r#"{,"y":null}"#,
            r#"{"x":true,}"#,
            r#"{"z":"y"}"#,
            r#"{"y":null,"x":true}"#,
        ],
    );
}

#[test]
fn numbers_consts_and_alternatives() {
    let schema = json!({
        "type": "object",
        "properties": {
            "kind": {"const": "итог"},
            "score": {"type": "number"},
            "count": {"type": "integer", "minimum": 0},
            "amount": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
            "anything": {},
        },
        "required": ["kind", "score", "count", "amount", "anything"],
        "additionalProperties": false,
    });
    check(
        &schema,
        &[
            r#"{"kind":"итог","score":-0.25,"count":0,"amount":12,"anything":{"a":[1,"b",null]}}"#,
            r#"{"kind":"итог","score":3,"count":12,"amount":"млн","anything":"x"}"#,
        ],
        &[
            r#"{"kind":"итоги","score":1,"count":1,"amount":1,"anything":1}"#,
            r#"{"kind":"итог","score":1.,"count":1,"amount":1,"anything":1}"#,
            r#"{"kind":"итог","score":1,"count":-1,"amount":1,"anything":1}"#,
            r#"{"kind":"итог","score":1,"count":1,"amount":"млн.","anything":1}"#,
        ],
    );
}

#[test]
fn identical_sub_schemas_share_rules_and_output_is_stable() {
    let item = json!({
        "type": "object",
        "properties": {"q": {"type": "string", "maxLength": 5}},
        "required": ["q"],
        "additionalProperties": false,
    });
    let schema = json!({
        "type": "object",
        "properties": {"first": item, "second": item},
        "required": ["first", "second"],
        "additionalProperties": false,
    });
    let text = gbnf_from_schema(&schema).unwrap();
    assert_eq!(text, gbnf_from_schema(&schema).unwrap());
    assert_eq!(text.matches("{0,5}").count(), 1, "{text}");
    // Only rules that are used are written.
    assert!(!text.contains("\nnumber ::="), "{text}");
    assert!(!text.contains("\nvalue ::="), "{text}");
    Grammar::parse(&text);
}

#[test]
fn unsupported_schemas_are_refused_in_russian() {
    let cases = [
        json!({"$ref": "#/definitions/x"}),
        json!({"type": "string", "pattern": "^a+$"}),
        json!({"type": "date"}),
        json!({"allOf": [{"type": "string"}]}),
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}),
        json!({"type": "string", "minLength": 3, "maxLength": 2}),
        json!({"type": "array", "items": {"type": "integer"}, "maxItems": -1}),
        json!("string"),
    ];
    for schema in cases {
        let error = gbnf_from_schema(&schema).unwrap_err().to_string();
        assert!(
            error.starts_with("схема ответа не поддерживается"),
            "{schema}: {error}"
        );
    }
}
