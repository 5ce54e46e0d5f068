//! Recognises audio by its first bytes, so that an HTML error page or a
//! picture behind an audio link is refused at upload time.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Mp3,
    Ogg,
    Flac,
    /// MP4 family: M4A/AAC.
    M4a,
    /// Raw AAC in ADTS frames.
    Aac,
    /// WebM/Matroska (Opus in WebM).
    WebM,
}

impl AudioFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Wav => "WAV",
            Self::Mp3 => "MP3",
            Self::Ogg => "OGG",
            Self::Flac => "FLAC",
            Self::M4a => "M4A",
            Self::Aac => "AAC",
            Self::WebM => "WebM",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sniffed {
    Audio {
        format: AudioFormat,
        /// What the header says about the length, where it says it (WAV).
        duration_secs: Option<f64>,
    },
    /// Not audio we can process; says what it looks like instead.
    NotAudio(&'static str),
}

pub fn sniff(head: &[u8]) -> Sniffed {
    let audio = |format| Sniffed::Audio {
        format,
        duration_secs: None,
    };
    if head.is_empty() {
        return Sniffed::NotAudio("an empty file");
    }
    if head.len() >= 12 && (head.starts_with(b"RIFF") || head.starts_with(b"RF64")) {
        return if &head[8..12] == b"WAVE" {
            Sniffed::Audio {
                format: AudioFormat::Wav,
                duration_secs: wav_duration(head),
            }
        } else {
            Sniffed::NotAudio("a RIFF file that is not WAVE (video or image)")
        };
    }
    if head.starts_with(b"ID3") {
        return audio(AudioFormat::Mp3);
    }
    if head.starts_with(b"OggS") {
        return audio(AudioFormat::Ogg);
    }
    if head.starts_with(b"fLaC") {
        return audio(AudioFormat::Flac);
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return audio(AudioFormat::M4a);
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return audio(AudioFormat::WebM);
    }
    if let Some(what) = known_non_audio(head) {
        return Sniffed::NotAudio(what);
    }
    if head.len() >= 2 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0 {
        return audio(AudioFormat::Aac);
    }
    if find_mpeg_frames(head) {
        return audio(AudioFormat::Mp3);
    }
    if head
        .iter()
        .take(512)
        .all(|&b| b >= 0x20 || b"\t\r\n".contains(&b))
    {
        return Sniffed::NotAudio("text");
    }
    Sniffed::NotAudio("binary data of an unknown format")
}

fn known_non_audio(head: &[u8]) -> Option<&'static str> {
    let text = head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(16)
        .map(u8::to_ascii_lowercase)
        .collect::<Vec<u8>>();
    let signatures: [(&[u8], &str); 10] = [
        (b"<!doctype html", "an HTML page"),
        (b"<html", "an HTML page"),
        (b"<?xml", "an XML document"),
        (b"{", "JSON"),
        (b"[", "JSON"),
        (b"\x89png", "a PNG image"),
        (b"gif8", "a GIF image"),
        (b"%pdf", "a PDF document"),
        (b"pk\x03\x04", "a ZIP archive"),
        (b"#!amr", "AMR audio, which is not supported"),
    ];
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some("a JPEG image");
    }
    signatures
        .iter()
        .find(|(signature, _)| text.starts_with(signature))
        .map(|(_, what)| *what)
}

/// MPEG audio frame length in bytes, if `header` is a valid frame header.
fn mpeg_frame_len(header: &[u8]) -> Option<usize> {
    let [b0, b1, b2, _, ..] = *header else {
        return None;
    };
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b1 >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
    let layer = (b1 >> 1) & 3; // 1: III, 2: II, 3: I
    let bitrate_index = usize::from(b2 >> 4);
    let rate_index = usize::from((b2 >> 2) & 3);
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const V1: [[u32; 15]; 3] = [
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
    ];
    const V2: [[u32; 15]; 2] = [
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
    ];
    let layer_row = usize::from(layer - 1); // 0: III, 1: II, 2: I
    let kbps = if version == 3 {
        V1[layer_row][bitrate_index]
    } else {
        V2[if layer == 3 { 1 } else { 0 }][bitrate_index]
    };
    let base_rate = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let padding = u32::from((b2 >> 1) & 1);
    let bitrate = kbps * 1000;
    let len = match (layer, version) {
        (3, _) => (12 * bitrate / sample_rate + padding) * 4,
        (1, 0 | 2) => 72 * bitrate / sample_rate + padding,
        _ => 144 * bitrate / sample_rate + padding,
    };
    (len >= 4).then_some(len as usize)
}

