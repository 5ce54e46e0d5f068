//! `POST /api/v1/calls/audio-upload`: the CRM hands us a call.
//!
//! The body arrives as multipart, urlencoded or JSON and is first reduced to
//! plain named text fields (plus an optional staged file); [`UploadRequest`]
//! then parses those into domain values, so every content type gets exactly
//! the same validation and error messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::Json;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rop_domain::{
    AudioSource, CallId, CallStatus, Direction, JobKind, ManagerId, NewCall, NewCallEvent, NewJob,
    StoreError,
};
use rop_fetch::{sniff, ProbeLimits, ProbeOutcome, Sniffed};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use url::Url;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// Largest urlencoded or JSON body: they carry fields, not audio.
const MAX_FIELDS_BODY: usize = 1024 * 1024;
const MAX_TEXT_PART: usize = 64 * 1024;
const MAX_METADATA_FIELDS: usize = 100;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 4096;
const MAX_URL_CHARS: usize = 4096;
const MAX_TEXT_FIELD_CHARS: usize = 512;
/// Fields that hold the API key must never be kept as metadata.
const SECRET_FIELDS: [&str; 2] = ["apiKey", "api_key"];

/// The fields an upload may carry (documentation of the request body).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct UploadForm {
    /// Unique id of the call in the CRM, at most 256 characters.
    call_id: String,
    /// CRM id of the manager; unknown ids are created as managers without names.
    manager_id: String,
    /// Link to the audio (http or https). Exactly one of `audio_url` and `file`.
    audio_url: Option<String>,
    /// The audio file itself (multipart only). Exactly one of `audio_url` and `file`.
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    deal_id: Option<String>,
    deal_stage_id: Option<String>,
    /// Sales funnel (pipeline) id.
    stage_id: Option<String>,
    /// Duration in seconds; below the minimum call duration the call is skipped.
    duration: Option<f64>,
    /// `incoming` or `outgoing`.
    direction: Option<String>,
    client_phone: Option<String>,
    client_name: Option<String>,
    /// RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or unix seconds.
    call_started_at: Option<String>,
    /// Stereo recordings: the manager's channel, `0` (left) or `1` (right);
    /// the connection settings decide when absent.
    manager_channel: Option<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResponse {
    /// `queued` or `skipped`.
    pub status: &'static str,
    pub call_id: CallId,
    /// Why the call was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A `file` part written to the staging directory while it streamed in.
struct StagedFile {
    path: PathBuf,
    size: u64,
    head: Vec<u8>,
}

/// Removes the staged file unless it was handed to the blob store.
struct StagingGuard(Option<PathBuf>);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Default)]
struct RawUpload {
    fields: Vec<(String, String)>,
    file: Option<StagedFile>,
}

