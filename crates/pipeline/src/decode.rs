//! Step `decode`: reads the whole recording once to learn what it really
//! is (format, channels, duration counted from the sound), refuses what the
//! recogniser could not use, and skips calls shorter than the minimum.
//!
//! The 16 kHz samples are not stored: decoding runs at hundreds of times
//! real time, so the transcribe step decodes again instead of keeping a
//! copy four times the size of a compressed recording.

use std::sync::Arc;

use async_trait::async_trait;
use rop_audio::{AudioInfo, DecodeLimits};
use rop_blob::BlobStore;
use rop_domain::{AudioFacts, Call, JobKind, StepOutput, Store};

use crate::audio::open_recording;
use crate::worker::{Next, Step, StepDone, StepError};

pub struct DecodeStep {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub limits: DecodeLimits,
}

#[async_trait]
impl Step for DecodeStep {
    fn kind(&self) -> JobKind {
        JobKind::Decode
    }

    async fn run(&self, call: &Call) -> Result<StepDone, StepError> {
        let file = open_recording(self.blobs.as_ref(), call).await?;
        let limits = self.limits;
        let info = tokio::task::spawn_blocking(move || rop_audio::inspect(file, &limits))
            .await
            .map_err(|error| StepError::Transient(format!("decoder task: {error}")))?
            .map_err(|error| crate::audio::explain(&error))?;
        let facts = facts_of(&info);
        let summary = describe(&info);

        let minimum = self
            .store
            .connection_settings()
            .await?
            .min_call_duration_secs;
        if minimum > 0 && info.duration.as_secs_f64() < f64::from(minimum) {
            return Ok(StepDone {
                next: Next::Skip {
                    reason: format!(
                        "Запись короче минимальной длительности: {:.1} с < {minimum} с",
                        info.duration.as_secs_f64()
                    ),
                },
                message: summary,
                output: StepOutput::Audio(facts),
            });
        }
        Ok(StepDone::then(JobKind::Transcribe, summary).with_output(StepOutput::Audio(facts)))
    }
}

pub(crate) fn facts_of(info: &AudioInfo) -> AudioFacts {
    AudioFacts {
        container: info.container.clone(),
        codec: info.codec.clone(),
        sample_rate: info.sample_rate,
        channels: info.channels.min(u8::MAX as usize) as u8,
        duration_secs: (info.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        truncated: info.truncated,
    }
}

fn describe(info: &AudioInfo) -> String {
    let channels = if info.channels == 1 {
        "моно"
    } else {
        "стерео"
    };
    let mut text = format!(
        "Запись декодирована: {} ({}), {} Гц, {channels}, {:.1} с",
        info.container,
        info.codec,
        info.sample_rate,
        info.duration.as_secs_f64()
    );
    if info.truncated {
        text.push_str("; файл обрывается, обработано то, что в нём есть");
    }
    if info.bad_packets > 0 {
        text.push_str(&format!(
            "; пропущено повреждённых пакетов: {}",
            info.bad_packets
        ));
    }
    text
}
