//! A row of Bitrix24's call statistics (`voximplant.statistic.get`,
//! integrations.md §3.3) made into a call of the pipeline: its recording
//! found through `disk.file.get`, its employee mapped, its CRM record kept
//! for the write-back.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rop_domain::integrations::crm_metadata;
use rop_domain::{normalize_phone, CallId, ClientUpdate, Direction, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;
use utoipa::ToSchema;

use super::client::{number, text, Bitrix24Client, Bitrix24Error};
use super::settings::Bitrix24Settings;
use crate::exports::ExportProgress;
use crate::intake::{submit, ImportedCall};

/// What to export, as the administrator asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct B24ExportRequest {
    /// Calls from this day on.
    pub date_from: NaiveDate,
    /// Portal user ids; empty: everyone's calls.
    #[serde(default)]
    pub user_ids: Vec<i64>,
    /// Shorter calls are left out; the settings' minimum when absent.
    #[serde(default)]
    pub min_duration_secs: Option<u32>,
}

impl B24ExportRequest {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.date_from > Utc::now().date_naive() {
            return Err(("date_from", "Дата начала — в будущем".into()));
        }
        if self.user_ids.len() > 500 || self.user_ids.iter().any(|id| *id <= 0) {
            return Err(("user_ids", "Неверный список сотрудников".into()));
        }
        if self.min_duration_secs.is_some_and(|s| s > 24 * 3600) {
            return Err((
                "min_duration_secs",
                "Минимальная длительность — не больше суток".into(),
            ));
        }
        Ok(())
    }

    /// One line for the audit log.
    pub fn describe(&self) -> String {
        format!(
            "с {}; сотрудники: {}; от {} с",
            self.date_from,
            if self.user_ids.is_empty() {
                "все".to_owned()
            } else {
                self.user_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            self.min_duration_secs
                .map_or_else(|| "как в настройках".to_owned(), |s| s.to_string())
        )
    }
}

/// The task's payload: the request, the last row read, the counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct B24ExportState {
    pub request: B24ExportRequest,
    /// Rows are read by `ID > last_id` (integrations.md §3.2: no totals
    /// counted on big tables).
    pub last_id: i64,
    pub progress: ExportProgress,
    pub finished: bool,
}

pub enum Verdict {
    Imported,
    Skipped,
    /// The recording is not attached yet: worth asking again later.
    NoRecordingYet,
    Failed(String),
}

pub(crate) struct Importer<'a> {
    pub client: &'a Bitrix24Client,
    pub store: &'a dyn Store,
    pub settings: &'a Bitrix24Settings,
    pub job_attempts: u32,
    pub min_duration_secs: u32,
    pub offset: chrono::FixedOffset,
}

fn store_error(error: StoreError) -> Bitrix24Error {
    Bitrix24Error::Unavailable(format!("база данных: {error}"))
}

