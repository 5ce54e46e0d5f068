//! The analyzer end to end, with a scripted stand-in for the model.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{NaiveDate, TimeZone};
use rop_domain::transcript::SpeakerRole::{Client, Manager, Unknown};
use rop_llm::{Completion, LlmError, Prompt};
use serde_json::{json, Value};

use super::*;
use crate::dialogue::tests::transcript;

/// Answers with the scripted texts in order and remembers every prompt.
struct Scripted {
    answers: Mutex<VecDeque<Result<String, LlmError>>>,
    prompts: Mutex<Vec<Prompt>>,
}

impl Scripted {
    fn new(answers: Vec<Result<String, LlmError>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            prompts: Mutex::new(Vec::new()),
        })
    }

    fn texts(texts: &[Value]) -> Arc<Self> {
        Self::new(texts.iter().map(|t| Ok(t.to_string())).collect())
    }

    fn prompts(&self) -> Vec<Prompt> {
        self.prompts.lock().unwrap().clone()
    }
}

#[async_trait]
impl LanguageModel for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn model(&self) -> String {
        "test".into()
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        self.prompts.lock().unwrap().push(prompt.clone());
        let text = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("no more scripted answers")?;
        Ok(Completion {
            text,
            prompt_tokens: 100,
            cached_tokens: 0,
            completion_tokens: 10,
            prompt_secs: 0.1,
            generation_secs: 0.1,
        })
    }
}

fn analyzer(model: &Arc<Scripted>) -> Analyzer {
    Analyzer::new(Some(model.clone() as Arc<dyn LanguageModel>))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 21, 12, 0, 0).unwrap()
}

fn call() -> Transcript {
    transcript(
        &[
            (
                Manager,
                0.0,
                "Добрый день! Компания «Окна Плюс», меня зовут Анна.",
            ),
            (
                Client,
                6.0,
                "Здравствуйте, хочу узнать цену на пластиковые окна.",
            ),
            (
                Manager,
                12.0,
                "Подскажите, какой у вас бюджет на остекление?",
            ),
            (Client, 20.0, "Где-то двести тысяч, не больше."),
            (Manager, 25.0, "Хорошо, давайте я приеду на замер в среду?"),
            (Client, 30.0, "Давайте, перезвоните мне завтра утром."),
        ],
        true,
    )
}

fn checklist() -> Checklist {
    serde_json::from_value(json!({
        "checklist_id": "sales",
        "name": "Продажа окон",
        "general_instruction": "Менеджер ведёт клиента к замеру.",
        "stages": [
            {"stage_id": "greeting", "name": "Приветствие",
             "instruction": "Менеджер здоровается и представляется.",
             "example_phrases": ["добрый день"], "weight": 2},
            {"stage_id": "budget", "name": "Бюджет",
             "instruction": "Менеджер выясняет бюджет клиента."},
            {"stage_id": "objections", "name": "Отработка возражений",
             "instruction": "Менеджер отвечает на сомнения клиента.",
             "forbidden_phrases": ["не знаю"]}
        ]
    }))
    .unwrap()
}

fn stage(line: u64, quote: &str, done: bool, percent: u64, explanation: &str) -> Value {
    json!({
        "evidence_line": line,
        "evidence_quote": quote,
        "explanation": explanation,
        "is_done": done,
        "percent": percent
    })
}

fn answer(greeting: Value, budget: Value, objections: Value) -> Value {
    json!({"01_greeting": greeting, "02_budget": budget, "03_objections": objections})
}

fn good_answer() -> Value {
    answer(
        stage(
            1,
            "Добрый день! Компания Окна Плюс",
            true,
            95,
            "Поздоровалась и представилась.",
        ),
        stage(
            3,
            "какой у вас бюджет на остекление",
            true,
            90,
            "Спросила бюджет.",
        ),
        stage(0, "", false, 0, "Возражений не было."),
    )
}

