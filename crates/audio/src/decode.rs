//! Any recording a CRM or a PBX may send → per-channel PCM.
//!
//! Everything here treats the file as hostile: formats are recognised by
//! content, header claims (channels, rates, lengths) are checked before they
//! size anything, the duration is counted from decoded frames rather than
//! trusted from headers, and a panic inside a codec becomes an error.

use std::fs::File;
use std::io::{Cursor, ErrorKind};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::resample::To16k;
use crate::MAX_CHANNELS;

/// What a decoder may be asked to swallow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longer recordings fail with `too_long` as soon as decoding passes the limit.
    pub max_duration: Duration,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(2700),
        }
    }
}

/// The facts of a recording, measured while decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// Container, e.g. `wav`, `ogg`, `mp3`, `isomp4`.
    pub container: String,
    /// Codec, e.g. `pcm_s16le`, `pcm_mulaw`, `mp3`, `opus`, `aac`.
    pub codec: String,
    /// The file's own sample rate.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: usize,
    /// Counted from decoded samples, not taken from the header.
    pub duration: Duration,
    /// Packets the decoder rejected and skipped.
    pub bad_packets: u64,
    /// The file ended in the middle of a packet or a header.
    pub truncated: bool,
}

/// A recording as the speech recogniser takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub info: AudioInfo,
    /// One vector per channel, 16 kHz mono f32 each, equal lengths.
    pub channels: Vec<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("формат файла не распознан: это не звук или неподдерживаемый контейнер")]
    UnknownFormat,
    #[error("в файле нет звуковой дорожки")]
    NoAudioTrack,
    #[error("кодек не поддерживается: {0}")]
    UnsupportedCodec(String),
    #[error("в записи {0} каналов; поддерживаются моно и стерео")]
    TooManyChannels(usize),
    #[error("файл повреждён: {0}")]
    Malformed(String),
    #[error("запись длиннее допустимых {} с", .limit.as_secs())]
    TooLong { limit: Duration },
    #[error("в записи нет звука")]
    Empty,
    #[error("не удалось прочитать файл: {0}")]
    Io(#[from] std::io::Error),
}

impl DecodeError {
    /// Machine-readable reason for a failed call.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownFormat | Self::NoAudioTrack => "unsupported_format",
            Self::UnsupportedCodec(_) | Self::TooManyChannels(_) => "unsupported_codec",
            Self::Malformed(_) => "malformed_audio",
            Self::TooLong { .. } => "too_long",
            Self::Empty => "empty_audio",
            Self::Io(_) => "io",
        }
    }

    /// Whether trying again may help (a read error from the disk or the
    /// blob store); everything else is a property of the file.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io(_))
    }
}

/// Decodes and resamples every channel to 16 kHz.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let file = File::open(path)?;
    decode_source(Box::new(file), hint_for(path), limits, true)
}

/// [`decode_file`] for an open file; the format is told by content alone.
pub fn decode(file: File, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    decode_source(Box::new(file), Hint::new(), limits, true)
}

/// Decodes a whole file only to measure it: format, channels, real
/// duration. Cheaper than [`decode_file`]: nothing is resampled or kept.
pub fn inspect_file(path: &Path, limits: &DecodeLimits) -> Result<AudioInfo, DecodeError> {
    let file = File::open(path)?;
    decode_source(Box::new(file), hint_for(path), limits, false).map(|decoded| decoded.info)
}

/// [`inspect_file`] for an open file.
pub fn inspect(file: File, limits: &DecodeLimits) -> Result<AudioInfo, DecodeError> {
    decode_source(Box::new(file), Hint::new(), limits, false).map(|decoded| decoded.info)
}

/// [`decode_file`] for bytes in memory (tests, fuzzing).
pub fn decode_bytes(bytes: Vec<u8>, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    decode_source(Box::new(Cursor::new(bytes)), Hint::new(), limits, true)
}

fn hint_for(path: &Path) -> Hint {
    let mut hint = Hint::new();
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(extension);
    }
    hint
}

static CODECS: LazyLock<CodecRegistry> = LazyLock::new(|| {
    let mut registry = CodecRegistry::new();
    symphonia::default::register_enabled_codecs(&mut registry);
    registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
    registry
});

fn decode_source(
    source: Box<dyn MediaSource>,
    hint: Hint,
    limits: &DecodeLimits,
    keep_samples: bool,
) -> Result<Decoded, DecodeError> {
    // Codecs are large amounts of parsing code fed with untrusted bytes; a
    // bug in one must fail this file, not the worker.
    catch_unwind(AssertUnwindSafe(|| {
        decode_unguarded(source, hint, limits, keep_samples)
    }))
    .unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "ошибка декодера".to_owned());
        Err(DecodeError::Malformed(detail))
    })
}

/// Below this many packets a few bad ones are noise; above it, more than
/// a tenth bad means the file is not what it claims to be.
const BAD_PACKETS_TOLERATED: u64 = 8;

