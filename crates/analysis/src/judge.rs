//! A checklist judged by the language model, evidence first.
//!
//! A small model says "done" too easily (MODELS.md), so it is not asked
//! for a verdict alone. For every stage it first names the line and copies
//! the manager's words that do the stage, then explains, and only then
//! says done or not. The code decides: a "done" stands only when its quote
//! is found among the manager's lines (the whole call when it is mono) or
//! one of the stage's example phrases was said; a forbidden phrase fails
//! the stage whatever the model says.
//!
//! serde_json keeps object keys sorted, and an engine that constrains the
//! answer writes the properties in the schema's order, so the names are
//! chosen to sort in the order the model should think in: `evidence_line`,
//! `evidence_quote`, `explanation`, `is_done`, `percent`; stages are keyed
//! `01_<stage_id>`, `02_…` to keep the checklist's order.

use rop_domain::analysis::{Checklist, Stage, StageResult};
use rop_llm::{LanguageModel, Prompt};
use serde_json::{json, Map, Value};

use crate::ask::{ask, json_object, SYSTEM};
use crate::dialogue::{Dialogue, Speaker};
use crate::rules::{evidence, PhraseEvidence};
use crate::{quotes, stage_result, AnalysisError};

const MAX_QUOTE_CHARS: usize = 300;
const MAX_EXPLANATION_CHARS: usize = 300;

pub(crate) async fn run(
    llm: &dyn LanguageModel,
    dialogue: &Dialogue,
    checklist: &Checklist,
) -> Result<Vec<StageResult>, AnalysisError> {
    let prompt = prompt(dialogue, checklist);
    let answers = ask(llm, &prompt, |text| parse(checklist, text)).await?;
    Ok(checklist
        .stages
        .iter()
        .zip(answers)
        .map(|(stage, answer)| decide(dialogue, stage, &answer))
        .collect())
}

fn stage_key(index: usize, stage: &Stage) -> String {
    format!("{:02}_{}", index + 1, stage.stage_id)
}

pub(crate) fn prompt(dialogue: &Dialogue, checklist: &Checklist) -> Prompt {
    Prompt {
        system: SYSTEM.to_string(),
        context: dialogue.render(),
        task: task(dialogue, checklist),
        schema: schema(checklist),
        schema_name: "checklist".into(),
        max_tokens: 64 + 200 * checklist.stages.len() as u32,
    }
}

fn task(dialogue: &Dialogue, checklist: &Checklist) -> String {
    let mut out = format!(
        "Задание: проверь, какие этапы скрипта продаж «{}» менеджер выполнил в этом звонке.\n",
        checklist.name
    );
    if !checklist.general_instruction.trim().is_empty() {
        out.push_str(&format!(
            "Общая инструкция: {}\n",
            checklist.general_instruction.trim()
        ));
    }
    out.push_str("\nЭтапы:\n");
    for (i, stage) in checklist.stages.iter().enumerate() {
        out.push_str(&format!("{} — «{}».", stage_key(i, stage), stage.name));
        if !stage.instruction.trim().is_empty() {
            out.push_str(&format!(" {}", stage.instruction.trim()));
        }
        out.push('\n');
        if !stage.example_phrases.is_empty() {
            out.push_str(&format!(
                "   Так это может звучать (это образец, а не цитата из звонка): {}.\n",
                quoted(&stage.example_phrases)
            ));
        }
        if !stage.forbidden_phrases.is_empty() {
            out.push_str(&format!(
                "   Менеджеру нельзя говорить: {}.\n",
                quoted(&stage.forbidden_phrases)
            ));
        }
    }
    let whose = if dialogue.mono {
        "Запись моно, говорящие не разделены: ищи слова, которые по смыслу сказал менеджер."
    } else {
        "Засчитываются только строки «Менеджер»."
    };
    out.push_str(&format!(
        "\nДля каждого этапа, по порядку:\n\
         1) evidence_line — номер строки расшифровки, где менеджер выполняет этап; 0, если такой строки нет.\n\
         2) evidence_quote — точные слова из этой строки, которые это доказывают (не больше {MAX_QUOTE_CHARS} символов); пустая строка, если evidence_line = 0.\n\
         3) explanation — коротко по-русски: что именно сделал или не сделал менеджер.\n\
         4) is_done — true, только если evidence_quote прямо показывает выполнение этапа; иначе false.\n\
         5) percent — от 0 до 100: насколько полно и уверенно этап выполнен.\n\
         {whose}\n\
         НЕ считается выполнением:\n\
         - слова клиента, а не менеджера;\n\
         - обещание сделать это потом или вопрос «можно ли», без самого действия;\n\
         - общие вежливые слова и разговор на похожую тему, если суть этапа не выполнена;\n\
         - то, чего нет в расшифровке, даже если в таких звонках это обычно бывает.\n\
         Если подходящих слов менеджера нет или ты сомневаешься — is_done: false, evidence_line: 0, evidence_quote: \"\".\n"
    ));
    out
}

