//! Bitrix24 (seed 003; facts in integrations.md §3): an inbound webhook or
//! an OAuth application, the export of recorded calls from the telephony
//! statistics, the call-end event for calls as they end, and the analysis
//! written back as a timeline comment.

mod auth;
mod client;
mod import;
mod service;
mod settings;

pub use client::{Bitrix24Client, Bitrix24Error};
pub use import::B24ExportRequest;
pub use service::{
    B24Check, B24ExportView, Bitrix24, Bitrix24ActionError, EventRefused, CALL_END_EVENT,
    CALL_TASK, EXPORT_TASK, WRITE_BACK_TASK,
};
pub use settings::{
    masked_webhook, B24AuthMode, Bitrix24Settings, Bitrix24SettingsUpdate, Bitrix24SettingsView,
    DEFAULT_OAUTH_URL, RECOMMENDED_MIN_SECS,
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_pipeline_queues_the_write_back_this_module_runs() {
        assert_eq!(
            rop_domain::integrations::write_back_kind("bitrix24"),
            Some(super::WRITE_BACK_TASK)
        );
    }
}
