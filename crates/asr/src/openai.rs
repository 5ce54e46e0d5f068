//! A client for OpenAI-compatible `POST {base}/audio/transcriptions`
//! servers: faster-whisper servers, whisper.cpp's server, vLLM, cloud APIs.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use rop_domain::Word;
use serde::Deserialize;
use url::Url;

use crate::engine::{AsrEngine, AsrError, RecognizedSegment};
use crate::{wav, SAMPLE_RATE};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root, e.g. `http://asr.local:8000/v1/`.
    pub base_url: Url,
    /// Sent as a bearer token when set; never logged.
    pub api_key: Option<String>,
    /// `whisper-1`, `Systran/faster-whisper-large-v3`, …
    pub model: String,
    /// `ru`, … or `auto` to let the server detect it.
    pub language: String,
    /// For the whole request, upload included.
    pub timeout: Duration,
}

pub struct OpenAiEngine {
    http: reqwest::Client,
    endpoint: Url,
    config: OpenAiConfig,
}

impl OpenAiEngine {
    pub fn new(config: OpenAiConfig) -> Result<Self, AsrError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base
            .join("audio/transcriptions")
            .map_err(|error| AsrError::Failed(format!("адрес сервера распознавания: {error}")))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| AsrError::Failed(format!("HTTP client: {error}")))?;
        Ok(Self {
            http,
            endpoint,
            config,
        })
    }
}

/// `verbose_json` as OpenAI documents it; servers differ in what they fill.
#[derive(Deserialize)]
struct VerboseTranscription {
    #[serde(default)]
    text: String,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    segments: Vec<RemoteSegment>,
    #[serde(default)]
    words: Vec<RemoteWord>,
}

#[derive(Deserialize)]
struct RemoteSegment {
    start: f64,
    end: f64,
    text: String,
}

#[derive(Deserialize)]
struct RemoteWord {
    word: String,
    start: f64,
    end: f64,
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
impl AsrEngine for OpenAiEngine {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> String {
        self.config.model.clone()
    }

    fn language(&self) -> String {
        self.config.language.clone()
    }

    async fn transcribe(&self, samples: Vec<f32>) -> Result<Vec<RecognizedSegment>, AsrError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let seconds = samples.len() as f64 / f64::from(SAMPLE_RATE);
        let audio = Part::bytes(wav::encode(&samples, SAMPLE_RATE))
            .file_name("channel.wav")
            .mime_str("audio/wav")
            .map_err(|error| AsrError::Failed(error.to_string()))?;
        let mut form = Form::new()
            .part("file", audio)
            .text("model", self.config.model.clone())
            .text("response_format", "verbose_json")
            .text("temperature", "0")
            .text("timestamp_granularities[]", "segment")
            .text("timestamp_granularities[]", "word");
        if self.config.language != "auto" {
            form = form.text("language", self.config.language.clone());
        }
        let mut request = self.http.post(self.endpoint.clone()).multipart(form);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|error| {
            AsrError::Unavailable(format!("сервер распознавания не ответил: {error}"))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            AsrError::Unavailable(format!("ответ сервера распознавания оборвался: {error}"))
        })?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&body)
                .map(|body| body.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
            let message = format!("сервер распознавания ответил {status}: {detail}");
            return Err(
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    AsrError::Unavailable(message)
                } else {
                    AsrError::Failed(message)
                },
            );
        }
        let parsed: VerboseTranscription = serde_json::from_slice(&body).map_err(|error| {
            AsrError::Failed(format!("ответ сервера распознавания не разобран: {error}"))
        })?;
        Ok(into_segments(parsed, seconds))
    }
}

fn into_segments(parsed: VerboseTranscription, seconds: f64) -> Vec<RecognizedSegment> {
    let mut segments: Vec<RecognizedSegment> = parsed
        .segments
        .into_iter()
        .filter(|segment| segment.start.is_finite() && segment.end.is_finite())
        .map(|segment| RecognizedSegment {
            start: segment.start.max(0.0),
            end: segment.end.max(segment.start),
            text: segment.text.trim().to_owned(),
            words: Vec::new(),
        })
        .filter(|segment| !segment.text.is_empty())
        .collect();
    if segments.is_empty() && !parsed.text.trim().is_empty() {
        segments.push(RecognizedSegment {
            start: 0.0,
            end: parsed.duration.unwrap_or(seconds),
            text: parsed.text.trim().to_owned(),
            words: Vec::new(),
        });
    }
    // Words come as one list for the whole file; each goes to the segment
    // its middle falls in.
    for word in parsed.words {
        if !(word.start.is_finite() && word.end.is_finite()) {
            continue;
        }
        let middle = (word.start + word.end) / 2.0;
        let home = segments
            .iter_mut()
            .find(|segment| segment.start <= middle && middle <= segment.end);
        if let Some(segment) = home {
            segment.words.push(Word {
                start: word.start,
                end: word.end,
                text: word.word.trim().to_owned(),
            });
        }
    }
    segments
}
