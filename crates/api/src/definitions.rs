//! CRUD of checklists (`/api/v1/checklists`) and tables (`/api/v1/tables`):
//! every setting the UI edits can also be scripted (PRODUCT.md §3, §5).
//!
//! Webhook secrets are write-only: responses say whether one is set, and an
//! update that leaves `webhook.secret` out keeps the stored one. Every change
//! is noted in the audit log with the actor `API`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use rop_domain::audit::definition_details;
use rop_domain::{Checklist, InvalidDefinition, StoreError, Table, TableId, Webhook};
use serde::Serialize;
use serde_json::Value;

use crate::error::{parse_json, ApiError};
use crate::AppState;

/// How many later seconds a generated `CHK_`/`TBL_` id may move to when
/// the current one is taken (several created in one second).
const ID_ATTEMPTS: i64 = 1_000;

fn invalid(error: InvalidDefinition) -> ApiError {
    ApiError::invalid(error.field, error.message)
}

/// The stored definition as the API shows it: the secret replaced by
/// `secret_set`.
fn shown<T: Serialize>(definition: &T) -> Value {
    let mut value = serde_json::to_value(definition).unwrap_or(Value::Null);
    if let Some(webhook) = value.get_mut("webhook").and_then(Value::as_object_mut) {
        let set = webhook
            .remove("secret")
            .and_then(|s| s.as_str().map(|s| !s.is_empty()))
            .unwrap_or(false);
        webhook.insert("secret_set".into(), Value::Bool(set));
    }
    value
}

/// Whether the request body names `webhook.secret` at all.
fn names_secret(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("webhook")?.get("secret").cloned())
        .is_some()
}

/// Keeps the stored secret when an update leaves it out.
fn keep_secret(new: &mut Option<Webhook>, old: &Option<Webhook>, body: &[u8]) {
    if let (Some(new), Some(old)) = (new.as_mut(), old) {
        if !names_secret(body) {
            new.secret = old.secret.clone();
        }
    }
}

fn path_id_matches(path: &str, in_body: &str, field: &str) -> Result<(), ApiError> {
    if !in_body.is_empty() && in_body != path {
        return Err(ApiError::invalid(
            field,
            "Id в теле запроса не совпадает с id в адресе",
        ));
    }
    Ok(())
}

fn checklist_not_found() -> ApiError {
    ApiError::not_found("checklist_not_found", "Чек-лист не найден")
}

fn table_not_found() -> ApiError {
    ApiError::not_found("table_not_found", "Таблица не найдена")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}

// --- checklists ----------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/checklists", tag = "checklists",
    responses(
        (status = 200, description = "All checklists, oldest first; webhook secrets hidden", body = [Object]),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_checklists(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let checklists = state.store.checklists().await?;
    Ok(Json(checklists.iter().map(shown).collect()))
}

#[utoipa::path(
    post, path = "/api/v1/checklists", tag = "checklists",
    request_body(content = Checklist, description = "The checklist; `checklist_id` is generated as `CHK_<unix time>` when left out"),
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 409, description = "checklist_exists", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn create_checklist(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut checklist: Checklist = parse_json(&body)?;
    let generated = checklist.checklist_id.is_empty();
    let now = Utc::now();
    for offset in 0..ID_ATTEMPTS {
        if generated {
            checklist.checklist_id = format!("CHK_{}", now.timestamp() + offset);
        }
        checklist.validate().map_err(invalid)?;
        match state.store.insert_checklist(&checklist, now).await {
            Ok(()) => {
                state
                    .audit(
                        "checklist.create",
                        &checklist.checklist_id,
                        definition_details(&checklist),
                    )
                    .await?;
                return Ok((StatusCode::CREATED, Json(shown(&checklist))));
            }
            Err(StoreError::Duplicate) if generated => continue,
            Err(StoreError::Duplicate) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "checklist_exists",
                    "Чек-лист с таким id уже есть",
                )
                .with_field("checklist_id"))
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::internal(&"no free checklist id"))
}

