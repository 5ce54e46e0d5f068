//! The audit log: who changed which setting, when, and how.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::settings::ConnectionSettings;

/// The actor of changes made with the API key rather than by a user.
pub const API_ACTOR: &str = "API";

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

/// A checklist or table definition as the audit log keeps it: its JSON with
/// the webhook secret replaced by `***`. The web interface and the API both
/// write it, so an entry reads the same whoever made the change.
pub fn definition_details(definition: &impl Serialize) -> String {
    let mut json = serde_json::to_value(definition).unwrap_or_default();
    if let Some(webhook) = json.get_mut("webhook").and_then(|w| w.as_object_mut()) {
        if webhook.contains_key("secret") {
            webhook.insert("secret".into(), serde_json::Value::from("***"));
        }
    }
    json.to_string()
}

/// A change of the connection settings as the audit log keeps it.
pub fn connection_details(before: &ConnectionSettings, after: &ConnectionSettings) -> String {
    serde_json::json!({ "before": before, "after": after }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Checklist;

    #[test]
    fn definition_details_never_carry_the_webhook_secret() {
        let checklist: Checklist = serde_json::from_value(serde_json::json!({
            "checklist_id": "script",
            "name": "Скрипт",
            "stages": [{"stage_id": "greeting", "name": "Приветствие"}],
            "webhook": {"url": "https://crm.example.ru/hook", "secret": "s3cret"},
        }))
        .unwrap();
        let details = definition_details(&checklist);
        assert!(!details.contains("s3cret"), "{details}");
        let json: serde_json::Value = serde_json::from_str(&details).unwrap();
        assert_eq!(json["webhook"]["secret"], "***");
        assert_eq!(json["webhook"]["url"], "https://crm.example.ru/hook");
        assert_eq!(json["checklist_id"], "script");
    }

    #[test]
    fn connection_details_show_both_sides() {
        let before = ConnectionSettings::default();
        let after: ConnectionSettings = serde_json::from_value(serde_json::json!({
            "min_call_duration_secs": 20,
            "manager_channel": 1,
        }))
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&connection_details(&before, &after)).unwrap();
        assert_eq!(json["before"]["min_call_duration_secs"], 0);
        assert_eq!(json["after"]["manager_channel"], 1);
    }
}
