//! The pages. Each handler takes the [`Viewer`], asks the store for what
//! the viewer may see, and renders a template of `templates/`.

pub(crate) mod amocrm;
pub(crate) mod bitrix24;
pub(crate) mod calls;
pub(crate) mod crm;
pub(crate) mod dashboard;
pub(crate) mod definitions;
pub(crate) mod people;
pub(crate) mod settings;
pub(crate) mod telephony;
pub(crate) mod users;

use std::collections::HashMap;

use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use rop_domain::{Manager, ManagerId, NewAuditEntry, Role};

use crate::access::Viewer;
use crate::error::PageError;
use crate::WebState;

/// What every signed-in page shows around its content.
pub(crate) struct Chrome {
    pub username: String,
    pub role: &'static str,
    pub admin: bool,
    /// Administrators and office leaders (the Офисы section).
    pub leader: bool,
    pub csrf: String,
    pub section: &'static str,
    pub version: &'static str,
}

impl Chrome {
    pub fn new(viewer: &Viewer, section: &'static str) -> Self {
        Self {
            username: viewer.user.username.clone(),
            role: role_name(viewer.user.role),
            admin: viewer.is_admin(),
            leader: matches!(viewer.user.role, Role::Admin | Role::Leader),
            csrf: viewer.csrf.clone(),
            section,
            version: crate::assets::VERSION,
        }
    }
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "администратор",
        Role::Leader => "руководитель офиса",
        Role::Manager => "менеджер",
    }
}

pub(crate) fn render(template: impl askama::Template) -> Result<Response, PageError> {
    Ok(Html(template.render()?).into_response())
}

/// A form page shown again: 400 when it carries an error for the user.
#[derive(askama::Template)]
#[template(path = "settings/result.html")]
struct ResultLine {
    ok: bool,
    message: String,
}

/// The answer of a check button: one line, good or bad, put in the page
/// by htmx.
pub(crate) fn result_line(ok: bool, message: impl Into<String>) -> Result<Response, PageError> {
    render(ResultLine {
        ok,
        message: message.into(),
    })
}

/// A CRM export in the table of its settings page.
pub(crate) struct ExportRow {
    pub id: i64,
    pub period: String,
    pub state: &'static str,
    pub active: bool,
    pub found: u64,
    pub imported: u64,
    pub skipped: u64,
    pub failed: u64,
    pub stage: &'static str,
    pub error: String,
    pub started: String,
}

impl ExportRow {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: &WebState,
        id: i64,
        period: String,
        task_state: rop_domain::TaskState,
        stage: &'static str,
        progress: rop_integrations::exports::ExportProgress,
        error: Option<String>,
        started: DateTime<Utc>,
    ) -> Self {
        use rop_domain::TaskState;
        Self {
            id,
            period,
            state: match task_state {
                TaskState::Queued => "в очереди",
                TaskState::Running => "идёт",
                TaskState::Done => "завершена",
                TaskState::Failed => "ошибка",
                TaskState::Cancelled => "остановлена",
            },
            active: matches!(task_state, TaskState::Queued | TaskState::Running),
            found: progress.found,
            imported: progress.imported,
            skipped: progress.skipped,
            failed: progress.failed,
            stage,
            error: error.or(progress.last_error).unwrap_or_default(),
            started: when(state, started),
        }
    }
}

pub(crate) fn render_form(
    template: impl askama::Template,
    failed: bool,
) -> Result<Response, PageError> {
    let mut response = render(template)?;
    if failed {
        *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

pub(crate) async fn home() -> Redirect {
    Redirect::to("/dashboard")
}

/// Managers' display names by id: «Фамилия Имя», or the CRM id.
pub(crate) struct Names(HashMap<ManagerId, String>);

impl Names {
    pub async fn load(state: &WebState) -> Result<Self, PageError> {
        Ok(Self::from(state.store.managers().await?))
    }

    pub fn of(&self, id: &ManagerId) -> String {
        self.0
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.as_str().to_owned())
    }
}

impl From<Vec<Manager>> for Names {
    fn from(managers: Vec<Manager>) -> Self {
        Self(
            managers
                .into_iter()
                .filter_map(|m| {
                    let name = [m.surname.as_deref(), m.name.as_deref()]
                        .into_iter()
                        .flatten()
                        .filter(|part| !part.trim().is_empty())
                        .collect::<Vec<_>>()
                        .join(" ");
                    (!name.is_empty()).then_some((m.manager_id, name))
                })
                .collect(),
        )
    }
}

/// Records a settings change made in the interface.
pub(crate) async fn audit(
    state: &WebState,
    viewer: &Viewer,
    action: &str,
    target: &str,
    details: impl Into<String>,
) -> Result<(), PageError> {
    state
        .store
        .add_audit_entry(&NewAuditEntry {
            at: Utc::now(),
            actor: viewer.user.username.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            details: details.into(),
        })
        .await?;
    Ok(())
}

pub(crate) fn when(state: &WebState, at: DateTime<Utc>) -> String {
    crate::format::datetime(at, state.settings.utc_offset_secs)
}

/// Parses a form body into its fields in order (repeated names kept, as the
/// checklist editor sends one group of fields per stage).
pub(crate) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

pub(crate) fn all_fields<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