#[utoipa::path(
    get, path = "/api/v1/checklists/{checklist_id}", tag = "checklists",
    params(("checklist_id" = String, Path)),
    responses(
        (status = 200, description = "The checklist; webhook secret hidden", body = Object),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "checklist_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_checklist(
    State(state): State<Arc<AppState>>,
    Path(checklist_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let checklist = state
        .store
        .checklist(&checklist_id)
        .await?
        .ok_or_else(checklist_not_found)?;
    Ok(Json(shown(&checklist)))
}

#[utoipa::path(
    put, path = "/api/v1/checklists/{checklist_id}", tag = "checklists",
    params(("checklist_id" = String, Path)),
    request_body(content = Checklist, description = "The whole new definition; a webhook without `secret` keeps the stored secret"),
    responses(
        (status = 200, description = "Replaced", body = Object),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "checklist_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_checklist(
    State(state): State<Arc<AppState>>,
    Path(checklist_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut checklist: Checklist = parse_json(&body)?;
    path_id_matches(&checklist_id, &checklist.checklist_id, "checklist_id")?;
    checklist.checklist_id = checklist_id;
    let old = state
        .store
        .checklist(&checklist.checklist_id)
        .await?
        .ok_or_else(checklist_not_found)?;
    keep_secret(&mut checklist.webhook, &old.webhook, &body);
    checklist.validate().map_err(invalid)?;
    match state.store.update_checklist(&checklist, Utc::now()).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(checklist_not_found()),
        Err(error) => return Err(error.into()),
    }
    state
        .audit(
            "checklist.update",
            &checklist.checklist_id,
            definition_details(&checklist),
        )
        .await?;
    Ok(Json(shown(&checklist)))
}

#[utoipa::path(
    delete, path = "/api/v1/checklists/{checklist_id}", tag = "checklists",
    params(("checklist_id" = String, Path)),
    responses(
        (status = 200, description = "Deleted; scores already given stay with their calls", body = Deleted),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "checklist_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn delete_checklist(
    State(state): State<Arc<AppState>>,
    Path(checklist_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    if !state.store.delete_checklist(&checklist_id).await? {
        return Err(checklist_not_found());
    }
    state
        .audit("checklist.delete", &checklist_id, String::new())
        .await?;
    Ok(Json(Deleted { deleted: true }))
}

// --- tables ----------------------------------------------------------------

fn path_table_id(raw: &str) -> Result<TableId, ApiError> {
    TableId::parse(raw).map_err(|_| table_not_found())
}

#[utoipa::path(
    get, path = "/api/v1/tables", tag = "tables",
    responses(
        (status = 200, description = "All tables, oldest first; webhook secrets hidden", body = [Object]),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn list_tables(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Value>>, ApiError> {
    let tables = state.store.tables().await?;
    Ok(Json(tables.iter().map(shown).collect()))
}

#[utoipa::path(
    post, path = "/api/v1/tables", tag = "tables",
    request_body(content = Table, description = "The table; `table_id` is generated as `TBL_<unix time>` when left out"),
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 409, description = "table_exists", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn create_table(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut table: Table = parse_json(&body)?;
    let generated = table.table_id.as_str() == rop_domain::analysis::UNSET_TABLE_ID;
    let now = Utc::now();
    for offset in 0..ID_ATTEMPTS {
        if generated {
            table.table_id = TableId::parse(&format!("TBL_{}", now.timestamp() + offset))
                .map_err(|e| ApiError::internal(&e))?;
        }
        table.validate().map_err(invalid)?;
        match state.store.insert_table(&table, now).await {
            Ok(()) => {
                state
                    .audit(
                        "table.create",
                        table.table_id.as_str(),
                        definition_details(&table),
                    )
                    .await?;
                return Ok((StatusCode::CREATED, Json(shown(&table))));
            }
            Err(StoreError::Duplicate) if generated => continue,
            Err(StoreError::Duplicate) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "table_exists",
                    "Таблица с таким id уже есть",
                )
                .with_field("table_id"))
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::internal(&"no free table id"))
}

#[utoipa::path(
    get, path = "/api/v1/tables/{table_id}", tag = "tables",
    params(("table_id" = String, Path)),
    responses(
        (status = 200, description = "The table; webhook secret hidden", body = Object),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "table_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn get_table(
    State(state): State<Arc<AppState>>,
    Path(table_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table_id = path_table_id(&table_id)?;
    let table = state
        .store
        .table(&table_id)
        .await?
        .ok_or_else(table_not_found)?;
    Ok(Json(shown(&table)))
}

#[utoipa::path(
    put, path = "/api/v1/tables/{table_id}", tag = "tables",
    params(("table_id" = String, Path)),
    request_body(content = Table, description = "The whole new definition; a webhook without `secret` keeps the stored secret"),
    responses(
        (status = 200, description = "Replaced", body = Object),
        (status = 400, description = "invalid_request naming the field", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "table_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn put_table(
    State(state): State<Arc<AppState>>,
    Path(table_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let table_id = path_table_id(&table_id)?;
    let mut table: Table = parse_json(&body)?;
    let in_body = table.table_id.as_str();
    let in_body = if in_body == rop_domain::analysis::UNSET_TABLE_ID {
        ""
    } else {
        in_body
    };
    path_id_matches(table_id.as_str(), in_body, "table_id")?;
    table.table_id = table_id;
    let old = state
        .store
        .table(&table.table_id)
        .await?
        .ok_or_else(table_not_found)?;
    keep_secret(&mut table.webhook, &old.webhook, &body);
    table.validate().map_err(invalid)?;
    match state.store.update_table(&table, Utc::now()).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(table_not_found()),
        Err(error) => return Err(error.into()),
    }
    state
        .audit(
            "table.update",
            table.table_id.as_str(),
            definition_details(&table),
        )
        .await?;
    Ok(Json(shown(&table)))
}

#[utoipa::path(
    delete, path = "/api/v1/tables/{table_id}", tag = "tables",
    params(("table_id" = String, Path)),
    responses(
        (status = 200, description = "Deleted with the data extracted for it", body = Deleted),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "table_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn delete_table(
    State(state): State<Arc<AppState>>,
    Path(table_id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let table_id = path_table_id(&table_id)?;
    if !state.store.delete_table(&table_id).await? {
        return Err(table_not_found());
    }
    state
        .audit("table.delete", table_id.as_str(), String::new())
        .await?;
    Ok(Json(Deleted { deleted: true }))
}
