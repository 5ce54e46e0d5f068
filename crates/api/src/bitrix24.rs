//! Bitrix24 over the API: the portal's call-end event (authenticated by
//! its `application_token`), and for integrators with our key the
//! settings, sign-in, check, users' mapping and the export.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rop_domain::ManagerId;
use rop_integrations::bitrix24::{
    B24Check, B24ExportRequest, B24ExportView, Bitrix24ActionError, Bitrix24Error,
    Bitrix24SettingsUpdate, Bitrix24SettingsView, EventRefused,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{parse_json, ApiError};
use crate::AppState;
use rop_integrations::exports::ExportView as Export;

impl From<Bitrix24ActionError> for ApiError {
    fn from(error: Bitrix24ActionError) -> Self {
        match error {
            Bitrix24ActionError::NotConnected => {
                ApiError::new(StatusCode::CONFLICT, "not_connected", error.to_string())
            }
            Bitrix24ActionError::ExportRunning => {
                ApiError::new(StatusCode::CONFLICT, "export_running", error.to_string())
            }
            Bitrix24ActionError::Invalid(field, message) => ApiError::invalid(field, message),
            Bitrix24ActionError::Bitrix24(bitrix) => {
                let code = match bitrix {
                    Bitrix24Error::Unauthorized(_) => "bitrix24_unauthorized",
                    Bitrix24Error::RateLimited => "bitrix24_rate_limited",
                    Bitrix24Error::Api(_) => "bitrix24_error",
                    Bitrix24Error::Unavailable(_) => "bitrix24_unavailable",
                };
                ApiError::new(StatusCode::BAD_GATEWAY, code, bitrix.to_string())
            }
            Bitrix24ActionError::Store(store) => store.into(),
        }
    }
}

/// `/exec/Bitrix24.event`: ONVOXIMPLANTCALLEND from the portal.
pub async fn bitrix24_event(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if request.method() != axum::http::Method::POST {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "События Bitrix24 приходят методом POST",
        )
        .into_response();
    }
    let fields = match crate::integrations::read_fields(request).await {
        Ok(fields) => fields,
        Err(error) => {
            tracing::warn!(reason = %error.message, "Bitrix24 event refused: unreadable body");
            return error.into_response();
        }
    };
    match state.integrations.bitrix24.event(&fields, Utc::now()).await {
        Ok(()) => Json(serde_json::json!({"status": "accepted"})).into_response(),
        Err(EventRefused::Store(error)) => ApiError::from(error).into_response(),
        Err(refused) => {
            tracing::warn!(reason = %refused, "Bitrix24 event refused");
            let (status, code) = match refused {
                EventRefused::NotConnected => (StatusCode::SERVICE_UNAVAILABLE, "not_connected"),
                EventRefused::BadToken => (StatusCode::UNAUTHORIZED, "bad_application_token"),
                _ => (StatusCode::BAD_REQUEST, "invalid_request"),
            };
            ApiError::new(status, code, refused.to_string()).into_response()
        }
    }
}

/// The settings and whether the OAuth sign-in was done.
#[derive(Serialize, ToSchema)]
pub struct Bitrix24State {
    #[serde(flatten)]
    settings: Bitrix24SettingsView,
    signed_in: bool,
}