#[tokio::test]
async fn verified_quotes_complete_stages_with_the_transcripts_words() {
    let model = Scripted::texts(&[good_answer()]);
    let result = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap();
    assert_eq!(result.engine, AnalysisEngine::Llm);
    let [greeting, budget, objections] = &result.stages[..] else {
        panic!("three stages");
    };
    assert_eq!(greeting.status, StageStatus::Completed);
    assert_eq!((greeting.score, greeting.percentage), (1, 95));
    assert_eq!(greeting.quote, "Добрый день! Компания «Окна Плюс»");
    assert_eq!(
        (greeting.quote_start, greeting.quote_end),
        (Some(0.0), Some(4.8))
    );
    assert_eq!(budget.quote, "какой у вас бюджет на остекление?");
    assert_eq!(budget.status, StageStatus::Completed);
    assert_eq!(objections.status, StageStatus::Failed);
    assert_eq!((objections.score, objections.percentage), (-1, 0));
    assert_eq!(objections.comment, "Возражений не было.");
    assert_eq!((result.total_score, result.max_score), (3, 4));
    assert_eq!(result.completion_percentage, 75.0);
}

#[tokio::test]
async fn invalid_output_is_retried_once() {
    let model = Scripted::new(vec![
        Ok("Конечно! Вот ответ: {\"01_greeting\":".into()),
        Ok(good_answer().to_string()),
    ]);
    let result = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap();
    assert_eq!(result.total_score, 3);
    let prompts = model.prompts();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0], prompts[1]);
}

#[tokio::test]
async fn invalid_output_twice_fails_saying_what_was_wrong() {
    let missing =
        json!({"01_greeting": stage(0, "", false, 0, ""), "02_budget": stage(0, "", false, 0, "")});
    let model = Scripted::texts(&[json!("не JSON"), missing]);
    let err = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap_err();
    let AnalysisError::Failed(message) = err else {
        panic!("{err:?}");
    };
    assert!(message.contains("не по схеме"), "{message}");
    assert!(message.contains("нет этапа 03_objections"), "{message}");

    let mut unknown = good_answer();
    unknown["04_closing"] = stage(0, "", false, 0, "");
    let mut wrong_type = good_answer();
    wrong_type["02_budget"]["is_done"] = json!("да");
    let model = Scripted::texts(&[unknown, wrong_type]);
    let err = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("02_budget.is_done"), "{err}");
}

#[tokio::test]
async fn a_done_stage_whose_quote_is_not_in_the_transcript_fails() {
    let model = Scripted::texts(&[answer(
        stage(1, "Добрый день! Компания Окна Плюс", true, 95, ""),
        stage(
            3,
            "Какой бюджет вы готовы выделить на новые окна и двери?",
            true,
            90,
            "Спросила бюджет.",
        ),
        stage(
            2,
            "хочу узнать цену на пластиковые окна",
            true,
            80,
            "Клиент спросил цену.",
        ),
    )]);
    let result = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap();
    let budget = &result.stages[1];
    assert_eq!(budget.status, StageStatus::Failed);
    assert_eq!((budget.score, budget.percentage), (-1, 0));
    assert_eq!(budget.quote, "");
    assert_eq!(budget.quote_start, None);
    assert!(
        budget
            .comment
            .starts_with("Цитата не найдена в расшифровке."),
        "{}",
        budget.comment
    );
    assert!(budget.comment.contains("Спросила бюджет."));
    // The client's words are not the manager's.
    let objections = &result.stages[2];
    assert_eq!(objections.status, StageStatus::Failed);
    assert!(
        objections.comment.contains("принадлежит клиенту"),
        "{}",
        objections.comment
    );
}

#[tokio::test]
async fn phrase_rules_back_and_veto_the_model() {
    let mut checklist = checklist();
    checklist.stages[1].forbidden_phrases = vec!["бюджет".into()];
    // The greeting's quote is invented, but «добрый день» was said; the
    // budget stage is vetoed by its forbidden word.
    let model = Scripted::texts(&[answer(
        stage(1, "Здравствуйте, рады вас слышать", true, 30, ""),
        stage(3, "какой у вас бюджет на остекление", true, 90, ""),
        stage(0, "", false, 0, ""),
    )]);
    let result = analyzer(&model)
        .checklist(&checklist, &call(), now())
        .await
        .unwrap();
    let greeting = &result.stages[0];
    assert_eq!(greeting.status, StageStatus::Completed);
    assert_eq!(greeting.quote, "Добрый день!");
    assert_eq!(greeting.percentage, 50);
    assert!(greeting
        .comment
        .contains("подтверждён фразой из примеров «добрый день»"));
    let budget = &result.stages[1];
    assert_eq!(budget.status, StageStatus::Failed);
    assert_eq!(budget.comment, "Прозвучала запрещённая фраза «бюджет».");
    assert_eq!(budget.quote, "бюджет");
}

