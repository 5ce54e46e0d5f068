//! Speech recognition (PRODUCT.md §4, Transcribe): one trait, two engines.
//!
//! - [`WhisperEngine`]: whisper.cpp in-process through whisper-rs, with the
//!   Silero VAD model so silence is not decoded;
//! - [`OpenAiEngine`]: any server speaking OpenAI's
//!   `/v1/audio/transcriptions` (faster-whisper servers, whisper.cpp server,
//!   vLLM, cloud).
//!
//! Engines see one channel of 16 kHz mono audio at a time; [`dialogue`]
//! merges the channels into a conversation and measures it.

mod call;
pub mod dialogue;
mod engine;
mod openai;
mod wav;
mod whisper;

pub use call::transcribe_call;
pub use engine::{AsrEngine, AsrError, RecognizedSegment};
pub use openai::{OpenAiConfig, OpenAiEngine};
pub use whisper::{WhisperConfig, WhisperEngine};

/// Sample rate every engine takes.
pub const SAMPLE_RATE: u32 = 16_000;