#[utoipa::path(
    post,
    path = "/api/v1/calls/audio-upload",
    tag = "calls",
    request_body(
        content(
            (UploadForm = "multipart/form-data"),
            (UploadForm = "application/x-www-form-urlencoded"),
            (UploadForm = "application/json"),
        ),
        description = "Call metadata and the audio link or file; unknown fields are kept as metadata."
    ),
    responses(
        (status = 200, description = "Queued for analysis, or skipped as too short", body = UploadResponse),
        (status = 400, description = "invalid_request, forbidden_url, not_audio, audio_unreachable, too_large, too_long", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 409, description = "duplicate_call: this call_id was uploaded before", body = crate::error::ErrorBody),
        (status = 429, description = "rate_limited; see Retry-After", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn audio_upload(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Json<UploadResponse>, ApiError> {
    let result = accept_upload(&state, request).await;
    let outcome = match &result {
        Ok(response) => response.status,
        Err(error) => error.code,
    };
    metrics::counter!("rop_uploads_total", "outcome" => outcome).increment(1);
    result.map(Json)
}

async fn accept_upload(state: &AppState, request: Request) -> Result<UploadResponse, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut raw = if content_type.starts_with("multipart/form-data") {
        read_multipart(state, request).await?
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        read_urlencoded(request.into_body()).await?
    } else if content_type.starts_with("application/json") {
        read_json(request.into_body()).await?
    } else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "Тело запроса должно быть multipart/form-data, application/x-www-form-urlencoded или application/json",
        ));
    };
    let mut staging = StagingGuard(raw.file.as_ref().map(|f| f.path.clone()));
    let upload = UploadRequest::parse(&mut raw)?;
    let now = Utc::now();

    if let Some(declared) = upload.declared_duration_secs {
        check_duration(state, declared, "duration")?;
    }
    let settings = state.connection_settings().await?;
    let http = state.http.client(settings.allow_private_networks);
    if let UploadAudio::Url(url) = &upload.audio {
        http.guard()
            .check_url_resolved(url)
            .await
            .map_err(|forbidden| forbidden_url(&forbidden))?;
    }

    let mut events = vec![NewCallEvent::info(now, "upload", "Звонок принят")];
    let skip_reason = settings.skip_reason(upload.declared_duration_secs);

    let source = match upload.audio {
        UploadAudio::Url(url) => {
            if skip_reason.is_none() {
                events.push(probe_link(state, http, &url, now).await?);
            }
            AudioSource::Url(url)
        }
        UploadAudio::File => {
            let file = raw
                .file
                .take()
                .ok_or_else(|| ApiError::invalid("file", "Файл не получен"))?;
            let format = match sniff(&file.head) {
                Sniffed::Audio {
                    format,
                    duration_secs,
                } => {
                    if let Some(duration) = duration_secs {
                        check_duration(state, duration, "file")?;
                    }
                    format
                }
                Sniffed::NotAudio(what) => return Err(not_audio(what).with_field("file")),
            };
            let key = format!("audio/{}", uuid::Uuid::new_v4().simple());
            state
                .blobs
                .put_file(&key, &file.path)
                .await
                .map_err(|e| ApiError::internal(&e))?;
            staging.0 = None;
            events.push(NewCallEvent::info(
                now,
                "upload",
                format!("Файл {} получен, {} байт", format.name(), file.size),
            ));
            AudioSource::Blob {
                key,
                size_bytes: file.size,
            }
        }
    };

    let (status, status_reason) = match &skip_reason {
        Some(reason) => {
            events.push(NewCallEvent::info(now, "upload", reason.clone()));
            (CallStatus::Skipped, Some(reason.clone()))
        }
        None => (CallStatus::Received, None),
    };
    let blob_key = match &source {
        AudioSource::Blob { key, .. } => Some(key.clone()),
        AudioSource::Url(_) => None,
    };
    // A file is already here; a link is fetched by the pipeline first.
    let first_step = match &source {
        AudioSource::Url(_) => JobKind::Download,
        AudioSource::Blob { .. } => JobKind::Decode,
    };
    let first_job = (status == CallStatus::Received).then_some(NewJob {
        kind: first_step,
        max_attempts: state.limits.job_attempts,
    });
    let call = NewCall {
        call_id: upload.call_id.clone(),
        manager_id: upload.manager_id,
        deal_id: upload.deal_id,
        deal_stage_id: upload.deal_stage_id,
        stage_id: upload.stage_id,
        direction: upload.direction,
        client_phone: upload.client_phone,
        client_name: upload.client_name,
        call_started_at: upload.call_started_at,
        declared_duration_secs: upload.declared_duration_secs,
        manager_channel: upload.manager_channel,
        source,
        metadata: upload.metadata,
        status,
        status_reason,
        received_at: now,
        events,
        first_job,
    };
    match state.store.insert_call(&call).await {
        Ok(()) => {}
        Err(error) => {
            if let Some(key) = blob_key {
                let _ = state.blobs.delete(&key).await;
            }
            return Err(match error {
                StoreError::Duplicate => duplicate(&call.call_id),
                other => other.into(),
            });
        }
    }
    tracing::info!(call_id = %call.call_id, status = %call.status, "call accepted");
    Ok(UploadResponse {
        status: if skip_reason.is_some() {
            "skipped"
        } else {
            "queued"
        },
        call_id: call.call_id,
        reason: skip_reason,
    })
}