#[tokio::test]
async fn on_mono_calls_any_line_may_hold_the_quote() {
    let mono = transcript(
        &[
            (Unknown, 0.0, "Алло, слушаю."),
            (Unknown, 2.0, "Добрый день, это компания Окна Плюс."),
        ],
        false,
    );
    let model = Scripted::texts(&[answer(
        stage(
            2,
            "Добрый день, это компания Окна Плюс",
            true,
            100,
            "Представилась.",
        ),
        stage(0, "", false, 0, ""),
        stage(0, "", false, 0, ""),
    )]);
    let result = analyzer(&model)
        .checklist(&checklist(), &mono, now())
        .await
        .unwrap();
    assert_eq!(result.stages[0].status, StageStatus::Completed);
    assert_eq!(
        (result.stages[0].quote_start, result.stages[0].quote_end),
        (Some(2.0), Some(8.0))
    );
    assert!(model.prompts()[0].context.contains("моно"));
}

#[tokio::test]
async fn model_errors_map_to_analysis_errors() {
    let model = Scripted::new(vec![Err(LlmError::Unavailable(
        "сервер не отвечает".into(),
    ))]);
    let err = analyzer(&model)
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AnalysisError::Unavailable(m) if m.contains("сервер не отвечает")),
        "{err:?}"
    );
    let model = Scripted::new(vec![Err(LlmError::Failed("нет файла модели".into()))]);
    let err = analyzer(&model)
        .table(&table(), &call(), None, now())
        .await
        .unwrap_err();
    assert!(matches!(err, AnalysisError::Failed(_)));
}

#[tokio::test]
async fn engines_follow_the_choice() {
    // No model: rules by default, a clear failure when the model is demanded.
    let plain = Analyzer::new(None);
    assert!(!plain.has_llm());
    let result = plain.checklist(&checklist(), &call(), now()).await.unwrap();
    assert_eq!(result.engine, AnalysisEngine::Rules);
    assert_eq!(result.stages[0].status, StageStatus::Completed);
    assert_eq!(
        result.stages[1].comment,
        "Нет примеров фраз — этап проверяется только языковой моделью"
    );
    let mut demanding = checklist();
    demanding.engine = EngineChoice::Llm;
    let err = plain
        .checklist(&demanding, &call(), now())
        .await
        .unwrap_err();
    assert!(matches!(&err, AnalysisError::Failed(m) if m.contains("модель не настроена")));
    assert_eq!(
        plain.table(&table(), &call(), None, now()).await.unwrap(),
        None
    );

    // A model, but the checklist asks for rules: the model is not asked.
    let model = Scripted::new(Vec::new());
    let mut by_rules = checklist();
    by_rules.engine = EngineChoice::Rules;
    let result = analyzer(&model)
        .checklist(&by_rules, &call(), now())
        .await
        .unwrap();
    assert_eq!(result.engine, AnalysisEngine::Rules);
    assert!(model.prompts().is_empty());
}

fn table() -> Table {
    serde_json::from_value(json!({
        "table_id": "TBL_1755863365",
        "name": "Сделка",
        "instruction": "Данные для CRM.",
        "columns": [
            {"key": "budget", "title": "Бюджет", "type": "integer",
             "description": "Сумма в рублях, например 150000"},
            {"key": "measure_date", "title": "Дата замера", "type": "date"},
            {"key": "callback_date", "title": "Перезвонить", "type": "date"},
            {"key": "product", "title": "Продукт", "type": "enum",
             "values": ["Окна", "Двери", "Балконы"]},
            {"key": "wants_measure", "title": "Согласен на замер", "type": "boolean"},
            {"key": "area", "title": "Площадь", "type": "number"},
            {"key": "client_name", "title": "Имя клиента", "type": "string"}
        ]
    }))
    .unwrap()
}

