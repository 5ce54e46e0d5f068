//! One question to the model: the shared prompt layout, and the answer
//! checked against what we asked for, retried once when it is not.

use rop_llm::{LanguageModel, LlmError, Prompt};
use serde_json::Value;

use crate::AnalysisError;

/// The same for every question, so the engine's cache keeps it with the
/// transcript that follows it.
pub(crate) const SYSTEM: &str = "Ты — строгий и внимательный аналитик отдела продаж. \
Тебе дают расшифровку телефонного звонка менеджера с клиентом, а после неё — задание. \
Опирайся только на то, что действительно сказано в расшифровке, и ничего не додумывай: \
чего нет в расшифровке, того не было. Цитаты копируй из расшифровки слово в слово. \
Комментарии пиши по-русски, коротко. Отвечай только JSON по схеме из задания.";

/// Asks `prompt`; `check` turns the text into the answer or says what is
/// wrong with it. A wrong answer is asked again once: sampling or a remote
/// model may do better the second time; a second wrong answer fails.
pub(crate) async fn ask<T>(
    llm: &dyn LanguageModel,
    prompt: &Prompt,
    check: impl Fn(&str) -> Result<T, String>,
) -> Result<T, AnalysisError> {
    let mut problem = String::new();
    for attempt in 1..=2 {
        let completion = llm.complete(prompt).await.map_err(|e| match e {
            LlmError::Unavailable(m) => {
                AnalysisError::Unavailable(format!("Языковая модель недоступна: {m}"))
            }
            LlmError::Failed(m) => AnalysisError::Failed(format!("Ошибка языковой модели: {m}")),
        })?;
        tracing::debug!(
            schema = %prompt.schema_name,
            prompt_tokens = completion.prompt_tokens,
            cached_tokens = completion.cached_tokens,
            completion_tokens = completion.completion_tokens,
            secs = completion.prompt_secs + completion.generation_secs,
            "model answered"
        );
        match check(&completion.text) {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                tracing::warn!(attempt, schema = %prompt.schema_name, problem = %e, "model answer rejected");
                problem = e;
            }
        }
    }
    Err(AnalysisError::Failed(format!(
        "Языковая модель дважды ответила не по схеме: {problem}"
    )))
}

/// The JSON object in a model's text, tolerating code fences and words
/// around it (servers that do not enforce the schema).
pub(crate) fn json_object(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err(format!("ответ не JSON-объект: «{}»", excerpt(text)));
    };
    if end < start {
        return Err(format!("ответ не JSON-объект: «{}»", excerpt(text)));
    }
    match serde_json::from_str(&text[start..=end]) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("ответ не JSON-объект".into()),
        Err(e) => Err(format!(
            "ответ не разбирается как JSON ({e}): «{}»",
            excerpt(text)
        )),
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_inside_fences() {
        let map = json_object("```json\n{\"a\": 1}\n```").unwrap();
        assert_eq!(map["a"], 1);
        assert!(json_object("нет").unwrap_err().contains("не JSON"));
        assert!(json_object("{\"a\": }").is_err());
        assert!(json_object("} {").is_err());
    }
}
