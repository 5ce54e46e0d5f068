//! `GET /api/v1/tables/call-ready`: has a table's data for a call been extracted?

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;
use rop_domain::TableReadiness;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallReadyQuery {
    /// Table id, e.g. `TBL_1755863365`.
    tab: Option<String>,
    /// The CRM's call id.
    call: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CallReady {
    pub ready: bool,
    /// The extracted fields, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tables/call-ready",
    tag = "tables",
    params(CallReadyQuery),
    responses(
        (status = 200, description = "`ready: false` until the data exists", body = CallReady),
        (status = 400, description = "tab or call missing", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong or missing API key", body = crate::error::ErrorBody),
        (status = 404, description = "table_not_found or call_not_found", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("api_key_header" = []), ("bearer" = []))
)]
pub async fn call_ready(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<CallReady>, ApiError> {
    let query: CallReadyQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| {
            ApiError::bad_request("invalid_request", format!("Некорректные параметры: {e}"))
        })?;
    let required = |value: Option<String>, field: &str| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ApiError::invalid(field, format!("Параметр {field} обязателен")))
    };
    let table = required(query.tab, "tab")?;
    let call = required(query.call, "call")?;
    match state
        .store
        .table_readiness(table.trim(), call.trim())
        .await?
    {
        TableReadiness::UnknownTable => {
            Err(ApiError::not_found("table_not_found", "Таблица не найдена"))
        }
        TableReadiness::UnknownCall => {
            Err(ApiError::not_found("call_not_found", "Звонок не найден"))
        }
        TableReadiness::NotReady => Ok(Json(CallReady {
            ready: false,
            data: None,
        })),
        TableReadiness::Ready(data) => Ok(Json(CallReady {
            ready: true,
            data: Some(data),
        })),
    }
}
