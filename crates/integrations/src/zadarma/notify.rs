//! Notifications Zadarma posts to `/exec/Zadarma.notify` (integrations.md
//! §1.4): which event, its fields, and whether the signature holds.

use std::collections::HashMap;

use super::signature::verify_notification;

/// One notification, its fields URL-decoded. Missing fields read as empty,
/// as Zadarma signs them.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub event: Event,
    fields: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Internal,
    Answer,
    End,
    OutStart,
    OutEnd,
    Record,
    Ivr,
}

impl Event {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "NOTIFY_START" => Self::Start,
            "NOTIFY_INTERNAL" => Self::Internal,
            "NOTIFY_ANSWER" => Self::Answer,
            "NOTIFY_END" => Self::End,
            "NOTIFY_OUT_START" => Self::OutStart,
            "NOTIFY_OUT_END" => Self::OutEnd,
            "NOTIFY_RECORD" => Self::Record,
            "NOTIFY_IVR" => Self::Ivr,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "NOTIFY_START",
            Self::Internal => "NOTIFY_INTERNAL",
            Self::Answer => "NOTIFY_ANSWER",
            Self::End => "NOTIFY_END",
            Self::OutStart => "NOTIFY_OUT_START",
            Self::OutEnd => "NOTIFY_OUT_END",
            Self::Record => "NOTIFY_RECORD",
            Self::Ivr => "NOTIFY_IVR",
        }
    }

    /// The fields whose values, concatenated, Zadarma signs.
    fn signed_fields(self) -> &'static [&'static str] {
        match self {
            Self::Start | Self::Internal | Self::End | Self::Ivr => {
                &["caller_id", "called_did", "call_start"]
            }
            Self::Answer => &["caller_id", "destination", "call_start"],
            Self::OutStart | Self::OutEnd => &["internal", "destination", "call_start"],
            Self::Record => &["pbx_call_id", "call_id_with_rec"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("нет поля event или неизвестное событие «{0}»")]
    UnknownEvent(String),
    #[error("подпись не совпала")]
    BadSignature,
    #[error("нет заголовка Signature")]
    NoSignature,
}

impl Notification {
    /// Parses a form body and checks its `Signature` header with `secret`.
    pub fn verified(
        fields: impl IntoIterator<Item = (String, String)>,
        signature: Option<&str>,
        secret: &str,
    ) -> Result<Self, NotifyError> {
        let fields: HashMap<String, String> = fields.into_iter().collect();
        let name = fields.get("event").cloned().unwrap_or_default();
        let event = Event::parse(&name).ok_or(NotifyError::UnknownEvent(name))?;
        let signature = signature.ok_or(NotifyError::NoSignature)?;
        let notification = Self { event, fields };
        if verify_notification(secret, &notification.signed_string(), signature) {
            Ok(notification)
        } else {
            Err(NotifyError::BadSignature)
        }
    }

    fn signed_string(&self) -> String {
        self.event
            .signed_fields()
            .iter()
            .map(|name| self.field(name))
            .collect()
    }

    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Whether the call ended with a recording to fetch.
    pub fn has_recording(&self) -> bool {
        match self.event {
            Event::Record => !self.field("call_id_with_rec").is_empty(),
            Event::End | Event::OutEnd => {
                matches!(self.field("is_recorded"), "1" | "true")
                    && !self.field("call_id_with_rec").is_empty()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zadarma::signature::notification_signature;

    const SECRET: &str = "dbf5606ea4c1f2234201";

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_worked_example_verifies() {
        let fields = form(&[
            ("event", "NOTIFY_START"),
            ("caller_id", "+79001234567"),
            ("called_did", "+74951234567"),
            ("call_start", "2024-05-01 12:00:00"),
            ("pbx_call_id", "in_abc"),
        ]);
        let hex_form = "NmNkMGRmMjBlNjI2MzliZDRmNjg1YTk3YjE0MDUxYjQ2ZDEyNzkzZQ==";
        let n = Notification::verified(fields.clone(), Some(hex_form), SECRET).unwrap();
        assert_eq!(n.event, Event::Start);
        assert_eq!(n.field("pbx_call_id"), "in_abc");
        assert_eq!(
            Notification::verified(fields.clone(), Some("x"), SECRET),
            Err(NotifyError::BadSignature)
        );
        assert_eq!(
            Notification::verified(fields, None, SECRET),
            Err(NotifyError::NoSignature)
        );
    }

    #[test]
    fn each_event_signs_its_own_fields() {
        let record = form(&[
            ("event", "NOTIFY_RECORD"),
            ("pbx_call_id", "in_1"),
            ("call_id_with_rec", "1714564800.1"),
        ]);
        let sig = notification_signature(SECRET, "in_11714564800.1");
        let n = Notification::verified(record, Some(&sig), SECRET).unwrap();
        assert!(n.has_recording());
        let out_end = form(&[
            ("event", "NOTIFY_OUT_END"),
            ("internal", "100"),
            ("destination", "+79001234567"),
            ("call_start", "2024-05-01 12:00:00"),
            ("is_recorded", "0"),
            ("call_id_with_rec", "1714564800.2"),
        ]);
        let sig = notification_signature(SECRET, "100+790012345672024-05-01 12:00:00");
        let n = Notification::verified(out_end, Some(&sig), SECRET).unwrap();
        assert!(!n.has_recording(), "is_recorded=0");
    }

    #[test]
    fn unknown_events_are_refused() {
        let fields = form(&[("event", "NOTIFY_SOMETHING")]);
        assert!(matches!(
            Notification::verified(fields, Some("x"), SECRET),
            Err(NotifyError::UnknownEvent(_))
        ));
    }
}
