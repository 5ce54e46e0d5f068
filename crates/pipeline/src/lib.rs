//! The processing pipeline (PRODUCT.md §4): every accepted call goes
//! through `download → decode → transcribe → analyze → deliver`, each step a
//! durable job in the database that [`Workers`] claim, run and record.
//!
//! Steps live in their own modules and see only a [`Call`](rop_domain::Call);
//! what one step produces, the next reads back from storage, so a step can
//! run on any worker, in any process, any number of times.

mod analyze;
mod audio;
mod decode;
mod download;
mod transcribe;
mod worker;

pub use analyze::AnalyzeStep;
pub use decode::DecodeStep;
pub use download::DownloadStep;
pub use transcribe::TranscribeStep;
pub use worker::{Next, Step, StepDone, StepError, WorkerConfig, Workers};
