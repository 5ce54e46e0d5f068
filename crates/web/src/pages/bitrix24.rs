//! Настройки → Интеграции → Bitrix24 (seed 003): the connection (inbound
//! webhook or OAuth application), «Проверить подключение», whose calls each
//! portal user makes, the call-end event's address, the timeline comment,
//! and the export with its progress.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use rop_integrations::bitrix24::{
    B24AuthMode, B24ExportRequest, B24ExportView, Bitrix24ActionError, Bitrix24Settings,
    Bitrix24SettingsUpdate,
};
use serde::Deserialize;

use super::crm::{manager_choices, user_mapping, ManagerChoice, UserRow};
use super::settings::base_url;
use super::{all_fields, audit, field, form_fields, render_form, result_line, Chrome, ExportRow};
use crate::access::Viewer;
use crate::error::PageError;
use crate::WebState;

const PAGE: &str = "/settings/integrations/bitrix24";

fn action_error(error: Bitrix24ActionError) -> Result<String, PageError> {
    match error {
        Bitrix24ActionError::Store(store) => Err(store.into()),
        other => Ok(other.to_string()),
    }
}

#[derive(Template)]
#[template(path = "settings/bitrix24.html")]
struct Bitrix24Page {
    chrome: Chrome,
    settings: Bitrix24Settings,
    oauth: bool,
    signed_in: bool,
    event_url: String,
    webhook_hint: String,
    secret_hint: String,
    token_hint: String,
    users: Vec<UserRow>,
    managers: Vec<ManagerChoice>,
    exports: Vec<ExportRow>,
    export_base: &'static str,
    live: bool,
    month_ago: String,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    saved: Option<String>,
}

fn export_row(state: &WebState, export: B24ExportView) -> ExportRow {
    ExportRow::new(
        state,
        export.id,
        format!("с {}", export.request.date_from.format("%d.%m.%Y")),
        export.state,
        "звонки",
        export.progress,
        export.error,
        export.created_at,
    )
}

async fn page(
    state: &WebState,
    viewer: &Viewer,
    headers: &HeaderMap,
    settings: Bitrix24Settings,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let bitrix24 = &state.integrations.bitrix24;
    let exports: Vec<ExportRow> = bitrix24
        .exports(10)
        .await?
        .into_iter()
        .map(|export| export_row(state, export))
        .collect();
    let view = settings.view();
    let today = chrono::Utc::now().date_naive();
    let failed = error.is_some();
    render_form(
        Bitrix24Page {
            chrome: Chrome::new(viewer, "settings"),
            oauth: settings.auth_mode == B24AuthMode::Oauth,
            signed_in: bitrix24.signed_in().await?,
            event_url: format!("{}/exec/Bitrix24.event", base_url(state, headers)),
            webhook_hint: view.webhook_url.unwrap_or_default(),
            secret_hint: view.client_secret.unwrap_or_default(),
            token_hint: view.application_token.unwrap_or_default(),
            users: settings
                .users
                .iter()
                .map(|u| UserRow::new(u.id, &u.name, u.manager_id.as_ref()))
                .collect(),
            managers: manager_choices(state).await?,
            live: exports.iter().any(|e| e.active),
            export_base: PAGE,
            exports,
            month_ago: (today - chrono::Duration::days(30)).to_string(),
            settings,
            notice,
            error,
        },
        failed,
    )
}

pub(crate) async fn show(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let settings = state.integrations.bitrix24.settings().await?;
    let notice = query.saved.map(|what| match what.as_str() {
        "signed_in" => "Вход в Bitrix24 выполнен, сотрудники загружены.".to_owned(),
        "users" => "Сотрудники назначены.".to_owned(),
        "export" => "Выгрузка запущена.".to_owned(),
        "stopped" => "Выгрузка остановлена; уже загруженные звонки остаются.".to_owned(),
        _ => "Сохранено.".to_owned(),
    });
    page(&state, &viewer, &headers, settings, notice, None).await
}

