//! Webhooks (PRODUCT.md §6): the result of every checklist and table of an
//! analysed call, POSTed as signed JSON to the URL its settings give, with
//! retries for a day. Delivery is at least once; receivers deduplicate by
//! `X-Rop-Delivery`.
//!
//! - [`payload`] builds the bodies and the deliveries of an analysis;
//! - [`signature`] signs them (and verifies, for receivers and tests);
//! - [`send`] makes one attempt and judges the answer;
//! - [`retry`] says when to try again;
//! - [`Deliverer`] is the worker that ties them to the store.

pub mod deliverer;
pub mod payload;
pub mod retry;
pub mod send;
pub mod signature;

#[cfg(test)]
mod testdata;

pub use deliverer::{Deliverer, DelivererConfig, DeliveryQueue};
pub use payload::{checklist_body, plan, table_body};
pub use retry::RetryPolicy;
pub use send::{classify_status, send, webhook_client, AttemptReport, Verdict};
