//! The installation's API key. The secret never appears in `Debug` output, so
//! it cannot leak into logs through a stray `{:?}`.

use std::fmt;

use chrono::{DateTime, Utc};

#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecret(String);

impl ApiSecret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself, for the few places that must show or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiSecret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub secret: ApiSecret,
    pub created_at: DateTime<Utc>,
    /// Set on a rotated-out key: it keeps working until then (grace period).
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_current(&self) -> bool {
        self.expires_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let secret = ApiSecret::new("rop_supersecret".into());
        assert!(!format!("{secret:?}").contains("supersecret"));
    }
}
