//! Integrations over the API: Zadarma's notification endpoint (called by
//! Zadarma, authenticated by its signature) and, for integrators who script
//! their setup, the Zadarma settings, its actions, the telephony journal and
//! the clients directory (API key).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rop_domain::{
    normalize_phone, Client, ClientUpdate, ManagerId, TelephonyCall, TelephonyFilter, UpsertCounts,
};
use rop_integrations::zadarma::{
    Balance, NotificationRefused, WebrtcLogin, ZadarmaActionError, ZadarmaError,
    ZadarmaSettingsUpdate, ZadarmaSettingsView,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{parse_json, ApiError};
use crate::AppState;

/// Notifications are a few hundred bytes; anything much larger is not one.
pub const NOTIFY_BODY_LIMIT: usize = 64 * 1024;
const MAX_CLIENTS_PER_REQUEST: usize = 10_000;

impl From<ZadarmaActionError> for ApiError {
    fn from(error: ZadarmaActionError) -> Self {
        match error {
            ZadarmaActionError::NotConnected => {
                ApiError::new(StatusCode::CONFLICT, "not_connected", error.to_string())
            }
            ZadarmaActionError::Invalid(field, message) => ApiError::invalid(field, message),
            ZadarmaActionError::Zadarma(ZadarmaError::RateLimited) => ApiError {
                retry_after_secs: Some(60),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "zadarma_rate_limited",
                    error.to_string(),
                )
            },
            ZadarmaActionError::Zadarma(zadarma) => {
                let code = match zadarma {
                    ZadarmaError::Unauthorized(_) => "zadarma_unauthorized",
                    ZadarmaError::Api(_) => "zadarma_error",
                    _ => "zadarma_unavailable",
                };
                ApiError::new(StatusCode::BAD_GATEWAY, code, zadarma.to_string())
            }
            ZadarmaActionError::Store(store) => store.into(),
        }
    }
}

/// `/exec/Zadarma.notify`: the URL check (`zd_echo`) first, on any method,
/// then a signed notification.
pub async fn zadarma_notify(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if let Some(echo) = zd_echo(request.uri().query()) {
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], echo).into_response();
    }
    if request.method() != axum::http::Method::POST {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Уведомления Zadarma приходят методом POST",
        )
        .into_response();
    }
    let signature = request
        .headers()
        .get("Signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fields = match read_fields(request).await {
        Ok(fields) => fields,
        Err(error) => {
            tracing::warn!(reason = %error.message, "Zadarma notification refused: unreadable body");
            return error.into_response();
        }
    };
    let event = fields
        .iter()
        .find(|(name, _)| name == "event")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    match state
        .integrations
        .zadarma
        .notify(fields, signature.as_deref(), Utc::now())
        .await
    {
        Ok(reply) if reply.is_empty() => StatusCode::OK.into_response(),
        Ok(reply) => Json(reply).into_response(),
        Err(NotificationRefused::Store(error)) => ApiError::from(error).into_response(),
        Err(refused) => {
            tracing::warn!(event = %event.chars().take(40).collect::<String>(), reason = %refused, "Zadarma notification refused");
            let (status, code) = match refused {
                NotificationRefused::NotConnected => {
                    (StatusCode::SERVICE_UNAVAILABLE, "not_connected")
                }
                NotificationRefused::Notify(
                    rop_integrations::zadarma::NotifyError::UnknownEvent(_),
                )
                | NotificationRefused::NoCallId => (StatusCode::BAD_REQUEST, "invalid_request"),
                _ => (StatusCode::UNAUTHORIZED, "bad_signature"),
            };
            ApiError::new(status, code, refused.to_string()).into_response()
        }
    }
}

fn zd_echo(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "zd_echo")
        .map(|(_, value)| {
            value
                .chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect()
        })
}

fn unreadable(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "too_large", "Уведомление больше 64 КиБ")
    } else {
        ApiError::bad_request("invalid_request", text)
    }
}

