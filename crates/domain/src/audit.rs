//! The audit log: who changed which setting, when, and how.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: DateTime<Utc>,
    /// The user's name, or `API` for changes made with the API key.
    pub actor: String,
    /// What was done, e.g. `checklist.update`.
    pub action: String,
    /// What it was done to, e.g. the checklist id.
    pub target: String,
    /// The change in words or as JSON, never with secrets.
    pub details: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}