/// Finds an MPEG audio frame followed by a second one where the first says
/// it ends, within the first bytes (some files start with a little junk).
fn find_mpeg_frames(head: &[u8]) -> bool {
    let window = head.len().min(4096);
    (0..window).any(|start| match mpeg_frame_len(&head[start..]) {
        Some(len) => match head.get(start + len..) {
            Some(rest) if rest.len() >= 4 => mpeg_frame_len(rest).is_some(),
            // The second frame is beyond what we have: a frame at the very
            // start is still convincing.
            _ => start == 0,
        },
        None => false,
    })
}

/// Duration from a WAV header's byte rate and data size, when both are in `head`.
fn wav_duration(head: &[u8]) -> Option<f64> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size = u32_at(at + 4)?;
        match id {
            b"fmt " => byte_rate = u32_at(at + 16),
            b"data" => {
                let rate = byte_rate.filter(|&r| r > 0)?;
                // Streaming writers put 0 or u32::MAX when they don't know.
                if size == 0 || size == u32::MAX {
                    return None;
                }
                return Some(f64::from(size) / f64::from(rate));
            }
            _ => {}
        }
        at = at
            .checked_add(8)?
            .checked_add(size as usize + (size as usize & 1))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: u32) -> Vec<u8> {
        let rate = 8000u32;
        let data_len = rate * 2 * seconds;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2).to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend(std::iter::repeat_n(0u8, 64));
        out
    }

    #[test]
    fn recognises_audio_containers() {
        assert_eq!(
            sniff(&wav(3)),
            Sniffed::Audio {
                format: AudioFormat::Wav,
                duration_secs: Some(3.0)
            }
        );
        for (head, format) in [
            (&b"ID3\x04\x00\x00\x00\x00\x00\x00"[..], AudioFormat::Mp3),
            (b"OggS\x00\x02\x00\x00", AudioFormat::Ogg),
            (b"fLaC\x00\x00\x00\x22", AudioFormat::Flac),
            (b"\x00\x00\x00\x20ftypM4A \x00\x00", AudioFormat::M4a),
            (b"\x1A\x45\xDF\xA3\x9f\x42\x86\x81", AudioFormat::WebM),
            (b"\xFF\xF1\x50\x80\x02\x1F\xFC", AudioFormat::Aac),
        ] {
            assert!(
                matches!(sniff(head), Sniffed::Audio { format: f, .. } if f == format),
                "{format:?}"
            );
        }
    }

    #[test]
    fn recognises_bare_mpeg_frames() {
        // MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417-byte frames.
        let mut mp3 = Vec::new();
        for _ in 0..3 {
            mp3.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
            mp3.extend(std::iter::repeat_n(0u8, 413));
        }
        assert!(matches!(
            sniff(&mp3),
            Sniffed::Audio {
                format: AudioFormat::Mp3,
                ..
            }
        ));
        // MPEG-2 layer III at 16 kHz and MPEG-2.5 at 8 kHz (telephony).
        assert_eq!(mpeg_frame_len(&[0xFF, 0xF3, 0x18, 0xC4]), Some(36));
        assert_eq!(mpeg_frame_len(&[0xFF, 0xE3, 0x18, 0xC4]), Some(72));
        let mut junk_then_mp3 = vec![0u8; 10];
        junk_then_mp3.extend_from_slice(&mp3);
        assert!(matches!(sniff(&junk_then_mp3), Sniffed::Audio { .. }));
    }

    #[test]
    fn names_what_is_not_audio() {
        for (head, what) in [
            (&b"<!DOCTYPE html><html>"[..], "an HTML page"),
            (b"  <html lang=ru>", "an HTML page"),
            (b"{\"error\": \"not found\"}", "JSON"),
            (b"\x89PNG\r\n\x1a\n\x00\x00", "a PNG image"),
            (b"\xFF\xD8\xFF\xE0\x00\x10JFIF", "a JPEG image"),
            (b"%PDF-1.7", "a PDF document"),
            (b"hello, world", "text"),
            (b"", "an empty file"),
            (
                b"RIFF\x00\x00\x00\x00AVI LIST",
                "a RIFF file that is not WAVE (video or image)",
            ),
        ] {
            assert_eq!(sniff(head), Sniffed::NotAudio(what), "{what}");
        }
        assert!(matches!(
            sniff(&[0x00, 0x01, 0x02, 0x03, 0x99]),
            Sniffed::NotAudio(_)
        ));
    }

    #[test]
    fn survives_truncated_and_hostile_headers() {
        let full = wav(1);
        for len in 0..full.len() {
            let _ = sniff(&full[..len]);
        }
        let mut hostile = b"RIFF\x00\x00\x00\x00WAVE".to_vec();
        hostile.extend_from_slice(b"junk");
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        hostile.extend_from_slice(&[0; 32]);
        assert!(matches!(
            sniff(&hostile),
            Sniffed::Audio {
                duration_secs: None,
                ..
            }
        ));
    }
}
