//! The `rop-llm` program with the real Qwen2.5-Coder-1.5B model: its HTTP
//! endpoint, and [`LocalLlamaProcess`] starting, using and restarting it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rop_llm::{LanguageModel, LlmError, LocalLlamaProcess, LocalLlamaProcessConfig, Prompt};
use serde_json::{json, Value};
use support::model_path;
use support::schema::validate;

const PROGRAM: &str = env!("CARGO_BIN_EXE_rop-llm");

/// One model at a time: two on two cores slow each other down badly.
static ONE_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "manager_name": {"type": ["string", "null"], "maxLength": 40},
            "windows": {"type": ["integer", "null"]},
        },
        "required": ["manager_name", "windows"],
        "additionalProperties": false,
    })
}

fn prompt(task: &str) -> Prompt {
    Prompt {
        system: "Ты проверяешь записи звонков отдела продаж. Отвечай только JSON.".into(),
        context:
            "Расшифровка звонка:\nМенеджер: Добрый день! Меня зовут Ольга, компания «Окна Плюс».\n\
                  Клиент: Здравствуйте. Хотим поменять восемь окон в офисе."
                .into(),
        task: task.into(),
        schema: schema(),
        schema_name: "fields".into(),
        max_tokens: 40,
    }
}

fn config() -> LocalLlamaProcessConfig {
    let mut config = LocalLlamaProcessConfig::new(PROGRAM, model_path());
    config.context_tokens = 2048;
    config
}

#[tokio::test]
async fn the_process_answers_reuses_the_transcript_and_comes_back_after_a_crash() {
    let _turn = ONE_MODEL.lock().await;
    let llm = LocalLlamaProcess::new(config()).unwrap();
    assert_eq!(llm.name(), "llama.cpp");
    assert_eq!(llm.model(), "qwen2.5-coder-1.5b-instruct-q4_k_m");
    assert_eq!(llm.pid().await, None, "nothing starts before it is needed");

    let first = llm
        .complete(&prompt(
            "manager_name — имя менеджера; windows — сколько окон.",
        ))
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&first.text).unwrap();
    validate(&schema(), &answer).unwrap();
    assert_eq!(answer["manager_name"], "Ольга", "{}", first.text);
    assert!(first.prompt_tokens > 50, "{first:?}");
    assert!(
        first.prompt_secs > 0.0 && first.generation_secs > 0.0,
        "{first:?}"
    );

    // Another question on the same transcript reads only its own words.
    let second = llm
        .complete(&prompt(
            "windows — сколько окон; manager_name — как зовут менеджера.",
        ))
        .await
        .unwrap();
    assert!(
        second.cached_tokens * 2 > second.prompt_tokens,
        "{second:?} after {first:?}"
    );

    // The process dies: the next question starts a new one.
    let pid = llm.pid().await.expect("running");
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while llm.pid().await == Some(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = llm
        .complete(&prompt(
            "manager_name — имя менеджера; windows — сколько окон.",
        ))
        .await
        .unwrap();
    validate(&schema(), &serde_json::from_str(&again.text).unwrap()).unwrap();
    let new_pid = llm.pid().await.expect("running again");
    assert_ne!(new_pid, pid);

    // Dropping the engine ends the process.
    drop(llm);
    assert!(
        exits_within(new_pid, Duration::from_secs(10)),
        "{new_pid} still runs"
    );
}

fn exits_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        // A reaped or zombie child no longer has a live status line.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn missing_files_are_named_before_anything_starts() {
    let missing = Path::new("/nonexistent/rop-llm");
    let error =
        LocalLlamaProcess::new(LocalLlamaProcessConfig::new(missing, model_path())).unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("/nonexistent/rop-llm") && m.contains("cargo build")),
        "{error:?}"
    );
    let error = LocalLlamaProcess::new(LocalLlamaProcessConfig::new(
        PROGRAM,
        "/nonexistent/model.gguf",
    ))
    .unwrap_err();
    assert!(
        matches!(&error, LlmError::Failed(m) if m.contains("/nonexistent/model.gguf") && m.contains("rop models install")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_model_that_does_not_load_is_reported_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF but not really").unwrap();
    let llm = LocalLlamaProcess::new(LocalLlamaProcessConfig::new(PROGRAM, &broken)).unwrap();
    let error = llm.complete(&prompt("manager_name")).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Unavailable(m) if m.contains("завершился при запуске")),
        "{error:?}"
    );
    assert_eq!(llm.pid().await, None);
}

/// The program on its own, as `rop` starts it; returns the child and the
/// API root it announced.
fn start_server(token: &str) -> (std::process::Child, String) {
    let mut child = Command::new(PROGRAM)
        .arg("--model")
        .arg(model_path())
        .args(["--context-tokens", "1024", "--exit-with-stdin"])
        .env("ROP_LLM_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    (child, base)
}

#[tokio::test]
async fn the_endpoint_wants_its_token_and_a_schema_and_answers_in_openai_shapes() {
    let _turn = ONE_MODEL.lock().await;
    let (mut child, base) = start_server("s3cret");
    let http = reqwest::Client::new();
    let url = format!("{base}chat/completions");
    let body = json!({
        "model": "any",
        "messages": [
            {"role": "system", "content": "Отвечай только JSON."},
            {"role": "user", "content": "Менеджер: Меня зовут Ольга. Заполни manager_name и windows."},
        ],
        "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "f", "strict": true, "schema": schema()}},
    });

    let response = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
    let response = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let mut no_schema = body.clone();
    no_schema.as_object_mut().unwrap().remove("response_format");
    let response = http
        .post(&url)
        .bearer_auth("s3cret")
        .json(&no_schema)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("json_schema"),
        "{error}"
    );

    let mut unsupported = body.clone();
    unsupported["response_format"]["json_schema"]["schema"] =
        json!({"type": "object", "patternProperties": {}});
    let response = http
        .post(&url)
        .bearer_auth("s3cret")
        .json(&unsupported)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "{}", response.text().await.unwrap());

    let response = http
        .post(&url)
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = http
        .post(&url)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let content: Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    validate(&schema(), &content).unwrap();
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 10,
        "{answer}"
    );
    assert!(
        answer["timings"]["predicted_ms"].as_f64().unwrap() > 0.0,
        "{answer}"
    );

    let models: Value = http
        .get(format!("{base}models"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["data"][0]["id"],
        "qwen2.5-coder-1.5b-instruct-q4_k_m"
    );

    // The parent closing its end of stdin ends the program.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rop-llm outlived its parent's pipe"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn only_loopback_is_served() {
    let output = Command::new(PROGRAM)
        .args(["--model", "/nonexistent.gguf", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