fn duplicate(call_id: &CallId) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "duplicate_call",
        format!("Звонок с call_id «{call_id}» уже загружен"),
    )
    .with_field("call_id")
}

fn forbidden_url(forbidden: &rop_fetch::Forbidden) -> ApiError {
    ApiError::bad_request(
        "forbidden_url",
        format!("Ссылка на аудио запрещена: {forbidden}"),
    )
    .with_field("audio_url")
}

fn not_audio(what: &str) -> ApiError {
    ApiError::bad_request(
        "not_audio",
        format!("Файл не является аудио: получено {what}. Поддерживаются MP3, WAV, OGG, FLAC, M4A/AAC, Opus"),
    )
}

fn check_duration(state: &AppState, secs: f64, field: &str) -> Result<(), ApiError> {
    let max = f64::from(state.limits.max_duration_secs);
    if secs > max {
        return Err(ApiError::bad_request(
            "too_long",
            format!("Звонок длиннее допустимого: {secs:.0} с > {max:.0} с"),
        )
        .with_field(field));
    }
    Ok(())
}

/// Looks at the first bytes behind the link. A source that is down or slow
/// is not the CRM's mistake: the call is accepted and downloaded later.
async fn probe_link(
    state: &AppState,
    http: &rop_fetch::GuardedClient,
    url: &Url,
    now: DateTime<Utc>,
) -> Result<NewCallEvent, ApiError> {
    let limits = ProbeLimits {
        timeout: state.limits.probe_timeout,
        max_bytes: state.limits.max_upload_bytes,
    };
    match rop_fetch::probe(http, url, limits).await {
        ProbeOutcome::Audio {
            format,
            total_bytes,
            duration_secs,
        } => {
            if let Some(duration) = duration_secs {
                check_duration(state, duration, "audio_url")?;
            }
            let size = total_bytes
                .map(|bytes| format!(", {bytes} байт"))
                .unwrap_or_default();
            Ok(NewCallEvent::info(
                now,
                "probe",
                format!("По ссылке {}{size}", format.name()),
            ))
        }
        ProbeOutcome::NotAudio(what) => Err(not_audio(what).with_field("audio_url")),
        ProbeOutcome::Unreachable(status) => Err(ApiError::bad_request(
            "audio_unreachable",
            format!("Аудиофайл недоступен: источник ответил {status}"),
        )
        .with_field("audio_url")),
        ProbeOutcome::TooLarge(bytes) => Err(too_large(state, bytes).with_field("audio_url")),
        ProbeOutcome::Forbidden(forbidden) => Err(forbidden_url(&forbidden)),
        ProbeOutcome::Transient(reason) => Ok(NewCallEvent::warning(
            now,
            "probe",
            format!("Проверить ссылку не удалось ({reason}); файл будет скачан позже, с повторными попытками"),
        )),
    }
}

fn too_large(state: &AppState, bytes: u64) -> ApiError {
    ApiError::bad_request(
        "too_large",
        format!(
            "Файл больше допустимого: {bytes} байт > {} байт",
            state.limits.max_upload_bytes
        ),
    )
}

async fn read_urlencoded(body: Body) -> Result<RawUpload, ApiError> {
    let bytes = read_small_body(body).await?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_request", format!("Некорректное тело формы: {e}"))
    })?;
    Ok(RawUpload { fields, file: None })
}

async fn read_json(body: Body) -> Result<RawUpload, ApiError> {
    let bytes = read_small_body(body).await?;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_request",
                format!("Тело запроса должно быть JSON-объектом: {e}"),
            )
        })?;
    let mut fields = Vec::with_capacity(object.len());
    for (name, value) in object {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) if !KNOWN_FIELDS.contains(&name.as_str()) => {
                flag.to_string()
            }
            _ => {
                return Err(ApiError::invalid(
                    name,
                    "Значение должно быть строкой или числом",
                ))
            }
        };
        fields.push((name, text));
    }
    Ok(RawUpload { fields, file: None })
}

