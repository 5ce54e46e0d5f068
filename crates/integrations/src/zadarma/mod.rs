//! Zadarma, the cloud PBX (seed 004; facts in integrations.md §1).

mod client;
mod notify;
mod service;
mod settings;
mod signature;

pub use client::{Balance, Credentials, Pbx, ZadarmaClient, ZadarmaError};
pub use notify::{Event, Notification, NotifyError};
pub use service::{
    NotificationRefused, NotifyReply, WebrtcLogin, Zadarma, ZadarmaActionError, RECORDING_TASK,
};
pub use settings::{
    mapping_details, Extension, ZadarmaSettings, ZadarmaSettingsUpdate, ZadarmaSettingsView,
    DEFAULT_API_URL,
};
pub use signature::{authorization, notification_signature, query_string, verify_notification};
