//! A client for OpenAI-compatible `POST {base}/chat/completions` servers:
//! Ollama, vLLM, llama.cpp's server, cloud APIs.
//!
//! The answer is asked for as structured output (`response_format` of type
//! `json_schema`, strict). Failures worth retrying later (the server down,
//! slow, overloaded or rate-limiting) are [`LlmError::Unavailable`]; the
//! client itself never retries, the pipeline's durable jobs do.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::engine::{Completion, LanguageModel, LlmError, Prompt};

#[derive(Clone)]
pub struct OpenAiChatConfig {
    /// The API root, e.g. `http://127.0.0.1:11434/v1/`.
    pub base_url: Url,
    /// Sent as a bearer token when set; never logged.
    pub api_key: Option<String>,
    /// `qwen2.5:7b-instruct`, `gpt-4o-mini`, …
    pub model: String,
    /// For the whole request, the answer included.
    pub timeout: Duration,
}

impl fmt::Debug for OpenAiChatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiChatConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiChat {
    http: reqwest::Client,
    endpoint: Url,
    config: OpenAiChatConfig,
}

impl OpenAiChat {
    pub fn new(config: OpenAiChatConfig) -> Result<Self, LlmError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base
            .join("chat/completions")
            .map_err(|error| LlmError::Failed(format!("адрес сервера модели: {error}")))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .build()
            .map_err(|error| LlmError::Failed(format!("HTTP client: {error}")))?;
        Ok(Self {
            http,
            endpoint,
            config,
        })
    }

    /// The request body for `prompt`, as OpenAI documents it.
    fn body(&self, prompt: &Prompt) -> serde_json::Value {
        // The shared context first: servers cache prompt prefixes.
        let user = if prompt.context.is_empty() {
            prompt.task.clone()
        } else {
            format!("{}\n\n{}", prompt.context, prompt.task)
        };
        json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "max_tokens": prompt.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": prompt.schema_name,
                    "strict": true,
                    "schema": prompt.schema,
                },
            },
        })
    }
}

#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    /// llama.cpp's server (and `rop-llm`) say how the time was spent.
    #[serde(default)]
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct Timings {
    prompt_ms: f64,
    predicted_ms: f64,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    /// Set instead of `content` when a model declines to answer.
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

#[async_trait]
impl LanguageModel for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> String {
        self.config.model.clone()
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .json(&self.body(prompt));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|error| {
            LlmError::Unavailable(format!("сервер модели не ответил: {}", describe(&error)))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            LlmError::Unavailable(format!(
                "ответ сервера модели оборвался: {}",
                describe(&error)
            ))
        })?;
        let secs = started.elapsed().as_secs_f64();
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&body)
                .map(|body| body.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
            let message = format!("сервер модели ответил {status}: {detail}");
            return Err(
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    LlmError::Unavailable(message)
                } else {
                    LlmError::Failed(message)
                },
            );
        }
        let parsed: ChatCompletion = serde_json::from_slice(&body).map_err(|error| {
            LlmError::Failed(format!("ответ сервера модели не разобран: {error}"))
        })?;
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Err(LlmError::Failed(
                "сервер модели вернул ответ без choices".into(),
            ));
        };
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(LlmError::Failed(format!(
                "ответ модели оборван: не уместился в max_tokens = {}",
                prompt.max_tokens
            )));
        }
        let message = choice.message.unwrap_or(Message {
            content: None,
            refusal: None,
        });
        if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
            return Err(LlmError::Failed(format!(
                "модель отказалась отвечать: {refusal}"
            )));
        }
        let text = message.content.unwrap_or_default();
        if text.trim().is_empty() {
            return Err(LlmError::Failed(format!(
                "сервер модели вернул пустой ответ (finish_reason: {})",
                choice.finish_reason.as_deref().unwrap_or("нет")
            )));
        }
        let usage = parsed.usage;
        // Without timings a server reports no split between reading and
        // writing: the whole request counts as writing.
        let (prompt_secs, generation_secs) = parsed
            .timings
            .filter(|t| t.prompt_ms >= 0.0 && t.predicted_ms >= 0.0)
            .map_or((0.0, secs), |t| {
                (t.prompt_ms / 1000.0, t.predicted_ms / 1000.0)
            });
        Ok(Completion {
            text,
            prompt_tokens: usage.as_ref().map_or(0, |u| u.prompt_tokens),
            cached_tokens: usage
                .as_ref()
                .and_then(|u| u.prompt_tokens_details.as_ref())
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            completion_tokens: usage.as_ref().map_or(0, |u| u.completion_tokens),
            prompt_secs,
            generation_secs,
        })
    }
}

/// The error with its causes: reqwest's own text alone hides whether it was
/// a timeout, a refused connection or a reset.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "время ожидания истекло".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
