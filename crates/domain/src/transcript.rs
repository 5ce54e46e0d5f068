//! What the recording said: the decoded audio's facts, the dialogue with
//! speaker roles, and the conversation metrics derived from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The recording as the decoder measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AudioFacts {
    /// Container: `wav`, `ogg`, `mp3`, `isomp4`, `mkv`, `flac`, …
    pub container: String,
    /// Codec: `pcm_s16le`, `pcm_mulaw`, `mp3`, `opus`, `aac`, …
    pub codec: String,
    pub sample_rate: u32,
    /// 1 (mono: one stream, speakers not separated) or 2 (stereo).
    pub channels: u8,
    /// Real duration, counted from the decoded sound.
    pub duration_secs: f64,
    /// The file ended early; what was there is processed.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerRole {
    Manager,
    Client,
    /// Mono recordings: speakers are not separated yet.
    Unknown,
}

impl SpeakerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Client => "client",
            Self::Unknown => "unknown",
        }
    }

    /// Russian label for people.
    pub fn title(self) -> &'static str {
        match self {
            Self::Manager => "Менеджер",
            Self::Client => "Клиент",
            Self::Unknown => "Говорящий",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Word {
    /// Seconds from the start of the call.
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// One utterance of one speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub role: SpeakerRole,
    /// The recording's channel the words come from.
    pub channel: u8,
    /// Seconds from the start of the call.
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Word timings, when the engine gives them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// Measures of how the conversation went, from the segments alone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ConversationMetrics {
    /// Manager's share of all talk time, 0…1; absent for mono recordings.
    pub manager_talk_share: Option<f64>,
    /// Longest stretch of one speaker without the other speaking, seconds.
    pub longest_monologue_secs: f64,
    pub longest_monologue_role: Option<SpeakerRole>,
    /// Times someone started speaking while the other still spoke.
    pub interruptions: u32,
    /// Of those, started by the manager.
    pub manager_interruptions: u32,
    /// Share of the call where nobody speaks, 0…1.
    pub silence_share: f64,
    /// Words per minute of speaking time, all speakers.
    pub speech_rate_wpm: f64,
    pub manager_speech_rate_wpm: Option<f64>,
    pub client_speech_rate_wpm: Option<f64>,
}

/// A call's transcript: one per call, replaced when transcribed again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transcript {
    /// `whisper.cpp`, `openai`, …
    pub engine: String,
    /// The model file or the remote model's name.
    pub model: String,
    /// Language the engine was told or detected.
    pub language: String,
    /// Ordered by start time, both channels interleaved.
    pub segments: Vec<Segment>,
    pub metrics: ConversationMetrics,
    /// Seconds of audio per second of recognition work (lower is faster).
    pub real_time_factor: f64,
    pub created_at: DateTime<Utc>,
}

impl Transcript {
    /// The dialogue as plain text, one line per segment (search, prompts).
    pub fn plain_text(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            text.push_str(segment.role.title());
            text.push_str(": ");
            text.push_str(&segment.text);
            text.push('\n');
        }
        text
    }
}
