//! A table filled by the language model: the model copies what the call
//! says, the code turns it into the column's type.
//!
//! Numbers, amounts and dates are asked for as text, the way the call says
//! them («двести тысяч», «в среду»), and converted here against the call's
//! date: a small model multiplies and counts days badly. The schema has no
//! descriptions, examples or defaults, so there is nothing in it to copy.
//!
//! An answer that is not JSON, lacks a column or puts a list or an object
//! where a value belongs is asked again once, then fails. A value that is
//! there but cannot be read as its type («когда-нибудь» for a date, a word
//! outside an enum) becomes `null` at once: asking the same question again
//! rarely changes what the call said, and one unreadable field should not
//! cost the others. A value the model copied from the table's definition
//! (an example in a column's description) that the call never says is
//! dropped too, and so is a date with a year the call never says.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rop_domain::analysis::{Column, ColumnType, Table};
use rop_llm::{LanguageModel, Prompt};
use serde_json::{json, Map, Value};

use crate::ask::{ask, json_object, SYSTEM};
use crate::dialogue::{normalized_words, Dialogue, Speaker};
use crate::normalize::{match_enum, parse_bool, parse_date, parse_number};
use crate::{quotes, AnalysisError};

const MAX_SPAN_CHARS: usize = 200;
const MAX_STRING_CHARS: usize = 1_000;

pub(crate) async fn run(
    llm: &dyn LanguageModel,
    dialogue: &Dialogue,
    table: &Table,
    call_date: NaiveDate,
) -> Result<BTreeMap<String, Value>, AnalysisError> {
    let prompt = prompt(dialogue, table);
    let data = ask(llm, &prompt, |text| parse(dialogue, table, text, call_date)).await?;
    table
        .check_data(&data)
        .map_err(|e| AnalysisError::Failed(format!("Данные таблицы не прошли проверку: {e}")))?;
    Ok(data)
}

pub(crate) fn prompt(dialogue: &Dialogue, table: &Table) -> Prompt {
    Prompt {
        system: SYSTEM.to_string(),
        context: dialogue.render(),
        task: task(table),
        schema: schema(table),
        schema_name: "table".into(),
        max_tokens: 32 + 64 * table.columns.len() as u32,
    }
}