async fn current(state: &AppState) -> Result<Bitrix24State, ApiError> {
    let bitrix24 = &state.integrations.bitrix24;
    Ok(Bitrix24State {
        settings: bitrix24.settings().await?.view(),
        signed_in: bitrix24.signed_in().await?,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/bitrix24",
    tag = "integrations",
    responses(
        (status = 200, description = "Bitrix24 settings; secrets only masked", body = Bitrix24State),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_bitrix24(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Bitrix24State>, ApiError> {
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/bitrix24",
    tag = "integrations",
    request_body = Bitrix24SettingsUpdate,
    responses(
        (status = 200, description = "Saved", body = Bitrix24State),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_bitrix24(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Bitrix24State>, ApiError> {
    let update: Bitrix24SettingsUpdate = parse_json(&body)?;
    let bitrix24 = &state.integrations.bitrix24;
    let before = bitrix24.settings().await?;
    let after = bitrix24.update_settings(update).await?;
    if after != before {
        state
            .audit("bitrix24.update", "bitrix24", after.describe())
            .await?;
        tracing::info!(settings = ?after, "Bitrix24 settings changed");
    }
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/bitrix24/check",
    tag = "integrations",
    responses(
        (status = 200, description = "Access works: the portal's users stored for mapping", body = B24Check),
        (status = 409, description = "not_connected", body = crate::error::ErrorBody),
        (status = 502, description = "bitrix24_unauthorized, bitrix24_error, bitrix24_rate_limited or bitrix24_unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn check_bitrix24(
    State(state): State<Arc<AppState>>,
) -> Result<Json<B24Check>, ApiError> {
    Ok(Json(state.integrations.bitrix24.check().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct B24SignInRequest {
    /// The authorization code the portal sent to the application (it lives
    /// 30 seconds).
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct B24ConsentUrl {
    url: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/bitrix24/oauth",
    tag = "integrations",
    responses(
        (status = 200, description = "The portal's consent page", body = B24ConsentUrl),
        (status = 409, description = "not_connected: application settings missing", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn bitrix24_consent_url(
    State(state): State<Arc<AppState>>,
) -> Result<Json<B24ConsentUrl>, ApiError> {
    let url = state.integrations.bitrix24.consent_url().await?;
    Ok(Json(B24ConsentUrl { url }))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/bitrix24/oauth",
    tag = "integrations",
    request_body = B24SignInRequest,
    responses(
        (status = 200, description = "Code exchanged, tokens stored, users loaded", body = B24Check),
        (status = 502, description = "Bitrix24 refused the code", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn bitrix24_sign_in(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<B24Check>, ApiError> {
    let request: B24SignInRequest = parse_json(&body)?;
    let check = state
        .integrations
        .bitrix24
        .complete_sign_in(&request.code, None)
        .await?;
    state
        .audit(
            "bitrix24.sign_in",
            "bitrix24",
            "вход по коду авторизации".into(),
        )
        .await?;
    Ok(Json(check))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/bitrix24/users",
    tag = "integrations",
    request_body(content = Object, description = "Portal user id → manager_id (null clears)"),
    responses(
        (status = 200, description = "Mapping saved", body = Bitrix24State),
        (status = 400, description = "Unknown user (run the check first)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_bitrix24_users(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Bitrix24State>, ApiError> {
    let raw: BTreeMap<String, Option<ManagerId>> = parse_json(&body)?;
    let mut mapping = BTreeMap::new();
    for (id, manager) in raw {
        let id: i64 = id.trim().parse().map_err(|_| {
            ApiError::invalid("users", format!("«{id}» — не id сотрудника Bitrix24"))
        })?;
        mapping.insert(id, manager);
    }
    state.integrations.bitrix24.map_users(&mapping).await?;
    let details = rop_integrations::crm::mapping_details(&mapping);
    state.audit("bitrix24.users", "bitrix24", details).await?;
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/bitrix24/exports",
    tag = "integrations",
    responses((status = 200, description = "Exports, newest first, with progress", body = [Export<B24ExportRequest>])),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_bitrix24_exports(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<B24ExportView>>, ApiError> {
    Ok(Json(state.integrations.bitrix24.exports(20).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/bitrix24/exports",
    tag = "integrations",
    request_body = B24ExportRequest,
    responses(
        (status = 202, description = "Export queued; poll it for progress", body = Export<B24ExportRequest>),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 409, description = "not_connected, or export_running", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn start_bitrix24_export(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<B24ExportView>), ApiError> {
    let request: B24ExportRequest = parse_json(&body)?;
    let export = state.integrations.bitrix24.start_export(request).await?;
    state
        .audit(
            "bitrix24.export",
            &export.id.to_string(),
            export.request.describe(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(export)))
}

async fn export_or_404(state: &AppState, id: i64) -> Result<B24ExportView, ApiError> {
    state
        .integrations
        .bitrix24
        .export(id)
        .await?
        .ok_or_else(|| ApiError::not_found("export_not_found", "Нет такой выгрузки"))
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/bitrix24/exports/{id}",
    tag = "integrations",
    params(("id" = i64, Path, description = "Export id")),
    responses(
        (status = 200, description = "The export with its progress", body = Export<B24ExportRequest>),
        (status = 404, description = "export_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_bitrix24_export(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<B24ExportView>, ApiError> {
    Ok(Json(export_or_404(&state, id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/bitrix24/exports/{id}/stop",
    tag = "integrations",
    params(("id" = i64, Path, description = "Export id")),
    responses(
        (status = 200, description = "Stopped (or already over)", body = Export<B24ExportRequest>),
        (status = 404, description = "export_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn stop_bitrix24_export(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<B24ExportView>, ApiError> {
    export_or_404(&state, id).await?;
    if state.integrations.bitrix24.stop_export(id).await? {
        state
            .audit(
                "bitrix24.export_stop",
                &id.to_string(),
                "остановлена".into(),
            )
            .await?;
    }
    Ok(Json(export_or_404(&state, id).await?))
}
