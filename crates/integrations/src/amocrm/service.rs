//! amoCRM as the rest of the service sees it: its settings and sign-in,
//! the connection check, the export and the write-back tasks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use rop_domain::integrations::{crm_metadata, setting_keys};
use rop_domain::{CallId, ClaimedTask, ManagerId, NewCallEvent, StoreError, TaskOutcome};
use serde::Serialize;
use url::Url;
use utoipa::ToSchema;

use super::auth::Tokens;
use super::client::{AmocrmClient, AmocrmError, Pacer};
use super::export::{ExportRequest, ExportState, PageRun};
use super::settings::{AmocrmSettings, AmocrmSettingsUpdate, AuthMode};
use crate::exports::{ExportPayload, ExportProgress, Exports};
use crate::summary::{field_value, note_text};
use crate::tasks::{backoff, TaskHandler};
use crate::tokens::TokenSlot;
use crate::Context;

pub const EXPORT_TASK: &str = "amocrm.export";
pub const WRITE_BACK_TASK: &str = "amocrm.write_back";

#[derive(Debug, thiserror::Error)]
pub enum AmocrmActionError {
    #[error("amoCRM не подключена: включите интеграцию и укажите адрес аккаунта и доступ")]
    NotConnected,
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("выгрузка уже идёт — остановите её или дождитесь конца")]
    ExportRunning,
    #[error(transparent)]
    Amocrm(#[from] AmocrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What «Проверить подключение» found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountCheck {
    pub users: usize,
    pub pipelines: usize,
}

/// An amoCRM export as the interface shows it.
pub type ExportView = crate::exports::ExportView<ExportRequest>;

impl ExportPayload for ExportState {
    type Request = ExportRequest;
    fn request(&self) -> &ExportRequest {
        &self.request
    }
    fn progress(&self) -> &ExportProgress {
        &self.progress
    }
}

#[derive(Clone)]
pub struct Amocrm {
    context: Context,
    pacer: Arc<Pacer>,
    tokens: TokenSlot,
}

impl Amocrm {
    pub fn new(context: Context) -> Self {
        Self {
            // A token is refreshed two minutes before amoCRM would refuse it.
            tokens: TokenSlot::new(context.store.clone(), setting_keys::AMOCRM_TOKENS, 120),
            context,
            pacer: Arc::new(Pacer::default()),
        }
    }

    pub async fn settings(&self) -> Result<AmocrmSettings, StoreError> {
        match self.context.store.setting(setting_keys::AMOCRM).await? {
            None => Ok(AmocrmSettings::default()),
            Some(json) => rop_domain::store::parse_stored_json(&json),
        }
    }

