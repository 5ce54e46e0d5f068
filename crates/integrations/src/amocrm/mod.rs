//! amoCRM (seed 001; facts in integrations.md §2): sign-in by OAuth or a
//! long-lived token, the export of recorded calls into the pipeline, and
//! the analysis written back to the deal.

mod auth;
mod client;
mod export;
mod service;
mod settings;

pub use crate::exports::ExportProgress;
pub use crate::summary::WriteValue;
pub use client::{AmocrmClient, AmocrmError};
pub use export::{ExportDirection, ExportRequest};
pub use service::{
    AccountCheck, Amocrm, AmocrmActionError, ExportView, EXPORT_TASK, WRITE_BACK_TASK,
};
pub use settings::{
    is_mapping_source, AmocrmSettings, AmocrmSettingsUpdate, AmocrmSettingsView, AuthMode,
    FieldMapping, FieldUpdate,
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_pipeline_queues_the_write_back_this_module_runs() {
        assert_eq!(
            rop_domain::integrations::write_back_kind("amocrm"),
            Some(super::WRITE_BACK_TASK)
        );
    }
}
