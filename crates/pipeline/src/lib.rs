//! The processing pipeline (PRODUCT.md §4): every accepted call goes
//! through `download → decode → transcribe → analyze → deliver`, each step a
//! durable job in the database that [`Workers`] claim, run and record.
//!
//! Steps live in their own modules and see only a [`Call`](rop_domain::Call);
//! what one step produces, the next reads back from storage, so a step can
//! run on any worker, in any process, any number of times.

mod download;
mod worker;

pub use download::DownloadStep;
pub use worker::{Step, StepDone, StepError, WorkerConfig, Workers};
