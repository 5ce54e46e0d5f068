//! What the integrations with telephony and CRMs keep (PRODUCT.md §8): their
//! settings, the clients directory, the telephony journal, and a durable
//! queue of their background work (fetching a recording, an export).
//!
//! The queue works like the pipeline's jobs: a task is a row a worker
//! leases; a worker that dies stops extending its lease and the task is
//! claimed again, so accepted work survives a restart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::call::Direction;
use crate::id::{CallId, ManagerId};

/// Settings keys of the integrations (values are JSON).
pub mod setting_keys {
    pub const ZADARMA: &str = "integration.zadarma";
    pub const AMOCRM: &str = "integration.amocrm";
    pub const BITRIX24: &str = "integration.bitrix24";
    /// amoCRM's OAuth token pair, apart from the settings so that a refresh
    /// swaps only the pair (its refresh token is single-use).
    pub const AMOCRM_TOKENS: &str = "integration.amocrm.tokens";
    pub const BITRIX24_TOKENS: &str = "integration.bitrix24.tokens";
}

/// Metadata keys of a call imported from a CRM: which CRM, and the record
/// (deal, contact …) its analysis is written back to.
pub mod crm_metadata {
    /// `amocrm` or `bitrix24`.
    pub const CRM: &str = "crm";
    /// `leads`, `contacts`, `companies` (amoCRM); `deal`, `contact`,
    /// `lead`, `company` (Bitrix24).
    pub const ENTITY_TYPE: &str = "crm_entity_type";
    pub const ENTITY_ID: &str = "crm_entity_id";
}

/// The kind of the task that writes a call's analysis back to its CRM.
pub fn write_back_kind(crm: &str) -> Option<&'static str> {
    match crm {
        "amocrm" => Some("amocrm.write_back"),
        "bitrix24" => Some("bitrix24.write_back"),
        _ => None,
    }
}

/// The write-back task an analysed call gets when it came from a CRM. The
/// analysis step stores it with its results, in one transaction, so a
/// result is never left unsent by a crash; an analysis repeated later
/// queues the task again.
pub fn write_back_task(call: &crate::call::Call, now: DateTime<Utc>) -> Option<NewTask> {
    let kind = write_back_kind(call.metadata.get(crm_metadata::CRM)?)?;
    call.metadata.get(crm_metadata::ENTITY_ID)?;
    Some(NewTask {
        kind: kind.to_owned(),
        key: call.call_id.as_str().to_owned(),
        payload: "{}".to_owned(),
        due_at: now,
        max_attempts: 8,
    })
}

/// A phone number reduced to its digits, the key of the clients directory
/// and of routing. Russian numbers written with a leading 8 or without the
/// country code become `7XXXXXXXXXX`, so `8 (900) 123-45-67`,
/// `+7 900 123 45 67` and `9001234567` are one client.
pub fn normalize_phone(raw: &str) -> Option<String> {
    if raw.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.len() {
        11 if digits.starts_with('8') => format!("7{}", &digits[1..]),
        10 if digits.starts_with('9') => format!("7{digits}"),
        _ => digits,
    };
    (5..=15).contains(&digits.len()).then_some(digits)
}

/// One entry of the clients directory: who the phone belongs to and which
/// manager the client is assigned to.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Client {
    /// Digits only, as `normalize_phone` makes them.
    pub phone: String,
    pub name: Option<String>,
    pub manager_id: Option<ManagerId>,
    /// Who filled the entry: `manual`, `amocrm`, `bitrix24`.
    pub source: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientUpdate {
    /// Already normalized.
    pub phone: String,
    pub name: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub source: String,
}

