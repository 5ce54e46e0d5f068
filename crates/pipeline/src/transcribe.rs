//! Step `transcribe`: decodes the recording, runs the speech recogniser on
//! each channel separately, and stores one dialogue with speaker roles and
//! conversation metrics.

use std::sync::Arc;

use async_trait::async_trait;
use rop_asr::{transcribe_call, AsrEngine, AsrError};
use rop_audio::DecodeLimits;
use rop_blob::BlobStore;
use rop_domain::{Call, JobKind, StepOutput, Store};

use crate::audio::{explain, open_recording};
use crate::worker::{Next, Step, StepDone, StepError};

pub struct TranscribeStep {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub engine: Arc<dyn AsrEngine>,
    pub limits: DecodeLimits,
}

#[async_trait]
impl Step for TranscribeStep {
    fn kind(&self) -> JobKind {
        JobKind::Transcribe
    }

    async fn run(&self, call: &Call) -> Result<StepDone, StepError> {
        let file = open_recording(self.blobs.as_ref(), call).await?;
        let limits = self.limits;
        let decoded = tokio::task::spawn_blocking(move || rop_audio::decode(file, &limits))
            .await
            .map_err(|error| StepError::Transient(format!("decoder task: {error}")))?
            .map_err(|error| explain(&error))?;
        let manager_channel = match call.manager_channel {
            Some(channel) => channel,
            None => self.store.connection_settings().await?.manager_channel,
        };
        let transcript = transcribe_call(self.engine.as_ref(), decoded.channels, manager_channel)
            .await
            .map_err(|error| match error {
                AsrError::Unavailable(detail) => StepError::Transient(detail),
                AsrError::Failed(detail) => StepError::Permanent {
                    code: "asr_failed".into(),
                    message: format!("Распознавание речи не удалось: {detail}"),
                },
            })?;
        let message = format!(
            "Распознано: {} реплик, {} ({}), {:.2} × реального времени",
            transcript.segments.len(),
            transcript.engine,
            transcript.model,
            transcript.real_time_factor,
        );
        Ok(StepDone {
            next: Next::Step(JobKind::Analyze),
            message,
            output: StepOutput::Transcript(Box::new(transcript)),
        })
    }
}
