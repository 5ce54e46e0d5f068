//! Звонки (the list with filters and search), the call card, its audio with
//! HTTP range requests, live progress, and resending a webhook.

use std::io::SeekFrom;
use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rop_domain::{
    CallDetails, CallFilter, CallId, CallStatus, DeliveryEvent, ManagerId, OfficeId, SpeakerRole,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::dashboard::{Period, PeriodQuery};
use super::{render, when, Chrome, Names};
use crate::access::Viewer;
use crate::error::PageError;
use crate::format::{self, clock, percent};
use crate::WebState;

const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    manager: String,
    #[serde(default)]
    office: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    min_score: String,
    #[serde(default)]
    max_score: String,
    #[serde(default)]
    before: Option<i64>,
}

pub(crate) struct Row {
    pub id: String,
    pub href: String,
    pub when: String,
    pub manager: String,
    pub client: String,
    pub duration: String,
    pub status: String,
    pub status_class: &'static str,
    pub moving: bool,
    pub score: String,
}

pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "calls.html")]
struct CallsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    /// Some call on the page is still being processed.
    live_rows: bool,
    q: String,
    from: String,
    to: String,
    min_score: String,
    max_score: String,
    statuses: Vec<Choice>,
    managers: Vec<Choice>,
    offices: Vec<Choice>,
    /// The next page's link, with the same filters.
    next: Option<String>,
    filtered: bool,
    /// Nothing at all has arrived yet (no filter narrows the empty list).
    crm_hint: bool,
}

fn score_bound(raw: &str, name: &str) -> Result<Option<f64>, PageError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
        .map(Some)
        .ok_or_else(|| PageError::BadRequest(format!("{name}: нужно число от 0 до 100.")))
}

pub(crate) fn status_class(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Done => "ok",
        CallStatus::Failed => "bad",
        CallStatus::Skipped => "muted",
        _ => "busy",
    }
}

pub(crate) fn row(call: &rop_domain::Call, names: &Names, state: &WebState) -> Row {
    let occurred = call.call_started_at.unwrap_or(call.received_at);
    Row {
        id: call.call_id.as_str().to_owned(),
        href: format!("/calls/{}", encode(call.call_id.as_str())),
        when: when(state, occurred),
        manager: names.of(&call.manager_id),
        client: call
            .client_name
            .clone()
            .or_else(|| call.client_phone.clone())
            .unwrap_or_default(),
        duration: call
            .audio
            .as_ref()
            .map(|a| a.duration_secs)
            .or(call.declared_duration)
            .map(clock)
            .unwrap_or_default(),
        status: format::call_status(call.status).to_owned(),
        status_class: status_class(call.status),
        moving: format::in_progress(call.status),
        score: percent(call.completion_percentage),
    }
}

pub(crate) fn any_moving(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.moving)
}

/// Percent-encodes a path segment (CRM ids may hold any printable character).
pub(crate) fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

