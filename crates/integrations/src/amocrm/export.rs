//! The export of calls from amoCRM (seed 001): call notes of a period read
//! page by page, filtered, and each recording handed to the pipeline with
//! its deal, stage and manager. The task saves its cursor and counters
//! after every page, so a restart goes on from the page it was on.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rop_domain::integrations::crm_metadata;
use rop_domain::{normalize_phone, CallId, ClientUpdate, Direction, Store, StoreError};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use super::client::{AmocrmClient, AmocrmError, CallNote, CallParams, Lead, Pipeline};
use super::settings::AmocrmSettings;
use crate::exports::ExportProgress;
use crate::intake::{submit, ImportedCall};

/// The metadata key of the export that imported a call.
const EXPORT_KEY: &str = "amocrm_export";

/// The entities whose call notes are read, in this order.
pub const ENTITIES: [&str; 3] = ["leads", "contacts", "companies"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportDirection {
    #[default]
    All,
    Outgoing,
    Incoming,
}

/// What to export, as the administrator asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportRequest {
    /// First day, included.
    pub date_from: NaiveDate,
    /// Last day, included.
    pub date_to: NaiveDate,
    /// amoCRM user ids; empty: everyone's calls.
    #[serde(default)]
    pub user_ids: Vec<i64>,
    #[serde(default)]
    pub direction: ExportDirection,
    /// Import calls again even when they were imported before.
    #[serde(default)]
    pub reexport: bool,
    /// Seconds; 0: no limit.
    #[serde(default)]
    pub min_duration_secs: u32,
    /// Seconds; 0: no limit.
    #[serde(default)]
    pub max_duration_secs: u32,
}

impl ExportRequest {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.date_to < self.date_from {
            return Err(("date_to", "Конец периода раньше начала".into()));
        }
        if (self.date_to - self.date_from).num_days() > 366 {
            return Err(("date_to", "Период — не больше года".into()));
        }
        if self.max_duration_secs != 0 && self.max_duration_secs < self.min_duration_secs {
            return Err((
                "max_duration_secs",
                "Максимальная длительность меньше минимальной".into(),
            ));
        }
        if self.user_ids.len() > 500 || self.user_ids.iter().any(|id| *id <= 0) {
            return Err(("user_ids", "Неверный список пользователей".into()));
        }
        Ok(())
    }

    /// One line for the audit log.
    pub fn describe(&self) -> String {
        format!(
            "период {} — {}; пользователи: {}; направление: {}; перевыгрузка: {}; \
             длительность от {} до {} с",
            self.date_from,
            self.date_to,
            if self.user_ids.is_empty() {
                "все".to_owned()
            } else {
                self.user_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            match self.direction {
                ExportDirection::All => "все",
                ExportDirection::Outgoing => "исходящие",
                ExportDirection::Incoming => "входящие",
            },
            if self.reexport { "да" } else { "нет" },
            self.min_duration_secs,
            if self.max_duration_secs == 0 {
                "∞".to_owned()
            } else {
                self.max_duration_secs.to_string()
            },
        )
    }

    /// The period as unix seconds in the installation's zone, both ends in.
    fn bounds(&self, offset: chrono::FixedOffset) -> (i64, i64) {
        let start = |day: NaiveDate| {
            offset
                .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
                .single()
                .map_or(0, |t| t.timestamp())
        };
        let to = self
            .date_to
            .succ_opt()
            .map_or(i64::MAX / 2, |next| start(next) - 1);
        (start(self.date_from), to)
    }

    fn note_types(&self) -> &'static [&'static str] {
        match self.direction {
            ExportDirection::All => &["call_in", "call_out"],
            ExportDirection::Incoming => &["call_in"],
            ExportDirection::Outgoing => &["call_out"],
        }
    }
}

/// The task's payload: the request, where it stopped, what it counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportState {
    /// Tells this export's re-imported calls from earlier ones.
    pub run: String,
    pub request: ExportRequest,
    /// Index into `ENTITIES`.
    pub entity: usize,
    /// The next page to read, 1-based.
    pub page: u32,
    pub progress: ExportProgress,
}

impl ExportState {
    pub fn new(request: ExportRequest) -> Self {
        Self {
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            request,
            entity: 0,
            page: 1,
            progress: ExportProgress {
                stage: ENTITIES[0].to_owned(),
                ..ExportProgress::default()
            },
        }
    }

    pub fn is_finished(&self) -> bool {
        self.entity >= ENTITIES.len()
    }
}

/// What one note became.
enum Verdict {
    Imported,
    Skipped,
    Failed(String),
}

/// Reads one page and imports what it holds; moves the cursor on.
pub(crate) struct PageRun<'a> {
    pub client: &'a AmocrmClient,
    pub store: &'a dyn Store,
    pub settings: &'a AmocrmSettings,
    pub offset: chrono::FixedOffset,
    pub job_attempts: u32,
    pub pipelines: &'a [Pipeline],
    pub leads: &'a mut HashMap<i64, Option<Lead>>,
}