async fn read_small_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_FIELDS_BODY)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                format!("Тело запроса больше {MAX_FIELDS_BODY} байт или оборвано"),
            )
        })
}

async fn read_multipart(state: &AppState, request: Request) -> Result<RawUpload, ApiError> {
    let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
        ApiError::bad_request("invalid_request", format!("Некорректный multipart: {e}"))
    })?;
    let mut raw = RawUpload::default();
    // Anything staged so far is removed if reading fails half-way.
    let mut staging = StagingGuard(None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("Некорректный multipart: {e}"),
                ))
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if raw.file.is_some() {
                return Err(ApiError::invalid("file", "Поле file передано дважды"));
            }
            let path = state
                .staging_dir
                .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
            staging.0 = Some(path.clone());
            raw.file = Some(stage_file(state, field, path).await?);
        } else {
            let text = read_text_part(field, &name).await?;
            raw.fields.push((name, text));
        }
    }
    // Ownership of the staged file passes to the caller's guard.
    staging.0 = None;
    Ok(raw)
}

async fn read_text_part(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::bad_request("invalid_request", format!("Некорректный multipart: {e}"))
    })? {
        if bytes.len() + chunk.len() > MAX_TEXT_PART {
            return Err(ApiError::invalid(
                name,
                format!("Поле длиннее {MAX_TEXT_PART} байт"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(name, "Поле не в UTF-8"))
}

async fn stage_file(
    state: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    path: PathBuf,
) -> Result<StagedFile, ApiError> {
    const HEAD_BYTES: usize = 8192;
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::bad_request("invalid_request", format!("Файл получен не полностью: {e}"))
    })? {
        size += chunk.len() as u64;
        if size > state.limits.max_upload_bytes {
            return Err(too_large(state, size).with_field("file"));
        }
        if head.len() < HEAD_BYTES {
            let room = HEAD_BYTES - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    // The upload is answered only once the bytes are on disk.
    file.sync_all().await.map_err(|e| ApiError::internal(&e))?;
    Ok(StagedFile { path, size, head })
}

const KNOWN_FIELDS: [&str; 13] = [
    "call_id",
    "manager_id",
    "audio_url",
    "file",
    "deal_id",
    "deal_stage_id",
    "stage_id",
    "duration",
    "direction",
    "client_phone",
    "client_name",
    "call_started_at",
    "manager_channel",
];

enum UploadAudio {
    Url(Url),
    File,
}

/// An upload whose every field has been checked.
struct UploadRequest {
    call_id: CallId,
    manager_id: ManagerId,
    audio: UploadAudio,
    deal_id: Option<String>,
    deal_stage_id: Option<String>,
    stage_id: Option<String>,
    declared_duration_secs: Option<f64>,
    direction: Option<Direction>,
    client_phone: Option<String>,
    client_name: Option<String>,
    call_started_at: Option<DateTime<Utc>>,
    manager_channel: Option<u8>,
    metadata: BTreeMap<String, String>,
}

impl UploadRequest {
    fn parse(raw: &mut RawUpload) -> Result<Self, ApiError> {
        let mut known: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, value) in std::mem::take(&mut raw.fields) {
            if let Some(&field) = KNOWN_FIELDS.iter().find(|&&f| f == name) {
                if known.insert(field, value).is_some() {
                    return Err(ApiError::invalid(field, "Поле передано дважды"));
                }
            } else if !SECRET_FIELDS.contains(&name.as_str()) {
                check_metadata(&name, &value)?;
                if metadata.insert(name.clone(), value).is_some() {
                    return Err(ApiError::invalid(name, "Поле передано дважды"));
                }
            }
        }
        if metadata.len() > MAX_METADATA_FIELDS {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("Не больше {MAX_METADATA_FIELDS} дополнительных полей"),
            ));
        }
        let mut take = |field: &'static str| known.remove(field).filter(|v| !v.trim().is_empty());

        let call_id = parse_id::<CallId>(take("call_id"), "call_id")?;
        let manager_id = parse_id::<ManagerId>(take("manager_id"), "manager_id")?;
        let audio = match (take("audio_url"), take("file"), raw.file.is_some()) {
            (Some(_), _, true) => {
                return Err(ApiError::invalid(
                    "audio_url",
                    "Нужно передать что-то одно: audio_url или file",
                ))
            }
            (Some(link), None, false) => UploadAudio::Url(parse_audio_url(&link)?),
            (None, None, true) => UploadAudio::File,
            (_, Some(_), false) => {
                return Err(ApiError::invalid(
                    "file",
                    "Поле file должно быть файлом в multipart/form-data",
                ))
            }
            (None, None, false) => {
                return Err(ApiError::invalid(
                    "audio_url",
                    "Обязательно одно из полей: audio_url или file",
                ))
            }
            (None, Some(_), true) => UploadAudio::File,
        };
        Ok(Self {
            call_id,
            manager_id,
            audio,
            deal_id: optional_text(take("deal_id"), "deal_id")?,
            deal_stage_id: optional_text(take("deal_stage_id"), "deal_stage_id")?,
            stage_id: optional_text(take("stage_id"), "stage_id")?,
            declared_duration_secs: take("duration")
                .map(|raw| parse_duration(&raw))
                .transpose()?,
            manager_channel: take("manager_channel")
                .map(|raw| match raw.trim() {
                    "0" | "left" => Ok(0),
                    "1" | "right" => Ok(1),
                    _ => Err(ApiError::invalid(
                        "manager_channel",
                        "Канал менеджера: 0 (левый) или 1 (правый)",
                    )),
                })
                .transpose()?,
            direction: take("direction")
                .map(|raw| {
                    raw.trim()
                        .to_ascii_lowercase()
                        .parse::<Direction>()
                        .map_err(|_| {
                            ApiError::invalid(
                                "direction",
                                "Допустимые значения: incoming, outgoing",
                            )
                        })
                })
                .transpose()?,
            client_phone: optional_text(take("client_phone"), "client_phone")?,
            client_name: optional_text(take("client_name"), "client_name")?,
            call_started_at: take("call_started_at")
                .map(|raw| parse_time(&raw))
                .transpose()?,
            metadata,
        })
    }
}

