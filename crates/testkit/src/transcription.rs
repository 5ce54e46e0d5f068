//! An OpenAI-compatible `POST /v1/audio/transcriptions` server.
//!
//! Instead of speech it "recognises" tones: a channel carrying a sine wave
//! of F Hz comes back as the words `тон F герц` (F rounded to 10 Hz), timed
//! where the tone is. Tests can therefore tell channels apart and check
//! timings without a model. Behaviour follows OpenAI's documentation:
//! multipart fields `file` and `model` required, `language`,
//! `response_format` (`json`, `text`, `verbose_json`), bearer auth, and
//! errors as `{"error": {"message", "type", "param", "code"}}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Shared {
    api_key: Option<String>,
    requests: AtomicUsize,
    /// Statuses to answer with before working normally.
    failures: Mutex<Vec<u16>>,
    delay: Mutex<Duration>,
    last_fields: Mutex<Vec<(String, String)>>,
}

pub struct TranscriptionDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TranscriptionDouble {
    /// Starts on a free loopback port; `api_key` is required when given.
    pub async fn start(api_key: Option<&str>) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.map(str::to_owned),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcribe))
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

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The next requests are answered with these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.shared
            .failures
            .lock()
            .unwrap()
            .extend_from_slice(statuses);
    }

    /// Every answer waits this long first (a slow model).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Text fields of the last request (`model`, `language`, …).
    pub fn last_fields(&self) -> Vec<(String, String)> {
        self.shared.last_fields.lock().unwrap().clone()
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

async fn transcribe(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The whole request is read first, as real servers do: answering while
    // the client still uploads would look like a broken connection.
    let mut audio: Option<Vec<u8>> = None;
    let mut fields = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            audio = field.bytes().await.ok().map(|b| b.to_vec());
        } else if let Ok(text) = field.text().await {
            fields.push((name, text));
        }
    }
    if let Some(key) = &shared.api_key {
        let expected = format!("Bearer {key}");
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            );
        }
    }
    let failure = {
        let mut failures = shared.failures.lock().unwrap();
        (!failures.is_empty()).then(|| failures.remove(0))
    };
    if let Some(status) = failure {
        let status = StatusCode::from_u16(status).unwrap();
        return error(
            status,
            "The server is overloaded.",
            "server_error",
            None,
            None,
        );
    }

    *shared.last_fields.lock().unwrap() = fields.clone();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if field("model").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            Some("model"),
            None,
        );
    }
    let Some(samples) = audio.as_deref().and_then(pcm16_mono) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            "invalid_request_error",
            Some("file"),
            None,
        );
    };
    let duration = samples.len() as f64 / 16_000.0;
    let segments = tones(&samples);
    let text = segments
        .iter()
        .map(|(_, _, text)| text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    match field("response_format").unwrap_or("json") {
        "text" => text.into_response(),
        "json" => Json(json!({ "text": text })).into_response(),
        "verbose_json" => {
            let mut words = Vec::new();
            let segments: Vec<Value> = segments
                .iter()
                .enumerate()
                .map(|(id, (start, end, text))| {
                    let parts: Vec<&str> = text.split(' ').collect();
                    let step = (end - start) / parts.len() as f64;
                    for (i, word) in parts.iter().enumerate() {
                        words.push(json!({
                            "word": word,
                            "start": start + step * i as f64,
                            "end": start + step * (i + 1) as f64,
                        }));
                    }
                    json!({
                        "id": id, "seek": 0, "start": start, "end": end,
                        "text": format!(" {text}"), "tokens": [], "temperature": 0.0,
                        "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.01,
                    })
                })
                .collect();
            Json(json!({
                "task": "transcribe",
                "language": field("language").unwrap_or("russian"),
                "duration": duration,
                "text": text,
                "segments": segments,
                "words": words,
            }))
            .into_response()
        }
        other => error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid response_format: {other}"),
            "invalid_request_error",
            Some("response_format"),
            None,
        ),
    }
}

/// 16 kHz mono 16-bit PCM WAV → samples; anything else is refused.
fn pcm16_mono(wav: &[u8]) -> Option<Vec<f32>> {
    if wav.len() < 44 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let channels = u16::from_le_bytes([wav[22], wav[23]]);
    let rate = u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]);
    let bits = u16::from_le_bytes([wav[34], wav[35]]);
    if channels != 1 || rate != 16_000 || bits != 16 || &wav[36..40] != b"data" {
        return None;
    }
    Some(
        wav[44..]
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect(),
    )
}

/// Stretches of sound separated by at least 0.3 s of silence, each with
/// its pitch.
fn tones(samples: &[f32]) -> Vec<(f64, f64, String)> {
    const WINDOW: usize = 160; // 10 ms
    let loud: Vec<bool> = samples
        .chunks(WINDOW)
        .map(|w| w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32 > 1e-4)
        .collect();
    let mut stretches = Vec::new();
    let mut i = 0;
    while i < loud.len() {
        if !loud[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut quiet = 0;
        while i < loud.len() && quiet < 30 {
            if loud[i] {
                end = i;
                quiet = 0;
            } else {
                quiet += 1;
            }
            i += 1;
        }
        stretches.push((start, end + 1));
    }
    stretches
        .into_iter()
        .map(|(start, end)| {
            let part = &samples[start * WINDOW..(end * WINDOW).min(samples.len())];
            let crossings = part
                .windows(2)
                .filter(|w| w[0] <= 0.0 && w[1] > 0.0)
                .count();
            let hz = crossings as f64 * 16_000.0 / part.len() as f64;
            let hz = (hz / 10.0).round() * 10.0;
            (
                start as f64 * 0.01,
                end as f64 * 0.01,
                format!("тон {hz} герц"),
            )
        })
        .collect()
}
