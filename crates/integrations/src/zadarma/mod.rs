//! Zadarma, the cloud PBX (seed 004; facts in integrations.md §1).

mod client;
mod notify;
mod signature;

pub use client::{Balance, Credentials, Pbx, ZadarmaClient, ZadarmaError};
pub use notify::{Event, Notification, NotifyError};
pub use signature::{authorization, notification_signature, query_string, verify_notification};