    async fn save(&self, settings: &AmocrmSettings) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(rop_domain::store::backend_error)?;
        self.context
            .store
            .save_setting(setting_keys::AMOCRM, &json)
            .await
    }

    pub async fn update_settings(
        &self,
        update: AmocrmSettingsUpdate,
    ) -> Result<AmocrmSettings, AmocrmActionError> {
        let mut settings = self.settings().await?;
        let before = (settings.base_url.clone(), settings.client_id.clone());
        settings
            .apply(update)
            .map_err(|(field, message)| AmocrmActionError::Invalid(field, message))?;
        self.save(&settings).await?;
        if before != (settings.base_url.clone(), settings.client_id.clone()) {
            // A pair issued to another account or integration is no use.
            self.tokens.clear().await?;
        }
        Ok(settings)
    }

    fn tokens(&self, settings: &AmocrmSettings, http: rop_fetch::GuardedClient) -> Tokens {
        Tokens::new(self.tokens.clone(), http, settings.clone())
    }

    async fn client(&self, settings: &AmocrmSettings) -> Result<AmocrmClient, AmocrmActionError> {
        if !settings.is_connected() {
            return Err(AmocrmActionError::NotConnected);
        }
        let base_url = Url::parse(&settings.base_url).map_err(|_| {
            AmocrmActionError::Invalid("base_url", "адрес аккаунта не разобран".into())
        })?;
        let http = self.context.http().await?;
        Ok(AmocrmClient::new(
            base_url,
            http.clone(),
            Arc::new(self.tokens(settings, http)),
            self.pacer.clone(),
        ))
    }

    /// Whether an OAuth pair is stored (the sign-in was done).
    pub async fn signed_in(&self) -> Result<bool, StoreError> {
        self.tokens.signed_in().await
    }

    /// The consent page an administrator is sent to; its `state` is kept
    /// to recognise the answer (amoCRM's own page,
    /// `https://www.amocrm.ru/oauth?client_id=…&state=…` in the cloud).
    pub async fn consent_url(&self) -> Result<String, AmocrmActionError> {
        let mut settings = self.settings().await?;
        if !settings.is_connected() || settings.auth_mode != AuthMode::Oauth {
            return Err(AmocrmActionError::NotConnected);
        }
        let state = uuid::Uuid::new_v4().simple().to_string();
        let mut url = Url::parse(&settings.base_url)
            .and_then(|base| base.join("/oauth"))
            .map_err(|_| {
                AmocrmActionError::Invalid("base_url", "адрес аккаунта не разобран".into())
            })?;
        url.query_pairs_mut()
            .append_pair("client_id", &settings.client_id)
            .append_pair("state", &state)
            .append_pair("mode", "post_message");
        settings.oauth_state = Some(state);
        self.save(&settings).await?;
        Ok(url.into())
    }

    /// Exchanges the authorization code amoCRM sent to the redirect URI.
    /// From the browser the `state` must be the one we issued; through the
    /// API (an integrator with our key) there is none to check.
    pub async fn complete_sign_in(
        &self,
        code: &str,
        state: Option<&str>,
    ) -> Result<AccountCheck, AmocrmActionError> {
        let mut settings = self.settings().await?;
        if !settings.is_connected() || settings.auth_mode != AuthMode::Oauth {
            return Err(AmocrmActionError::NotConnected);
        }
        let code = code.trim();
        if code.is_empty() || code.len() > 4096 || code.chars().any(char::is_control) {
            return Err(AmocrmActionError::Invalid(
                "code",
                "amoCRM не передала код авторизации".into(),
            ));
        }
        if let Some(state) = state {
            let expected = settings.oauth_state.take().unwrap_or_default();
            let matches = !expected.is_empty()
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    state.as_bytes(),
                    expected.as_bytes(),
                ));
            // Spent either way: a state answers one sign-in.
            self.save(&settings).await?;
            if !matches {
                return Err(AmocrmActionError::Invalid(
                    "state",
                    "Ответ amoCRM не к нашему запросу входа — начните вход заново".into(),
                ));
            }
        }
        let http = self.context.http().await?;
        self.tokens(&settings, http).exchange_code(code).await?;
        tracing::info!("amoCRM sign-in completed");
        self.check().await
    }

    /// «Проверить подключение»: reads the users (kept with their mapping)
    /// and the pipelines.
    pub async fn check(&self) -> Result<AccountCheck, AmocrmActionError> {
        let settings = self.settings().await?;
        let client = self.client(&settings).await?;
        let users = client.users().await?;
        let pipelines = client.pipelines().await?;
        // Re-read: the settings may have changed during the requests.
        let mut settings = self.settings().await?;
        let found = users.iter().map(|u| (u.id, u.name.clone())).collect();
        settings.users = crate::crm::refreshed(&settings.users, found);
        self.save(&settings).await?;
        Ok(AccountCheck {
            users: users.len(),
            pipelines: pipelines.len(),
        })
    }

    /// Sets whose calls each amoCRM user makes; users not named keep
    /// theirs.
    pub async fn map_users(
        &self,
        mapping: &BTreeMap<i64, Option<ManagerId>>,
    ) -> Result<AmocrmSettings, AmocrmActionError> {
        let mut settings = self.settings().await?;
        crate::crm::map(&mut settings.users, mapping).map_err(|id| {
            AmocrmActionError::Invalid(
                "users",
                format!("Пользователя amoCRM {id} нет — нажмите «Проверить подключение»"),
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
    pub async fn exports(&self, limit: u32) -> Result<Vec<ExportView>, StoreError> {
        self.queue().list::<ExportState>(limit).await
    }

    pub async fn export(&self, id: i64) -> Result<Option<ExportView>, StoreError> {
        self.queue().get::<ExportState>(id).await
    }

    /// «Начать выгрузку», one at a time.
    pub async fn start_export(
        &self,
        request: ExportRequest,
    ) -> Result<ExportView, AmocrmActionError> {
        request
            .validate()
            .map_err(|(field, message)| AmocrmActionError::Invalid(field, message))?;
        let settings = self.settings().await?;
        if !settings.is_connected() {
            return Err(AmocrmActionError::NotConnected);
        }
        if let Some(user) = request
            .user_ids
            .iter()
            .find(|id| !settings.users.is_empty() && !settings.users.iter().any(|u| u.id == **id))
        {
            return Err(AmocrmActionError::Invalid(
                "user_ids",
                format!("Пользователя amoCRM {user} нет в аккаунте"),
            ));
        }
        if self.queue().running().await? {
            return Err(AmocrmActionError::ExportRunning);
        }
        Ok(self.queue().queue(&ExportState::new(request)).await?)
    }

    /// «Остановить выгрузку»; `false` when it is already over.
    pub async fn stop_export(&self, id: i64) -> Result<bool, StoreError> {
        self.queue().stop(id).await
    }

    async fn run_export(&self, task: &ClaimedTask) -> TaskOutcome {
        let Ok(mut state) = serde_json::from_str::<ExportState>(&task.payload) else {
            return TaskOutcome::Failed {
                error: "задача выгрузки повреждена".into(),
            };
        };
        let retry = |error: String| TaskOutcome::Retry {
            at: Utc::now() + backoff(task.attempt),
            error,
        };
        let settings = match self.settings().await {
            Ok(settings) => settings,
            Err(error) => return retry(error.to_string()),
        };
        let client = match self.client(&settings).await {
            Ok(client) => client,
            Err(AmocrmActionError::Store(error)) => return retry(error.to_string()),
            Err(error) => {
                return TaskOutcome::Failed {
                    error: error.to_string(),
                }
            }
        };
        let pipelines = match client.pipelines().await {
            Ok(pipelines) => pipelines,
            Err(error) => return export_failure(error, retry),
        };
        let mut leads = HashMap::new();
        let mut run = PageRun {
            client: &client,
            store: self.context.store.as_ref(),
            settings: &settings,
            offset: self.context.local_offset,
            job_attempts: self.context.job_attempts,
            pipelines: &pipelines,
            leads: &mut leads,
        };
        while !state.is_finished() {
            let read = run.next_page(&mut state).await;
            if let Err(error) = &read {
                state.progress.last_error = Some(error.to_string());
            }
            match self.queue().save(task, &state).await {
                Ok(true) => {}
                // Stopped by an administrator (or taken over): nothing more.
                Ok(false) => return TaskOutcome::Done,
                Err(error) => return retry(error),
            }
            if let Err(error) = read {
                return export_failure(error, retry);
            }
            if run.leads.len() > 10_000 {
                run.leads.clear();
            }
        }
        tracing::info!(
            found = state.progress.found,
            imported = state.progress.imported,
            skipped = state.progress.skipped,
            failed = state.progress.failed,
            "amoCRM export finished"
        );
        TaskOutcome::Done
    }

    async fn write_back(&self, task: &ClaimedTask) -> TaskOutcome {
        let now = Utc::now();
        let retry = |error: String| TaskOutcome::Retry {
            at: now + backoff(task.attempt),
            error,
        };
        let Ok(call_id) = CallId::parse(&task.key) else {
            return TaskOutcome::Failed {
                error: "неверный id звонка".into(),
            };
        };
        let store = &self.context.store;
        let details = match store.call(&call_id).await {
            Ok(Some(details)) => details,
            // Deleted since: nothing to write.
            Ok(None) => return TaskOutcome::Done,
            Err(error) => return retry(error.to_string()),
        };
        let settings = match self.settings().await {
            Ok(settings) => settings,
            Err(error) => return retry(error.to_string()),
        };
        if !settings.write_note && settings.field_updates.is_empty() {
            return TaskOutcome::Done;
        }
        let metadata = &details.call.metadata;
        let entity = metadata
            .get(crm_metadata::ENTITY_TYPE)
            .map(String::as_str)
            .unwrap_or("leads");
        let entity_id = metadata
            .get(crm_metadata::ENTITY_ID)
            .and_then(|id| id.parse::<i64>().ok());
        let (Some(entity_id), true) = (entity_id, super::export::ENTITIES.contains(&entity)) else {
            return TaskOutcome::Failed {
                error: "у звонка нет сделки amoCRM".into(),
            };
        };
        let client = match self.client(&settings).await {
            Ok(client) => client,
            Err(AmocrmActionError::Store(error)) => return retry(error.to_string()),
            Err(error) => {
                return TaskOutcome::Failed {
                    error: error.to_string(),
                }
            }
        };
        let mut written = Vec::new();
        // Fields first: setting them twice is harmless, a second note is not.
        let values: Vec<(i64, String)> = settings
            .field_updates
            .iter()
            .filter_map(|f| field_value(&details, f.value).map(|v| (f.field_id, v)))
            .collect();
        if entity == "leads" && !values.is_empty() {
            if let Err(error) = client.update_lead_fields(entity_id, &values).await {
                return write_back_failure(error, retry);
            }
            written.push(format!("полей сделки: {}", values.len()));
        }
        if settings.write_note {
            if let Err(error) = client
                .add_note(entity, entity_id, &note_text(&details))
                .await
            {
                return write_back_failure(error, retry);
            }
            written.push("примечание".to_owned());
        }
        let event = NewCallEvent::info(
            Utc::now(),
            "crm",
            format!("Результаты записаны в amoCRM: {}", written.join(", ")),
        );
        if let Err(error) = store.add_call_event(&call_id, &event).await {
            tracing::warn!(call_id = %call_id, error = %error, "cannot note the amoCRM write-back");
        }
        TaskOutcome::Done
    }
}

/// A refused token or a broken account needs an administrator; anything
/// else is tried again later from where the export stopped.
fn export_failure(error: AmocrmError, retry: impl Fn(String) -> TaskOutcome) -> TaskOutcome {
    match error {
        AmocrmError::Unauthorized(_) => TaskOutcome::Failed {
            error: error.to_string(),
        },
        other => retry(other.to_string()),
    }
}

/// amoCRM refusing our note or fields (a deleted deal, a field id that
/// does not exist) will refuse it again: only outages are retried.
fn write_back_failure(error: AmocrmError, retry: impl Fn(String) -> TaskOutcome) -> TaskOutcome {
    match error {
        AmocrmError::Unauthorized(_) | AmocrmError::Api(_) => TaskOutcome::Failed {
            error: error.to_string(),
        },
        other => retry(other.to_string()),
    }
}

#[async_trait]
impl TaskHandler for Amocrm {
    fn kinds(&self) -> &'static [&'static str] {
        &[EXPORT_TASK, WRITE_BACK_TASK]
    }

    async fn run(&self, task: &ClaimedTask) -> TaskOutcome {
        match task.kind.as_str() {
            EXPORT_TASK => self.run_export(task).await,
            _ => self.write_back(task).await,
        }
    }
}
