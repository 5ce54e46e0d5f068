//! Durable jobs: each step of a call's processing is a row in the database
//! that a worker leases, heartbeats and finishes (PRODUCT.md §4).
//!
//! A lease is a time limit, not an open transaction: a worker that dies
//! simply stops extending it, and once it has run out any worker may claim
//! the job again. Every step is written so that running it twice is harmless.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::call::{CallStatus, NewCallEvent};
use crate::id::CallId;
use crate::transcript::{AudioFacts, Transcript};

/// The steps of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Download,
    Decode,
    Transcribe,
    Analyze,
    Deliver,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Decode => "decode",
            Self::Transcribe => "transcribe",
            Self::Analyze => "analyze",
            Self::Deliver => "deliver",
        }
    }

    /// The call's status while this step is waiting or running.
    pub fn call_status(self) -> CallStatus {
        match self {
            Self::Download => CallStatus::Downloading,
            Self::Decode => CallStatus::Decoding,
            Self::Transcribe => CallStatus::Transcribing,
            Self::Analyze => CallStatus::Analyzing,
            Self::Deliver => CallStatus::Delivering,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Download,
            Self::Decode,
            Self::Transcribe,
            Self::Analyze,
            Self::Deliver,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
        .ok_or_else(|| format!("unknown job kind `{s}`"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker (a first run or a retry after `run_after`).
    Queued,
    /// Leased by a worker.
    Running,
    Done,
    /// Out of attempts, or failed for a reason retrying cannot fix.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Queued, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`"))
    }
}

/// A job to queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewJob {
    pub kind: JobKind,
    pub max_attempts: u32,
}

/// A job as a worker holds it after claiming it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: JobKind,
    pub call_id: CallId,
    /// 1 for the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The worker holding the lease; every later write is conditional on it.
    pub worker: String,
}

/// How a run of a job ended; the store applies it, together with the call's
/// status and history, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The step is done; `next` is queued in the same transaction, and the
    /// call is `done` when there is none.
    Done {
        next: Option<NewJob>,
        event: NewCallEvent,
        output: StepOutput,
    },
    /// The call turned out not to need processing (shorter than the
    /// minimum): the job is done and the call `skipped`.
    Skipped { reason: String, event: NewCallEvent },
    /// Try again at `at` (the caller has checked attempts are left).
    Retry {
        at: DateTime<Utc>,
        error: String,
        event: NewCallEvent,
    },
    /// The worker is stopping: the job goes back to the queue as it was,
    /// without using up an attempt.
    Released { event: NewCallEvent },
    /// Give up: the job and the call fail with this reason.
    Failed {
        /// Machine-readable, e.g. `not_audio`, `too_large`, `attempts_exhausted`.
        reason: String,
        /// For people, Russian.
        message: String,
    },
}

/// What a step produced, stored in the same transaction that finishes its
/// job: a worker that lost its lease writes nothing, so a result exists
/// once however many times the step ran.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StepOutput {
    #[default]
    Nothing,
    Audio(AudioFacts),
    Transcript(Box<Transcript>),
    /// Checklist results, table data and the webhook deliveries they make;
    /// replaces an earlier analysis of the call.
    Analysis(Box<crate::analysis::CallAnalysis>),
}

impl StepOutput {
    /// Whether finishing the step leaves webhooks to send.
    pub fn has_deliveries(&self) -> bool {
        matches!(self, Self::Analysis(analysis) if !analysis.deliveries.is_empty())
    }
}

/// A job as `GET /api/v1/calls/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobRecord {
    pub kind: JobKind,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}