pub(crate) async fn list(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let offset = state.settings.utc_offset_secs;
    let status = match query.status.trim() {
        "" => None,
        raw => Some(
            raw.parse::<CallStatus>()
                .map_err(|_| PageError::BadRequest(format!("Нет такого статуса: {raw}.")))?,
        ),
    };
    let manager = match query.manager.trim() {
        "" => None,
        raw => Some(
            ManagerId::try_from(raw.to_owned())
                .map_err(|_| PageError::BadRequest("Неверный менеджер.".into()))?,
        ),
    };
    let office = match query.office.trim() {
        "" => None,
        raw => Some(
            OfficeId::try_from(raw.to_owned())
                .map_err(|_| PageError::BadRequest("Неверный офис.".into()))?,
        ),
    };
    let dates = (!query.from.trim().is_empty() || !query.to.trim().is_empty())
        .then(|| {
            Period::parse(
                &PeriodQuery {
                    days: None,
                    from: Some(query.from.clone()),
                    to: Some(query.to.clone()),
                },
                offset,
            )
        })
        .transpose()?
        .map(|period| period.stats(offset, None));
    let filter = CallFilter {
        from: dates.as_ref().map(|d| d.from),
        to: dates.as_ref().map(|d| d.to),
        manager_id: manager.clone(),
        office_id: office.clone(),
        status,
        min_score: score_bound(&query.min_score, "Оценка от")?,
        max_score: score_bound(&query.max_score, "Оценка до")?,
        managers: viewer.manager_filter(),
        text: Some(query.q.trim().to_owned()).filter(|q| !q.is_empty()),
        before_seq: query.before,
        limit: PAGE_SIZE,
    };
    let page = state.store.list_calls(&filter).await?;
    let managers = state.store.managers().await?;
    let names = Names::from(managers.clone());
    let rows: Vec<Row> = page.calls.iter().map(|c| row(c, &names, &state)).collect();
    let filtered = filter.from.is_some()
        || filter.manager_id.is_some()
        || filter.office_id.is_some()
        || filter.status.is_some()
        || filter.min_score.is_some()
        || filter.max_score.is_some()
        || filter.text.is_some()
        || filter.before_seq.is_some();
    let next = page.next_before_seq.map(|before| {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("q", &query.q),
            ("status", &query.status),
            ("manager", &query.manager),
            ("office", &query.office),
            ("from", &query.from),
            ("to", &query.to),
            ("min_score", &query.min_score),
            ("max_score", &query.max_score),
        ] {
            if !value.trim().is_empty() {
                link.append_pair(key, value);
            }
        }
        link.append_pair("before", &before.to_string());
        format!("/calls?{}", link.finish())
    });
    let statuses = CallStatus::ALL
        .iter()
        .map(|s| Choice {
            value: s.as_str().to_owned(),
            label: format::call_status(*s).to_owned(),
            selected: Some(*s) == status,
        })
        .collect();
    let mut manager_choices: Vec<Choice> = managers
        .iter()
        .filter(|m| viewer.sees_manager(&m.manager_id))
        .map(|m| Choice {
            value: m.manager_id.as_str().to_owned(),
            label: names.of(&m.manager_id),
            selected: Some(&m.manager_id) == manager.as_ref(),
        })
        .collect();
    manager_choices.sort_by(|a, b| a.label.cmp(&b.label));
    let offices = viewer
        .visible_offices(&state)
        .await?
        .iter()
        .map(|o| Choice {
            value: o.office_id.as_str().to_owned(),
            label: o
                .title
                .clone()
                .unwrap_or_else(|| o.office_id.as_str().to_owned()),
            selected: Some(&o.office_id) == office.as_ref(),
        })
        .collect();
    let crm_hint = !filtered && page.calls.is_empty();
    render(CallsPage {
        chrome: Chrome::new(&viewer, "calls"),
        live_rows: any_moving(&rows),
        rows,
        q: query.q,
        from: query.from,
        to: query.to,
        min_score: query.min_score,
        max_score: query.max_score,
        statuses,
        managers: manager_choices,
        offices,
        next,
        filtered,
        crm_hint,
    })
}

async fn visible_call(
    state: &WebState,
    viewer: &Viewer,
    call_id: String,
) -> Result<CallDetails, PageError> {
    let call_id = CallId::try_from(call_id).map_err(|_| PageError::NotFound)?;
    let details = state
        .store
        .call(&call_id)
        .await?
        .ok_or(PageError::NotFound)?;
    viewer.check_call(&details.call)?;
    Ok(details)
}

pub(crate) struct Line {
    pub speaker: &'static str,
    pub class: &'static str,
    pub start: f64,
    pub at: String,
    pub text: String,
}

pub(crate) struct StageView {
    pub name: String,
    pub done: bool,
    pub status: &'static str,
    pub percentage: u8,
    pub weight: u32,
    pub comment: String,
    pub quote: String,
    pub quote_start: Option<f64>,
    pub quote_at: String,
}

pub(crate) struct ChecklistView {
    pub name: String,
    pub score: String,
    pub points: String,
    pub engine: &'static str,
    pub stages: Vec<StageView>,
}

