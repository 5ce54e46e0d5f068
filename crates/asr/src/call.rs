//! A whole call: every channel through the engine, merged and measured.

use std::time::Instant;

use chrono::Utc;
use rop_domain::{SpeakerRole, Transcript};

use crate::dialogue::{self, ChannelSpeech};
use crate::{AsrEngine, AsrError, SAMPLE_RATE};

/// Transcribes a call given as 16 kHz channels. In stereo,
/// `manager_channel` is the manager's and the other the client's; mono is
/// one stream of unknown speakers.
pub async fn transcribe_call(
    engine: &dyn AsrEngine,
    channels: Vec<Vec<f32>>,
    manager_channel: u8,
) -> Result<Transcript, AsrError> {
    let duration = channels
        .iter()
        .map(|samples| samples.len())
        .max()
        .unwrap_or(0) as f64
        / f64::from(SAMPLE_RATE);
    let stereo = channels.len() == 2;
    let started = Instant::now();
    let mut speech = Vec::with_capacity(channels.len());
    for (index, samples) in channels.into_iter().enumerate() {
        let channel = index as u8;
        let role = match (stereo, channel == manager_channel) {
            (false, _) => SpeakerRole::Unknown,
            (true, true) => SpeakerRole::Manager,
            (true, false) => SpeakerRole::Client,
        };
        speech.push(ChannelSpeech {
            channel,
            role,
            segments: engine.transcribe(samples).await?,
        });
    }
    let elapsed = started.elapsed().as_secs_f64();
    let segments = dialogue::merge(speech);
    let metrics = dialogue::metrics(&segments, duration);
    Ok(Transcript {
        engine: engine.name().to_owned(),
        model: engine.model(),
        language: engine.language(),
        segments,
        metrics,
        real_time_factor: if duration > 0.0 {
            (elapsed / duration * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        created_at: Utc::now(),
    })
}