/// A call the PBX told us about, merged from its notifications. Keyed by the
/// PBX's id of the external call (Zadarma `pbx_call_id`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TelephonyCall {
    pub pbx_call_id: String,
    /// `zadarma`.
    pub provider: String,
    pub direction: Direction,
    /// The client's number (caller for incoming calls, destination for
    /// outgoing ones), as the PBX wrote it.
    pub client_phone: Option<String>,
    /// Our number the client dialled (incoming calls).
    pub our_number: Option<String>,
    /// The extension that rang, answered or dialled.
    pub extension: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub client_name: Option<String>,
    /// The extension we told the PBX to send the call to.
    pub routed_to: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<u32>,
    /// The PBX's word for the result: `answered`, `busy`, `no answer`, …
    pub disposition: Option<String>,
    /// The PBX's id of the recording (Zadarma `call_id_with_rec`).
    pub recording_id: Option<String>,
    /// The call made from the recording, once it entered the pipeline.
    pub call_id: Option<CallId>,
    /// The last notification: `NOTIFY_END`, …
    pub last_event: String,
    pub updated_at: DateTime<Utc>,
}

/// What one notification tells about a call. `None` fields leave what is
/// stored as it is, so notifications arriving in any order merge into one
/// row.
#[derive(Debug, Clone, PartialEq)]
pub struct TelephonyUpdate {
    pub pbx_call_id: String,
    pub provider: String,
    /// Used when the row is created; later notifications cannot change it.
    pub direction: Direction,
    /// Used when the row is created.
    pub started_at: DateTime<Utc>,
    pub client_phone: Option<String>,
    pub our_number: Option<String>,
    pub extension: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub client_name: Option<String>,
    pub routed_to: Option<String>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<u32>,
    pub disposition: Option<String>,
    pub recording_id: Option<String>,
    pub call_id: Option<CallId>,
    pub last_event: String,
    pub at: DateTime<Utc>,
}

impl TelephonyUpdate {
    /// An update that only names the call and its event.
    pub fn new(
        provider: &str,
        pbx_call_id: &str,
        direction: Direction,
        started_at: DateTime<Utc>,
        event: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            pbx_call_id: pbx_call_id.to_owned(),
            provider: provider.to_owned(),
            direction,
            started_at,
            client_phone: None,
            our_number: None,
            extension: None,
            manager_id: None,
            client_name: None,
            routed_to: None,
            answered_at: None,
            ended_at: None,
            duration_secs: None,
            disposition: None,
            recording_id: None,
            call_id: None,
            last_event: event.to_owned(),
            at,
        }
    }
}

/// A page of the journal, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelephonyFilter {
    /// Only these managers' calls (what a web user may see); `None` means
    /// all, including calls no manager is known for.
    pub managers: Option<Vec<ManagerId>>,
    /// Calls started before this moment (the cursor).
    pub before: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// Background work of an integration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// What to do: `zadarma.recording`, `amocrm.export`, …
    pub kind: String,
    /// What it is about, unique per kind: the same work is queued once.
    pub key: String,
    /// The worker's input and progress, JSON.
    pub payload: String,
    pub due_at: DateTime<Utc>,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
    /// Stopped by a user (an export), not to be resumed.
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = crate::call::UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| crate::call::UnknownValue(s.to_owned()))
    }
}

/// A task leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub payload: String,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub worker: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    Done,
    /// Try again at `at` unless attempts are used up (then `Failed`).
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// A task as the interface shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskRecord {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub state: TaskState,
    pub payload: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::normalize_phone;

    #[test]
    fn phones_in_every_common_russian_form_are_one_number() {
        for raw in [
            "+7 900 123-45-67",
            "8 (900) 123-45-67",
            "79001234567",
            "9001234567",
        ] {
            assert_eq!(
                normalize_phone(raw).as_deref(),
                Some("79001234567"),
                "{raw}"
            );
        }
        assert_eq!(normalize_phone("100").as_deref(), None);
        assert_eq!(normalize_phone("abc12345").as_deref(), None);
        assert_eq!(
            normalize_phone("+44 20 3769 1881").as_deref(),
            Some("442037691881")
        );
        assert_eq!(normalize_phone("").as_deref(), None);
    }
}
