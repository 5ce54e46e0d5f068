//! amoCRM over the API (API key): settings, sign-in, the connection check,
//! the users' mapping and the export, for integrators who script their
//! setup and for `rop amocrm`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rop_domain::ManagerId;
use rop_integrations::amocrm::{
    AccountCheck, AmocrmActionError, AmocrmError, AmocrmSettingsUpdate, AmocrmSettingsView,
    ExportRequest, ExportView,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{parse_json, ApiError};
use crate::AppState;
use rop_integrations::exports::ExportView as Export;

impl From<AmocrmActionError> for ApiError {
    fn from(error: AmocrmActionError) -> Self {
        match error {
            AmocrmActionError::NotConnected => {
                ApiError::new(StatusCode::CONFLICT, "not_connected", error.to_string())
            }
            AmocrmActionError::ExportRunning => {
                ApiError::new(StatusCode::CONFLICT, "export_running", error.to_string())
            }
            AmocrmActionError::Invalid(field, message) => ApiError::invalid(field, message),
            AmocrmActionError::Amocrm(amocrm) => {
                let code = match amocrm {
                    AmocrmError::Unauthorized(_) => "amocrm_unauthorized",
                    AmocrmError::RateLimited => "amocrm_rate_limited",
                    AmocrmError::Api(_) => "amocrm_error",
                    AmocrmError::Unavailable(_) => "amocrm_unavailable",
                };
                ApiError::new(StatusCode::BAD_GATEWAY, code, amocrm.to_string())
            }
            AmocrmActionError::Store(store) => store.into(),
        }
    }
}

/// The settings and whether the OAuth sign-in was done.
#[derive(Serialize, ToSchema)]
pub struct AmocrmState {
    #[serde(flatten)]
    settings: AmocrmSettingsView,
    signed_in: bool,
}

async fn current(state: &AppState) -> Result<AmocrmState, ApiError> {
    let amocrm = &state.integrations.amocrm;
    Ok(AmocrmState {
        settings: amocrm.settings().await?.view(),
        signed_in: amocrm.signed_in().await?,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/amocrm",
    tag = "integrations",
    responses(
        (status = 200, description = "amoCRM settings; secrets only masked", body = AmocrmState),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_amocrm(State(state): State<Arc<AppState>>) -> Result<Json<AmocrmState>, ApiError> {
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/amocrm",
    tag = "integrations",
    request_body = AmocrmSettingsUpdate,
    responses(
        (status = 200, description = "Saved", body = AmocrmState),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_amocrm(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<AmocrmState>, ApiError> {
    let update: AmocrmSettingsUpdate = parse_json(&body)?;
    let amocrm = &state.integrations.amocrm;
    let before = amocrm.settings().await?;
    let after = amocrm.update_settings(update).await?;
    if after != before {
        state
            .audit("amocrm.update", "amocrm", after.describe())
            .await?;
        tracing::info!(settings = ?after, "amoCRM settings changed");
    }
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/amocrm/check",
    tag = "integrations",
    responses(
        (status = 200, description = "The token works: users and pipelines counted, users stored for mapping", body = AccountCheck),
        (status = 409, description = "not_connected", body = crate::error::ErrorBody),
        (status = 502, description = "amocrm_unauthorized, amocrm_error or amocrm_unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn check_amocrm(
    State(state): State<Arc<AppState>>,
) -> Result<Json<AccountCheck>, ApiError> {
    Ok(Json(state.integrations.amocrm.check().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The authorization code amoCRM sent to the redirect URI (it lives 20
    /// minutes and works once).
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentUrl {
    /// Open it as the account's administrator; amoCRM then sends the code
    /// to the redirect URI.
    url: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/amocrm/oauth",
    tag = "integrations",
    responses(
        (status = 200, description = "The consent page to open", body = ConsentUrl),
        (status = 409, description = "not_connected: OAuth settings missing", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn amocrm_consent_url(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ConsentUrl>, ApiError> {
    let url = state.integrations.amocrm.consent_url().await?;
    Ok(Json(ConsentUrl { url }))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/amocrm/oauth",
    tag = "integrations",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Code exchanged, tokens stored, account checked", body = AccountCheck),
        (status = 409, description = "not_connected: OAuth settings missing", body = crate::error::ErrorBody),
        (status = 502, description = "amoCRM refused the code", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn amocrm_sign_in(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<AccountCheck>, ApiError> {
    let request: SignInRequest = parse_json(&body)?;
    let check = state
        .integrations
        .amocrm
        .complete_sign_in(&request.code, None)
        .await?;
    state
        .audit(
            "amocrm.sign_in",
            "amocrm",
            "вход по коду авторизации".into(),
        )
        .await?;
    Ok(Json(check))
}

#[utoipa::path(
    put,
    path = "/api/v1/integrations/amocrm/users",
    tag = "integrations",
    request_body(content = Object, description = "amoCRM user id → manager_id (null clears)"),
    responses(
        (status = 200, description = "Mapping saved", body = AmocrmState),
        (status = 400, description = "Unknown user (run the check first)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_amocrm_users(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<AmocrmState>, ApiError> {
    let raw: BTreeMap<String, Option<ManagerId>> = parse_json(&body)?;
    let mut mapping = BTreeMap::new();
    for (id, manager) in raw {
        let id: i64 = id.trim().parse().map_err(|_| {
            ApiError::invalid("users", format!("«{id}» — не id пользователя amoCRM"))
        })?;
        mapping.insert(id, manager);
    }
    state.integrations.amocrm.map_users(&mapping).await?;
    let details = rop_integrations::crm::mapping_details(&mapping);
    state.audit("amocrm.users", "amocrm", details).await?;
    Ok(Json(current(&state).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/amocrm/exports",
    tag = "integrations",
    responses((status = 200, description = "Exports, newest first, with progress", body = [Export<ExportRequest>])),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_amocrm_exports(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<ExportView>>, ApiError> {
    Ok(Json(state.integrations.amocrm.exports(20).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/amocrm/exports",
    tag = "integrations",
    request_body = ExportRequest,
    responses(
        (status = 202, description = "Export queued; poll it for progress", body = Export<ExportRequest>),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 409, description = "not_connected, or export_running", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn start_amocrm_export(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<ExportView>), ApiError> {
    let request: ExportRequest = parse_json(&body)?;
    let export = state.integrations.amocrm.start_export(request).await?;
    state
        .audit(
            "amocrm.export",
            &export.id.to_string(),
            export.request.describe(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(export)))
}

async fn export_or_404(state: &AppState, id: i64) -> Result<ExportView, ApiError> {
    state
        .integrations
        .amocrm
        .export(id)
        .await?
        .ok_or_else(|| ApiError::not_found("export_not_found", "Нет такой выгрузки"))
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/amocrm/exports/{id}",
    tag = "integrations",
    params(("id" = i64, Path, description = "Export id")),
    responses(
        (status = 200, description = "The export with its progress", body = Export<ExportRequest>),
        (status = 404, description = "export_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_amocrm_export(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<ExportView>, ApiError> {
    Ok(Json(export_or_404(&state, id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/amocrm/exports/{id}/stop",
    tag = "integrations",
    params(("id" = i64, Path, description = "Export id")),
    responses(
        (status = 200, description = "Stopped (or already over); calls imported so far stay", body = Export<ExportRequest>),
        (status = 404, description = "export_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn stop_amocrm_export(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<ExportView>, ApiError> {
    export_or_404(&state, id).await?;
    if state.integrations.amocrm.stop_export(id).await? {
        state
            .audit("amocrm.export_stop", &id.to_string(), "остановлена".into())
            .await?;
    }
    Ok(Json(export_or_404(&state, id).await?))
}
