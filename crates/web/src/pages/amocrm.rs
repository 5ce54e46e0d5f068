//! Настройки → Интеграции → amoCRM (seed 001): the connection (OAuth or a
//! long-lived token), «Проверить подключение», whose calls each amoCRM user
//! makes, what goes back to the deal, and the export with its progress.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use rop_integrations::amocrm::{
    AmocrmActionError, AmocrmSettings, AmocrmSettingsUpdate, AuthMode, ExportDirection,
    ExportRequest, ExportView, FieldMapping, FieldUpdate, WriteValue,
};
use serde::Deserialize;

use super::crm::{manager_choices, user_mapping, ManagerChoice, UserRow};
use super::settings::base_url;
use super::{all_fields, audit, field, form_fields, render_form, result_line, Chrome, ExportRow};
use crate::access::Viewer;
use crate::error::PageError;
use crate::WebState;

const PAGE: &str = "/settings/integrations/amocrm";

fn action_error(error: AmocrmActionError) -> Result<String, PageError> {
    match error {
        AmocrmActionError::Store(store) => Err(store.into()),
        other => Ok(other.to_string()),
    }
}

#[derive(Template)]
#[template(path = "settings/amocrm.html")]
struct AmocrmPage {
    chrome: Chrome,
    settings: AmocrmSettings,
    oauth: bool,
    signed_in: bool,
    redirect_uri: String,
    secret_hint: String,
    token_hint: String,
    mapping_text: String,
    updates_text: String,
    users: Vec<UserRow>,
    managers: Vec<ManagerChoice>,
    exports: Vec<ExportRow>,
    export_base: &'static str,
    live: bool,
    today: String,
    month_ago: String,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    saved: Option<String>,
}

fn stage_name(stage: &str) -> &'static str {
    match stage {
        "leads" => "сделки",
        "contacts" => "контакты",
        "companies" => "компании",
        _ => "—",
    }
}

fn export_row(state: &WebState, export: ExportView) -> ExportRow {
    let active = export.is_active();
    ExportRow::new(
        state,
        export.id,
        format!(
            "{} — {}",
            export.request.date_from.format("%d.%m.%Y"),
            export.request.date_to.format("%d.%m.%Y")
        ),
        export.state,
        if active {
            stage_name(&export.progress.stage)
        } else {
            "—"
        },
        export.progress,
        export.error,
        export.created_at,
    )
}

fn mapping_text(mapping: &[FieldMapping]) -> String {
    mapping
        .iter()
        .map(|m| format!("{} = {}", m.amocrm, m.key))
        .collect::<Vec<_>>()
        .join("\n")
}

fn updates_text(updates: &[FieldUpdate]) -> String {
    updates
        .iter()
        .map(|u| {
            let value = match u.value {
                WriteValue::Score => "score",
                WriteValue::Summary => "summary",
            };
            format!("{} = {value}", u.field_id)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `left = right` lines; a line without `=` is an error naming it.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.split_once('=')
                .map(|(l, r)| (l.trim().to_owned(), r.trim().to_owned()))
                .ok_or_else(|| format!("Строка «{line}»: нужен вид «поле = значение»"))
        })
        .collect()
}

fn parse_updates(text: &str) -> Result<Vec<FieldUpdate>, String> {
    pairs(text)?
        .into_iter()
        .map(|(id, value)| {
            let field_id = id
                .parse()
                .map_err(|_| format!("«{id}» — не id поля сделки"))?;
            let value = match value.as_str() {
                "score" => WriteValue::Score,
                "summary" => WriteValue::Summary,
                other => return Err(format!("«{other}»: значение — score или summary")),
            };
            Ok(FieldUpdate { field_id, value })
        })
        .collect()
}