fn task(table: &Table) -> String {
    let mut out = format!(
        "Задание: заполни таблицу «{}» по этому звонку.\n",
        table.name
    );
    if !table.instruction.trim().is_empty() {
        out.push_str(&format!("Инструкция: {}\n", table.instruction.trim()));
    }
    out.push_str("\nПоля:\n");
    for column in &table.columns {
        let kind = match column.kind {
            ColumnType::String => "текст".to_string(),
            ColumnType::Number => {
                "число — цифрами, если его сказали цифрами, иначе словами, как сказали в разговоре"
                    .to_string()
            }
            ColumnType::Integer => {
                "целое число — цифрами, если его сказали цифрами, иначе словами, как сказали в разговоре"
                    .to_string()
            }
            ColumnType::Boolean => "да или нет: true или false".to_string(),
            ColumnType::Date => {
                "дата — перепиши слова из разговора как есть; не пересчитывай их в календарную дату \
                 и не придумывай год"
                    .to_string()
            }
            ColumnType::Enum => format!(
                "одно из значений: {}",
                column
                    .values
                    .iter()
                    .map(|v| format!("«{v}»"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push_str(&format!("- {} — «{}»; {kind}.", column.key, column.title));
        if !column.description.trim().is_empty() {
            out.push_str(&format!(" {}", column.description.trim()));
        }
        out.push('\n');
    }
    out.push_str(
        "\nПравила:\n\
         - Бери только то, что прямо сказано в этом звонке. Если этого в звонке нет — null. Не угадывай.\n\
         - Не бери значения из описаний полей: описание объясняет поле, а не подсказывает ответ.\n\
         - Числа, суммы и даты переписывай из разговора как есть, словами или цифрами, вместе с «тысяч», «млн», «завтра», «в среду»: программа сама переведёт их.\n\
         - Для полей-перечислений выбирай одно из перечисленных значений или null.\n",
    );
    out
}

/// Every column nullable, typed as the model should write it: dates as
/// text, amounts as a number or text, to be converted by code.
pub(crate) fn schema(table: &Table) -> Value {
    let properties: Map<String, Value> = table
        .columns
        .iter()
        .map(|column| {
            let schema = match column.kind {
                ColumnType::Boolean => json!({"type": ["boolean", "null"]}),
                ColumnType::Enum => {
                    let mut values: Vec<Value> =
                        column.values.iter().cloned().map(Value::String).collect();
                    values.push(Value::Null);
                    json!({"type": ["string", "null"], "enum": values})
                }
                ColumnType::String => {
                    json!({"type": ["string", "null"], "maxLength": MAX_STRING_CHARS})
                }
                // A number the call says in digits may be written as one;
                // words («двести тысяч») stay words for the code to read.
                ColumnType::Number | ColumnType::Integer => {
                    json!({"type": ["number", "string", "null"], "maxLength": MAX_SPAN_CHARS})
                }
                ColumnType::Date => {
                    json!({"type": ["string", "null"], "maxLength": MAX_SPAN_CHARS})
                }
            };
            (column.key.clone(), schema)
        })
        .collect();
    let keys: Vec<&str> = table.columns.iter().map(|c| c.key.as_str()).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": keys,
        "additionalProperties": false
    })
}

/// The model's text as the table's data, every value of its column's type
/// or `null`; an error says what is wrong with the answer's shape.
pub(crate) fn parse(
    dialogue: &Dialogue,
    table: &Table,
    text: &str,
    call_date: NaiveDate,
) -> Result<BTreeMap<String, Value>, String> {
    let map = json_object(text)?;
    table
        .columns
        .iter()
        .map(|column| {
            let raw = map
                .get(&column.key)
                .ok_or_else(|| format!("нет поля {}", column.key))?;
            let value = if copied_from_definition(dialogue, table, column, raw)
                || (column.kind == ColumnType::Date && invents_a_year(dialogue, raw))
            {
                Value::Null
            } else {
                value(column, raw, call_date)?
            };
            Ok((column.key.clone(), value))
        })
        .collect()
}

/// The model took the value from the table's own words (an example in a
/// description, the instruction) rather than from the call: the failure
/// MODELS.md measured most often. Enum values and booleans are exempt:
/// the definition has to name them.
fn copied_from_definition(
    dialogue: &Dialogue,
    table: &Table,
    column: &Column,
    raw: &Value,
) -> bool {
    if matches!(column.kind, ColumnType::Enum | ColumnType::Boolean) {
        return false;
    }
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    let words = normalized_words(&text).join(" ");
    if words.is_empty() {
        return false;
    }
    let definition = std::iter::once(table.instruction.as_str())
        .chain(table.columns.iter().map(|c| c.description.as_str()))
        .map(|t| format!(" {} ", normalized_words(t).join(" ")))
        .collect::<String>();
    definition.contains(&format!(" {words} "))
        && quotes::find(dialogue, &text, Speaker::Anyone, None).is_none()
}

/// A date with a year the call never says: the model does not know when
/// the call was, so it dated it itself (MODELS.md saw made-up dates in most
/// calls). Dates are read from the call's own words against its date.
fn invents_a_year(dialogue: &Dialogue, raw: &Value) -> bool {
    let Value::String(text) = raw else {
        return false;
    };
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 4)
        .any(|year| !dialogue.lines.iter().any(|line| line.text.contains(year)))
}

/// Words a model writes for "not said".
fn means_nothing(text: &str) -> bool {
    let words = normalized_words(text).join(" ");
    matches!(
        words.as_str(),
        "" | "null"
            | "none"
            | "na"
            | "нет данных"
            | "не указано"
            | "не указан"
            | "не указана"
            | "неизвестно"
            | "не известно"
            | "не упоминается"
            | "не сказано"
            | "не названо"
    )
}

fn value(column: &Column, raw: &Value, call_date: NaiveDate) -> Result<Value, String> {
    let key = &column.key;
    let text = match raw {
        Value::Null => return Ok(Value::Null),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!("{key}: ожидалось значение, а не {raw}"))
        }
        Value::String(s) if means_nothing(s) => return Ok(Value::Null),
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    };
    let value = match column.kind {
        ColumnType::String => Value::String(text.chars().take(MAX_STRING_CHARS).collect()),
        ColumnType::Boolean => match raw {
            Value::Bool(b) => Value::Bool(*b),
            _ => parse_bool(&text).map_or(Value::Null, Value::Bool),
        },
        ColumnType::Number => match raw {
            Value::Number(_) => raw.clone(),
            _ => parse_number(&text).map_or(Value::Null, number),
        },
        ColumnType::Integer => {
            let n = match raw {
                Value::Number(n) => n.as_f64(),
                _ => parse_number(&text),
            };
            n.filter(|n| n.fract() == 0.0 && n.abs() < 9e15)
                .map_or(Value::Null, |n| Value::from(n as i64))
        }
        ColumnType::Date => parse_date(&text, call_date).map_or(Value::Null, |d| {
            Value::String(d.format("%Y-%m-%d").to_string())
        }),
        ColumnType::Enum => match_enum(&text, &column.values).map_or(Value::Null, Value::String),
    };
    Ok(value)
}

/// Whole numbers as JSON integers (`300000`, not `300000.0`).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}