impl Importer<'_> {
    /// One page of rows after `state.last_id`; marks the state finished on
    /// an empty page.
    pub async fn next_page(&self, state: &mut B24ExportState) -> Result<(), Bitrix24Error> {
        let from = state
            .request
            .date_from
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_local_timezone(self.offset)
            .single()
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let mut filter = json!({
            ">=CALL_START_DATE": from,
            ">ID": state.last_id,
        });
        if self.min_duration_secs > 0 {
            filter[">=CALL_DURATION"] = json!(self.min_duration_secs);
        }
        if !state.request.user_ids.is_empty() {
            filter["PORTAL_USER_ID"] = json!(state.request.user_ids);
        }
        let answer = self
            .client
            .call(
                "voximplant.statistic.get",
                json!({"FILTER": filter, "SORT": "ID", "ORDER": "ASC", "start": -1}),
            )
            .await?;
        let rows = answer.result.as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            state.finished = true;
            state.progress.stage = "done".into();
            return Ok(());
        }
        for row in &rows {
            let Some(id) = number(row.get("ID")) else {
                continue;
            };
            state.last_id = state.last_id.max(id);
            state.progress.found += 1;
            match self.import(row).await? {
                Verdict::Imported => state.progress.imported += 1,
                Verdict::Skipped | Verdict::NoRecordingYet => state.progress.skipped += 1,
                Verdict::Failed(error) => {
                    state.progress.failed += 1;
                    state.progress.last_error = Some(error);
                }
            }
        }
        state.progress.stage = "calls".into();
        Ok(())
    }

    /// Imports one statistics row.
    pub async fn import(&self, row: &Value) -> Result<Verdict, Bitrix24Error> {
        let Some(id) = number(row.get("ID")) else {
            return Ok(Verdict::Failed("строка статистики без ID".into()));
        };
        let duration = number(row.get("CALL_DURATION")).unwrap_or(0).max(0);
        if duration < i64::from(self.min_duration_secs) {
            return Ok(Verdict::Skipped);
        }
        let Ok(call_id) = CallId::parse(&format!("bitrix24-{id}")) else {
            return Ok(Verdict::Failed(format!("звонок {id}: неверный id")));
        };
        if self
            .store
            .call(&call_id)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Ok(Verdict::Skipped);
        }
        let Some(file_id) = number(row.get("RECORD_FILE_ID")) else {
            return Ok(Verdict::NoRecordingYet);
        };
        let file = match self
            .client
            .call("disk.file.get", json!({"id": file_id}))
            .await
        {
            Ok(file) => file.result,
            Err(Bitrix24Error::Api(error)) => {
                return Ok(Verdict::Failed(format!(
                    "звонок {id}: запись {file_id} не получена: {error}"
                )))
            }
            Err(error) => return Err(error),
        };
        let Some(recording) = text(file.get("DOWNLOAD_URL"))
            .and_then(|url| Url::parse(&url).ok())
            .filter(|url| matches!(url.scheme(), "http" | "https"))
        else {
            return Ok(Verdict::Failed(format!(
                "звонок {id}: у записи {file_id} нет ссылки для скачивания"
            )));
        };
        let user = number(row.get("PORTAL_USER_ID")).unwrap_or(0);
        let manager_id = self.settings.manager_of(user);
        let direction = match number(row.get("CALL_TYPE")) {
            Some(1) | Some(4) => Some(Direction::Outgoing),
            Some(2) | Some(3) => Some(Direction::Incoming),
            _ => None,
        };
        let phone = text(row.get("PHONE_NUMBER"));
        let mut metadata = BTreeMap::from([
            (crm_metadata::CRM.to_owned(), "bitrix24".to_owned()),
            (
                "bitrix24_call_id".to_owned(),
                text(row.get("CALL_ID")).unwrap_or_default(),
            ),
        ]);
        let entity_type = text(row.get("CRM_ENTITY_TYPE")).map(|t| t.to_lowercase());
        let entity_id = number(row.get("CRM_ENTITY_ID"));
        if let (Some(entity_type), Some(entity_id)) = (&entity_type, entity_id) {
            metadata.insert(crm_metadata::ENTITY_TYPE.into(), entity_type.clone());
            metadata.insert(crm_metadata::ENTITY_ID.into(), entity_id.to_string());
        }
        if let Some(code) = text(row.get("CALL_FAILED_CODE")) {
            metadata.insert("bitrix24_status".into(), code);
        }
        if let Some(normalized) = phone.as_deref().and_then(normalize_phone) {
            self.remember_client(normalized, manager_id.clone()).await?;
        }
        let started_at = text(row.get("CALL_START_DATE"))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        let imported = ImportedCall {
            call_id,
            manager_id,
            recording,
            direction,
            client_phone: phone,
            client_name: None,
            deal_id: None,
            deal_stage_id: None,
            started_at,
            duration_secs: Some(duration as f64),
            metadata,
            origin: format!("Звонок импортирован из Bitrix24 (статистика, ID {id})"),
        };
        match submit(self.store, imported, self.job_attempts, Utc::now()).await {
            Ok(true) => Ok(Verdict::Imported),
            Ok(false) => Ok(Verdict::Skipped),
            Err(error) => Err(store_error(error)),
        }
    }

    /// The caller goes to the clients directory with the employee who
    /// talked to him, unless someone filled the entry already.
    async fn remember_client(
        &self,
        phone: String,
        manager_id: rop_domain::ManagerId,
    ) -> Result<(), Bitrix24Error> {
        let existing = self
            .store
            .client_by_phone(&phone)
            .await
            .map_err(store_error)?;
        if existing.is_some() {
            return Ok(());
        }
        self.store
            .upsert_clients(
                &[ClientUpdate {
                    phone,
                    name: None,
                    manager_id: Some(manager_id),
                    source: "bitrix24".to_owned(),
                }],
                Utc::now(),
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
