//! Telephony in the interface (seed 004): Настройки → Интеграции → Zadarma
//! with «Получить АТС» and the extension map, the clients directory, and
//! the Телефония page: the call journal, click-to-call, recordings and the
//! browser phone's key.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use rop_domain::{normalize_phone, ClientUpdate, Direction, ManagerId, TelephonyFilter};
use rop_integrations::zadarma::{ZadarmaActionError, ZadarmaSettings, ZadarmaSettingsUpdate};
use serde::Deserialize;

use super::settings::base_url;
use super::{
    all_fields, audit, field, form_fields, render, render_form, result_line, when, Chrome, Names,
};
use crate::access::Viewer;
use crate::error::PageError;
use crate::WebState;

const JOURNAL_PAGE: u32 = 100;
const CLIENTS_PAGE: u32 = 100;

fn action_error(error: ZadarmaActionError) -> Result<String, PageError> {
    match error {
        ZadarmaActionError::Store(store) => Err(store.into()),
        other => Ok(other.to_string()),
    }
}

struct ExtensionRow {
    number: String,
    manager_id: String,
}

struct ManagerOption {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "settings/zadarma.html")]
struct ZadarmaPage {
    chrome: Chrome,
    notify_url: String,
    settings: ZadarmaSettings,
    secret_hint: String,
    extensions: Vec<ExtensionRow>,
    managers: Vec<ManagerOption>,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    saved: Option<String>,
}

async fn zadarma_page(
    state: &WebState,
    viewer: &Viewer,
    headers: &HeaderMap,
    settings: ZadarmaSettings,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let managers = state.store.managers().await?;
    let names = Names::from(managers.clone());
    let failed = error.is_some();
    render_form(
        ZadarmaPage {
            chrome: Chrome::new(viewer, "settings"),
            notify_url: format!("{}/exec/Zadarma.notify", base_url(state, headers)),
            secret_hint: settings.view().secret.unwrap_or_default(),
            extensions: settings
                .extensions
                .iter()
                .map(|e| ExtensionRow {
                    number: e.number.clone(),
                    manager_id: e
                        .manager_id
                        .as_ref()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                })
                .collect(),
            managers: managers
                .iter()
                .map(|m| ManagerOption {
                    id: m.manager_id.as_str().to_owned(),
                    name: names.of(&m.manager_id),
                })
                .collect(),
            settings,
            notice,
            error,
        },
        failed,
    )
}

pub(crate) async fn zadarma(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let settings = state.integrations.zadarma.settings().await?;
    let notice = query.saved.map(|what| match what.as_str() {
        "pbx" => "АТС получена: внутренние номера загружены.".to_owned(),
        "extensions" => "Сотрудники назначены.".to_owned(),
        _ => "Сохранено.".to_owned(),
    });
    zadarma_page(&state, &viewer, &headers, settings, notice, None).await
}

