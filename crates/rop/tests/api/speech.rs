//! Real speech recognition end to end: recordings of a real Russian voice
//! (Debian's Asterisk prompts, assembled by scripts/ensure-test-audio.sh)
//! uploaded by link, downloaded from a loopback file server, decoded and
//! transcribed by whisper.cpp with the model `rop models install` made.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::fileserver;
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

/// Where scripts/ensure-test-audio.sh puts the recordings.
pub fn test_data_dir() -> PathBuf {
    cache_dir().join("rop-test-data")
}

/// Where scripts/test.sh installs the models.
fn models_dir() -> PathBuf {
    cache_dir().join("rop-models")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
}

/// One recogniser at a time in this test binary, on one thread: ggml's
/// workers spin at every barrier, so two engines sharing two busy cores
/// slow each other down by an order of magnitude and the test times out.
static ONE_RECOGNISER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn with_whisper(config: &mut rop::Config) {
    let models = models_dir();
    assert!(
        models.join("ggml-base.bin").is_file() && test_data_dir().join("e2e").is_dir(),
        "models or recordings missing: run scripts/test.sh (it installs both)"
    );
    config.models_dir = models;
    config.worker_concurrency = 1;
    config.asr_threads = 1;
    config.retry_base_secs = 0;
}

async fn transcribed(app: &TestApp, call_id: &str, link: &str) -> Value {
    let fields = [
        ("call_id", call_id),
        ("manager_id", "m1"),
        ("audio_url", link),
    ];
    let response = app.upload(&fields).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let started = std::time::Instant::now();
    loop {
        let call = app.call_json(call_id).await.unwrap();
        match call["status"].as_str() {
            Some("done") => return call,
            Some("failed") => panic!("{call:#}"),
            _ => {}
        }
        // A bound on liveness, not on speed: CI shares its two cores.
        assert!(started.elapsed() < Duration::from_secs(400), "{call:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lowercased text of one role's segments, `ё` as `е`.
fn said_by(call: &Value, role: &str) -> String {
    call["transcript"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|segment| segment["role"] == role)
        .map(|segment| {
            segment["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .replace('ё', "е")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_says(text: &str, words: &[&str], call: &Value) {
    for word in words {
        assert!(text.contains(word), "«{word}» not in «{text}»: {call:#}");
    }
}

async fn a_stereo_call_is_transcribed_per_channel(backend: Backend) {
    let _turn = ONE_RECOGNISER.lock().await;
    let app = spawn_app_with(backend, with_whisper).await;
    let files = fileserver::start().await;
    let call = transcribed(&app, "stereo", &files.url("/speech/stereo-call.wav")).await;
    let manager = said_by(&call, "manager");
    let client = said_by(&call, "client");
    // Left: «Оператор зарегистрирован. … Введите пароль и нажмите решетку.»
    assert_says(
        &manager,
        &["оператор", "зарегистрирован", "пароль", "решетку"],
        &call,
    );
    // Right: «На данный момент все линии заняты. … Спасибо.»
    assert_says(&client, &["момент", "заняты", "спасибо"], &call);
    assert!(
        !manager.contains("спасибо") && !client.contains("пароль"),
        "{call:#}"
    );

    let segments = call["transcript"]["segments"].as_array().unwrap();
    let first_client = segments.iter().find(|s| s["role"] == "client").unwrap();
    let start = first_client["start"].as_f64().unwrap();
    assert!(
        (2.5..3.6).contains(&start),
        "the client speaks from 3 s: {start}"
    );
    assert!(
        segments
            .iter()
            .all(|s| !s["words"].as_array().unwrap().is_empty()),
        "word timings: {call:#}"
    );
    let metrics = &call["transcript"]["metrics"];
    let share = metrics["manager_talk_share"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&share), "{metrics}");
    assert_eq!(call["transcript"]["engine"], "whisper.cpp");
    assert_eq!(call["audio"]["channels"], 2);
}

on_both_backends!(a_stereo_call_is_transcribed_per_channel);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_mp3_and_opus_calls_are_transcribed() {
    let _turn = ONE_RECOGNISER.lock().await;
    let app = spawn_app_with(Backend::Sqlite, with_whisper).await;
    let files = fileserver::start().await;
    for (call_id, file, codec) in [
        ("mp3", "mono-call.mp3", "mp3"),
        ("opus", "mono-call.opus", "opus"),
    ] {
        let call = transcribed(&app, call_id, &files.url(&format!("/speech/{file}"))).await;
        assert_eq!(call["audio"]["codec"], codec, "{call:#}");
        assert_eq!(call["audio"]["channels"], 1);
        // «Регистрация оператора. Введите номер оператора и нажмите решетку.»
        let text = said_by(&call, "unknown");
        assert_says(&text, &["регистрация", "оператора", "номер"], &call);
        assert!(call["transcript"]["metrics"]["manager_talk_share"].is_null());
    }
}

/// The whole product on a sales dialogue where the truth is obvious: real
/// whisper.cpp, the real Qwen model in its `rop-llm` process, and both
/// webhooks received and signed. The manager (left) greets and names
/// himself, learns that five windows in a flat need replacing and books a
/// measurer for Saturday; he never asks about the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_dialogue_is_scored_and_mined_by_the_local_model() {
    use crate::analysis::{create, stage};
    use rop_testkit::webhook::WebhookReceiver;
    use serde_json::json;

    let _turn = ONE_RECOGNISER.lock().await;
    let receiver = WebhookReceiver::start().await;
    let app = spawn_app_with(Backend::Sqlite, |config| {
        with_whisper(config);
        config.llm_engine = rop::config::LlmEngineKind::Local;
        // Turns with whisper.cpp (one step at a time): two cores.
        config.llm_threads = 2;
        config.llm_context_tokens = 4096;
        config.job_attempts = 1;
        config.webhook_retry_base_secs = 1;
    })
    .await;
    let hook = json!({"url": receiver.url(), "secret": "dialogue-secret"});
    let checklist = json!({
        "checklist_id": "script",
        "name": "Скрипт продаж",
        "stages": [
            {"stage_id": "greeting", "name": "Приветствие",
             "instruction": "Менеджер поздоровался и назвал своё имя или компанию."},
            {"stage_id": "budget", "name": "Выявление бюджета",
             "instruction": "Менеджер спросил клиента, на какую сумму он рассчитывает, какой у него бюджет."}
        ],
        "webhook": hook,
    });
    create(&app, "/api/v1/checklists", &checklist).await;
    let table = json!({
        "table_id": "TBL_1760000000",
        "name": "Заявка",
        "columns": [
            {"key": "visit_booked", "title": "Договорились о визите замерщика", "type": "boolean"},
            {"key": "windows", "title": "Сколько окон нужно заменить", "type": "integer"},
            {"key": "premises", "title": "Где окна", "type": "enum",
             "values": ["квартира", "частный дом", "офис"]}
        ],
        "webhook": hook,
    });
    create(&app, "/api/v1/tables", &table).await;

    let files = fileserver::start().await;
    let call = transcribed(&app, "dialogue", &files.url("/speech/sales-dialogue.wav")).await;
    let result = &call["checklists"][0];
    assert_eq!(result["engine"], "llm", "{call:#}");
    let greeting = stage(result, "greeting");
    assert_eq!(greeting["status"], "completed", "{call:#}");
    // The quote is the transcript's own words, from the manager's lines.
    let quote = greeting["quote"].as_str().unwrap().to_lowercase();
    assert!(!quote.is_empty(), "{call:#}");
    assert!(
        said_by(&call, "manager").contains(&quote.replace('ё', "е")),
        "{call:#}"
    );
    assert!(greeting["quote_start"].as_f64().unwrap() < 6.0, "{call:#}");
    assert_eq!(stage(result, "budget")["status"], "failed", "{call:#}");
    assert_eq!(result["completion_percentage"], 50.0, "{call:#}");

    let data = &call["tables"][0]["extracted_data"];
    assert!(data["visit_booked"].is_boolean(), "{call:#}");
    assert!(
        data["windows"].is_i64() || data["windows"].is_null(),
        "{call:#}"
    );
    assert!(
        data["premises"].is_string() || data["premises"].is_null(),
        "{call:#}"
    );
    // What the dialogue says plainly.
    assert_eq!(data["visit_booked"], true, "{call:#}");
    assert_eq!(data["windows"], 5, "{call:#}");
    assert_eq!(data["premises"], "квартира", "{call:#}");

    let requests = receiver.wait_for_requests(2, Duration::from_secs(60)).await;
    let mut events: Vec<String> = requests
        .iter()
        .map(|r| r.header("x-rop-event").unwrap_or_default().to_owned())
        .collect();
    events.sort();
    assert_eq!(events, ["checklist.result", "table.result"]);
    for request in &requests {
        assert!(
            rop_delivery::signature::verify(
                "dialogue-secret",
                request.header("x-rop-timestamp").unwrap(),
                request.body.as_ref(),
                request.header("x-rop-signature").unwrap(),
                chrono::Utc::now(),
                Duration::from_secs(300),
            ),
            "signature of {request:?}"
        );
    }
    let table_body = requests
        .iter()
        .find(|r| r.header("x-rop-event") == Some("table.result"))
        .unwrap()
        .json();
    assert_eq!(table_body["extracted_data"], *data);
}
