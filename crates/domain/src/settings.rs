//! Installation-wide settings an administrator edits (the Connection page).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Calls declared shorter than this many seconds are stored as skipped.
    pub min_call_duration_secs: u32,
    /// Which channel of a stereo recording is the manager (0 = left, 1 = right).
    pub manager_channel: u8,
    /// Audio links into private networks (10.x, 192.168.x, …) are allowed:
    /// an on-premise CRM. The configuration's `fetch_allow_private` allows
    /// them regardless.
    pub allow_private_networks: bool,
}

impl ConnectionSettings {
    /// Checks an edited value; names the offending field.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.manager_channel > 1 {
            return Err(("manager_channel", "must be 0 (left) or 1 (right)"));
        }
        if self.min_call_duration_secs > 24 * 3600 {
            return Err(("min_call_duration_secs", "must be at most 86400 seconds"));
        }
        Ok(())
    }

    /// Why a call this long is stored as skipped instead of processed.
    pub fn skip_reason(&self, declared_duration_secs: Option<f64>) -> Option<String> {
        let min = f64::from(self.min_call_duration_secs);
        declared_duration_secs
            .filter(|&declared| declared < min)
            .map(|declared| {
                format!("Звонок короче минимальной длительности: {declared} с < {min} с")
            })
    }
}
