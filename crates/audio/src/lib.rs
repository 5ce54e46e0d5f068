//! Call recordings in, per-channel 16 kHz PCM out (PRODUCT.md §4, Decode).
//!
//! symphonia reads WAV (PCM, µ-law, A-law, IMA ADPCM), MP3, FLAC, OGG
//! Vorbis, M4A/AAC and WebM/Matroska; libopus adds Opus. Channels are kept
//! apart because in telephony stereo each one is a different speaker.

mod decode;
mod resample;

pub use decode::{
    decode, decode_bytes, decode_file, inspect, inspect_file, AudioInfo, DecodeError, DecodeLimits,
    Decoded,
};

/// What the speech recogniser takes.
pub const SAMPLE_RATE: u32 = 16_000;

/// Telephony recordings are mono or stereo; more channels are refused
/// rather than guessed at.
pub const MAX_CHANNELS: usize = 2;
