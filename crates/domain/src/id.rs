//! Identifiers that come from a CRM. They are opaque strings to us, but they
//! must be printable, bounded and free of control characters so that they are
//! safe to store, log and show.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier we accept, in characters (PRODUCT.md §3: call_id ≤ 256).
pub const MAX_ID_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn parse_external_id(raw: &str) -> Result<String, InvalidId> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(InvalidId::Empty);
    }
    if trimmed.chars().count() > MAX_ID_CHARS {
        return Err(InvalidId::TooLong);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidId::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                parse_external_id(raw).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <String as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

external_id!(
    /// The CRM's unique id of a call; unique per installation.
    CallId
);
external_id!(
    /// The CRM's id of a person: a manager or an office leader.
    ManagerId
);
external_id!(
    /// The CRM's id of an office.
    OfficeId
);
external_id!(
    /// Id of an analysis table, `TBL_<unix time>` for tables created here.
    TableId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_accepts_ordinary_ids() {
        assert_eq!(CallId::parse("  call_1 ").unwrap().as_str(), "call_1");
        assert_eq!(
            ManagerId::parse("Менеджер-7").unwrap().as_str(),
            "Менеджер-7"
        );
    }

    #[test]
    fn rejects_empty_long_and_control() {
        assert_eq!(CallId::parse("   "), Err(InvalidId::Empty));
        assert_eq!(CallId::parse(&"я".repeat(257)), Err(InvalidId::TooLong));
        assert!(CallId::parse(&"я".repeat(256)).is_ok());
        assert_eq!(CallId::parse("a\u{0}b"), Err(InvalidId::ControlCharacter));
        assert_eq!(CallId::parse("a\nb"), Err(InvalidId::ControlCharacter));
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<OfficeId>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<OfficeId>("\"o1\"").unwrap().as_str(),
            "o1"
        );
    }
}