/// A form body, URL-encoded or multipart (some senders use the latter).
pub(crate) async fn read_fields(request: Request) -> Result<Vec<(String, String)>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| unreadable(e.status(), e.body_text()))?;
        let mut fields = Vec::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| unreadable(e.status(), e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let value = field
                .text()
                .await
                .map_err(|e| unreadable(e.status(), e.body_text()))?;
            fields.push((name, value));
        }
        return Ok(fields);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|e| unreadable(e.status(), e.body_text()))?;
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/zadarma",
    tag = "integrations",
    responses(
        (status = 200, description = "Zadarma settings; the secret only masked", body = ZadarmaSettingsView),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_zadarma(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ZadarmaSettingsView>, ApiError> {
    Ok(Json(state.integrations.zadarma.settings().await?.view()))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/zadarma",
    tag = "integrations",
    request_body = ZadarmaSettingsUpdate,
    responses(
        (status = 200, description = "Saved", body = ZadarmaSettingsView),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_zadarma(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<ZadarmaSettingsView>, ApiError> {
    let update: ZadarmaSettingsUpdate = parse_json(&body)?;
    let zadarma = &state.integrations.zadarma;
    let before = zadarma.settings().await?;
    let after = zadarma.update_settings(update).await?;
    if after != before {
        state
            .audit("zadarma.update", "zadarma", after.describe())
            .await?;
        tracing::info!(settings = ?after, "Zadarma settings changed");
    }
    Ok(Json(after.view()))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/zadarma/check",
    tag = "integrations",
    responses(
        (status = 200, description = "Key and secret work: the account balance", body = Object),
        (status = 409, description = "not_connected", body = crate::error::ErrorBody),
        (status = 502, description = "zadarma_unauthorized, zadarma_error or zadarma_unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn check_zadarma(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Balance { balance, currency } = state.integrations.zadarma.check().await?;
    Ok(Json(
        serde_json::json!({ "balance": balance, "currency": currency }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/zadarma/pbx",
    tag = "integrations",
    responses(
        (status = 200, description = "«Получить АТС»: PBX id and extensions loaded", body = ZadarmaSettingsView),
        (status = 502, description = "Zadarma refused or is unreachable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn load_zadarma_pbx(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ZadarmaSettingsView>, ApiError> {
    let settings = state.integrations.zadarma.load_pbx().await?;
    state
        .audit("zadarma.pbx", "zadarma", settings.pbx_details())
        .await?;
    Ok(Json(settings.view()))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/zadarma/extensions",
    tag = "integrations",
    request_body(content = Object, description = "Extension → manager_id (null clears)"),
    responses(
        (status = 200, description = "Mapping saved", body = ZadarmaSettingsView),
        (status = 400, description = "Unknown extension or a manager on two extensions", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_zadarma_extensions(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<ZadarmaSettingsView>, ApiError> {
    let mapping: BTreeMap<String, Option<ManagerId>> = parse_json(&body)?;
    let settings = state.integrations.zadarma.map_extensions(&mapping).await?;
    let details = rop_integrations::zadarma::mapping_details(&mapping);
    state
        .audit("zadarma.extensions", "zadarma", details)
        .await?;
    Ok(Json(settings.view()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// The extension that rings first.
    from: String,
    /// The client's number, dialled once `from` answers.
    to: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/zadarma/callback",
    tag = "integrations",
    request_body = CallbackRequest,
    responses(
        (status = 200, description = "Zadarma is ringing the extension"),
        (status = 400, description = "Unknown extension or not a phone number", body = crate::error::ErrorBody),
        (status = 502, description = "Zadarma refused", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn zadarma_callback(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: CallbackRequest = parse_json(&body)?;
    state
        .integrations
        .zadarma
        .callback(request.from.trim(), &request.to)
        .await?;
    Ok(Json(serde_json::json!({ "status": "calling" })))
}

#[derive(Deserialize, IntoParams)]
pub struct WebrtcQuery {
    /// The extension of the browser phone.
    extension: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/zadarma/webrtc-key",
    tag = "integrations",
    params(WebrtcQuery),
    responses(
        (status = 200, description = "Key (valid 72 h) and the widget's login", body = WebrtcLogin),
        (status = 400, description = "WebRTC off or the PBX not loaded", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn zadarma_webrtc_key(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WebrtcQuery>,
) -> Result<Json<WebrtcLogin>, ApiError> {
    Ok(Json(
        state
            .integrations
            .zadarma
            .webrtc_key(query.extension.trim())
            .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
pub struct JournalQuery {
    /// Calls started before this moment (RFC 3339): the next page.
    before: Option<DateTime<Utc>>,
    /// 1–500, default 100.
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/telephony/calls",
    tag = "integrations",
    params(JournalQuery),
    responses(
        (status = 200, description = "The telephony journal, newest first", body = Vec<TelephonyCall>),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn telephony_journal(
    State(state): State<Arc<AppState>>,
    Query(query): Query<JournalQuery>,
) -> Result<Json<Vec<TelephonyCall>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "От 1 до 500"));
    }
    Ok(Json(
        state
            .store
            .telephony_calls(&TelephonyFilter {
                managers: None,
                before: query.before,
                limit,
            })
            .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
pub struct ClientsQuery {
    /// Part of a phone or a name.
    search: Option<String>,
    offset: Option<u32>,
    /// 1–1000, default 100.
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/clients",
    tag = "integrations",
    params(ClientsQuery),
    responses((status = 200, description = "The clients directory, by phone", body = Vec<Client>)),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_clients(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ClientsQuery>,
) -> Result<Json<Vec<Client>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "От 1 до 1000"));
    }
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    Ok(Json(
        state
            .store
            .clients(search, query.offset.unwrap_or(0), limit)
            .await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientsUpdate {
    clients: Vec<ClientItem>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientItem {
    /// Any common form: `+7 900 123-45-67`, `8 900 …`.
    phone: String,
    name: Option<String>,
    /// The assigned manager; incoming calls from this phone ring his extension.
    manager_id: Option<ManagerId>,
}

#[utoipa::path(
    post,
    path = "/api/v1/clients",
    tag = "integrations",
    request_body = ClientsUpdate,
    responses(
        (status = 200, description = "Clients added or replaced by phone", body = UpsertCounts),
        (status = 400, description = "invalid_request naming the item", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn upsert_clients(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<UpsertCounts>, ApiError> {
    let update: ClientsUpdate = parse_json(&body)?;
    if update.clients.len() > MAX_CLIENTS_PER_REQUEST {
        return Err(ApiError::invalid(
            "clients",
            format!("Не больше {MAX_CLIENTS_PER_REQUEST} клиентов за запрос"),
        ));
    }
    let mut clients = Vec::with_capacity(update.clients.len());
    for (i, item) in update.clients.into_iter().enumerate() {
        let phone = normalize_phone(&item.phone).ok_or_else(|| {
            ApiError::invalid(
                format!("clients[{i}].phone"),
                format!("«{}» не похоже на номер телефона", item.phone),
            )
        })?;
        let name = item
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 256 || n.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                format!("clients[{i}].name"),
                "Не длиннее 256 символов, без управляющих символов",
            ));
        }
        clients.push(ClientUpdate {
            phone,
            name,
            manager_id: item.manager_id,
            source: "manual".to_owned(),
        });
    }
    Ok(Json(
        state.store.upsert_clients(&clients, Utc::now()).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/clients/{phone}",
    tag = "integrations",
    params(("phone" = String, Path, description = "The client's phone in any common form")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such client", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn delete_client(
    State(state): State<Arc<AppState>>,
    Path(phone): Path<String>,
) -> Result<StatusCode, ApiError> {
    let normalized = normalize_phone(&phone)
        .ok_or_else(|| ApiError::invalid("phone", "Это не номер телефона"))?;
    if state.store.delete_client(&normalized).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "client_not_found",
            "Такого клиента нет",
        ))
    }
}
