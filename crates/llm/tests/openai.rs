//! The OpenAI-compatible client against a local double of that API.

use std::time::Duration;

use rop_llm::{LanguageModel, LlmError, OpenAiChat, OpenAiChatConfig, Prompt};
use rop_testkit::chat::ChatDouble;
use serde_json::{json, Value};

fn client(double: &ChatDouble, key: Option<&str>, timeout: Duration) -> OpenAiChat {
    OpenAiChat::new(OpenAiChatConfig {
        base_url: double.base_url().parse().unwrap(),
        api_key: key.map(str::to_owned),
        model: "qwen2.5:7b-instruct".into(),
        timeout,
    })
    .unwrap()
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "greeting_said": {"type": "boolean"},
            "budget": {"type": ["integer", "null"]},
        },
        "required": ["greeting_said", "budget"],
        "additionalProperties": false,
    })
}

fn prompt() -> Prompt {
    Prompt {
        system: "Ты проверяешь звонки отдела продаж.".into(),
        context: "Менеджер: Здравствуйте!\nКлиент: Бюджет двести тысяч.".into(),
        task: "Заполни поля.".into(),
        schema: schema(),
        schema_name: "fields".into(),
        max_tokens: 200,
    }
}

const ANSWER: &str = r#"{"greeting_said":true,"budget":200000}"#;

#[tokio::test]
async fn answers_with_usage_and_sends_what_openai_expects() {
    let double = ChatDouble::start(Some("sk-test")).await;
    let llm = client(&double, Some("sk-test"), Duration::from_secs(10));
    assert_eq!(llm.name(), "openai");
    assert_eq!(llm.model(), "qwen2.5:7b-instruct");

    double.reply_with(ANSWER);
    let completion = llm.complete(&prompt()).await.unwrap();
    assert_eq!(completion.text, ANSWER);
    assert!(completion.prompt_tokens > 10, "{completion:?}");
    assert_eq!(completion.completion_tokens, 10);
    assert_eq!(completion.cached_tokens, 0);

    let request = double.last_request();
    assert_eq!(request["model"], "qwen2.5:7b-instruct");
    assert_eq!(request["temperature"], 0);
    assert_eq!(request["max_tokens"], 200);
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], prompt().system);
    assert_eq!(messages[1]["role"], "user");
    // The shared context comes first, so servers can cache it.
    assert_eq!(
        messages[1]["content"],
        format!("{}\n\n{}", prompt().context, prompt().task)
    );
    assert_eq!(
        request["response_format"],
        json!({
            "type": "json_schema",
            "json_schema": {"name": "fields", "strict": true, "schema": schema()},
        })
    );

    // The same system and context again: the server reports them cached.
    let mut second = prompt();
    second.task = "Теперь оцени этапы.".into();
    let completion = llm.complete(&second).await.unwrap();
    assert_eq!(completion.text, "{}");
    assert!(
        completion.cached_tokens > 10 && completion.cached_tokens < completion.prompt_tokens,
        "{completion:?}"
    );
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn the_default_answer_can_depend_on_the_request() {
    let double = ChatDouble::start(None).await;
    double.answer_with(|request| {
        let name = request["response_format"]["json_schema"]["name"].clone();
        json!({ "schema": name }).to_string()
    });
    let llm = client(&double, None, Duration::from_secs(10));
    let completion = llm.complete(&prompt()).await.unwrap();
    assert_eq!(completion.text, r#"{"schema":"fields"}"#);
}

#[tokio::test]
async fn overload_and_server_errors_are_worth_retrying() {
    let double = ChatDouble::start(None).await;
    let llm = client(&double, None, Duration::from_secs(10));
    for status in [429, 500, 503] {
        double.fail_next(status);
        let error = llm.complete(&prompt()).await.unwrap_err();
        assert!(
            matches!(&error, LlmError::Unavailable(message) if message.contains(&status.to_string())),
            "{status}: {error:?}"
        );
    }
    // The queue is spent: the next request succeeds.
    double.reply_with(ANSWER);
    assert_eq!(llm.complete(&prompt()).await.unwrap().text, ANSWER);
    assert_eq!(double.requests(), 4);
}

#[tokio::test]
async fn rejected_requests_fail_with_the_servers_message() {
    let double = ChatDouble::start(None).await;
    let llm = client(&double, None, Duration::from_secs(10));
    double.fail_next(400);
    let error = llm.complete(&prompt()).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(message) if message.contains("rejected by the test script")),
        "{error:?}"
    );

    // A schema OpenAI's strict mode would refuse: the double refuses it too.
    let mut loose = prompt();
    loose.schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let error = llm.complete(&loose).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(message)
            if message.contains("400") && message.contains("additionalProperties")),
        "{error:?}"
    );
    let mut unnamed = prompt();
    unnamed.schema_name = "поля".into();
    let error = llm.complete(&unnamed).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(message) if message.contains("json_schema.name")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused() {
    let double = ChatDouble::start(Some("sk-right")).await;
    for key in [None, Some("sk-wrong")] {
        let llm = client(&double, key, Duration::from_secs(10));
        let error = llm.complete(&prompt()).await.unwrap_err();
        assert!(
            matches!(&error, LlmError::Failed(message) if message.contains("401")),
            "{key:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_cut_off_or_empty_answer_fails() {
    let double = ChatDouble::start(None).await;
    let llm = client(&double, None, Duration::from_secs(10));
    let mut short = prompt();
    short.max_tokens = 3;
    double.reply_with(ANSWER);
    let error = llm.complete(&short).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(message) if message.contains("max_tokens = 3")),
        "{error:?}"
    );

    double.reply_with("");
    let error = llm.complete(&prompt()).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(message) if message.contains("пустой")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_slow_or_absent_server_is_unavailable() {
    let double = ChatDouble::start(None).await;
    double.set_delay(Duration::from_secs(2));
    let llm = client(&double, None, Duration::from_millis(300));
    let error = llm.complete(&prompt()).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Unavailable(message) if message.contains("время ожидания")),
        "{error:?}"
    );

    // Nothing listens on a port just released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let llm = OpenAiChat::new(OpenAiChatConfig {
        base_url: format!("http://127.0.0.1:{port}/v1").parse().unwrap(),
        api_key: None,
        model: "m".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let error = llm.complete(&prompt()).await.unwrap_err();
    assert!(matches!(error, LlmError::Unavailable(_)), "{error:?}");
}

#[test]
fn the_key_is_never_printed() {
    let config = OpenAiChatConfig {
        base_url: "https://api.example.com/v1/".parse().unwrap(),
        api_key: Some("sk-secret-value".into()),
        model: "gpt-4o-mini".into(),
        timeout: Duration::from_secs(60),
    };
    let printed = format!("{config:?}");
    assert!(!printed.contains("sk-secret-value"), "{printed}");
    assert!(printed.contains("***"), "{printed}");
    let client = OpenAiChat::new(config).unwrap();
    assert!(!format!("{client:?}").contains("sk-secret-value"));
}
