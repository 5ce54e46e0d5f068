//! Bitrix24 as the rest of the service sees it: settings and sign-in, the
//! connection check, the export, the call-end event and the write-back.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::integrations::{crm_metadata, setting_keys};
use rop_domain::{CallId, ClaimedTask, ManagerId, NewCallEvent, NewTask, StoreError, TaskOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;
use utoipa::ToSchema;

use super::auth::{OauthTokens, Webhook};
use super::client::{number, text, Bitrix24Client, Bitrix24Error, Endpoint, Pacer};
use super::import::{B24ExportRequest, B24ExportState, Importer, Verdict};
use super::settings::{B24AuthMode, Bitrix24Settings, Bitrix24SettingsUpdate};
use crate::exports::{ExportPayload, ExportProgress, Exports};
use crate::summary::note_text;
use crate::tasks::{backoff, TaskHandler};
use crate::tokens::TokenSlot;
use crate::Context;

pub const EXPORT_TASK: &str = "bitrix24.export";
/// A call Bitrix24 told us has ended.
pub const CALL_TASK: &str = "bitrix24.call";
pub const WRITE_BACK_TASK: &str = "bitrix24.write_back";
pub const CALL_END_EVENT: &str = "ONVOXIMPLANTCALLEND";
/// Bitrix24 attaches the recording a little after the call ends.
const CALL_DELAY_SECS: i64 = 15;
const CALL_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum Bitrix24ActionError {
    #[error("Bitrix24 не подключён: включите интеграцию и укажите вебхук или приложение")]
    NotConnected,
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("выгрузка уже идёт — остановите её или дождитесь конца")]
    ExportRunning,
    #[error(transparent)]
    Bitrix24(#[from] Bitrix24Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventRefused {
    #[error("интеграция Bitrix24 выключена или не принимает события")]
    NotConnected,
    #[error("неверный application_token")]
    BadToken,
    #[error("событие {0} не обрабатывается")]
    UnknownEvent(String),
    #[error("в событии нет корректного CALL_ID")]
    NoCallId,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct B24Check {
    pub users: usize,
}

/// A Bitrix24 export as the interface shows it.
pub type B24ExportView = crate::exports::ExportView<B24ExportRequest>;

impl ExportPayload for B24ExportState {
    type Request = B24ExportRequest;
    fn request(&self) -> &B24ExportRequest {
        &self.request
    }
    fn progress(&self) -> &ExportProgress {
        &self.progress
    }
}

#[derive(Serialize, Deserialize)]
struct CallTask {
    call_id: String,
}

#[derive(Clone)]
pub struct Bitrix24 {
    context: Context,
    pacer: Arc<Pacer>,
    tokens: TokenSlot,
}

impl Bitrix24 {
    pub fn new(context: Context) -> Self {
        Self {
            // A token is refreshed a minute before Bitrix24 would refuse it.
            tokens: TokenSlot::new(context.store.clone(), setting_keys::BITRIX24_TOKENS, 60),
            context,
            pacer: Arc::new(Pacer::default()),
        }
    }

    pub async fn settings(&self) -> Result<Bitrix24Settings, StoreError> {
        match self.context.store.setting(setting_keys::BITRIX24).await? {
            None => Ok(Bitrix24Settings::default()),
            Some(json) => rop_domain::store::parse_stored_json(&json),
        }
    }

    async fn save(&self, settings: &Bitrix24Settings) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(rop_domain::store::backend_error)?;
        self.context
            .store
            .save_setting(setting_keys::BITRIX24, &json)
            .await
    }

    pub async fn update_settings(
        &self,
        update: Bitrix24SettingsUpdate,
    ) -> Result<Bitrix24Settings, Bitrix24ActionError> {
        let mut settings = self.settings().await?;
        let before = (settings.portal_url.clone(), settings.client_id.clone());
        settings
            .apply(update)
            .map_err(|(field, message)| Bitrix24ActionError::Invalid(field, message))?;
        self.save(&settings).await?;
        if before != (settings.portal_url.clone(), settings.client_id.clone()) {
            self.tokens.clear().await?;
        }
        Ok(settings)
    }

    fn oauth(&self, settings: &Bitrix24Settings, http: rop_fetch::GuardedClient) -> OauthTokens {
        OauthTokens::new(self.tokens.clone(), http, settings.clone())
    }

    async fn client(
        &self,
        settings: &Bitrix24Settings,
    ) -> Result<Bitrix24Client, Bitrix24ActionError> {
        if !settings.is_connected() {
            return Err(Bitrix24ActionError::NotConnected);
        }
        let http = self.context.http().await?;
        let endpoint: Arc<dyn Endpoint> = match settings.auth_mode {
            B24AuthMode::Webhook => Arc::new(Webhook(Url::parse(&settings.webhook_url).map_err(
                |_| Bitrix24ActionError::Invalid("webhook_url", "адрес вебхука не разобран".into()),
            )?)),
            B24AuthMode::Oauth => Arc::new(self.oauth(settings, http.clone())),
        };
        Ok(Bitrix24Client::new(http, endpoint, self.pacer.clone()))
    }

    pub async fn signed_in(&self) -> Result<bool, StoreError> {
        self.tokens.signed_in().await
    }

    /// The portal's consent page for the application.
    pub async fn consent_url(&self) -> Result<String, Bitrix24ActionError> {
        let mut settings = self.settings().await?;
        if !settings.is_connected() || settings.auth_mode != B24AuthMode::Oauth {
            return Err(Bitrix24ActionError::NotConnected);
        }
        let state = uuid::Uuid::new_v4().simple().to_string();
        let mut url = Url::parse(&settings.portal_url)
            .and_then(|base| base.join("/oauth/authorize/"))
            .map_err(|_| {
                Bitrix24ActionError::Invalid("portal_url", "адрес портала не разобран".into())
            })?;
        url.query_pairs_mut()
            .append_pair("client_id", &settings.client_id)
            .append_pair("state", &state);
        settings.oauth_state = Some(state);
        self.save(&settings).await?;
        Ok(url.into())
    }

    /// Exchanges the code Bitrix24 sent to the application's redirect URI
    /// (it lives 30 seconds). From the browser the `state` must match.
    pub async fn complete_sign_in(
        &self,
        code: &str,
        state: Option<&str>,
    ) -> Result<B24Check, Bitrix24ActionError> {
        let mut settings = self.settings().await?;
        if !settings.is_connected() || settings.auth_mode != B24AuthMode::Oauth {
            return Err(Bitrix24ActionError::NotConnected);
        }
        let code = code.trim();
        if code.is_empty() || code.len() > 1024 || code.chars().any(char::is_control) {
            return Err(Bitrix24ActionError::Invalid(
                "code",
                "Bitrix24 не передал код авторизации".into(),
            ));
        }
        if let Some(state) = state {
            let expected = settings.oauth_state.take().unwrap_or_default();
            let matches = !expected.is_empty()
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    state.as_bytes(),
                    expected.as_bytes(),
                ));
            self.save(&settings).await?;
            if !matches {
                return Err(Bitrix24ActionError::Invalid(
                    "state",
                    "Ответ Bitrix24 не к нашему запросу входа — начните вход заново".into(),
                ));
            }
        }
        let http = self.context.http().await?;
        self.oauth(&settings, http).exchange_code(code).await?;
        tracing::info!("Bitrix24 sign-in completed");
        self.check().await
    }

    /// «Проверить подключение»: reads the portal's users (kept with their
    /// mapping).
    pub async fn check(&self) -> Result<B24Check, Bitrix24ActionError> {
        let settings = self.settings().await?;
        let client = self.client(&settings).await?;
        let mut found = Vec::new();
        let mut start = 0;
        for _ in 0..200 {
            let answer = client
                .call(
                    "user.get",
                    json!({"FILTER": {"ACTIVE": true}, "start": start}),
                )
                .await?;
            for user in answer.result.as_array().into_iter().flatten() {
                if let Some(id) = number(user.get("ID")) {
                    let name = [text(user.get("NAME")), text(user.get("LAST_NAME"))]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    found.push((id, name));
                }
            }
            match answer.next {
                Some(next) => start = next,
                None => break,
            }
        }
        let mut settings = self.settings().await?;
        let count = found.len();
        settings.users = crate::crm::refreshed(&settings.users, found);
        self.save(&settings).await?;
        Ok(B24Check { users: count })
    }

    pub async fn map_users(
        &self,
        mapping: &BTreeMap<i64, Option<ManagerId>>,
    ) -> Result<Bitrix24Settings, Bitrix24ActionError> {
        let mut settings = self.settings().await?;
        crate::crm::map(&mut settings.users, mapping).map_err(|id| {
            Bitrix24ActionError::Invalid(
                "users",
                format!("Сотрудника Bitrix24 {id} нет — нажмите «Проверить подключение»"),
            )
        })?;
        self.save(&settings).await?;
        Ok(settings)
    }

    fn queue(&self) -> Exports<'_> {
        Exports {
            store: self.context.store.as_ref(),
            kind: EXPORT_TASK,
        }
    }

    /// Exports newest first.
    pub async fn exports(&self, limit: u32) -> Result<Vec<B24ExportView>, StoreError> {
        self.queue().list::<B24ExportState>(limit).await
    }

    pub async fn export(&self, id: i64) -> Result<Option<B24ExportView>, StoreError> {
        self.queue().get::<B24ExportState>(id).await
    }

    /// «Начать выгрузку», one at a time.
    pub async fn start_export(
        &self,
        request: B24ExportRequest,
    ) -> Result<B24ExportView, Bitrix24ActionError> {
        request
            .validate()
            .map_err(|(field, message)| Bitrix24ActionError::Invalid(field, message))?;
        let settings = self.settings().await?;
        if !settings.is_connected() {
            return Err(Bitrix24ActionError::NotConnected);
        }
        if let Some(user) = request
            .user_ids
            .iter()
            .find(|id| !settings.users.is_empty() && !settings.users.iter().any(|u| u.id == **id))
        {
            return Err(Bitrix24ActionError::Invalid(
                "user_ids",
                format!("Сотрудника Bitrix24 {user} нет на портале"),
            ));
        }
        if self.queue().running().await? {
            return Err(Bitrix24ActionError::ExportRunning);
        }
        let state = B24ExportState {
            request,
            last_id: 0,
            progress: ExportProgress {
                stage: "calls".into(),
                ..ExportProgress::default()
            },
            finished: false,
        };
        Ok(self.queue().queue(&state).await?)
    }

    /// «Остановить выгрузку»; `false` when it is already over.
    pub async fn stop_export(&self, id: i64) -> Result<bool, StoreError> {
        self.queue().stop(id).await
    }

    /// An event from the portal (`application/x-www-form-urlencoded`, PHP
    /// nested keys). ONVOXIMPLANTCALLEND queues the call's import.
    pub async fn event(
        &self,
        fields: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<(), EventRefused> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let settings = self.settings().await?;
        if !settings.enabled || settings.application_token.is_empty() {
            return Err(EventRefused::NotConnected);
        }
        let token = field("auth[application_token]");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            token.as_bytes(),
            settings.application_token.as_bytes(),
        )) {
            return Err(EventRefused::BadToken);
        }
        let event = field("event").trim().to_uppercase();
        if event != CALL_END_EVENT {
            return Err(EventRefused::UnknownEvent(event.chars().take(60).collect()));
        }
        let call_id = field("data[CALL_ID]").trim();
        if call_id.is_empty() || call_id.len() > 200 || call_id.chars().any(char::is_control) {
            return Err(EventRefused::NoCallId);
        }
        if !settings.realtime {
            return Ok(());
        }
        let payload = serde_json::to_string(&CallTask {
            call_id: call_id.to_owned(),
        })
        .map_err(rop_domain::store::backend_error)?;
        self.context
            .store
            .enqueue_task(
                &NewTask {
                    kind: CALL_TASK.to_owned(),
                    key: call_id.to_owned(),
                    payload,
                    due_at: now + chrono::Duration::seconds(CALL_DELAY_SECS),
                    max_attempts: CALL_ATTEMPTS,
                },
                now,
            )
            .await?;
        tracing::info!(call_id, "Bitrix24 call ended; import queued");
        Ok(())
    }

    fn importer<'a>(
        &'a self,
        client: &'a Bitrix24Client,
        settings: &'a Bitrix24Settings,
        min_duration_secs: u32,
    ) -> Importer<'a> {
        Importer {
            client,
            store: self.context.store.as_ref(),
            settings,
            job_attempts: self.context.job_attempts,
            min_duration_secs,
            offset: self.context.local_offset,
        }
    }

    async fn ready(
        &self,
        task: &ClaimedTask,
    ) -> Result<(Bitrix24Settings, Bitrix24Client), TaskOutcome> {
        let retry = |error: String| TaskOutcome::Retry {
            at: Utc::now() + backoff(task.attempt),
            error,
        };
        let settings = self.settings().await.map_err(|e| retry(e.to_string()))?;
        match self.client(&settings).await {
            Ok(client) => Ok((settings, client)),
            Err(Bitrix24ActionError::Store(error)) => Err(retry(error.to_string())),
            Err(error) => Err(TaskOutcome::Failed {
                error: error.to_string(),
            }),
        }
    }

    async fn run_export(&self, task: &ClaimedTask) -> TaskOutcome {
        let Ok(mut state) = serde_json::from_str::<B24ExportState>(&task.payload) else {
            return TaskOutcome::Failed {
                error: "задача выгрузки повреждена".into(),
            };
        };
        let (settings, client) = match self.ready(task).await {
            Ok(ready) => ready,
            Err(outcome) => return outcome,
        };
        let min = state
            .request
            .min_duration_secs
            .unwrap_or(settings.min_duration_secs);
        let importer = self.importer(&client, &settings, min);
        while !state.finished {
            let read = importer.next_page(&mut state).await;
            if let Err(error) = &read {
                state.progress.last_error = Some(error.to_string());
            }
            match self.queue().save(task, &state).await {
                Ok(true) => {}
                Ok(false) => return TaskOutcome::Done,
                Err(error) => {
                    return TaskOutcome::Retry {
                        at: Utc::now() + backoff(task.attempt),
                        error,
                    }
                }
            }
            if let Err(error) = read {
                return failure(error, task);
            }
        }
        tracing::info!(
            found = state.progress.found,
            imported = state.progress.imported,
            "Bitrix24 export finished"
        );
        TaskOutcome::Done
    }

    async fn run_call(&self, task: &ClaimedTask) -> TaskOutcome {
        let Ok(job) = serde_json::from_str::<CallTask>(&task.payload) else {
            return TaskOutcome::Failed {
                error: "задача без CALL_ID".into(),
            };
        };
        let (settings, client) = match self.ready(task).await {
            Ok(ready) => ready,
            Err(outcome) => return outcome,
        };
        let later = |error: &str| TaskOutcome::Retry {
            at: Utc::now()
                + chrono::Duration::minutes(1) * i32::try_from(task.attempt).unwrap_or(1),
            error: error.to_owned(),
        };
        let rows = match client
            .call(
                "voximplant.statistic.get",
                json!({"FILTER": {"CALL_ID": job.call_id}, "start": -1}),
            )
            .await
        {
            Ok(answer) => answer.result.as_array().cloned().unwrap_or_default(),
            Err(error) => return failure(error, task),
        };
        let Some(row) = rows.first() else {
            return later("звонка ещё нет в статистике Bitrix24");
        };
        let importer = self.importer(&client, &settings, settings.min_duration_secs);
        match importer.import(row).await {
            Ok(Verdict::Imported | Verdict::Skipped) => TaskOutcome::Done,
            Ok(Verdict::NoRecordingYet) => later("запись разговора ещё не прикреплена"),
            Ok(Verdict::Failed(error)) => TaskOutcome::Failed { error },
            Err(error) => failure(error, task),
        }
    }

    async fn write_back(&self, task: &ClaimedTask) -> TaskOutcome {
        let Ok(call_id) = CallId::parse(&task.key) else {
            return TaskOutcome::Failed {
                error: "неверный id звонка".into(),
            };
        };
        let store = &self.context.store;
        let details = match store.call(&call_id).await {
            Ok(Some(details)) => details,
            Ok(None) => return TaskOutcome::Done,
            Err(error) => {
                return TaskOutcome::Retry {
                    at: Utc::now() + backoff(task.attempt),
                    error: error.to_string(),
                }
            }
        };
        let metadata = &details.call.metadata;
        let entity_type = metadata
            .get(crm_metadata::ENTITY_TYPE)
            .map(String::as_str)
            .filter(|t| matches!(*t, "deal" | "contact" | "company" | "lead"));
        let entity_id = metadata
            .get(crm_metadata::ENTITY_ID)
            .and_then(|id| id.parse::<i64>().ok());
        let (Some(entity_type), Some(entity_id)) = (entity_type, entity_id) else {
            return TaskOutcome::Failed {
                error: "звонок не привязан к сделке, контакту или компании Bitrix24".into(),
            };
        };
        let (settings, client) = match self.ready(task).await {
            Ok(ready) => ready,
            Err(outcome) => return outcome,
        };
        if !settings.write_comment {
            return TaskOutcome::Done;
        }
        let fields = json!({"fields": {
            "ENTITY_ID": entity_id,
            "ENTITY_TYPE": entity_type,
            "COMMENT": note_text(&details),
        }});
        match client.call("crm.timeline.comment.add", fields).await {
            Ok(_) => {}
            Err(Bitrix24Error::Api(error)) => {
                return TaskOutcome::Failed {
                    error: format!("Bitrix24 отклонил комментарий: {error}"),
                }
            }
            Err(error) => return failure(error, task),
        }
        let event = NewCallEvent::info(
            Utc::now(),
            "crm",
            "Результаты записаны в Bitrix24: комментарий в ленте",
        );
        if let Err(error) = store.add_call_event(&call_id, &event).await {
            tracing::warn!(call_id = %call_id, error = %error, "cannot note the Bitrix24 write-back");
        }
        TaskOutcome::Done
    }
}

/// A refused access needs an administrator; outages and the rate limit
/// are tried again later.
fn failure(error: Bitrix24Error, task: &ClaimedTask) -> TaskOutcome {
    match error {
        Bitrix24Error::Unauthorized(_) => TaskOutcome::Failed {
            error: error.to_string(),
        },
        other => TaskOutcome::Retry {
            at: Utc::now() + backoff(task.attempt),
            error: other.to_string(),
        },
    }
}

#[async_trait]
impl TaskHandler for Bitrix24 {
    fn kinds(&self) -> &'static [&'static str] {
        &[EXPORT_TASK, CALL_TASK, WRITE_BACK_TASK]
    }

    async fn run(&self, task: &ClaimedTask) -> TaskOutcome {
        match task.kind.as_str() {
            EXPORT_TASK => self.run_export(task).await,
            CALL_TASK => self.run_call(task).await,
            _ => self.write_back(task).await,
        }
    }
}
