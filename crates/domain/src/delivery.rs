//! Webhook deliveries (PRODUCT.md §6): one per checklist and per table of an
//! analysed call. Each is a durable row that delivery workers lease like a
//! job, so a result reaches the CRM at least once whatever restarts happen.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The event a delivery carries; sent in the `X-Rop-Event` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryEvent {
    /// `checklist.result`
    #[serde(rename = "checklist.result")]
    ChecklistResult,
    /// `table.result`
    #[serde(rename = "table.result")]
    TableResult,
}

impl DeliveryEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChecklistResult => "checklist.result",
            Self::TableResult => "table.result",
        }
    }
}

impl FromStr for DeliveryEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "checklist.result" => Ok(Self::ChecklistResult),
            "table.result" => Ok(Self::TableResult),
            other => Err(format!("unknown delivery event `{other}`")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Leased by a delivery worker.
    Sending,
    /// The receiver answered 2xx.
    Delivered,
    /// A final answer (4xx other than 429), or 24 hours of retries.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Sending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown delivery state `{s}`"))
    }
}

/// A delivery to create, written with the analysis that produced it.
#[derive(Clone, PartialEq)]
pub struct NewDelivery {
    /// Unique; the receiver's idempotency key (`X-Rop-Delivery`).
    pub delivery_id: String,
    pub event: DeliveryEvent,
    /// The checklist or table id.
    pub source_id: String,
    pub url: String,
    pub secret: String,
    /// The JSON body, exactly as it will be sent and signed.
    pub body: String,
}

impl fmt::Debug for NewDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("event", &self.event)
            .field("source_id", &self.source_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A delivery as a worker holds it after claiming it.
#[derive(Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub delivery_id: String,
    pub call_id: crate::id::CallId,
    pub event: DeliveryEvent,
    pub url: String,
    pub secret: String,
    pub body: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    pub worker: String,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("call_id", &self.call_id)
            .field("event", &self.event)
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// One attempt, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// How an attempt ended, applied by the store in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
    },
    /// Give up.
    Failed,
}

/// A delivery as `GET /api/v1/calls/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub event: DeliveryEvent,
    /// The checklist or table id.
    pub source_id: String,
    pub url: String,
    pub state: DeliveryState,
    pub attempts: Vec<DeliveryAttempt>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}