pub(crate) struct TableView {
    pub name: String,
    pub cells: Vec<(String, String)>,
}

pub(crate) struct Fact {
    pub label: &'static str,
    pub value: String,
}

pub(crate) struct HistoryLine {
    pub at: String,
    pub step: String,
    pub level: String,
    pub message: String,
}

pub(crate) struct DeliveryView {
    pub id: String,
    pub what: String,
    pub url: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub attempts: Vec<String>,
    pub next: String,
}

#[derive(Template)]
#[template(path = "call.html")]
struct CardPage {
    chrome: Chrome,
    id: String,
    path_id: String,
    manager: String,
    status: String,
    status_class: &'static str,
    moving: bool,
    reason: String,
    score: String,
    has_audio: bool,
    lines: Vec<Line>,
    checklists: Vec<ChecklistView>,
    tables: Vec<TableView>,
    metrics: Vec<Fact>,
    facts: Vec<Fact>,
    history: Vec<HistoryLine>,
    deliveries: Vec<DeliveryView>,
}

pub(crate) fn stage_views(result: &rop_domain::ChecklistResult) -> Vec<StageView> {
    result
        .stages
        .iter()
        .map(|s| StageView {
            name: s.stage_name.clone(),
            done: s.status == rop_domain::StageStatus::Completed,
            status: format::stage_status(s.status),
            percentage: s.percentage,
            weight: s.weight,
            comment: s.comment.clone(),
            quote: s.quote.clone(),
            quote_start: s.quote_start,
            quote_at: s.quote_start.map(clock).unwrap_or_default(),
        })
        .collect()
}

/// A table's values as words: «да»/«нет», a dash for nothing.
pub(crate) fn cells(result: &rop_domain::TableResult) -> Vec<(String, String)> {
    result
        .extracted_data
        .iter()
        .map(|(key, value)| {
            let shown = match value {
                serde_json::Value::Null => "—".to_owned(),
                serde_json::Value::Bool(true) => "да".to_owned(),
                serde_json::Value::Bool(false) => "нет".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key.clone(), shown)
        })
        .collect()
}

fn speaker(role: SpeakerRole) -> (&'static str, &'static str) {
    match role {
        SpeakerRole::Manager => ("Менеджер", "manager"),
        SpeakerRole::Client => ("Клиент", "client"),
        SpeakerRole::Unknown => ("Собеседник", "unknown"),
    }
}

