//! A call: what the CRM sent us, where it stands in the pipeline, and its
//! processing history.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::id::{CallId, ManagerId, OfficeId};

/// The call's life (PRODUCT.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Received,
    Downloading,
    Decoding,
    Transcribing,
    Analyzing,
    Delivering,
    Done,
    Skipped,
    Failed,
}

impl CallStatus {
    pub const ALL: [CallStatus; 9] = [
        Self::Received,
        Self::Downloading,
        Self::Decoding,
        Self::Transcribing,
        Self::Analyzing,
        Self::Delivering,
        Self::Done,
        Self::Skipped,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Downloading => "downloading",
            Self::Decoding => "decoding",
            Self::Transcribing => "transcribing",
            Self::Analyzing => "analyzing",
            Self::Delivering => "delivering",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Outgoing => "outgoing",
        }
    }
}

impl FromStr for Direction {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "incoming" => Ok(Self::Incoming),
            "outgoing" => Ok(Self::Outgoing),
            other => Err(UnknownValue(other.to_owned())),
        }
    }
}

/// Where the call's audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSource {
    /// A link the CRM gave us; downloaded by the pipeline.
    Url(url::Url),
    /// A file uploaded with the request, already in the blob store.
    Blob { key: String, size_bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl FromStr for EventLevel {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "error" => Ok(Self::Error),
            other => Err(UnknownValue(other.to_owned())),
        }
    }
}

/// One line of a call's processing history.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCallEvent {
    pub at: DateTime<Utc>,
    /// Pipeline step the line belongs to: `upload`, `probe`, `download`, …
    pub step: String,
    pub level: EventLevel,
    pub message: String,
}

impl NewCallEvent {
    pub fn info(at: DateTime<Utc>, step: &str, message: impl Into<String>) -> Self {
        Self {
            at,
            step: step.to_owned(),
            level: EventLevel::Info,
            message: message.into(),
        }
    }

    pub fn warning(at: DateTime<Utc>, step: &str, message: impl Into<String>) -> Self {
        Self {
            level: EventLevel::Warning,
            ..Self::info(at, step, message)
        }
    }

    pub fn error(at: DateTime<Utc>, step: &str, message: impl Into<String>) -> Self {
        Self {
            level: EventLevel::Error,
            ..Self::info(at, step, message)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallEvent {
    pub at: DateTime<Utc>,
    pub step: String,
    pub level: EventLevel,
    pub message: String,
}

/// An accepted upload, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    pub call_id: CallId,
    pub manager_id: ManagerId,
    pub deal_id: Option<String>,
    pub deal_stage_id: Option<String>,
    pub stage_id: Option<String>,
    pub direction: Option<Direction>,
    pub client_phone: Option<String>,
    pub client_name: Option<String>,
    pub call_started_at: Option<DateTime<Utc>>,
    pub declared_duration_secs: Option<f64>,
    pub source: AudioSource,
    /// Which stereo channel is the manager's for this call, overriding the
    /// connection settings.
    pub manager_channel: Option<u8>,
    /// Fields the CRM sent that we do not know, kept as strings.
    pub metadata: BTreeMap<String, String>,
    /// `Received` or `Skipped`; later states are the pipeline's business.
    pub status: CallStatus,
    pub status_reason: Option<String>,
    pub received_at: DateTime<Utc>,
    pub events: Vec<NewCallEvent>,
    /// The first processing step, queued in the same transaction.
    pub first_job: Option<crate::jobs::NewJob>,
}

/// A stored call as integrators and the UI see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Call {
    pub call_id: CallId,
    pub manager_id: ManagerId,
    pub deal_id: Option<String>,
    pub deal_stage_id: Option<String>,
    pub stage_id: Option<String>,
    pub direction: Option<Direction>,
    pub client_phone: Option<String>,
    pub client_name: Option<String>,
    pub call_started_at: Option<DateTime<Utc>>,
    /// Duration the CRM declared, in seconds.
    pub declared_duration: Option<f64>,
    /// The link the audio comes from, when it was not uploaded as a file.
    pub audio_url: Option<String>,
    /// Size of the uploaded file, when the audio came as a file part.
    pub uploaded_file_bytes: Option<u64>,
    pub status: CallStatus,
    /// Why the call is skipped or failed.
    pub status_reason: Option<String>,
    /// Machine-readable reason of a failure: `not_audio`, `too_large`, …
    pub failure_code: Option<String>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Average checklist completion, once analysed.
    pub completion_percentage: Option<f64>,
    /// The recording as decoded: format, channels, real duration.
    pub audio: Option<crate::transcript::AudioFacts>,
    /// Stereo channel of the manager set for this call (otherwise the
    /// connection settings decide).
    pub manager_channel: Option<u8>,
    pub metadata: BTreeMap<String, String>,
    /// Position of the call in listings; the cursor of `GET /calls`.
    #[serde(skip)]
    pub seq: i64,
    /// Blob store key of the audio to process: the uploaded file, or the
    /// file the download step fetched.
    #[serde(skip)]
    pub audio_blob: Option<String>,
}

/// A call with everything derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallDetails {
    #[serde(flatten)]
    pub call: Call,
    pub history: Vec<CallEvent>,
    /// The processing steps, with attempts and the last error of each.
    pub jobs: Vec<crate::jobs::JobRecord>,
    /// The dialogue with speaker roles and metrics, once transcribed.
    pub transcript: Option<crate::transcript::Transcript>,
    /// Each matching checklist scored on this call.
    pub checklists: Vec<crate::analysis::ChecklistResult>,
    /// Each matching table filled from this call.
    pub tables: Vec<crate::analysis::TableResult>,
    /// Webhooks sent with the results, with every attempt.
    pub deliveries: Vec<crate::delivery::DeliveryRecord>,
}

/// What a deletion removed, so the caller can delete the audio too.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedCall {
    /// The uploaded file and the downloaded recording, whichever exist.
    pub blob_keys: Vec<String>,
}

/// Filters of `GET /api/v1/calls`. Every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFilter {
    /// Calls that happened at or after this moment (call time, or receipt time when unknown).
    pub from: Option<DateTime<Utc>>,
    /// Calls that happened before this moment.
    pub to: Option<DateTime<Utc>>,
    pub manager_id: Option<ManagerId>,
    pub office_id: Option<OfficeId>,
    pub status: Option<CallStatus>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
    /// Only these managers' calls (what a web user may see); `None` means
    /// everyone's, an empty list nobody's.
    pub managers: Option<Vec<ManagerId>>,
    /// Calls whose transcript contains every word of this text in any form
    /// (see `search::search_terms`).
    pub text: Option<String>,
    /// Only calls listed after this cursor (newest first).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallPage {
    pub calls: Vec<Call>,
    /// Cursor for the next page, when there may be one.
    pub next_before_seq: Option<i64>,
}