fn decode_unguarded(
    source: Box<dyn MediaSource>,
    hint: Hint,
    limits: &DecodeLimits,
    keep_samples: bool,
) -> Result<Decoded, DecodeError> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|error| match error {
            SymphoniaError::IoError(io) if io.kind() != ErrorKind::UnexpectedEof => {
                DecodeError::Io(io)
            }
            SymphoniaError::Unsupported(_) | SymphoniaError::IoError(_) => {
                DecodeError::UnknownFormat
            }
            other => DecodeError::Malformed(other.to_string()),
        })?;
    let container = format.format_info().short_name.to_owned();
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(DecodeError::NoAudioTrack)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|params| params.audio())
        .ok_or(DecodeError::NoAudioTrack)?
        .clone();
    if let Some(channels) = &params.channels {
        if channels.count() > MAX_CHANNELS {
            return Err(DecodeError::TooManyChannels(channels.count()));
        }
    }
    let registered = CODECS
        .get_audio_decoder(params.codec)
        .ok_or_else(|| DecodeError::UnsupportedCodec(format!("{:?}", params.codec)))?;
    let codec = registered.codec.info.short_name.to_owned();
    let mut decoder = CODECS
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|error| match error {
            SymphoniaError::Unsupported(what) => DecodeError::UnsupportedCodec(what.to_owned()),
            other => DecodeError::Malformed(other.to_string()),
        })?;

    let mut stream_shape: Option<(u32, usize)> = None;
    let mut output: Option<To16k> = None;
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut frames: u64 = 0;
    let mut packets: u64 = 0;
    let mut bad_packets: u64 = 0;
    let mut truncated = false;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::IoError(io)) if io.kind() == ErrorKind::UnexpectedEof => {
                truncated = true;
                break;
            }
            Err(SymphoniaError::IoError(io)) => return Err(DecodeError::Io(io)),
            // A chained stream starts over with new parameters; the
            // recording we were asked about has ended.
            Err(SymphoniaError::ResetRequired) => break,
            Err(other) => {
                if frames == 0 {
                    return Err(DecodeError::Malformed(other.to_string()));
                }
                truncated = true;
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        packets += 1;
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                bad_packets += 1;
                if bad_packets > BAD_PACKETS_TOLERATED && bad_packets * 10 > packets {
                    return Err(DecodeError::Malformed(format!(
                        "декодер отверг {bad_packets} из {packets} пакетов"
                    )));
                }
                continue;
            }
            Err(SymphoniaError::Unsupported(what)) => {
                return Err(DecodeError::UnsupportedCodec(what.to_owned()))
            }
            Err(other) => return Err(DecodeError::Malformed(other.to_string())),
        };
        if buffer.frames() == 0 {
            continue;
        }
        let rate = buffer.spec().rate();
        let channels = buffer.num_planes();
        match stream_shape {
            None => {
                if channels == 0 {
                    return Err(DecodeError::Malformed("0 каналов".into()));
                }
                if channels > MAX_CHANNELS {
                    return Err(DecodeError::TooManyChannels(channels));
                }
                if !(1_000..=384_000).contains(&rate) {
                    return Err(DecodeError::Malformed(format!(
                        "частота дискретизации {rate} Гц"
                    )));
                }
                stream_shape = Some((rate, channels));
                if keep_samples {
                    output = Some(To16k::new(rate, channels).map_err(DecodeError::Malformed)?);
                }
            }
            Some(shape) if shape != (rate, channels) => {
                return Err(DecodeError::Malformed(
                    "частота или число каналов меняются посреди записи".into(),
                ));
            }
            Some(_) => {}
        }
        let new_frames = buffer.frames();
        frames += new_frames as u64;
        if frames as f64 / f64::from(rate) > limits.max_duration.as_secs_f64() {
            return Err(DecodeError::TooLong {
                limit: limits.max_duration,
            });
        }
        if let Some(output) = output.as_mut() {
            buffer.copy_to_vecs_planar::<f32>(&mut planes);
            output
                .push(&planes, new_frames)
                .map_err(DecodeError::Malformed)?;
        }
    }

    let Some((sample_rate, channels)) = stream_shape else {
        return Err(if bad_packets > 0 {
            DecodeError::Malformed(format!("ни один из {packets} пакетов не декодирован"))
        } else {
            DecodeError::Empty
        });
    };
    let samples = match output {
        Some(output) => output.finish().map_err(DecodeError::Malformed)?,
        None => Vec::new(),
    };
    debug_assert!(samples.iter().all(|c| c.len() == samples[0].len()));
    Ok(Decoded {
        info: AudioInfo {
            container,
            codec,
            sample_rate,
            channels,
            duration: Duration::from_secs_f64(frames as f64 / f64::from(sample_rate)),
            bad_packets,
            truncated,
        },
        channels: samples,
    })
}
