//! Zadarma as the rest of the service sees it: its settings, the actions of
//! the settings page, the notification endpoint and the recording task.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use rop_domain::integrations::setting_keys;
use rop_domain::{
    normalize_phone, CallId, ClaimedTask, Direction, ManagerId, NewTask, StoreError, TaskOutcome,
    TelephonyCall, TelephonyUpdate,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{Balance, Credentials, ZadarmaClient, ZadarmaError};
use super::notify::{Event, Notification, NotifyError};
use super::settings::{Extension, ZadarmaSettings, ZadarmaSettingsUpdate};
use crate::intake::{submit, ImportedCall};
use crate::tasks::{backoff, TaskHandler};
use crate::Context;

/// The task that fetches a recording and hands it to the pipeline.
pub const RECORDING_TASK: &str = "zadarma.recording";
const PROVIDER: &str = "zadarma";
/// Zadarma's SDK advises fetching a recording about 40 s after the call
/// ends; NOTIFY_RECORD, when it comes, makes the task due at once.
const RECORDING_DELAY_SECS: i64 = 40;
const RECORDING_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ZadarmaActionError {
    #[error("Zadarma не подключена: включите интеграцию и укажите Key и Secret")]
    NotConnected,
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Zadarma(#[from] ZadarmaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a notification was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotificationRefused {
    #[error("интеграция Zadarma выключена или не настроена")]
    NotConnected,
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("в уведомлении нет корректного pbx_call_id")]
    NoCallId,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to a notification. For NOTIFY_START and NOTIFY_IVR it may
/// route the call (integrations.md §1.4); an empty answer lets the PBX go on
/// with its own scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifyReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
}

impl NotifyReply {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordingTask {
    pbx_call_id: String,
    recording_id: String,
}

#[derive(Clone)]
pub struct Zadarma {
    context: Context,
}

impl Zadarma {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    pub async fn settings(&self) -> Result<ZadarmaSettings, StoreError> {
        match self.context.store.setting(setting_keys::ZADARMA).await? {
            None => Ok(ZadarmaSettings::default()),
            Some(json) => rop_domain::store::parse_stored_json(&json),
        }
    }

    async fn save(&self, settings: &ZadarmaSettings) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(rop_domain::store::backend_error)?;
        self.context
            .store
            .save_setting(setting_keys::ZADARMA, &json)
            .await
    }

    pub async fn update_settings(
        &self,
        update: ZadarmaSettingsUpdate,
    ) -> Result<ZadarmaSettings, ZadarmaActionError> {
        let mut settings = self.settings().await?;
        settings
            .apply(update)
            .map_err(|(field, message)| ZadarmaActionError::Invalid(field, message))?;
        self.save(&settings).await?;
        Ok(settings)
    }

    async fn client(
        &self,
        settings: &ZadarmaSettings,
    ) -> Result<ZadarmaClient, ZadarmaActionError> {
        if !settings.is_connected() {
            return Err(ZadarmaActionError::NotConnected);
        }
        let base_url = Url::parse(&settings.api_url)
            .map_err(|_| ZadarmaActionError::Invalid("api_url", "Url не разобран".into()))?;
        Ok(ZadarmaClient::new(
            Credentials {
                base_url,
                key: settings.key.clone(),
                secret: settings.secret.clone(),
            },
            self.context.http().await?,
        ))
    }

    /// «Проверить подключение»: the balance answers only to a right key
    /// and secret.
    pub async fn check(&self) -> Result<Balance, ZadarmaActionError> {
        let settings = self.settings().await?;
        Ok(self.client(&settings).await?.balance().await?)
    }

    /// «Получить АТС»: stores the PBX id and its extensions; extensions
    /// already mapped keep their employee, removed ones go.
    pub async fn load_pbx(&self) -> Result<ZadarmaSettings, ZadarmaActionError> {
        let mut settings = self.settings().await?;
        let pbx = self.client(&settings).await?.pbx().await?;
        let mut numbers = pbx.numbers;
        numbers.sort();
        numbers.dedup();
        settings.extensions = numbers
            .into_iter()
            .map(|number| Extension {
                manager_id: settings.manager_of(&number).cloned(),
                number,
            })
            .collect();
        settings.pbx_id = Some(pbx.pbx_id);
        self.save(&settings).await?;
        Ok(settings)
    }

    /// Sets who answers each extension; extensions not named keep theirs.
    /// Unknown extensions are refused (load the PBX first).
    pub async fn map_extensions(
        &self,
        mapping: &BTreeMap<String, Option<ManagerId>>,
    ) -> Result<ZadarmaSettings, ZadarmaActionError> {
        let mut settings = self.settings().await?;
        for (number, manager_id) in mapping {
            let extension = settings
                .extensions
                .iter_mut()
                .find(|e| &e.number == number)
                .ok_or_else(|| {
                    ZadarmaActionError::Invalid(
                        "extensions",
                        format!("Внутреннего номера {number} нет в АТС — нажмите «Получить АТС»"),
                    )
                })?;
            extension.manager_id = manager_id.clone();
        }
        let mut taken = std::collections::HashSet::new();
        for manager_id in settings
            .extensions
            .iter()
            .filter_map(|e| e.manager_id.as_ref())
        {
            if !taken.insert(manager_id) {
                return Err(ZadarmaActionError::Invalid(
                    "extensions",
                    format!("Сотрудник {manager_id} назначен на несколько внутренних номеров"),
                ));
            }
        }
        self.save(&settings).await?;
        Ok(settings)
    }

    /// Click-to-call: Zadarma rings `extension` first and, once answered,
    /// dials `phone`.
    pub async fn callback(&self, extension: &str, phone: &str) -> Result<(), ZadarmaActionError> {
        let settings = self.settings().await?;
        if !settings.extensions.iter().any(|e| e.number == extension) {
            return Err(ZadarmaActionError::Invalid(
                "from",
                format!("Внутреннего номера {extension} нет в АТС"),
            ));
        }
        let to = normalize_phone(phone).ok_or_else(|| {
            ZadarmaActionError::Invalid("to", format!("«{phone}» не похоже на номер телефона"))
        })?;
        self.client(&settings)
            .await?
            .callback(extension, &to)
            .await?;
        Ok(())
    }

    /// The browser phone's key and the login its widget wants
    /// (`<pbx_id>-<extension>`, integrations.md §1.3).
    pub async fn webrtc_key(&self, extension: &str) -> Result<WebrtcLogin, ZadarmaActionError> {
        let settings = self.settings().await?;
        if !settings.webrtc_enabled {
            return Err(ZadarmaActionError::Invalid(
                "webrtc_enabled",
                "WebRTC выключен в настройках Zadarma".into(),
            ));
        }
        let pbx_id = settings.pbx_id.clone().ok_or_else(|| {
            ZadarmaActionError::Invalid("pbx_id", "Сначала нажмите «Получить АТС»".into())
        })?;
        let key = self.client(&settings).await?.webrtc_key(extension).await?;
        Ok(WebrtcLogin {
            key,
            login: format!("{pbx_id}-{extension}"),
        })
    }

    /// A fresh link to a recording, for playing it from Zadarma.
    pub async fn recording_link(&self, recording_id: &str) -> Result<String, ZadarmaActionError> {
        let settings = self.settings().await?;
        Ok(self
            .client(&settings)
            .await?
            .record_link(recording_id)
            .await?)
    }

    /// Handles one notification: checks its signature, writes the journal,
    /// queues the recording and, for an incoming call, decides where it
    /// rings.
    pub async fn notify(
        &self,
        fields: Vec<(String, String)>,
        signature: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<NotifyReply, NotificationRefused> {
        let settings = self.settings().await?;
        if !settings.is_connected() {
            return Err(NotificationRefused::NotConnected);
        }
        let notification = Notification::verified(fields, signature, &settings.secret)?;
        let pbx_call_id = notification.field("pbx_call_id").trim().to_owned();
        if pbx_call_id.is_empty()
            || pbx_call_id.len() > 256
            || pbx_call_id.chars().any(char::is_control)
        {
            return Err(NotificationRefused::NoCallId);
        }
        let store = &self.context.store;
        let event = notification.event;
        let started_at = self
            .pbx_time(notification.field("call_start"))
            .unwrap_or(now);
        let direction = match event {
            Event::OutStart | Event::OutEnd => Direction::Outgoing,
            Event::Record if pbx_call_id.starts_with("out_") => Direction::Outgoing,
            _ => Direction::Incoming,
        };
        let mut update = TelephonyUpdate::new(
            PROVIDER,
            &pbx_call_id,
            direction,
            started_at,
            event.as_str(),
            now,
        );
        let text =
            |name: &str| Some(notification.field(name).trim().to_owned()).filter(|v| !v.is_empty());
        let extension = text("internal");
        if let Some(extension) = &extension {
            update.manager_id = settings.manager_of(extension).cloned();
        }
        update.extension = extension;
        update.client_phone = match event {
            Event::OutStart | Event::OutEnd => text("destination"),
            Event::Record => None,
            _ => text("caller_id"),
        };
        if matches!(
            event,
            Event::Start | Event::Internal | Event::End | Event::Ivr
        ) {
            update.our_number = text("called_did");
        }
        let client = match update.client_phone.as_deref().and_then(normalize_phone) {
            Some(phone) => store.client_by_phone(&phone).await?,
            None => None,
        };
        if let Some(client) = &client {
            update.client_name = client.name.clone();
        }
        let mut reply = NotifyReply::default();
        match event {
            Event::Start | Event::Ivr => {
                if let Some(client) = &client {
                    reply.caller_name = client.name.clone();
                    let assigned = client
                        .manager_id
                        .as_ref()
                        .filter(|_| settings.route_to_assigned_manager)
                        .and_then(|manager| settings.extension_of(manager).map(|e| (manager, e)));
                    if let Some((manager, extension)) = assigned {
                        reply.redirect = Some(extension.to_owned());
                        reply.return_timeout = Some(settings.route_ring_secs);
                        update.routed_to = Some(extension.to_owned());
                        update.manager_id = Some(manager.clone());
                    }
                }
            }
            Event::Answer => update.answered_at = Some(now),
            Event::End | Event::OutEnd => {
                update.ended_at = Some(now);
                update.duration_secs = notification.field("duration").trim().parse().ok();
                update.disposition = text("disposition");
            }
            Event::Internal | Event::OutStart | Event::Record => {}
        }
        if notification.has_recording() {
            update.recording_id = text("call_id_with_rec");
        }
        store.record_telephony(&update).await?;
        tracing::info!(event = event.as_str(), pbx_call_id = %pbx_call_id, routed_to = ?update.routed_to, "Zadarma notification");

        if let Some(recording_id) = update.recording_id.filter(|_| settings.analyze_recordings) {
            let delay = if event == Event::Record {
                0
            } else {
                RECORDING_DELAY_SECS
            };
            let payload = serde_json::to_string(&RecordingTask {
                pbx_call_id: pbx_call_id.clone(),
                recording_id: recording_id.clone(),
            })
            .map_err(rop_domain::store::backend_error)?;
            store
                .enqueue_task(
                    &NewTask {
                        kind: RECORDING_TASK.to_owned(),
                        key: recording_id,
                        payload,
                        due_at: now + chrono::Duration::seconds(delay),
                        max_attempts: RECORDING_ATTEMPTS,
                    },
                    now,
                )
                .await?;
        }
        Ok(reply)
    }

    /// Zadarma's naive `YYYY-MM-DD HH:MM:SS` in the PBX's zone.
    fn pbx_time(&self, raw: &str) -> Option<DateTime<Utc>> {
        let naive = NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
        naive
            .and_local_timezone(self.context.local_offset)
            .single()
            .map(|t| t.with_timezone(&Utc))
    }

    async fn fetch_recording(&self, task: &ClaimedTask) -> TaskOutcome {
        let now = Utc::now();
        let retry = |error: String| TaskOutcome::Retry {
            at: now + backoff(task.attempt),
            error,
        };
        let Ok(job) = serde_json::from_str::<RecordingTask>(&task.payload) else {
            return TaskOutcome::Failed {
                error: "задача без pbx_call_id и call_id_with_rec".into(),
            };
        };
        let store = &self.context.store;
        let settings = match self.settings().await {
            Ok(settings) => settings,
            Err(error) => return retry(error.to_string()),
        };
        let Ok(call_id) = CallId::parse(&format!("zadarma-{}", job.recording_id)) else {
            return TaskOutcome::Failed {
                error: "недопустимый call_id_with_rec".into(),
            };
        };
        let journal = match store.telephony_call(&job.pbx_call_id).await {
            Ok(journal) => journal,
            Err(error) => return retry(error.to_string()),
        };
        // A retry after a crash between storing the call and noting it in
        // the journal: the call is there, only the note is missing.
        match store.call(&call_id).await {
            Ok(Some(_)) => return self.link_journal(&job, journal, call_id, now).await,
            Ok(None) => {}
            Err(error) => return retry(error.to_string()),
        }
        let client = match self.client(&settings).await {
            Ok(client) => client,
            Err(error) => {
                return TaskOutcome::Failed {
                    error: error.to_string(),
                }
            }
        };
        let link = match client.record_link(&job.recording_id).await {
            Ok(link) => link,
            Err(ZadarmaError::Unauthorized(message)) => {
                return TaskOutcome::Failed {
                    error: format!("Zadarma отклонила ключ: {message}"),
                }
            }
            Err(error) => return retry(error.to_string()),
        };
        let Ok(recording) = Url::parse(&link) else {
            return retry(format!("Zadarma дала не ссылку: {link}"));
        };
        let imported = self.imported_call(
            &settings,
            &job,
            journal.as_ref(),
            call_id.clone(),
            recording,
        );
        match submit(store.as_ref(), imported, self.context.job_attempts, now).await {
            Ok(_) => self.link_journal(&job, journal, call_id, now).await,
            Err(error) => retry(error.to_string()),
        }
    }

    fn imported_call(
        &self,
        settings: &ZadarmaSettings,
        job: &RecordingTask,
        journal: Option<&TelephonyCall>,
        call_id: CallId,
        recording: Url,
    ) -> ImportedCall {
        let extension = journal.and_then(|j| j.extension.clone());
        let manager_id = journal
            .and_then(|j| j.manager_id.clone())
            .or_else(|| {
                extension
                    .as_deref()
                    .and_then(|e| settings.manager_of(e).cloned())
            })
            .unwrap_or_else(|| {
                let fallback = format!("zadarma-{}", extension.as_deref().unwrap_or("unknown"));
                ManagerId::parse(&fallback).unwrap_or_else(|_| {
                    ManagerId::parse("zadarma-unknown").expect("a valid literal id")
                })
            });
        let mut metadata = BTreeMap::from([
            ("source".to_owned(), PROVIDER.to_owned()),
            ("pbx_call_id".to_owned(), job.pbx_call_id.clone()),
            ("recording_id".to_owned(), job.recording_id.clone()),
        ]);
        if let Some(extension) = &extension {
            metadata.insert("extension".into(), extension.clone());
        }
        if let Some(disposition) = journal.and_then(|j| j.disposition.clone()) {
            metadata.insert("disposition".into(), disposition);
        }
        ImportedCall {
            call_id,
            manager_id,
            recording,
            direction: journal.map(|j| j.direction),
            client_phone: journal.and_then(|j| j.client_phone.clone()),
            client_name: journal.and_then(|j| j.client_name.clone()),
            deal_id: None,
            deal_stage_id: None,
            started_at: journal.map(|j| j.started_at),
            duration_secs: journal.and_then(|j| j.duration_secs).map(f64::from),
            metadata,
            origin: format!("Запись звонка {} получена из Zadarma", job.pbx_call_id),
        }
    }

    async fn link_journal(
        &self,
        job: &RecordingTask,
        journal: Option<TelephonyCall>,
        call_id: CallId,
        now: DateTime<Utc>,
    ) -> TaskOutcome {
        let (direction, started_at) = journal
            .as_ref()
            .map_or((Direction::Incoming, now), |j| (j.direction, j.started_at));
        let last_event = journal.map_or_else(|| "NOTIFY_RECORD".to_owned(), |j| j.last_event);
        let mut update = TelephonyUpdate::new(
            PROVIDER,
            &job.pbx_call_id,
            direction,
            started_at,
            &last_event,
            now,
        );
        update.recording_id = Some(job.recording_id.clone());
        update.call_id = Some(call_id);
        match self.context.store.record_telephony(&update).await {
            Ok(()) => TaskOutcome::Done,
            Err(error) => TaskOutcome::Retry {
                at: now + chrono::Duration::seconds(30),
                error: error.to_string(),
            },
        }
    }
}

/// What the browser phone widget needs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebrtcLogin {
    pub key: String,
    pub login: String,
}

#[async_trait]
impl TaskHandler for Zadarma {
    fn kinds(&self) -> &'static [&'static str] {
        &[RECORDING_TASK]
    }

    async fn run(&self, task: &ClaimedTask) -> TaskOutcome {
        self.fetch_recording(task).await
    }
}
