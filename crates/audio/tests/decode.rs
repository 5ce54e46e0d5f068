//! Every format PRODUCT.md §3 accepts, decoded from real files made by
//! ffmpeg (left channel 440 Hz, right 1000 Hz, 1.5 s), and hostile input.

use std::path::PathBuf;
use std::time::Duration;

use rop_audio::{decode_bytes, decode_file, inspect_file, DecodeError, DecodeLimits, SAMPLE_RATE};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Frequency from zero crossings of the middle of the signal.
fn pitch(samples: &[f32]) -> f32 {
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let crossings = middle
        .windows(2)
        .filter(|w| w[0] <= 0.0 && w[1] > 0.0)
        .count();
    crossings as f32 * SAMPLE_RATE as f32 / middle.len() as f32
}

#[test]
fn every_accepted_format_decodes_with_channels_kept_apart() {
    let cases = [
        ("stereo-pcm16-8k.wav", "pcm_s16le", 8_000),
        ("stereo-mulaw-8k.wav", "pcm_mulaw", 8_000),
        ("stereo-alaw-8k.wav", "pcm_alaw", 8_000),
        ("stereo-ima-adpcm-8k.wav", "adpcm_ima_wav", 8_000),
        ("stereo-22k.mp3", "mp3", 22_050),
        ("stereo-44k.ogg", "vorbis", 44_100),
        ("stereo-48k.opus", "opus", 48_000),
        ("stereo-48k.webm", "opus", 48_000),
        ("stereo-8k.flac", "flac", 8_000),
        ("stereo-16k.m4a", "aac", 16_000),
    ];
    for (name, codec, rate) in cases {
        let decoded = decode_file(&fixture(name), &DecodeLimits::default())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let info = &decoded.info;
        assert_eq!(info.codec, codec, "{name}");
        assert_eq!(info.sample_rate, rate, "{name}");
        assert_eq!(info.channels, 2, "{name}");
        let seconds = info.duration.as_secs_f64();
        // AAC and MP3 carry encoder priming, up to ~0.1 s here.
        assert!((1.45..1.7).contains(&seconds), "{name}: {seconds} s");
        assert_eq!(decoded.channels.len(), 2, "{name}");
        let expected = (seconds * f64::from(SAMPLE_RATE)).ceil() as usize;
        assert_eq!(decoded.channels[0].len(), expected, "{name}");
        assert_eq!(decoded.channels[1].len(), expected, "{name}");
        let (left, right) = (pitch(&decoded.channels[0]), pitch(&decoded.channels[1]));
        assert!((left - 440.0).abs() < 10.0, "{name}: left {left} Hz");
        assert!((right - 1000.0).abs() < 10.0, "{name}: right {right} Hz");
        assert!(!info.truncated && info.bad_packets == 0, "{name}: {info:?}");
    }
}

#[test]
fn mono_stays_one_channel() {
    let decoded = decode_file(&fixture("mono-8k.mp3"), &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.info.channels, 1);
    assert_eq!(decoded.channels.len(), 1);
    assert!((pitch(&decoded.channels[0]) - 440.0).abs() < 10.0);
}

#[test]
fn inspection_measures_without_keeping_samples() {
    let info = inspect_file(&fixture("stereo-44k.ogg"), &DecodeLimits::default()).unwrap();
    assert_eq!((info.channels, info.sample_rate), (2, 44_100));
    assert!((1.45..1.6).contains(&info.duration.as_secs_f64()));
}

#[test]
fn the_real_duration_is_enforced() {
    let limits = DecodeLimits {
        max_duration: Duration::from_secs(1),
    };
    for name in ["stereo-pcm16-8k.wav", "stereo-22k.mp3", "stereo-48k.opus"] {
        let error = decode_file(&fixture(name), &limits).unwrap_err();
        assert_eq!(error.code(), "too_long", "{name}: {error}");
    }
}

#[test]
fn a_wav_header_that_lies_about_its_length_is_measured_by_content() {
    // Recorders that stream WAV write the largest lengths possible, as if
    // the call lasted for days; only 1.5 s follow.
    let mut bytes = std::fs::read(fixture("stereo-pcm16-8k.wav")).unwrap();
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let data_at = bytes.windows(4).position(|w| w == b"data").unwrap();
    bytes[data_at + 4..data_at + 8].copy_from_slice(&(u32::MAX - 64).to_le_bytes());
    let decoded = decode_bytes(bytes, &DecodeLimits::default()).unwrap();
    assert!((1.45..1.6).contains(&decoded.info.duration.as_secs_f64()));
}

#[test]
fn more_than_two_channels_are_refused() {
    let error = decode_file(&fixture("six-channels.wav"), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(error, DecodeError::TooManyChannels(6)), "{error}");
    assert_eq!(error.code(), "unsupported_codec");
}

#[test]
fn garbage_and_empty_input_fail_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"<html><body>Not found</body></html>".repeat(50)),
        ("zeros", vec![0; 10_000]),
        (
            "random",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let error = decode_bytes(bytes, &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(
                error.code(),
                "unsupported_format" | "malformed_audio" | "empty_audio"
            ),
            "{name}: {error:?}"
        );
        assert!(!error.is_transient(), "{name}");
    }
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    for name in [
        "stereo-pcm16-8k.wav",
        "stereo-ima-adpcm-8k.wav",
        "stereo-22k.mp3",
        "stereo-44k.ogg",
        "stereo-48k.opus",
        "stereo-48k.webm",
        "stereo-8k.flac",
        "stereo-16k.m4a",
    ] {
        let original = std::fs::read(fixture(name)).unwrap();
        // Cut at many points, and flip bytes all over: each must end in a
        // result, never a panic or a hang.
        for cut in (0..original.len()).step_by(original.len() / 37 + 1) {
            let _ = decode_bytes(original[..cut].to_vec(), &DecodeLimits::default());
        }
        for seed in 1..40usize {
            let mut bytes = original.clone();
            for k in 0..8 {
                let at = (seed * 7919 + k * 104_729) % bytes.len();
                bytes[at] ^= (seed as u8).wrapping_mul(31) | 1;
            }
            let _ = decode_bytes(bytes, &DecodeLimits::default());
        }
    }
}

#[test]
fn a_truncated_recording_keeps_what_was_there() {
    let original = std::fs::read(fixture("stereo-22k.mp3")).unwrap();
    let half = original[..original.len() / 2].to_vec();
    let decoded = decode_bytes(half, &DecodeLimits::default()).unwrap();
    let seconds = decoded.info.duration.as_secs_f64();
    assert!((0.5..1.0).contains(&seconds), "{seconds}");
}

#[test]
fn a_missing_file_is_an_io_error_worth_retrying() {
    let error = decode_file(&fixture("no-such-file.wav"), &DecodeLimits::default()).unwrap_err();
    assert!(error.is_transient());
}