#[tokio::test]
async fn tables_take_spans_and_convert_them_by_code() {
    let model = Scripted::texts(&[json!({
        "budget": "двести тысяч",
        "measure_date": "в среду",
        "callback_date": "завтра утром",
        "product": "пластиковые окна",
        "wants_measure": "да",
        "area": "не указано",
        "client_name": null
    })]);
    let call_date = NaiveDate::from_ymd_opt(2025, 11, 21);
    let result = analyzer(&model)
        .table(&table(), &call(), call_date, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.engine, AnalysisEngine::Llm);
    assert_eq!(
        serde_json::to_value(&result.extracted_data).unwrap(),
        json!({
            "budget": 200000,
            "measure_date": "2025-11-26",
            "callback_date": "2025-11-22",
            "product": "Окна",
            "wants_measure": true,
            "area": null,
            "client_name": null
        })
    );
    table().check_data(&result.extracted_data).unwrap();
}

#[tokio::test]
async fn unreadable_values_become_null_and_bad_shapes_are_retried() {
    let model = Scripted::texts(&[
        json!({"budget": "300000"}),
        json!({
            "budget": "где-то от ста до двухсот",
            "measure_date": "когда-нибудь",
            "callback_date": "2025-11-24",
            "product": "крыша",
            "wants_measure": "может быть",
            "area": 12.5,
            "client_name": "Иван",
            "extra": "лишнее"
        }),
    ]);
    let result = analyzer(&model)
        .table(&table(), &call(), None, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&result.extracted_data).unwrap(),
        json!({
            "budget": null,
            "measure_date": null,
            // A year the call never says: the model made the date up.
            "callback_date": null,
            "product": null,
            "wants_measure": null,
            "area": 12.5,
            "client_name": "Иван"
        })
    );
    assert_eq!(model.prompts().len(), 2);

    // «150000» is the description's example, never said in the call.
    let model = Scripted::texts(&[json!({
        "budget": 150000, "measure_date": null, "callback_date": null, "product": "Окна",
        "wants_measure": true, "area": null, "client_name": null
    })]);
    let result = analyzer(&model)
        .table(&table(), &call(), None, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.extracted_data["budget"], Value::Null);
    assert_eq!(result.extracted_data["product"], "Окна");

    let model = Scripted::texts(&[json!({"budget": [1]}), json!("нет")]);
    let err = analyzer(&model)
        .table(&table(), &call(), None, now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AnalysisError::Failed(m) if m.contains("не JSON")),
        "{err:?}"
    );
}

#[tokio::test]
async fn prompts_of_one_call_share_system_and_context_before_the_task() {
    let model = Scripted::texts(&[
        good_answer(),
        json!({"budget": null, "measure_date": null, "callback_date": null, "product": null,
               "wants_measure": null, "area": null, "client_name": null}),
    ]);
    let analyzer = analyzer(&model);
    analyzer
        .checklist(&checklist(), &call(), now())
        .await
        .unwrap();
    analyzer
        .table(&table(), &call(), None, now())
        .await
        .unwrap();
    let [checklist_prompt, table_prompt] = &model.prompts()[..] else {
        panic!("two prompts");
    };
    assert_eq!(checklist_prompt.system, table_prompt.system);
    assert_eq!(checklist_prompt.context, table_prompt.context);
    assert_ne!(checklist_prompt.task, table_prompt.task);
    // The transcript is in the context only; the task only refers to it.
    let context = &checklist_prompt.context;
    assert!(context.contains("[3] Менеджер (00:12): Подскажите, какой у вас бюджет на остекление?"));
    assert!(!context.contains("Приветствие") && !context.contains("Сделка"));
    for prompt in [checklist_prompt, table_prompt] {
        assert!(!prompt.task.contains("Подскажите, какой у вас бюджет"));
        assert!(!prompt.system.contains("Подскажите"));
    }
    assert!(checklist_prompt
        .task
        .contains("01_greeting — «Приветствие»"));
    assert!(table_prompt.task.contains("budget — «Бюджет»"));
}

