//! Настройки: the section index, Подключение (seed 000), Движки and Журнал.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use rop_domain::ConnectionSettings;
use serde::Deserialize;

use super::{all_fields, audit, field, form_fields, render, render_form, Chrome};
use crate::access::Viewer;
use crate::error::PageError;
use crate::format;
use crate::WebState;

#[derive(Template)]
#[template(path = "settings/index.html")]
struct IndexPage {
    chrome: Chrome,
}

pub(crate) async fn index(viewer: Viewer) -> Result<Response, PageError> {
    viewer.require_admin()?;
    render(IndexPage {
        chrome: Chrome::new(&viewer, "settings"),
    })
}

/// Where the CRM reaches this installation: the configured public address,
/// or the address this page was opened at.
pub(crate) fn base_url(state: &WebState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8080");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

#[derive(Template)]
#[template(path = "settings/connection.html")]
struct ConnectionPage {
    chrome: Chrome,
    upload_url: String,
    ready_url: String,
    api_key: String,
    settings: ConnectionSettings,
    allow_private: bool,
    saved: bool,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SavedQuery {
    #[serde(default)]
    saved: Option<u8>,
}

async fn connection_page(
    state: &WebState,
    viewer: &Viewer,
    headers: &HeaderMap,
    settings: ConnectionSettings,
    saved: bool,
    error: Option<String>,
) -> Result<Response, PageError> {
    let keys = state.store.valid_api_keys(chrono::Utc::now()).await?;
    let api_key = keys
        .iter()
        .find(|k| k.is_current())
        .or(keys.first())
        .map(|k| k.secret.expose().to_owned())
        .unwrap_or_default();
    let upload_url = format!("{}/api/v1/calls/audio-upload", base_url(state, headers));
    let ready_url = format!("{upload_url}?apiKey={api_key}");
    let failed = error.is_some();
    render_form(
        ConnectionPage {
            chrome: Chrome::new(viewer, "settings"),
            upload_url,
            ready_url,
            api_key,
            settings,
            allow_private: state.settings.fetch_allow_private,
            saved,
            error,
        },
        failed,
    )
}

pub(crate) async fn connection(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(query): Query<SavedQuery>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let settings = state.store.connection_settings().await?;
    connection_page(
        &state,
        &viewer,
        &headers,
        settings,
        query.saved.is_some(),
        None,
    )
    .await
}

pub(crate) async fn save_connection(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let before = state.store.connection_settings().await?;
    let parsed = field(&fields, "min_call_duration_secs")
        .trim()
        .parse::<u32>()
        .map_err(|_| "Минимальная длительность — целое число секунд от 0.".to_owned())
        .and_then(|min| {
            let channel = match field(&fields, "manager_channel") {
                "0" => Ok(0),
                "1" => Ok(1),
                _ => Err("Выберите канал менеджера: левый или правый.".to_owned()),
            }?;
            let settings = ConnectionSettings {
                min_call_duration_secs: min,
                manager_channel: channel,
                // The box is disabled (and not sent) while the configuration
                // allows private networks: keep what was stored.
                allow_private_networks: if state.settings.fetch_allow_private {
                    before.allow_private_networks
                } else {
                    !all_fields(&fields, "allow_private_networks").is_empty()
                },
            };
            settings
                .validate()
                .map_err(|_| "Минимальная длительность — не больше 86 400 секунд.".to_owned())?;
            Ok(settings)
        });
    let settings = match parsed {
        Ok(settings) => settings,
        Err(message) => {
            return connection_page(&state, &viewer, &headers, before, false, Some(message)).await
        }
    };
    if settings != before {
        state.store.save_connection_settings(&settings).await?;
        audit(
            &state,
            &viewer,
            "connection.update",
            "connection",
            rop_domain::audit::connection_details(&before, &settings),
        )
        .await?;
        tracing::info!(user = %viewer.user.username, ?settings, "connection settings changed");
    }
    Ok(Redirect::to("/settings/connection?saved=1").into_response())
}

#[derive(Template)]
#[template(path = "settings/engines.html")]
struct EnginesPage {
    chrome: Chrome,
    engines: Vec<crate::EngineStatus>,
}

pub(crate) async fn engines(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let engines = state.services.engines().await;
    render(EnginesPage {
        chrome: Chrome::new(&viewer, "settings"),
        engines,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    before: Option<i64>,
}

pub(crate) struct AuditLine {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "settings/audit.html")]
struct AuditPage {
    chrome: Chrome,
    lines: Vec<AuditLine>,
    next: Option<i64>,
}

const AUDIT_PAGE: u32 = 100;

pub(crate) async fn audit_log(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let entries = state.store.audit_entries(query.before, AUDIT_PAGE).await?;
    let next = (entries.len() == AUDIT_PAGE as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let lines = entries
        .into_iter()
        .map(|e| AuditLine {
            at: format::datetime_secs(e.at, state.settings.utc_offset_secs),
            actor: e.actor,
            action: action_name(&e.action).to_owned(),
            target: e.target,
            details: e.details,
        })
        .collect();
    render(AuditPage {
        chrome: Chrome::new(&viewer, "settings"),
        lines,
        next,
    })
}

fn action_name(action: &str) -> &str {
    match action {
        "connection.update" => "Подключение изменено",
        "checklist.create" => "Чек-лист создан",
        "checklist.update" => "Чек-лист изменён",
        "checklist.delete" => "Чек-лист удалён",
        "table.create" => "Таблица создана",
        "table.update" => "Таблица изменена",
        "table.delete" => "Таблица удалена",
        "user.create" => "Пользователь создан",
        "user.update" => "Пользователь изменён",
        "user.delete" => "Пользователь удалён",
        "delivery.resend" => "Вебхук отправлен заново",
        "webhook.test" => "Тестовый вебхук",
        "zadarma.update" => "Zadarma: настройки изменены",
        "zadarma.pbx" => "Zadarma: АТС получена",
        "zadarma.extensions" => "Zadarma: сотрудники назначены",
        "amocrm.update" => "amoCRM: настройки изменены",
        "amocrm.sign_in" => "amoCRM: вход выполнен",
        "amocrm.users" => "amoCRM: сотрудники назначены",
        "amocrm.export" => "amoCRM: выгрузка запущена",
        "amocrm.export_stop" => "amoCRM: выгрузка остановлена",
        "bitrix24.update" => "Bitrix24: настройки изменены",
        "bitrix24.sign_in" => "Bitrix24: вход выполнен",
        "bitrix24.users" => "Bitrix24: сотрудники назначены",
        "bitrix24.export" => "Bitrix24: выгрузка запущена",
        "bitrix24.export_stop" => "Bitrix24: выгрузка остановлена",
        "client.save" => "Клиент сохранён",
        "client.delete" => "Клиент удалён",
        other => other,
    }
}