pub(crate) async fn save(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let checked = |name: &str| !all_fields(&fields, name).is_empty();
    let bitrix24 = &state.integrations.bitrix24;
    let before = bitrix24.settings().await?;
    let min = field(&fields, "min_duration_secs").trim();
    let Ok(min_duration_secs) = (if min.is_empty() {
        Ok(0)
    } else {
        min.parse::<u32>()
    }) else {
        let message = "Минимальная длительность — целое число секунд.".to_owned();
        return page(&state, &viewer, &headers, before, None, Some(message)).await;
    };
    let update = Bitrix24SettingsUpdate {
        enabled: checked("enabled"),
        auth_mode: if field(&fields, "auth_mode") == "oauth" {
            B24AuthMode::Oauth
        } else {
            B24AuthMode::Webhook
        },
        webhook_url: Some(field(&fields, "webhook_url").to_owned()),
        portal_url: field(&fields, "portal_url").to_owned(),
        oauth_url: field(&fields, "oauth_url").to_owned(),
        client_id: field(&fields, "client_id").to_owned(),
        client_secret: Some(field(&fields, "client_secret").to_owned()),
        application_token: Some(field(&fields, "application_token").to_owned()),
        realtime: checked("realtime"),
        min_duration_secs: Some(min_duration_secs),
        write_comment: checked("write_comment"),
    };
    match bitrix24.update_settings(update).await {
        Ok(after) => {
            if after != before {
                audit(
                    &state,
                    &viewer,
                    "bitrix24.update",
                    "bitrix24",
                    after.describe(),
                )
                .await?;
                tracing::info!(user = %viewer.user.username, settings = ?after, "Bitrix24 settings changed");
            }
            Ok(Redirect::to(&format!("{PAGE}?saved=1")).into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            page(&state, &viewer, &headers, before, None, Some(message)).await
        }
    }
}

pub(crate) async fn check(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    match state.integrations.bitrix24.check().await {
        Ok(found) => result_line(
            true,
            format!(
                "Подключение работает: сотрудников {}. Обновите страницу, чтобы назначить их.",
                found.users
            ),
        ),
        Err(error) => result_line(false, action_error(error)?),
    }
}

pub(crate) async fn sign_in(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let bitrix24 = &state.integrations.bitrix24;
    match bitrix24.consent_url().await {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(error) => {
            let message = action_error(error)?;
            let settings = bitrix24.settings().await?;
            page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct OauthAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// The application's redirect URI: the portal brings the administrator
/// back with a code (and `domain`, `member_id`, which we do not need).
pub(crate) async fn oauth_return(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(answer): Query<OauthAnswer>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let bitrix24 = &state.integrations.bitrix24;
    let outcome = match &answer.code {
        Some(code) => bitrix24
            .complete_sign_in(code, Some(answer.state.as_deref().unwrap_or_default()))
            .await
            .map_err(action_error),
        None => Err(Ok("Bitrix24 не дал доступ: вход отменён".to_owned())),
    };
    match outcome {
        Ok(_) => {
            audit(
                &state,
                &viewer,
                "bitrix24.sign_in",
                "bitrix24",
                "вход через Bitrix24",
            )
            .await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=signed_in")).into_response())
        }
        Err(message) => {
            let message = message?;
            tracing::warn!(reason = %message, "Bitrix24 sign-in refused");
            let settings = bitrix24.settings().await?;
            page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

pub(crate) async fn save_users(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let bitrix24 = &state.integrations.bitrix24;
    let mapped = match user_mapping(&fields) {
        Ok(mapping) => bitrix24
            .map_users(&mapping)
            .await
            .map(|_| mapping)
            .map_err(action_error),
        Err(message) => Err(Ok(message)),
    };
    match mapped {
        Ok(mapping) => {
            let details = rop_integrations::crm::mapping_details(&mapping);
            audit(&state, &viewer, "bitrix24.users", "bitrix24", details).await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=users")).into_response())
        }
        Err(message) => {
            let message = message?;
            let settings = bitrix24.settings().await?;
            page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

fn export_request(fields: &[(String, String)]) -> Result<B24ExportRequest, String> {
    let date_from = NaiveDate::parse_from_str(field(fields, "date_from").trim(), "%Y-%m-%d")
        .map_err(|_| "Начало выгрузки: укажите дату".to_owned())?;
    let min = field(fields, "min_duration_secs").trim();
    let min_duration_secs = if min.is_empty() {
        None
    } else {
        Some(
            min.parse::<u32>()
                .map_err(|_| "Минимальная длительность: целое число секунд".to_owned())?,
        )
    };
    let mut user_ids = Vec::new();
    for id in all_fields(fields, "user_ids") {
        user_ids.push(
            id.parse()
                .map_err(|_| format!("«{id}» — не сотрудник Bitrix24"))?,
        );
    }
    Ok(B24ExportRequest {
        date_from,
        user_ids,
        min_duration_secs,
    })
}

pub(crate) async fn start_export(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let bitrix24 = &state.integrations.bitrix24;
    let started = match export_request(&fields) {
        Ok(request) => bitrix24.start_export(request).await.map_err(action_error),
        Err(message) => Err(Ok(message)),
    };
    match started {
        Ok(export) => {
            audit(
                &state,
                &viewer,
                "bitrix24.export",
                &export.id.to_string(),
                export.request.describe(),
            )
            .await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=export")).into_response())
        }
        Err(message) => {
            let message = message?;
            let settings = bitrix24.settings().await?;
            page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

pub(crate) async fn stop_export(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    if state.integrations.bitrix24.stop_export(id).await? {
        audit(
            &state,
            &viewer,
            "bitrix24.export_stop",
            &id.to_string(),
            "остановлена",
        )
        .await?;
    }
    Ok(Redirect::to(&format!("{PAGE}?saved=stopped")).into_response())
}
