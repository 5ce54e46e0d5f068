//! An OpenAI-compatible `POST /v1/chat/completions` server.
//!
//! Tests script its answers: replies and failures queued in order, then a
//! default answer (a fixed text or a function of the request). Behaviour
//! follows OpenAI's documentation: `model` and `messages` required, bearer
//! auth, `response_format` of type `text`, `json_object` or `json_schema`
//! (a strict schema must close every object and require every property, as
//! OpenAI's structured outputs demand), `max_tokens` cutting the answer
//! short with `finish_reason: "length"`, `usage` with
//! `prompt_tokens_details.cached_tokens` for the prompt prefix shared with
//! the previous request, and errors as
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Tokens are counted roughly, four characters each.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

type Answer = Arc<dyn Fn(&Value) -> String + Send + Sync>;

enum Scripted {
    Reply(String),
    Fail(u16),
}

struct Shared {
    api_key: Option<String>,
    requests: AtomicUsize,
    script: Mutex<VecDeque<Scripted>>,
    default: Mutex<Answer>,
    delay: Mutex<Duration>,
    last_request: Mutex<Value>,
    /// The prompt of the previous answered request, for `cached_tokens`.
    last_prompt: Mutex<String>,
}

pub struct ChatDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ChatDouble {
    /// Starts on a free loopback port; `api_key` is required when given.
    /// Until told otherwise it answers `{}`.
    pub async fn start(api_key: Option<&str>) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.map(str::to_owned),
            requests: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Arc::new(|_: &Value| "{}".to_owned())),
            delay: Mutex::new(Duration::ZERO),
            last_request: Mutex::new(Value::Null),
            last_prompt: Mutex::new(String::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// The API root to configure: `http://127.0.0.1:PORT/v1/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1/", self.addr)
    }

    /// Requests received, rejected ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The body of the last request that was JSON; `null` before any.
    pub fn last_request(&self) -> Value {
        self.shared.last_request.lock().unwrap().clone()
    }

    /// The next answer in the queue is this message content.
    pub fn reply_with(&self, content: impl Into<String>) {
        let reply = Scripted::Reply(content.into());
        self.shared.script.lock().unwrap().push_back(reply);
    }

    /// The next answer in the queue is an error with this status, in
    /// OpenAI's shape (429 with `Retry-After`).
    pub fn fail_next(&self, status: u16) {
        self.shared
            .script
            .lock()
            .unwrap()
            .push_back(Scripted::Fail(status));
    }

    /// The content to answer with once the queue is empty.
    pub fn answer_with(&self, answer: impl Fn(&Value) -> String + Send + Sync + 'static) {
        *self.shared.default.lock().unwrap() = Arc::new(answer);
    }

    /// Every answer waits this long first (a slow model).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }
}

fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({
            "error": {"message": message, "type": kind, "param": param, "code": code}
        })),
    )
        .into_response()
}

fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        param,
        code,
    )
}

fn scripted_failure(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let mut response = error(
                status,
                "Rate limit reached for requests. Please try again in 1s.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().unwrap());
            response
        }
        StatusCode::UNAUTHORIZED => error(
            status,
            "Incorrect API key provided.",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        StatusCode::SERVICE_UNAVAILABLE => error(
            status,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
            None,
        ),
        status if status.is_server_error() => error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        status => error(
            status,
            "Invalid request: rejected by the test script.",
            "invalid_request_error",
            None,
            None,
        ),
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    if let Some(request) = &request {
        *shared.last_request.lock().unwrap() = request.clone();
    }
    if let Some(key) = &shared.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match given {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. You need to provide your API key in an \
                     Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                    None,
                )
            }
            Some(given) if given != format!("Bearer {key}") => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                )
            }
            Some(_) => {}
        }
    }
    let Some(request) = request else {
        return invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
            None,
        );
    };
    let failure = {
        let mut script = shared.script.lock().unwrap();
        match script.front() {
            Some(Scripted::Fail(status)) => {
                let status = *status;
                script.pop_front();
                Some(status)
            }
            _ => None,
        }
    };
    if let Some(status) = failure {
        return scripted_failure(status);
    }
    // A request the API rejects leaves the scripted reply for the next one.
    if let Err(response) = check(&request) {
        return *response;
    }

    let next = shared.script.lock().unwrap().pop_front();
    let content = match next {
        Some(Scripted::Reply(content)) => content,
        _ => {
            let answer = shared.default.lock().unwrap().clone();
            answer(&request)
        }
    };
    let prompt: String = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let cached = {
        let mut last = shared.last_prompt.lock().unwrap();
        let shared_chars = last
            .chars()
            .zip(prompt.chars())
            .take_while(|(a, b)| a == b)
            .count();
        *last = prompt.clone();
        shared_chars / 4
    };
    let prompt_tokens = tokens(&prompt);
    let (content, finish_reason) = match request["max_tokens"]
        .as_u64()
        .or_else(|| request["max_completion_tokens"].as_u64())
    {
        Some(max) if tokens(&content) > max as usize => {
            (content.chars().take(max as usize * 4).collect(), "length")
        }
        _ => (content, "stop"),
    };
    let completion_tokens = tokens(&content);
    let id = shared.requests.load(Ordering::SeqCst);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": request["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached.min(prompt_tokens)},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_testkit",
    }))
    .into_response()
}

fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

/// OpenAI's request validation, as far as our clients can get it wrong.
fn check(request: &Value) -> Result<(), Box<Response>> {
    if !request["model"].is_string() {
        return Err(Box::new(invalid(
            "you must provide a model parameter",
            None,
            None,
        )));
    }
    let Some(messages) = request.get("messages") else {
        return Err(Box::new(invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        )));
    };
    let Some(messages) = messages.as_array() else {
        return Err(Box::new(invalid(
            "Invalid type for 'messages': expected an array, but got an object instead.",
            Some("messages"),
            Some("invalid_type"),
        )));
    };
    if messages.is_empty() {
        return Err(Box::new(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        )));
    }
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return Err(Box::new(invalid(
                &format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', \
                     'user', 'function', 'tool', and 'developer'."
                ),
                Some(&format!("messages[{i}].role")),
                Some("invalid_value"),
            )));
        }
        if !message["content"].is_string() && !message["content"].is_array() {
            return Err(Box::new(invalid(
                &format!("Invalid type for 'messages[{i}].content': expected one of a string or array of objects."),
                Some(&format!("messages[{i}].content")),
                Some("invalid_type"),
            )));
        }
    }
    if let Some(max) = request.get("max_tokens") {
        if max.as_u64().is_none_or(|max| max < 1) {
            return Err(Box::new(invalid(
                &format!("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got {max} instead."),
                Some("max_tokens"),
                Some("integer_below_min_value"),
            )));
        }
    }
    if let Some(temperature) = request.get("temperature") {
        if temperature
            .as_f64()
            .is_none_or(|t| !(0.0..=2.0).contains(&t))
        {
            return Err(Box::new(invalid(
                &format!("Invalid 'temperature': expected a number between 0 and 2, but got {temperature} instead."),
                Some("temperature"),
                Some("invalid_value"),
            )));
        }
    }
    if let Some(format) = request.get("response_format") {
        check_response_format(format)?;
    }
    Ok(())
}

fn check_response_format(format: &Value) -> Result<(), Box<Response>> {
    match format["type"].as_str() {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").filter(|s| s.is_object()) else {
                return Err(Box::new(invalid(
                    "Missing required parameter: 'response_format.json_schema'.",
                    Some("response_format.json_schema"),
                    Some("missing_required_parameter"),
                )));
            };
            let name = spec["name"].as_str().unwrap_or_default();
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(Box::new(invalid(
                    &format!("Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$', but got '{name}' instead."),
                    Some("response_format.json_schema.name"),
                    Some("invalid_value"),
                )));
            }
            let Some(schema) = spec.get("schema").filter(|s| s.is_object()) else {
                return Err(Box::new(invalid(
                    "Missing required parameter: 'response_format.json_schema.schema'.",
                    Some("response_format.json_schema.schema"),
                    Some("missing_required_parameter"),
                )));
            };
            if spec["strict"] == Value::Bool(true) {
                if let Err(problem) = strict_schema(schema, &mut Vec::new()) {
                    return Err(Box::new(invalid(
                        &format!("Invalid schema for response_format '{name}': {problem}"),
                        Some("response_format"),
                        None,
                    )));
                }
            }
            Ok(())
        }
        other => Err(Box::new(invalid(
            &format!(
                "Invalid value: '{}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                other.unwrap_or_default()
            ),
            Some("response_format.type"),
            Some("invalid_value"),
        ))),
    }
}

/// What OpenAI's strict mode demands: every object closed
/// (`additionalProperties: false`) and every property required.
fn strict_schema(schema: &Value, path: &mut Vec<String>) -> Result<(), String> {
    let context = || {
        let parts: Vec<String> = path.iter().map(|p| format!("'{p}'")).collect();
        format!("In context=({})", parts.join(", "))
    };
    let is_object = schema["type"] == "object"
        || schema["type"]
            .as_array()
            .is_some_and(|types| types.contains(&json!("object")));
    if is_object {
        if schema["additionalProperties"] != Value::Bool(false) {
            return Err(format!(
                "{}, 'additionalProperties' is required to be supplied and to be false.",
                context()
            ));
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(properties) = schema["properties"].as_object() {
            if let Some(missing) = properties.keys().find(|k| !required.contains(&k.as_str())) {
                return Err(format!(
                    "{}, 'required' is required to be supplied and to be an array including \
                     every key in properties. Missing '{missing}'.",
                    context()
                ));
            }
            for (key, property) in properties {
                path.extend(["properties".to_owned(), key.clone()]);
                strict_schema(property, path)?;
                path.truncate(path.len() - 2);
            }
        }
    }
    if let Some(items) = schema.get("items") {
        path.push("items".to_owned());
        strict_schema(items, path)?;
        path.pop();
    }
    for keyword in ["anyOf", "oneOf"] {
        for (i, variant) in schema[keyword].as_array().into_iter().flatten().enumerate() {
            path.extend([keyword.to_owned(), i.to_string()]);
            strict_schema(variant, path)?;
            path.truncate(path.len() - 2);
        }
    }
    Ok(())
}
