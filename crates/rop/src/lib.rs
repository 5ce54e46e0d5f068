//! Цифровой РОП: configuration and the wiring of storage, blob store,
//! outgoing HTTP and the API into one server. `main.rs` is the CLI on top.

pub mod app;
pub mod config;
pub mod crm;
pub mod keys;
pub mod transcribe;
pub mod web;

pub use app::{open_store, run_workers, Server};
pub use config::Config;