fn parse_id<T>(raw: Option<String>, field: &'static str) -> Result<T, ApiError>
where
    T: TryFrom<String, Error = rop_domain::InvalidId>,
{
    let raw = raw.ok_or_else(|| ApiError::invalid(field, format!("Поле {field} обязательно")))?;
    T::try_from(raw).map_err(|e| ApiError::invalid(field, format!("Поле {field}: {e}")))
}

fn optional_text(raw: Option<String>, field: &'static str) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.trim();
    if text.chars().count() > MAX_TEXT_FIELD_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("Не длиннее {MAX_TEXT_FIELD_CHARS} символов"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "Недопустимые управляющие символы"));
    }
    Ok(Some(text.to_owned()))
}

fn parse_audio_url(raw: &str) -> Result<Url, ApiError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_CHARS {
        return Err(ApiError::invalid(
            "audio_url",
            format!("Ссылка длиннее {MAX_URL_CHARS} символов"),
        ));
    }
    let url = Url::parse(raw)
        .map_err(|e| ApiError::invalid("audio_url", format!("Некорректная ссылка: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(forbidden_url(&rop_fetch::Forbidden::Scheme(
            url.scheme().to_owned(),
        )));
    }
    Ok(url)
}

fn parse_duration(raw: &str) -> Result<f64, ApiError> {
    let secs: f64 = raw
        .trim()
        .replace(',', ".")
        .parse()
        .map_err(|_| ApiError::invalid("duration", "Длительность должна быть числом секунд"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::invalid(
            "duration",
            "Длительность должна быть неотрицательным числом секунд",
        ));
    }
    Ok(secs)
}

