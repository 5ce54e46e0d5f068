//! Doubles of services we cannot run in tests. Each follows the real API:
//! paths, fields, success and error shapes. Used only as a dev-dependency.

pub mod amocrm;
pub mod bitrix24;
pub mod chat;
pub mod transcription;
pub mod webhook;
pub mod zadarma;