fn quoted(phrases: &[String]) -> String {
    phrases
        .iter()
        .map(|p| format!("«{}»", p.trim()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One object per stage, keyed in the checklist's order; no example
/// values, no defaults, nothing the model could copy. The evidence line is
/// not limited to the manager's lines by the grammar: tried, that made the
/// model cite an unrelated line of the manager for a stage that never
/// happened instead of admitting there is none (the code can check that
/// words were said, not what they mean).
pub(crate) fn schema(checklist: &Checklist) -> Value {
    let stage = json!({
        "type": "object",
        "properties": {
            "evidence_line": {"type": "integer", "minimum": 0},
            "evidence_quote": {"type": "string", "maxLength": MAX_QUOTE_CHARS},
            "explanation": {"type": "string", "maxLength": MAX_EXPLANATION_CHARS},
            "is_done": {"type": "boolean"},
            "percent": {"type": "integer", "minimum": 0, "maximum": 100}
        },
        "required": ["evidence_line", "evidence_quote", "explanation", "is_done", "percent"],
        "additionalProperties": false
    });
    let keys: Vec<String> = checklist
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| stage_key(i, s))
        .collect();
    let properties: Map<String, Value> = keys.iter().map(|k| (k.clone(), stage.clone())).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": keys,
        "additionalProperties": false
    })
}

/// What the model said about one stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageAnswer {
    pub line: Option<usize>,
    pub quote: String,
    pub explanation: String,
    pub done: bool,
    pub percent: u8,
}

/// The model's text as one answer per stage, in the checklist's order, or
/// what is wrong with it.
pub(crate) fn parse(checklist: &Checklist, text: &str) -> Result<Vec<StageAnswer>, String> {
    let mut map = json_object(text)?;
    let mut answers = Vec::with_capacity(checklist.stages.len());
    for (i, stage) in checklist.stages.iter().enumerate() {
        let key = stage_key(i, stage);
        // A server that ignores the schema may key stages by their bare id.
        let value = map
            .remove(&key)
            .or_else(|| map.remove(&stage.stage_id))
            .ok_or_else(|| format!("нет этапа {key}"))?;
        answers.push(stage_answer(&key, value)?);
    }
    if let Some(extra) = map.keys().next() {
        return Err(format!("неизвестный этап {extra}"));
    }
    Ok(answers)
}

fn stage_answer(key: &str, value: Value) -> Result<StageAnswer, String> {
    let Value::Object(fields) = value else {
        return Err(format!("{key}: не объект"));
    };
    let field = |name: &str| fields.get(name).unwrap_or(&Value::Null);
    let text = |name: &str| match field(name) {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("{key}.{name}: ожидалась строка, а не {other}")),
    };
    let done = match field("is_done") {
        Value::Bool(b) => *b,
        other => {
            return Err(format!(
                "{key}.is_done: ожидалось true или false, а не {other}"
            ))
        }
    };
    let line = match field("evidence_line") {
        Value::Null => None,
        // 0 is "no line"; a negative one (grammars allow the sign) too.
        Value::Number(n) => n.as_u64().filter(|n| *n > 0).map(|n| n as usize),
        other => {
            return Err(format!(
                "{key}.evidence_line: ожидалось число, а не {other}"
            ))
        }
    };
    let percent = match field("percent") {
        Value::Null => u8::from(done) * 100,
        Value::Number(n) => n.as_f64().map_or(0.0, |p| p.clamp(0.0, 100.0)).round() as u8,
        other => return Err(format!("{key}.percent: ожидалось число, а не {other}")),
    };
    Ok(StageAnswer {
        line,
        quote: text("evidence_quote")?,
        explanation: text("explanation")?,
        done,
        percent,
    })
}

/// The stage's result from the model's answer and the phrase rules.
pub(crate) fn decide(dialogue: &Dialogue, stage: &Stage, answer: &StageAnswer) -> StageResult {
    let PhraseEvidence { example, forbidden } = evidence(dialogue, stage);
    if let Some((phrase, found)) = forbidden {
        return stage_result(
            stage,
            false,
            0,
            format!("Прозвучала запрещённая фраза «{phrase}»."),
            Some(found),
        );
    }
    let verified = quotes::find(dialogue, &answer.quote, Speaker::Manager, answer.line);
    if !answer.done {
        let comment = if answer.explanation.is_empty() {
            "Этап не выполнен.".to_string()
        } else {
            answer.explanation.clone()
        };
        return stage_result(stage, false, 0, comment, verified);
    }
    if let Some(found) = verified {
        let comment = if answer.explanation.is_empty() {
            "Этап выполнен.".to_string()
        } else {
            answer.explanation.clone()
        };
        // A stage counted as done is at least half done, whatever the
        // model's (poorly calibrated) number says.
        return stage_result(stage, true, answer.percent.max(50), comment, Some(found));
    }
    let why = if answer.quote.is_empty() {
        "Модель не привела цитату."
    } else if !dialogue.mono
        && quotes::find(dialogue, &answer.quote, Speaker::Anyone, None).is_some()
    {
        "Цитата принадлежит клиенту, а не менеджеру."
    } else {
        "Цитата не найдена в расшифровке."
    };
    match example {
        Some((phrase, found)) => stage_result(
            stage,
            true,
            answer.percent.max(50),
            format!("{why} Этап подтверждён фразой из примеров «{phrase}»."),
            Some(found),
        ),
        None => {
            let mut comment = format!("{why} Этап не засчитан.");
            if !answer.explanation.is_empty() {
                comment.push_str(&format!(" Вывод модели: {}", answer.explanation));
            }
            stage_result(stage, false, 0, comment, None)
        }
    }
}