async fn page(
    state: &WebState,
    viewer: &Viewer,
    headers: &HeaderMap,
    settings: AmocrmSettings,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let amocrm = &state.integrations.amocrm;
    let exports: Vec<ExportRow> = amocrm
        .exports(10)
        .await?
        .into_iter()
        .map(|export| export_row(state, export))
        .collect();
    let view = settings.view();
    let offset = chrono::FixedOffset::east_opt(state.settings.utc_offset_secs)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    let today = chrono::Utc::now().with_timezone(&offset).date_naive();
    let failed = error.is_some();
    render_form(
        AmocrmPage {
            chrome: Chrome::new(viewer, "settings"),
            oauth: settings.auth_mode == AuthMode::Oauth,
            signed_in: amocrm.signed_in().await?,
            redirect_uri: if settings.redirect_uri.is_empty() {
                format!("{}{PAGE}/oauth", base_url(state, headers))
            } else {
                settings.redirect_uri.clone()
            },
            secret_hint: view.client_secret.unwrap_or_default(),
            token_hint: view.long_lived_token.unwrap_or_default(),
            mapping_text: mapping_text(&settings.field_mapping),
            updates_text: updates_text(&settings.field_updates),
            users: settings
                .users
                .iter()
                .map(|u| UserRow::new(u.id, &u.name, u.manager_id.as_ref()))
                .collect(),
            managers: manager_choices(state).await?,
            live: exports.iter().any(|e| e.active),
            export_base: PAGE,
            exports,
            today: today.to_string(),
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
    let settings = state.integrations.amocrm.settings().await?;
    let notice = query.saved.map(|what| match what.as_str() {
        "signed_in" => "Вход в amoCRM выполнен, пользователи загружены.".to_owned(),
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
    let amocrm = &state.integrations.amocrm;
    let before = amocrm.settings().await?;
    let parsed = pairs(field(&fields, "field_mapping")).and_then(|mapping| {
        let updates = parse_updates(field(&fields, "field_updates"))?;
        Ok((mapping, updates))
    });
    let (mapping, field_updates) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return page(&state, &viewer, &headers, before, None, Some(message)).await,
    };
    let update = AmocrmSettingsUpdate {
        enabled: checked("enabled"),
        base_url: field(&fields, "base_url").to_owned(),
        auth_mode: if field(&fields, "auth_mode") == "long_lived_token" {
            AuthMode::LongLivedToken
        } else {
            AuthMode::Oauth
        },
        client_id: field(&fields, "client_id").to_owned(),
        client_secret: Some(field(&fields, "client_secret").to_owned()),
        redirect_uri: field(&fields, "redirect_uri").to_owned(),
        long_lived_token: Some(field(&fields, "long_lived_token").to_owned()),
        field_mapping: mapping
            .into_iter()
            .map(|(amocrm, key)| FieldMapping { amocrm, key })
            .collect(),
        write_note: checked("write_note"),
        field_updates,
    };
    match amocrm.update_settings(update).await {
        Ok(after) => {
            if after != before {
                audit(&state, &viewer, "amocrm.update", "amocrm", after.describe()).await?;
                tracing::info!(user = %viewer.user.username, settings = ?after, "amoCRM settings changed");
            }
            Ok(Redirect::to(&format!("{PAGE}?saved=1")).into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            page(&state, &viewer, &headers, before, None, Some(message)).await
        }
    }
}

/// «Проверить подключение», answered as a line in the page (htmx).
pub(crate) async fn check(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    match state.integrations.amocrm.check().await {
        Ok(found) => result_line(
            true,
            format!(
                "Подключение работает: пользователей {}, воронок {}. Обновите страницу, чтобы назначить сотрудников.",
                found.users, found.pipelines
            ),
        ),
        Err(error) => result_line(false, action_error(error)?),
    }
}

/// «Войти через amoCRM»: off to amoCRM's consent page.
pub(crate) async fn sign_in(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let amocrm = &state.integrations.amocrm;
    match amocrm.consent_url().await {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(error) => {
            let message = action_error(error)?;
            page(
                &state,
                &viewer,
                &headers,
                amocrm.settings().await?,
                None,
                Some(message),
            )
            .await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct OauthAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The redirect URI: amoCRM brings the administrator back with a code.
pub(crate) async fn oauth_return(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(answer): Query<OauthAnswer>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let amocrm = &state.integrations.amocrm;
    let outcome = match (&answer.code, &answer.error) {
        (Some(code), None) => amocrm
            .complete_sign_in(code, Some(answer.state.as_deref().unwrap_or_default()))
            .await
            .map_err(action_error),
        _ => Err(Ok("amoCRM не дала доступ: вход отменён".to_owned())),
    };
    match outcome {
        Ok(_) => {
            audit(
                &state,
                &viewer,
                "amocrm.sign_in",
                "amocrm",
                "вход через amoCRM",
            )
            .await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=signed_in")).into_response())
        }
        Err(message) => {
            let message = message?;
            tracing::warn!(reason = %message, "amoCRM sign-in refused");
            page(
                &state,
                &viewer,
                &headers,
                amocrm.settings().await?,
                None,
                Some(message),
            )
            .await
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
    let amocrm = &state.integrations.amocrm;
    let mapping = match user_mapping(&fields) {
        Ok(mapping) => mapping,
        Err(message) => {
            let settings = amocrm.settings().await?;
            return page(&state, &viewer, &headers, settings, None, Some(message)).await;
        }
    };
    match amocrm.map_users(&mapping).await {
        Ok(_) => {
            let details = rop_integrations::crm::mapping_details(&mapping);
            audit(&state, &viewer, "amocrm.users", "amocrm", details).await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=users")).into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            page(
                &state,
                &viewer,
                &headers,
                amocrm.settings().await?,
                None,
                Some(message),
            )
            .await
        }
    }
}

fn export_request(fields: &[(String, String)]) -> Result<ExportRequest, String> {
    let date = |name: &str, label: &str| {
        NaiveDate::parse_from_str(field(fields, name).trim(), "%Y-%m-%d")
            .map_err(|_| format!("{label}: укажите дату"))
    };
    let seconds = |name: &str, label: &str| {
        let raw = field(fields, name).trim();
        if raw.is_empty() {
            return Ok(0);
        }
        raw.parse::<u32>()
            .map_err(|_| format!("{label}: целое число секунд"))
    };
    let mut user_ids = Vec::new();
    for id in all_fields(fields, "user_ids") {
        user_ids.push(
            id.parse()
                .map_err(|_| format!("«{id}» — не пользователь amoCRM"))?,
        );
    }
    Ok(ExportRequest {
        date_from: date("date_from", "Начало периода")?,
        date_to: date("date_to", "Конец периода")?,
        user_ids,
        direction: match field(fields, "direction") {
            "outgoing" => ExportDirection::Outgoing,
            "incoming" => ExportDirection::Incoming,
            _ => ExportDirection::All,
        },
        reexport: !all_fields(fields, "reexport").is_empty(),
        min_duration_secs: seconds("min_duration_secs", "Минимальная длительность")?,
        max_duration_secs: seconds("max_duration_secs", "Максимальная длительность")?,
    })
}

/// «Начать выгрузку».
pub(crate) async fn start_export(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let amocrm = &state.integrations.amocrm;
    let started = match export_request(&fields) {
        Ok(request) => amocrm.start_export(request).await.map_err(action_error),
        Err(message) => Err(Ok(message)),
    };
    match started {
        Ok(export) => {
            audit(
                &state,
                &viewer,
                "amocrm.export",
                &export.id.to_string(),
                export.request.describe(),
            )
            .await?;
            Ok(Redirect::to(&format!("{PAGE}?saved=export")).into_response())
        }
        Err(message) => {
            let message = message?;
            page(
                &state,
                &viewer,
                &headers,
                amocrm.settings().await?,
                None,
                Some(message),
            )
            .await
        }
    }
}

/// «Остановить выгрузку».
pub(crate) async fn stop_export(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    if state.integrations.amocrm.stop_export(id).await? {
        audit(
            &state,
            &viewer,
            "amocrm.export_stop",
            &id.to_string(),
            "остановлена",
        )
        .await?;
    }
    Ok(Redirect::to(&format!("{PAGE}?saved=stopped")).into_response())
}