/// Every string in a schema: keys, types and enum values only.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_hold_no_example_values() {
    let checklist = checklist();
    let table = table();
    let dialogue = Dialogue::new(&call());
    for schema in [
        judge::prompt(&dialogue, &checklist).schema,
        fill::prompt(&dialogue, &table).schema,
    ] {
        let mut found = Vec::new();
        strings(&schema, &mut found);
        for word in [
            "example",
            "examples",
            "default",
            "description",
            "const",
            "title",
        ] {
            assert!(!found.iter().any(|s| s == word), "{word} in {schema}");
        }
        let text = schema.to_string();
        for copied in [
            "добрый день",
            "150000",
            "Приветствие",
            "Бюджет",
            "Сумма в рублях",
        ] {
            assert!(!text.contains(copied), "{copied} in {text}");
        }
    }
    // Enum values are the choices, not examples: they stay.
    let schema = fill::schema(&table);
    assert_eq!(
        schema["properties"]["product"]["enum"],
        json!(["Окна", "Двери", "Балконы", null])
    );
    assert_eq!(schema["required"].as_array().unwrap().len(), 7);
    let schema = judge::schema(&checklist);
    assert_eq!(
        schema["required"],
        json!(["01_greeting", "02_budget", "03_objections"])
    );
}

#[test]
fn checklist_answers_parse_strictly() {
    let checklist = checklist();
    let parsed = judge::parse(&checklist, &good_answer().to_string()).unwrap();
    assert_eq!(parsed[1].line, Some(3));
    assert!(parsed[1].done);
    // Bare stage ids are accepted from servers that ignore the schema.
    let bare = json!({
        "greeting": stage(0, "", false, 0, ""),
        "budget": stage(0, "", false, 0, ""),
        "objections": stage(0, "", false, 0, "")
    });
    assert_eq!(
        judge::parse(&checklist, &bare.to_string()).unwrap().len(),
        3
    );
    let mut negative = good_answer();
    negative["01_greeting"]["evidence_line"] = json!(-1);
    assert_eq!(
        judge::parse(&checklist, &negative.to_string()).unwrap()[0].line,
        None
    );
    let mut wrong = good_answer();
    wrong["01_greeting"]["evidence_line"] = json!("первая");
    let err = judge::parse(&checklist, &wrong.to_string()).unwrap_err();
    assert!(err.contains("01_greeting.evidence_line"), "{err}");
    let mut not_object = good_answer();
    not_object["03_objections"] = json!(true);
    assert!(judge::parse(&checklist, &not_object.to_string()).is_err());
}

#[tokio::test]
async fn silent_calls_do_not_ask_the_model() {
    let model = Scripted::new(Vec::new());
    let empty = transcript(&[], true);
    let result = analyzer(&model)
        .checklist(&checklist(), &empty, now())
        .await
        .unwrap();
    assert!(result
        .stages
        .iter()
        .all(|s| s.status == StageStatus::Failed));
    let table = analyzer(&model)
        .table(&table(), &empty, None, now())
        .await
        .unwrap()
        .unwrap();
    assert!(table.extracted_data.values().all(Value::is_null));
    assert!(model.prompts().is_empty());
}

#[test]
fn schemas_become_grammars_in_the_order_the_model_should_think() {
    let dialogue = Dialogue::new(&call());
    let grammar =
        rop_llm::grammar::gbnf_from_schema(&judge::prompt(&dialogue, &checklist()).schema).unwrap();
    let at = |needle: &str| {
        grammar
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {grammar}"))
    };
    assert!(at("evidence_line") < at("evidence_quote"));
    assert!(at("evidence_quote") < at("explanation"));
    assert!(at("explanation") < at("is_done"));
    assert!(at("is_done") < at("percent"));
    assert!(at("01_greeting") < at("02_budget") && at("02_budget") < at("03_objections"));
    rop_llm::grammar::gbnf_from_schema(&fill::prompt(&dialogue, &table()).schema).unwrap();
}