fn card_view(state: &WebState, viewer: &Viewer, details: CallDetails, names: &Names) -> CardPage {
    let call = &details.call;
    let offset = state.settings.utc_offset_secs;
    let lines = details
        .transcript
        .as_ref()
        .map(|t| {
            t.segments
                .iter()
                .map(|s| {
                    let (speaker, class) = speaker(s.role);
                    Line {
                        speaker,
                        class,
                        start: s.start,
                        at: clock(s.start),
                        text: s.text.trim().to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let checklists = details
        .checklists
        .iter()
        .map(|c| ChecklistView {
            name: c.checklist_name.clone(),
            score: percent(Some(c.completion_percentage)),
            points: format!("{} из {}", c.total_score, c.max_score),
            engine: match c.engine {
                rop_domain::AnalysisEngine::Llm => "языковая модель",
                rop_domain::AnalysisEngine::Rules => "правила по фразам",
            },
            stages: stage_views(c),
        })
        .collect();
    let tables = details
        .tables
        .iter()
        .map(|t| TableView {
            name: t.table_name.clone(),
            cells: cells(t),
        })
        .collect();
    let metrics = details
        .transcript
        .as_ref()
        .map(|t| {
            let m = &t.metrics;
            let mut facts = Vec::new();
            if let Some(share) = m.manager_talk_share {
                facts.push(Fact {
                    label: "Доля речи менеджера",
                    value: format::share(share),
                });
            }
            facts.push(Fact {
                label: "Самый длинный монолог",
                value: format!(
                    "{}{}",
                    clock(m.longest_monologue_secs),
                    m.longest_monologue_role
                        .map(|r| format!(" ({})", speaker(r).0.to_lowercase()))
                        .unwrap_or_default()
                ),
            });
            facts.push(Fact {
                label: "Перебивания",
                value: format!(
                    "{} (менеджер — {})",
                    m.interruptions, m.manager_interruptions
                ),
            });
            facts.push(Fact {
                label: "Тишина",
                value: format::share(m.silence_share),
            });
            facts.push(Fact {
                label: "Темп речи",
                value: format!("{} слов/мин", format::decimal(m.speech_rate_wpm, 0)),
            });
            facts
        })
        .unwrap_or_default();
    let mut facts = vec![
        Fact {
            label: "ID звонка",
            value: call.call_id.as_str().to_owned(),
        },
        Fact {
            label: "Менеджер",
            value: names.of(&call.manager_id),
        },
        Fact {
            label: "Принят",
            value: when(state, call.received_at),
        },
    ];
    let optional = [
        ("Время звонка", call.call_started_at.map(|t| when(state, t))),
        ("Сделка", call.deal_id.clone()),
        ("Этап сделки", call.deal_stage_id.clone()),
        ("Воронка", call.stage_id.clone()),
        (
            "Направление",
            call.direction.map(|d| match d {
                rop_domain::Direction::Incoming => "входящий".to_owned(),
                rop_domain::Direction::Outgoing => "исходящий".to_owned(),
            }),
        ),
        ("Клиент", call.client_name.clone()),
        ("Телефон клиента", call.client_phone.clone()),
        (
            "Длительность",
            call.audio
                .as_ref()
                .map(|a| a.duration_secs)
                .or(call.declared_duration)
                .map(clock),
        ),
        (
            "Запись",
            call.audio.as_ref().map(|a| {
                format!(
                    "{} / {}, {} Гц, {}",
                    a.container,
                    a.codec,
                    a.sample_rate,
                    if a.channels == 2 {
                        "стерео"
                    } else {
                        "моно"
                    }
                )
            }),
        ),
    ];
    for (label, value) in optional {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            facts.push(Fact { label, value });
        }
    }
    for (key, value) in &call.metadata {
        facts.push(Fact {
            label: "Поле CRM",
            value: format!("{key}: {value}"),
        });
    }
    let history = details
        .history
        .iter()
        .map(|e| HistoryLine {
            at: format::datetime_secs(e.at, offset),
            step: e.step.clone(),
            level: format!("{:?}", e.level).to_lowercase(),
            message: e.message.clone(),
        })
        .collect();
    let deliveries = details
        .deliveries
        .iter()
        .map(|d| DeliveryView {
            id: d.delivery_id.clone(),
            what: match d.event {
                DeliveryEvent::ChecklistResult => format!("Чек-лист {}", d.source_id),
                DeliveryEvent::TableResult => format!("Таблица {}", d.source_id),
            },
            url: d.url.clone(),
            state: format::delivery_state(d.state),
            state_class: match d.state {
                rop_domain::DeliveryState::Delivered => "ok",
                rop_domain::DeliveryState::Failed => "bad",
                _ => "busy",
            },
            attempts: d
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "№{} {} — {}{} ({} мс)",
                        a.attempt,
                        format::datetime_secs(a.at, offset),
                        a.status_code
                            .map(|c| format!("HTTP {c}"))
                            .unwrap_or_else(|| "нет ответа".to_owned()),
                        a.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default(),
                        a.duration_ms
                    )
                })
                .collect(),
            next: d
                .next_attempt_at
                .filter(|_| d.state == rop_domain::DeliveryState::Pending)
                .map(|t| format::datetime_secs(t, offset))
                .unwrap_or_default(),
        })
        .collect();
    CardPage {
        chrome: Chrome::new(viewer, "calls"),
        id: call.call_id.as_str().to_owned(),
        path_id: encode(call.call_id.as_str()),
        manager: names.of(&call.manager_id),
        status: format::call_status(call.status).to_owned(),
        status_class: status_class(call.status),
        moving: format::in_progress(call.status),
        reason: call.status_reason.clone().unwrap_or_default(),
        score: percent(call.completion_percentage),
        has_audio: call.audio_blob.is_some(),
        lines,
        checklists,
        tables,
        metrics,
        facts,
        history,
        deliveries,
    }
}

pub(crate) async fn card_page(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(call_id): Path<String>,
) -> Result<Response, PageError> {
    let details = visible_call(&state, &viewer, call_id).await?;
    let names = Names::load(&state).await?;
    render(card_view(&state, &viewer, details, &names))
}

#[derive(Template)]
#[template(path = "progress.html")]
struct Progress {
    path_id: String,
    status: String,
    status_class: &'static str,
    moving: bool,
}

/// The status badge of the call card, polled while the call moves; when it
/// stops moving, the whole card reloads to show the results.
pub(crate) async fn progress(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(call_id): Path<String>,
) -> Result<Response, PageError> {
    let details = visible_call(&state, &viewer, call_id).await?;
    let call = &details.call;
    let moving = format::in_progress(call.status);
    let mut response = render(Progress {
        path_id: encode(call.call_id.as_str()),
        status: format::call_status(call.status).to_owned(),
        status_class: status_class(call.status),
        moving,
    })?;
    if !moving {
        response
            .headers_mut()
            .insert("hx-refresh", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What kind of sound a stored file is, from its first bytes.
fn audio_type(head: &[u8]) -> &'static str {
    if head.starts_with(b"RIFF") {
        "audio/wav"
    } else if head.starts_with(b"OggS") {
        "audio/ogg"
    } else if head.starts_with(b"fLaC") {
        "audio/flac"
    } else if head.starts_with(b"ID3") || head.first() == Some(&0xFF) {
        "audio/mpeg"
    } else if head.get(4..8) == Some(b"ftyp") {
        "audio/mp4"
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        "audio/webm"
    } else {
        "application/octet-stream"
    }
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`; `None` when the
/// header asks for something else (several ranges, or one past the end).
fn byte_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 {
                return None;
            }
            (size.saturating_sub(n), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// The recording, streamed, with `Range` support so the player can seek.
pub(crate) async fn audio(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let details = visible_call(&state, &viewer, call_id).await?;
    let key = details.call.audio_blob.ok_or(PageError::NotFound)?;
    let mut file = state
        .blobs
        .open(&key)
        .await
        .map_err(|e| PageError::Internal(format!("audio {key}: {e}")))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| PageError::Internal(format!("audio {key}: {e}")))?
        .len();
    let mut head = [0u8; 12];
    let read = file.read(&mut head).await.unwrap_or(0);
    let content_type = audio_type(&head[..read]);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, size));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
    };
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| PageError::Internal(format!("audio {key}: {e}")))?;
    let length = if size == 0 { 0 } else { end - start + 1 };
    let body = Body::from_stream(ReaderStream::new(file.take(length)));
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            h.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// An administrator sends a webhook again from the first attempt.
pub(crate) async fn resend(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path((call_id, delivery_id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let details = visible_call(&state, &viewer, call_id).await?;
    state
        .store
        .resend_delivery(&details.call.call_id, &delivery_id, chrono::Utc::now())
        .await?;
    super::audit(
        &state,
        &viewer,
        "delivery.resend",
        details.call.call_id.as_str(),
        format!("вебхук {delivery_id} отправлен заново"),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/calls/{}#deliveries",
        encode(details.call.call_id.as_str())
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_within_the_file() {
        assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(byte_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=990-2000", 1000), Some((990, 999)));
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=-0",
            "bytes=x-",
        ] {
            assert_eq!(byte_range(bad, 1000), None, "{bad}");
        }
    }

    #[test]
    fn sound_types_by_magic() {
        assert_eq!(audio_type(b"RIFF\0\0\0\0WAVE"), "audio/wav");
        assert_eq!(audio_type(b"OggS"), "audio/ogg");
        assert_eq!(audio_type(b"\0\0\0\x20ftypM4A "), "audio/mp4");
        assert_eq!(audio_type(b"junk"), "application/octet-stream");
    }
}
