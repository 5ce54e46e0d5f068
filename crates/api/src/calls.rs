//! Reading and deleting calls: `GET /calls`, `GET /calls/{id}`, `DELETE /calls/{id}`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rop_domain::{Call, CallDetails, CallFilter, CallId, CallStatus, ManagerId, OfficeId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::AppState;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Longest transcript search text, in characters.
const MAX_QUERY_CHARS: usize = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Calls from this moment on (RFC 3339 or `YYYY-MM-DD`, inclusive).
    from: Option<String>,
    /// Calls up to this moment (RFC 3339, exclusive; or `YYYY-MM-DD`, that whole day included).
    to: Option<String>,
    manager_id: Option<String>,
    office_id: Option<String>,
    /// received, downloading, decoding, transcribing, analyzing, delivering, done, skipped, failed
    status: Option<String>,
    /// Minimum average checklist completion, 0–100.
    min_score: Option<f64>,
    max_score: Option<f64>,
    /// Words the transcript must contain, in any grammatical form (Russian
    /// stemming): `q=скидка доставка` finds «скидку» and «доставки».
    /// Calls not transcribed yet never match. Up to 500 characters.
    q: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CallList {
    pub calls: Vec<Call>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub status: &'static str,
    pub call_id: CallId,
}

fn parse_bound(raw: &str, field: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, "Ожидается дата ГГГГ-ММ-ДД или время RFC 3339"))?;
    let date = if end_of_day {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    Ok(date.and_time(chrono::NaiveTime::MIN).and_utc())
}

impl ListQuery {
    fn into_filter(self) -> Result<CallFilter, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("От 1 до {MAX_PAGE}")));
        }
        if self
            .q
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
        {
            return Err(ApiError::invalid(
                "q",
                format!("Не длиннее {MAX_QUERY_CHARS} символов"),
            ));
        }
        for (field, score) in [("min_score", self.min_score), ("max_score", self.max_score)] {
            if score.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
                return Err(ApiError::invalid(field, "От 0 до 100"));
            }
        }
        Ok(CallFilter {
            from: self
                .from
                .map(|raw| parse_bound(&raw, "from", false))
                .transpose()?,
            to: self
                .to
                .map(|raw| parse_bound(&raw, "to", true))
                .transpose()?,
            manager_id: self
                .manager_id
                .map(|raw| {
                    ManagerId::parse(&raw)
                        .map_err(|e| ApiError::invalid("manager_id", e.to_string()))
                })
                .transpose()?,
            office_id: self
                .office_id
                .map(|raw| {
                    OfficeId::parse(&raw).map_err(|e| ApiError::invalid("office_id", e.to_string()))
                })
                .transpose()?,
            status: self
                .status
                .map(|raw| {
                    raw.parse::<CallStatus>()
                        .map_err(|_| ApiError::invalid("status", "Неизвестный статус"))
                })
                .transpose()?,
            min_score: self.min_score,
            max_score: self.max_score,
            // The API key sees every manager's calls.
            managers: None,
            text: self.q,
            before_seq: self
                .cursor
                .map(|raw| {
                    raw.parse::<i64>()
                        .ok()
                        .filter(|&seq| seq > 0)
                        .ok_or_else(|| ApiError::invalid("cursor", "Некорректный курсор"))
                })
                .transpose()?,
            limit,
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/calls",
    tag = "calls",
    params(ListQuery),
    responses(
        (status = 200, description = "Newest calls first", body = CallList),
        (status = 400, description = "A bad filter", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_calls(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<CallList>, ApiError> {
    let query: ListQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("Некорректные параметры: {e}"))
        })?;
    let page = state.store.list_calls(&query.into_filter()?).await?;
    Ok(Json(CallList {
        calls: page.calls,
        next_cursor: page.next_before_seq.map(|seq| seq.to_string()),
    }))
}

fn path_call_id(raw: &str) -> Result<CallId, ApiError> {
    CallId::parse(raw).map_err(|_| call_not_found())
}

fn call_not_found() -> ApiError {
    ApiError::not_found("call_not_found", "Звонок не найден")
}

#[utoipa::path(
    get,
    path = "/api/v1/calls/{call_id}",
    tag = "calls",
    params(("call_id" = String, Path, description = "The CRM's call id")),
    responses(
        (status = 200, description = "The call, its processing history and results", body = CallDetails),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "call_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_call(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
) -> Result<Json<CallDetails>, ApiError> {
    let call_id = path_call_id(&call_id)?;
    state
        .store
        .call(&call_id)
        .await?
        .map(Json)
        .ok_or_else(call_not_found)
}

#[utoipa::path(
    delete,
    path = "/api/v1/calls/{call_id}",
    tag = "calls",
    params(("call_id" = String, Path, description = "The CRM's call id")),
    responses(
        (status = 200, description = "The call, its audio and everything derived from it are deleted", body = Deleted),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "call_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn delete_call(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let call_id = path_call_id(&call_id)?;
    let deleted = state
        .store
        .delete_call(&call_id)
        .await?
        .ok_or_else(call_not_found)?;
    for key in deleted.blob_keys {
        // The row is gone already; a leftover file is only wasted space.
        if let Err(error) = state.blobs.delete(&key).await {
            tracing::warn!(%error, %call_id, "audio of a deleted call was not removed");
        }
    }
    tracing::info!(%call_id, "call deleted");
    Ok(Json(Deleted {
        status: "deleted",
        call_id,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// `queued`
    pub status: &'static str,
    pub call_id: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/calls/{call_id}/reanalyze",
    tag = "calls",
    params(("call_id" = String, Path, description = "The CRM's call id")),
    responses(
        (status = 200, description = "The analysis is queued again with the current checklists and tables; new results replace the old and are sent by webhook", body = Queued),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "call_not_found", body = crate::error::ErrorBody),
        (status = 409, description = "not_transcribed: no transcript yet, or the call is still being processed", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn reanalyze_call(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
) -> Result<Json<Queued>, ApiError> {
    let call_id = path_call_id(&call_id)?;
    let job = rop_domain::NewJob {
        kind: rop_domain::JobKind::Analyze,
        max_attempts: state.limits.job_attempts,
    };
    match state
        .store
        .requeue_analysis(&call_id, job, chrono::Utc::now())
        .await
    {
        Ok(true) => Ok(Json(Queued {
            status: "queued",
            call_id: call_id.as_str().to_owned(),
        })),
        Ok(false) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_transcribed",
            "Звонок ещё не расшифрован или ещё обрабатывается",
        )),
        Err(rop_domain::StoreError::NotFound) => Err(call_not_found()),
        Err(error) => Err(error.into()),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/calls/{call_id}/deliveries/{delivery_id}/resend",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "The CRM's call id"),
        ("delivery_id" = String, Path, description = "The delivery, as `GET /calls/{call_id}` lists it"),
    ),
    responses(
        (status = 200, description = "The webhook is sent again with the same delivery id, retried for up to 24 hours", body = Queued),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "call_not_found or delivery_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn resend_delivery(
    State(state): State<Arc<AppState>>,
    Path((call_id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Queued>, ApiError> {
    let call_id = path_call_id(&call_id)?;
    match state
        .store
        .resend_delivery(&call_id, &delivery_id, chrono::Utc::now())
        .await
    {
        Ok(()) => Ok(Json(Queued {
            status: "queued",
            call_id: call_id.as_str().to_owned(),
        })),
        Err(rop_domain::StoreError::NotFound) => Err(ApiError::not_found(
            "delivery_not_found",
            "У звонка нет такой доставки",
        )),
        Err(error) => Err(error.into()),
    }
}
