//! [`LocalLlama`] behind the part of OpenAI's chat-completions API that
//! [`crate::OpenAiChat`] uses, for the `rop-llm` program.
//!
//! `rop` runs llama.cpp in this separate process because llama.cpp's ggml
//! and whisper.cpp's ggml cannot share one binary. The server listens on
//! loopback only and, when given a token, wants it as a bearer token.
//! Answers carry OpenAI's `usage` and llama.cpp server's `timings`, so the
//! caller sees how long reading the prompt and writing the answer took.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::engine::{LanguageModel, LlmError, Prompt};
use crate::local::LocalLlama;

/// Used when a request names no limit.
const DEFAULT_MAX_TOKENS: u32 = 1024;

struct Shared {
    model: LocalLlama,
    token: Option<String>,
}

/// `POST /v1/chat/completions`, `GET /v1/models` and `GET /health`.
pub fn router(model: LocalLlama, token: Option<String>) -> Router {
    let shared = Arc::new(Shared { model, token });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(shared)
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    #[serde(default)]
    name: Option<String>,
    schema: Value,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "code"}}`.
fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        message,
    )
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(expected) = &shared.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        "неверный или отсутствующий ключ (Authorization: Bearer …)",
    )
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    Json(json!({
        "object": "list",
        "data": [{"id": shared.model.model(), "object": "model", "owned_by": "rop"}],
    }))
    .into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return invalid(format!("тело запроса не разобрано: {rejection}")),
    };
    let prompt = match prompt_of(request) {
        Ok(prompt) => prompt,
        Err(message) => return invalid(message),
    };
    match shared.model.complete(&prompt).await {
        Ok(completion) => {
            tracing::info!(
                schema = %prompt.schema_name,
                prompt_tokens = completion.prompt_tokens,
                cached_tokens = completion.cached_tokens,
                completion_tokens = completion.completion_tokens,
                prompt_secs = completion.prompt_secs,
                generation_secs = completion.generation_secs,
                "answered"
            );
            tracing::debug!(answer = %completion.text, "answer text");
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let per_second = |n: u32, secs: f64| if secs > 0.0 { f64::from(n) / secs } else { 0.0 };
            let evaluated = completion
                .prompt_tokens
                .saturating_sub(completion.cached_tokens);
            Json(json!({
                "id": format!("chatcmpl-{created}"),
                "object": "chat.completion",
                "created": created,
                "model": shared.model.model(),
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.prompt_tokens + completion.completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": completion.cached_tokens},
                },
                // As llama.cpp's own server reports them.
                "timings": {
                    "cache_n": completion.cached_tokens,
                    "prompt_n": evaluated,
                    "prompt_ms": completion.prompt_secs * 1000.0,
                    "prompt_per_second": per_second(evaluated, completion.prompt_secs),
                    "predicted_n": completion.completion_tokens,
                    "predicted_ms": completion.generation_secs * 1000.0,
                    "predicted_per_second": per_second(completion.completion_tokens, completion.generation_secs),
                },
            }))
            .into_response()
        }
        Err(LlmError::Failed(message)) => invalid(message),
        Err(LlmError::Unavailable(message)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            message,
        ),
    }
}

/// One system message and one user message, answered as JSON of the given
/// schema: what `OpenAiChat` sends. Anything else is refused rather than
/// answered in a way the caller did not ask for.
fn prompt_of(request: ChatRequest) -> Result<Prompt, String> {
    let mut system = None;
    let mut user = None;
    for message in request.messages {
        let slot = match message.role.as_str() {
            "system" | "developer" => &mut system,
            "user" => &mut user,
            other => return Err(format!("роль сообщения «{other}» не поддерживается")),
        };
        if slot.replace(message.content).is_some() {
            return Err("нужно не больше одного сообщения system и ровно одно user".into());
        }
    }
    let user = user.ok_or("нет сообщения user")?;
    let format = request
        .response_format
        .ok_or("нужен response_format типа json_schema: модель отвечает только JSON")?;
    if format.kind != "json_schema" {
        return Err(format!(
            "response_format «{}» не поддерживается, нужен json_schema",
            format.kind
        ));
    }
    let schema = format
        .json_schema
        .ok_or("response_format.json_schema не задан")?;
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err("max_tokens должен быть больше нуля".into());
    }
    Ok(Prompt {
        system: system.unwrap_or_default(),
        // The whole user message: its transcript part comes first, so
        // consecutive questions about one call share a token prefix.
        context: String::new(),
        task: user,
        schema: schema.schema,
        schema_name: schema.name.unwrap_or_else(|| "answer".into()),
        max_tokens,
    })
}
