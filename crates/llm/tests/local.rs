//! llama.cpp in-process with the real Qwen2.5-Coder-1.5B model that
//! `rop models install` puts in the cache (scripts/test.sh runs it).
//! Prompts and answers are kept short: CI has two cores.

mod support;

use std::time::Instant;

use rop_llm::{LanguageModel, LlmError, LocalLlama, LocalLlamaConfig, Prompt};
use serde_json::{json, Value};
use support::model_path;
use support::schema::validate;

/// One model at a time in this binary: ggml's threads spin at every
/// barrier, so two engines sharing two cores slow each other down badly.
static ONE_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn load(context_tokens: u32) -> LocalLlama {
    let mut config = LocalLlamaConfig::new(model_path());
    config.context_tokens = context_tokens;
    LocalLlama::load(config).unwrap()
}

const SYSTEM: &str = "Ты проверяешь записи звонков отдела продаж. Отвечай только JSON.";

const DIALOGUE: &str = "Менеджер: Добрый день! Меня зовут Ольга, компания «Окна Плюс».\n\
Клиент: Здравствуйте. Хотим поменять окна в офисе.\n\
Менеджер: Сколько окон и какой у вас бюджет?\n\
Клиент: Восемь окон, бюджет около 300000 рублей.\n\
Менеджер: Понятно, подготовлю предложение до пятницы.";

fn fields_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "greeting_said": {"type": "boolean"},
            "manager_name": {"type": ["string", "null"], "maxLength": 40},
            "budget": {"type": ["integer", "null"]},
        },
        "required": ["greeting_said", "manager_name", "budget"],
        "additionalProperties": false,
    })
}

fn fields_prompt() -> Prompt {
    Prompt {
        system: SYSTEM.into(),
        context: format!("Расшифровка звонка:\n{DIALOGUE}"),
        task: "Заполни поля: greeting_said — поздоровался ли менеджер; manager_name — имя \
               менеджера; budget — бюджет клиента в рублях числом."
            .into(),
        schema: fields_schema(),
        schema_name: "fields".into(),
        max_tokens: 48,
    }
}

#[tokio::test]
async fn answers_json_of_the_schema() {
    let _turn = ONE_MODEL.lock().await;
    let llm = load(2048);
    assert_eq!(llm.name(), "llama.cpp");
    assert_eq!(llm.model(), "qwen2.5-coder-1.5b-instruct-q4_k_m");

    let completion = llm.complete(&fields_prompt()).await.unwrap();
    let answer: Value = serde_json::from_str(&completion.text)
        .unwrap_or_else(|e| panic!("{e}: {}", completion.text));
    validate(&fields_schema(), &answer).unwrap();
    // Keys come in the schema's order.
    let greeting = completion.text.find("greeting_said").unwrap();
    let budget = completion.text.find("budget").unwrap();
    assert!(greeting < budget, "{}", completion.text);
    assert_eq!(answer["greeting_said"], true, "{}", completion.text);
    assert_eq!(answer["manager_name"], "Ольга", "{}", completion.text);
    assert!(completion.prompt_tokens > 100, "{completion:?}");
    assert!(completion.completion_tokens > 5, "{completion:?}");
    assert!(completion.prompt_secs > 0.0 && completion.generation_secs > 0.0);
    eprintln!(
        "{} prompt tokens in {:.2} s ({:.1}/s), {} answer tokens in {:.2} s ({:.1}/s): {}",
        completion.prompt_tokens,
        completion.prompt_secs,
        f64::from(completion.prompt_tokens - completion.cached_tokens) / completion.prompt_secs,
        completion.completion_tokens,
        completion.generation_secs,
        f64::from(completion.completion_tokens) / completion.generation_secs,
        completion.text
    );
}

#[tokio::test]
async fn a_shared_context_is_read_once() {
    let _turn = ONE_MODEL.lock().await;
    let llm = load(2048);
    let stage_schema = json!({
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["выполнен", "не выполнен"]},
        },
        "required": ["verdict"],
        "additionalProperties": false,
    });
    let stage = |task: &str| Prompt {
        task: task.into(),
        schema: stage_schema.clone(),
        schema_name: "stage".into(),
        max_tokens: 16,
        ..fields_prompt()
    };
    let budget = stage("Этап «выявление бюджета»: спросил ли менеджер о бюджете?");
    let deadline = stage("Этап «следующий шаг»: назначил ли менеджер срок следующего шага?");

    // A prompt with another system text shares almost nothing with those.
    let other = Prompt {
        system: "Отвечай кратко.".into(),
        ..stage("Этап «приветствие»: поздоровался ли менеджер?")
    };
    llm.complete(&other).await.unwrap();

    let started = Instant::now();
    let fresh = llm.complete(&deadline).await.unwrap();
    let fresh_secs = started.elapsed().as_secs_f64();
    assert!(fresh.cached_tokens < 10, "{fresh:?}");

    llm.complete(&budget).await.unwrap();
    let started = Instant::now();
    let again = llm.complete(&deadline).await.unwrap();
    let again_secs = started.elapsed().as_secs_f64();
    // Everything up to the task came from the cache…
    assert!(
        again.cached_tokens * 10 >= again.prompt_tokens * 7,
        "{again:?}"
    );
    assert_eq!(again.prompt_tokens, fresh.prompt_tokens);
    // …and the answer is the one a fresh reading gives.
    assert_eq!(again.text, fresh.text);
    eprintln!(
        "fresh: {} tokens read in {:.2} s, {fresh_secs:.2} s in all; \
         with {} cached: {:.2} s, {again_secs:.2} s in all",
        fresh.prompt_tokens, fresh.prompt_secs, again.cached_tokens, again.prompt_secs
    );
}

#[tokio::test]
async fn refuses_what_it_cannot_do() {
    let _turn = ONE_MODEL.lock().await;
    let llm = load(256);

    // Longer than the context.
    let long = Prompt {
        context: DIALOGUE.repeat(10),
        ..fields_prompt()
    };
    let error = llm.complete(&long).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("длиннее контекста")),
        "{error:?}"
    );

    // A schema the grammar maker does not support.
    let odd = Prompt {
        schema: json!({"type": "string", "pattern": "^[a-z]+$"}),
        ..fields_prompt()
    };
    let error = llm.complete(&odd).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("не поддерживается")),
        "{error:?}"
    );

    // An answer longer than max_tokens is cut short: no JSON to give.
    let cramped = Prompt {
        context: String::new(),
        max_tokens: 3,
        ..fields_prompt()
    };
    let error = llm.complete(&cramped).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("не уместился")),
        "{error:?}"
    );

    // Still works after refusing: a short prompt fits.
    let short = Prompt {
        context: String::new(),
        task: "Поздоровался ли менеджер в звонке «Добрый день!»?".into(),
        schema: json!({
            "type": "object",
            "properties": {"greeting_said": {"type": "boolean"}},
            "required": ["greeting_said"],
            "additionalProperties": false,
        }),
        max_tokens: 12,
        ..fields_prompt()
    };
    let completion = llm.complete(&short).await.unwrap();
    let answer: Value = serde_json::from_str(&completion.text).unwrap();
    assert!(answer["greeting_said"].is_boolean(), "{}", completion.text);
}

#[test]
fn a_missing_model_file_names_the_install_command() {
    let error = LocalLlama::load(LocalLlamaConfig::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("rop models install")),
        "{error:?}"
    );
}