/// Accepts RFC 3339, `YYYY-MM-DD HH:MM:SS` (taken as UTC), a date alone, or
/// unix seconds — the forms CRMs actually send.
fn parse_time(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let raw = raw.trim();
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
                .map(|naive| Utc.from_utc_datetime(&naive))
        })
        .or_else(|| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|naive| Utc.from_utc_datetime(&naive))
        })
        .or_else(|| {
            raw.parse::<i64>()
                .ok()
                .filter(|secs| (0..=4_102_444_800).contains(secs))
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
        });
    parsed.ok_or_else(|| {
        ApiError::invalid(
            "call_started_at",
            "Время начала: RFC 3339, «ГГГГ-ММ-ДД ЧЧ:ММ:СС» или unix-время в секундах",
        )
    })
}

fn check_metadata(name: &str, value: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.chars().count() > MAX_METADATA_KEY_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("Имя дополнительного поля должно быть от 1 до {MAX_METADATA_KEY_CHARS} символов без управляющих"),
        ));
    }
    if value.chars().count() > MAX_METADATA_VALUE_CHARS {
        return Err(ApiError::invalid(
            name,
            format!("Значение длиннее {MAX_METADATA_VALUE_CHARS} символов"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: &[(&str, &str)]) -> RawUpload {
        RawUpload {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            file: None,
        }
    }

    fn field_of(fields: &[(&str, &str)]) -> Option<String> {
        UploadRequest::parse(&mut raw(fields))
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn parses_a_seed_request_and_keeps_extras_as_metadata() {
        let upload = UploadRequest::parse(&mut raw(&[
            ("manager_id", "mgr_001"),
            ("call_id", "call_12345_20250619"),
            ("deal_id", "deal_5678"),
            (
                "audio_url",
                "https://crm.company.com/files/audio/call_12345.mp3",
            ),
            ("utm_source", "яндекс"),
            ("apiKey", "secret"),
        ]))
        .unwrap();
        assert_eq!(upload.call_id.as_str(), "call_12345_20250619");
        assert_eq!(upload.deal_id.as_deref(), Some("deal_5678"));
        assert_eq!(
            upload.metadata.get("utm_source").map(String::as_str),
            Some("яндекс")
        );
        assert!(!upload.metadata.contains_key("apiKey"));
    }

    #[test]
    fn names_the_bad_field() {
        let base = [
            ("call_id", "c1"),
            ("manager_id", "m1"),
            ("audio_url", "https://x.ru/a.mp3"),
        ];
        assert_eq!(field_of(&base[1..]), Some("call_id".into()));
        assert_eq!(field_of(&[base[0], base[2]]), Some("manager_id".into()));
        assert_eq!(field_of(&base[..2]), Some("audio_url".into()));
        for (name, value) in [
            ("duration", "долго"),
            ("duration", "-1"),
            ("duration", "NaN"),
            ("direction", "sideways"),
            ("call_started_at", "вчера"),
            ("audio_url", "not a url"),
        ] {
            let mut fields = base.to_vec();
            fields.retain(|(n, _)| *n != name);
            fields.push((name, value));
            assert_eq!(field_of(&fields), Some(name.to_string()), "{name}={value}");
        }
        let mut twice = base.to_vec();
        twice.push(("call_id", "c2"));
        assert_eq!(field_of(&twice), Some("call_id".into()));
    }

    #[test]
    fn understands_common_time_and_number_forms() {
        assert_eq!(parse_duration("12,5").unwrap(), 12.5);
        for raw in [
            "2025-06-19T10:00:00+03:00",
            "2025-06-19 07:00:00",
            "1750316400",
        ] {
            assert_eq!(
                parse_time(raw).unwrap(),
                Utc.with_ymd_and_hms(2025, 6, 19, 7, 0, 0).unwrap(),
                "{raw}"
            );
        }
    }
}