impl PageRun<'_> {
    pub async fn next_page(&mut self, state: &mut ExportState) -> Result<(), AmocrmError> {
        let Some(entity) = ENTITIES.get(state.entity) else {
            return Ok(());
        };
        let (from, to) = state.request.bounds(self.offset);
        let page = self
            .client
            .call_notes(entity, state.request.note_types(), from, to, state.page)
            .await?;
        for note in &page.items {
            // amoCRM filters by change time; a note created before the
            // period and edited in it is not a call of the period.
            if note.created_at < from || note.created_at > to {
                continue;
            }
            state.progress.found += 1;
            match self.import(entity, note, state).await {
                Ok(Verdict::Imported) => state.progress.imported += 1,
                Ok(Verdict::Skipped) => state.progress.skipped += 1,
                Ok(Verdict::Failed(error)) => {
                    state.progress.failed += 1;
                    state.progress.last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        if page.has_next {
            state.page += 1;
        } else {
            state.entity += 1;
            state.page = 1;
        }
        state.progress.stage = ENTITIES
            .get(state.entity)
            .map_or("done", |entity| entity)
            .to_owned();
        Ok(())
    }

    async fn import(
        &mut self,
        entity: &str,
        note: &CallNote,
        state: &ExportState,
    ) -> Result<Verdict, AmocrmError> {
        let request = &state.request;
        let direction = match note.note_type.as_str() {
            "call_in" => Direction::Incoming,
            "call_out" => Direction::Outgoing,
            _ => return Ok(Verdict::Skipped),
        };
        let user = note.responsible_user_id.or(note.created_by);
        if !request.user_ids.is_empty() && !user.is_some_and(|u| request.user_ids.contains(&u)) {
            return Ok(Verdict::Skipped);
        }
        let duration = note.params.duration_secs();
        let seconds = duration.unwrap_or(0);
        if seconds < request.min_duration_secs
            || (request.max_duration_secs != 0 && seconds > request.max_duration_secs)
        {
            return Ok(Verdict::Skipped);
        }
        let Some(link) = CallParams::text(&note.params.link) else {
            return Ok(Verdict::Skipped);
        };
        let Ok(recording) = Url::parse(&link) else {
            return Ok(Verdict::Failed(format!(
                "примечание {}: ссылка на запись «{link}» не разобрана",
                note.id
            )));
        };
        if !matches!(recording.scheme(), "http" | "https") {
            return Ok(Verdict::Failed(format!(
                "примечание {}: ссылка на запись не http(s)",
                note.id
            )));
        }
        let id = if request.reexport {
            format!("amocrm-{}-{}", note.id, state.run)
        } else {
            format!("amocrm-{}", note.id)
        };
        let call_id = CallId::parse(&id).map_err(|e| AmocrmError::Api(e.to_string()))?;
        if let Some(existing) = self.store.call(&call_id).await.map_err(store_error)? {
            // Read again after a restart in the middle of a page: this
            // export's own call still counts as imported.
            let ours = existing.call.metadata.get(EXPORT_KEY) == Some(&state.run);
            return Ok(if ours {
                Verdict::Imported
            } else {
                Verdict::Skipped
            });
        }

        let lead = if entity == "leads" {
            self.lead(note.entity_id).await?
        } else {
            None
        };
        let manager_id = self.settings.manager_of(user.unwrap_or(0));
        let phone = CallParams::text(&note.params.phone);
        let mut metadata = BTreeMap::from([
            (crm_metadata::CRM.to_owned(), "amocrm".to_owned()),
            (crm_metadata::ENTITY_TYPE.to_owned(), entity.to_owned()),
            (
                crm_metadata::ENTITY_ID.to_owned(),
                note.entity_id.to_string(),
            ),
            ("amocrm_note_id".to_owned(), note.id.to_string()),
            (EXPORT_KEY.to_owned(), state.run.clone()),
        ]);
        for mapping in &self.settings.field_mapping {
            if let Some(value) = self.mapped_value(&mapping.amocrm, note, lead.as_ref()) {
                metadata.insert(mapping.key.clone(), value);
            }
        }
        if let Some(normalized) = phone.as_deref().and_then(normalize_phone) {
            self.remember_client(normalized, lead.as_ref()).await?;
        }
        let started_at: Option<DateTime<Utc>> = Utc.timestamp_opt(note.created_at, 0).single();
        let imported = ImportedCall {
            call_id,
            manager_id,
            recording,
            direction: Some(direction),
            client_phone: phone,
            client_name: None,
            deal_id: lead.as_ref().map(|l| l.id.to_string()),
            deal_stage_id: lead
                .as_ref()
                .and_then(|l| l.status_id)
                .map(|s| s.to_string()),
            started_at,
            duration_secs: duration.map(f64::from),
            metadata,
            origin: format!(
                "Звонок импортирован из amoCRM (примечание {} в {})",
                note.id,
                entity_name(entity)
            ),
        };
        match submit(self.store, imported, self.job_attempts, Utc::now()).await {
            Ok(true) => Ok(Verdict::Imported),
            Ok(false) => Ok(Verdict::Skipped),
            Err(error) => Err(store_error(error)),
        }
    }

    async fn lead(&mut self, id: i64) -> Result<Option<Lead>, AmocrmError> {
        if let Some(lead) = self.leads.get(&id) {
            return Ok(lead.clone());
        }
        let lead = self.client.lead(id).await?;
        self.leads.insert(id, lead.clone());
        Ok(lead)
    }

    fn mapped_value(&self, source: &str, note: &CallNote, lead: Option<&Lead>) -> Option<String> {
        let params = &note.params;
        match source {
            "note.call_result" => CallParams::text(&params.call_result),
            "note.call_status" => CallParams::text(&params.call_status),
            "note.uniq" => CallParams::text(&params.uniq),
            "note.source" => CallParams::text(&params.source),
            "lead.name" => lead.map(|l| l.name.clone()).filter(|n| !n.is_empty()),
            "lead.price" => lead.and_then(|l| l.price).map(|p| p.to_string()),
            "lead.pipeline" => {
                let pipeline = lead?.pipeline_id?;
                self.pipelines
                    .iter()
                    .find(|p| p.id == pipeline)
                    .map(|p| p.name.clone())
            }
            "lead.status" => {
                let lead = lead?;
                let status = lead.status_id?;
                self.pipelines
                    .iter()
                    .filter(|p| lead.pipeline_id.is_none_or(|id| id == p.id))
                    .flat_map(|p| &p.embedded.statuses)
                    .find(|s| s.id == status)
                    .map(|s| s.name.clone())
            }
            "lead.responsible" => {
                let user = lead?.responsible_user_id?;
                Some(self.settings.manager_of(user).as_str().to_owned())
            }
            other => {
                let field: i64 = other.strip_prefix("lead.field.")?.parse().ok()?;
                let values = lead?
                    .custom_fields_values
                    .iter()
                    .find(|f| f.field_id == field)?;
                let texts: Vec<String> = values
                    .values
                    .iter()
                    .filter_map(|v| CallParams::text(&v.value))
                    .collect();
                (!texts.is_empty()).then(|| texts.join(", "))
            }
        }
    }

    /// Adds the caller to the clients directory with the deal's manager;
    /// an entry someone made by hand or with a name is left as it is.
    async fn remember_client(&self, phone: String, lead: Option<&Lead>) -> Result<(), AmocrmError> {
        let existing = self
            .store
            .client_by_phone(&phone)
            .await
            .map_err(store_error)?;
        if existing
            .as_ref()
            .is_some_and(|c| c.source != "amocrm" || c.name.is_some())
        {
            return Ok(());
        }
        let manager_id = lead
            .and_then(|l| l.responsible_user_id)
            .map(|user| self.settings.manager_of(user))
            .or_else(|| existing.and_then(|c| c.manager_id));
        self.store
            .upsert_clients(
                &[ClientUpdate {
                    phone,
                    name: None,
                    manager_id,
                    source: "amocrm".to_owned(),
                }],
                Utc::now(),
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

fn entity_name(entity: &str) -> &'static str {
    match entity {
        "leads" => "сделке",
        "contacts" => "контакте",
        _ => "компании",
    }
}

fn store_error(error: StoreError) -> AmocrmError {
    AmocrmError::Unavailable(format!("база данных: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(from: &str, to: &str) -> ExportRequest {
        ExportRequest {
            date_from: from.parse().unwrap(),
            date_to: to.parse().unwrap(),
            user_ids: Vec::new(),
            direction: ExportDirection::All,
            reexport: false,
            min_duration_secs: 0,
            max_duration_secs: 0,
        }
    }

    #[test]
    fn both_ends_of_the_period_are_included() {
        let moscow = chrono::FixedOffset::east_opt(3 * 3600).unwrap();
        let (from, to) = request("2024-05-01", "2024-05-01").bounds(moscow);
        // 2024-05-01 00:00:00+03:00 … 23:59:59+03:00
        assert_eq!(from, 1_714_510_800);
        assert_eq!(to, 1_714_510_800 + 86_399);
    }

    #[test]
    fn requests_are_checked() {
        assert_eq!(
            request("2024-05-02", "2024-05-01")
                .validate()
                .unwrap_err()
                .0,
            "date_to"
        );
        let mut wrong = request("2024-05-01", "2024-05-02");
        wrong.min_duration_secs = 60;
        wrong.max_duration_secs = 30;
        assert_eq!(wrong.validate().unwrap_err().0, "max_duration_secs");
        wrong.max_duration_secs = 0;
        assert!(wrong.validate().is_ok());
    }
}