pub(crate) async fn save_zadarma(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let checked = |name: &str| !all_fields(&fields, name).is_empty();
    let zadarma = &state.integrations.zadarma;
    let before = zadarma.settings().await?;
    let Ok(route_ring_secs) = field(&fields, "route_ring_secs").trim().parse::<u32>() else {
        let message = "Время дозвона до менеджера — целое число секунд.".to_owned();
        return zadarma_page(&state, &viewer, &headers, before, None, Some(message)).await;
    };
    let update = ZadarmaSettingsUpdate {
        enabled: checked("enabled"),
        api_url: field(&fields, "api_url").to_owned(),
        key: field(&fields, "key").to_owned(),
        secret: Some(field(&fields, "secret").to_owned()),
        play_recordings_remotely: checked("play_recordings_remotely"),
        webrtc_enabled: checked("webrtc_enabled"),
        route_to_assigned_manager: checked("route_to_assigned_manager"),
        route_ring_secs,
        analyze_recordings: checked("analyze_recordings"),
    };
    match zadarma.update_settings(update).await {
        Ok(after) => {
            if after != before {
                audit(
                    &state,
                    &viewer,
                    "zadarma.update",
                    "zadarma",
                    after.describe(),
                )
                .await?;
                tracing::info!(user = %viewer.user.username, settings = ?after, "Zadarma settings changed");
            }
            Ok(Redirect::to("/settings/integrations/zadarma?saved=1").into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            zadarma_page(&state, &viewer, &headers, before, None, Some(message)).await
        }
    }
}

/// «Проверить подключение», answered as a line in the page (htmx).
pub(crate) async fn check_zadarma(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    match state.integrations.zadarma.check().await {
        Ok(balance) => result_line(
            true,
            format!(
                "Подключение работает. Баланс: {:.2} {}",
                balance.balance, balance.currency
            ),
        ),
        Err(error) => result_line(false, action_error(error)?),
    }
}

pub(crate) async fn load_pbx(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let zadarma = &state.integrations.zadarma;
    match zadarma.load_pbx().await {
        Ok(settings) => {
            let details = settings.pbx_details();
            audit(&state, &viewer, "zadarma.pbx", "zadarma", details).await?;
            Ok(Redirect::to("/settings/integrations/zadarma?saved=pbx").into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            let settings = zadarma.settings().await?;
            zadarma_page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

pub(crate) async fn save_extensions(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let zadarma = &state.integrations.zadarma;
    let mut mapping = BTreeMap::new();
    for (name, value) in &fields {
        let Some(number) = name.strip_prefix("ext_") else {
            continue;
        };
        let manager = match value.trim() {
            "" => None,
            id => match ManagerId::parse(id) {
                Ok(id) => Some(id),
                Err(_) => {
                    let settings = zadarma.settings().await?;
                    let message = format!("Недопустимый сотрудник для номера {number}");
                    return zadarma_page(&state, &viewer, &headers, settings, None, Some(message))
                        .await;
                }
            },
        };
        mapping.insert(number.to_owned(), manager);
    }
    match zadarma.map_extensions(&mapping).await {
        Ok(_) => {
            let details = rop_integrations::zadarma::mapping_details(&mapping);
            audit(&state, &viewer, "zadarma.extensions", "zadarma", details).await?;
            Ok(Redirect::to("/settings/integrations/zadarma?saved=extensions").into_response())
        }
        Err(error) => {
            let message = action_error(error)?;
            let settings = zadarma.settings().await?;
            zadarma_page(&state, &viewer, &headers, settings, None, Some(message)).await
        }
    }
}

struct ClientRow {
    phone: String,
    name: String,
    manager: String,
    source: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "settings/clients.html")]
struct ClientsPage {
    chrome: Chrome,
    clients: Vec<ClientRow>,
    managers: Vec<ManagerOption>,
    search: String,
    next_offset: Option<u32>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ClientsQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    offset: Option<u32>,
}

async fn clients_page(
    state: &WebState,
    viewer: &Viewer,
    query: ClientsQuery,
    error: Option<String>,
) -> Result<Response, PageError> {
    let search = query.q.unwrap_or_default().trim().to_owned();
    let offset = query.offset.unwrap_or(0);
    let clients = state
        .store
        .clients(
            (!search.is_empty()).then_some(search.as_str()),
            offset,
            CLIENTS_PAGE + 1,
        )
        .await?;
    let managers = state.store.managers().await?;
    let names = Names::from(managers.clone());
    let more = clients.len() > CLIENTS_PAGE as usize;
    let failed = error.is_some();
    render_form(
        ClientsPage {
            chrome: Chrome::new(viewer, "settings"),
            clients: clients
                .into_iter()
                .take(CLIENTS_PAGE as usize)
                .map(|c| ClientRow {
                    manager: c
                        .manager_id
                        .as_ref()
                        .map(|m| names.of(m))
                        .unwrap_or_default(),
                    name: c.name.unwrap_or_default(),
                    source: match c.source.as_str() {
                        "manual" => "вручную".to_owned(),
                        other => other.to_owned(),
                    },
                    updated: when(state, c.updated_at),
                    phone: c.phone,
                })
                .collect(),
            managers: managers
                .iter()
                .map(|m| ManagerOption {
                    id: m.manager_id.as_str().to_owned(),
                    name: names.of(&m.manager_id),
                })
                .collect(),
            search,
            next_offset: more.then_some(offset + CLIENTS_PAGE),
            error,
        },
        failed,
    )
}

pub(crate) async fn clients(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<ClientsQuery>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    clients_page(&state, &viewer, query, None).await
}

/// Adds a client or replaces the one with the same phone.
pub(crate) async fn save_client(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let raw_phone = field(&fields, "phone");
    let name = field(&fields, "name").trim();
    let manager = field(&fields, "manager_id").trim();
    let checked = (|| {
        let phone = normalize_phone(raw_phone)
            .ok_or_else(|| format!("«{raw_phone}» не похоже на номер телефона"))?;
        if name.chars().count() > 256 || name.chars().any(char::is_control) {
            return Err("Имя клиента — не длиннее 256 символов".to_owned());
        }
        let manager_id = match manager {
            "" => None,
            id => Some(ManagerId::parse(id).map_err(|_| "Недопустимый менеджер".to_owned())?),
        };
        Ok(ClientUpdate {
            phone,
            name: (!name.is_empty()).then(|| name.to_owned()),
            manager_id,
            source: "manual".to_owned(),
        })
    })();
    match checked {
        Ok(client) => {
            state
                .store
                .upsert_clients(std::slice::from_ref(&client), Utc::now())
                .await?;
            audit(
                &state,
                &viewer,
                "client.save",
                &client.phone,
                format!(
                    "{} → {}",
                    client.name.as_deref().unwrap_or("без имени"),
                    client.manager_id.as_ref().map_or("—", ManagerId::as_str)
                ),
            )
            .await?;
            Ok(Redirect::to("/settings/clients").into_response())
        }
        Err(message) => clients_page(&state, &viewer, ClientsQuery::default(), Some(message)).await,
    }
}

pub(crate) async fn delete_client(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(phone): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let phone = normalize_phone(&phone).ok_or(PageError::NotFound)?;
    if !state.store.delete_client(&phone).await? {
        return Err(PageError::NotFound);
    }
    audit(&state, &viewer, "client.delete", &phone, String::new()).await?;
    Ok(Redirect::to("/settings/clients").into_response())
}

struct JournalRow {
    pbx_call_id: String,
    started: String,
    incoming: bool,
    client_phone: String,
    client_name: String,
    manager: String,
    extension: String,
    routed_to: String,
    duration: String,
    result: String,
    call_id: String,
    has_recording: bool,
}

#[derive(Template)]
#[template(path = "telephony.html")]
struct TelephonyPage {
    chrome: Chrome,
    connected: bool,
    /// The viewer's own extension: click-to-call and the browser phone.
    my_extension: Option<String>,
    webrtc: bool,
    rows: Vec<JournalRow>,
    next_before: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct JournalQuery {
    #[serde(default)]
    before: Option<DateTime<Utc>>,
}

fn my_extension(settings: &ZadarmaSettings, viewer: &Viewer) -> Option<String> {
    viewer
        .user
        .manager_id
        .as_ref()
        .and_then(|me| settings.extension_of(me))
        .map(str::to_owned)
}

fn disposition_name(raw: &str) -> String {
    match raw {
        "answered" => "отвечен",
        "busy" => "занято",
        "cancel" => "отменён",
        "no answer" => "нет ответа",
        "failed" | "call failed" => "ошибка",
        "no money" | "no money, no limit" => "нет денег на счёте",
        "unallocated number" => "номер не существует",
        other => other,
    }
    .to_owned()
}

pub(crate) async fn journal(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<JournalQuery>,
) -> Result<Response, PageError> {
    let settings = state.integrations.zadarma.settings().await?;
    let calls = state
        .store
        .telephony_calls(&TelephonyFilter {
            managers: viewer.manager_filter(),
            before: query.before,
            limit: JOURNAL_PAGE,
        })
        .await?;
    let names = Names::load(&state).await?;
    let next_before = (calls.len() == JOURNAL_PAGE as usize)
        .then(|| calls.last().map(|c| c.started_at.to_rfc3339()))
        .flatten();
    let rows = calls
        .into_iter()
        .map(|c| JournalRow {
            started: when(&state, c.started_at),
            incoming: c.direction == Direction::Incoming,
            client_phone: c.client_phone.unwrap_or_default(),
            client_name: c.client_name.unwrap_or_default(),
            manager: c
                .manager_id
                .as_ref()
                .map(|m| names.of(m))
                .unwrap_or_default(),
            extension: c.extension.unwrap_or_default(),
            routed_to: c.routed_to.unwrap_or_default(),
            duration: c
                .duration_secs
                .map(|s| format!("{}:{:02}", s / 60, s % 60))
                .unwrap_or_default(),
            result: c
                .disposition
                .as_deref()
                .map(disposition_name)
                .unwrap_or_else(|| "идёт".to_owned()),
            call_id: c
                .call_id
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            has_recording: c.recording_id.is_some(),
            pbx_call_id: c.pbx_call_id,
        })
        .collect();
    render(TelephonyPage {
        chrome: Chrome::new(&viewer, "telephony"),
        connected: settings.is_connected(),
        my_extension: my_extension(&settings, &viewer),
        webrtc: settings.webrtc_enabled,
        rows,
        next_before,
    })
}

/// Click-to-call from the viewer's own extension; a line for the page.
pub(crate) async fn click_to_call(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    body: Bytes,
) -> Result<Response, PageError> {
    let fields = form_fields(&body);
    let zadarma = &state.integrations.zadarma;
    let settings = zadarma.settings().await?;
    let Some(extension) = my_extension(&settings, &viewer) else {
        return result_line(
            false,
            "Вам не назначен внутренний номер АТС — попросите администратора.",
        );
    };
    let phone = field(&fields, "phone");
    match zadarma.callback(&extension, phone).await {
        Ok(()) => {
            tracing::info!(user = %viewer.user.username, extension = %extension, "click-to-call");
            result_line(
                true,
                format!("Звоним: сначала зазвонит ваш номер {extension}, затем — {phone}."),
            )
        }
        Err(error) => result_line(false, action_error(error)?),
    }
}

/// Plays a journal call's recording: from Zadarma when so configured or
/// not yet downloaded, otherwise our stored copy.
pub(crate) async fn recording(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(pbx_call_id): Path<String>,
) -> Result<Response, PageError> {
    let call = state
        .store
        .telephony_call(&pbx_call_id)
        .await?
        .ok_or(PageError::NotFound)?;
    let visible = viewer.is_admin()
        || call
            .manager_id
            .as_ref()
            .is_some_and(|m| viewer.sees_manager(m));
    if !visible {
        return Err(PageError::NotFound);
    }
    let recording_id = call.recording_id.ok_or(PageError::NotFound)?;
    let zadarma = &state.integrations.zadarma;
    let settings = zadarma.settings().await?;
    if let (Some(call_id), false) = (&call.call_id, settings.play_recordings_remotely) {
        return Ok(Redirect::to(&format!(
            "/calls/{}/audio",
            super::calls::encode(call_id.as_str())
        ))
        .into_response());
    }
    match zadarma.recording_link(&recording_id).await {
        Ok(link) => Ok(Redirect::to(&link).into_response()),
        Err(error) => {
            let message = action_error(error)?;
            Err(PageError::Unavailable(format!(
                "Запись не получена из Zadarma: {message}"
            )))
        }
    }
}

#[derive(Template)]
#[template(path = "webrtc.html")]
struct WebrtcLine {
    key: String,
    login: String,
}

/// The browser phone's key for the viewer's own extension.
pub(crate) async fn webrtc_key(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let zadarma = &state.integrations.zadarma;
    let settings = zadarma.settings().await?;
    let Some(extension) = my_extension(&settings, &viewer) else {
        return result_line(false, "Вам не назначен внутренний номер АТС.");
    };
    match zadarma.webrtc_key(&extension).await {
        Ok(login) => render(WebrtcLine {
            key: login.key,
            login: login.login,
        }),
        Err(error) => result_line(false, action_error(error)?),
    }
}
