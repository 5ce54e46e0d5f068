//! CRM structure sync (`offices-update`, `managers-update`) and the
//! connection settings an integrator may script.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use rop_domain::audit::connection_details;
use rop_domain::{
    ConnectionSettings, ManagerId, ManagerUpdate, OfficeId, OfficeUpdate, UpsertCounts,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{parse_json, ApiError};
use crate::AppState;

const MAX_ITEMS: usize = 10_000;
const MAX_NAME_CHARS: usize = 256;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfficesUpdate {
    offices: Vec<OfficeItem>,
}

#[derive(Deserialize, ToSchema)]
pub struct OfficeItem {
    office_id: OfficeId,
    office_title: Option<String>,
    /// Replaces the office's leaders when given.
    leader_ids: Option<Vec<ManagerId>>,
    /// Replaces the office's managers when given.
    managers_ids: Option<Vec<ManagerId>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagersUpdate {
    managers: Vec<ManagerItem>,
}

#[derive(Deserialize, ToSchema)]
pub struct ManagerItem {
    manager_id: ManagerId,
    name: Option<String>,
    surname: Option<String>,
    middlename: Option<String>,
}

fn check_name(value: &Option<String>, field: String) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim();
    if value.chars().count() > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("Не длиннее {MAX_NAME_CHARS} символов, без управляющих символов"),
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

fn check_count(len: usize, field: &str) -> Result<(), ApiError> {
    if len > MAX_ITEMS {
        return Err(ApiError::invalid(
            field,
            format!("Не больше {MAX_ITEMS} элементов за запрос"),
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/settings/offices-update",
    tag = "settings",
    request_body = OfficesUpdate,
    responses(
        (status = 200, description = "Offices upserted by office_id", body = UpsertCounts),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn offices_update(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<UpsertCounts>, ApiError> {
    let request: OfficesUpdate = parse_json(&body)?;
    check_count(request.offices.len(), "offices")?;
    let mut updates = Vec::with_capacity(request.offices.len());
    for (i, office) in request.offices.into_iter().enumerate() {
        if updates
            .iter()
            .any(|u: &OfficeUpdate| u.office_id == office.office_id)
        {
            return Err(ApiError::invalid(
                format!("offices[{i}].office_id"),
                "Офис указан дважды",
            ));
        }
        let title = check_name(&office.office_title, format!("offices[{i}].office_title"))?;
        updates.push(OfficeUpdate {
            office_id: office.office_id,
            title,
            leader_ids: office.leader_ids,
            manager_ids: office.managers_ids,
        });
    }
    let counts = state
        .store
        .upsert_offices(&updates, chrono::Utc::now())
        .await?;
    tracing::info!(
        created = counts.created,
        updated = counts.updated,
        "offices updated"
    );
    Ok(Json(counts))
}

#[utoipa::path(
    post,
    path = "/api/v1/settings/managers-update",
    tag = "settings",
    request_body = ManagersUpdate,
    responses(
        (status = 200, description = "Managers upserted by manager_id", body = UpsertCounts),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn managers_update(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<UpsertCounts>, ApiError> {
    let request: ManagersUpdate = parse_json(&body)?;
    check_count(request.managers.len(), "managers")?;
    let mut updates = Vec::with_capacity(request.managers.len());
    for (i, manager) in request.managers.into_iter().enumerate() {
        if updates
            .iter()
            .any(|u: &ManagerUpdate| u.manager_id == manager.manager_id)
        {
            return Err(ApiError::invalid(
                format!("managers[{i}].manager_id"),
                "Менеджер указан дважды",
            ));
        }
        updates.push(ManagerUpdate {
            name: check_name(&manager.name, format!("managers[{i}].name"))?,
            surname: check_name(&manager.surname, format!("managers[{i}].surname"))?,
            middlename: check_name(&manager.middlename, format!("managers[{i}].middlename"))?,
            manager_id: manager.manager_id,
        });
    }
    let counts = state
        .store
        .upsert_managers(&updates, chrono::Utc::now())
        .await?;
    tracing::info!(
        created = counts.created,
        updated = counts.updated,
        "managers updated"
    );
    Ok(Json(counts))
}

#[utoipa::path(
    get,
    path = "/api/v1/settings/connection",
    tag = "settings",
    responses(
        (status = 200, description = "Minimum call duration and stereo channel roles", body = ConnectionSettings),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_connection(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ConnectionSettings>, ApiError> {
    Ok(Json(state.connection_settings().await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/settings/connection",
    tag = "settings",
    request_body = ConnectionSettings,
    responses(
        (status = 200, description = "Saved", body = ConnectionSettings),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_connection(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<ConnectionSettings>, ApiError> {
    let settings: ConnectionSettings = parse_json(&body)?;
    settings
        .validate()
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    let before = state.store.connection_settings().await?;
    if settings != before {
        state.store.save_connection_settings(&settings).await?;
        state.caches.connection_settings.invalidate().await;
        state
            .audit(
                "connection.update",
                "connection",
                connection_details(&before, &settings),
            )
            .await?;
        tracing::info!(?settings, "connection settings changed");
    }
    Ok(Json(settings))
}
