//! `rop transcribe FILE`: the pipeline's decode and transcribe steps on one
//! local file, without a database.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rop_asr::AsrEngine;
use rop_audio::{AudioInfo, DecodeLimits};
use rop_domain::Transcript;

use crate::app::speech_engine;
use crate::config::Config;

pub struct Transcribed {
    pub audio: AudioInfo,
    pub transcript: Transcript,
}

/// Transcribes each file in turn with one engine; prints as it goes.
pub async fn transcribe_files(
    config: &Config,
    files: &[std::path::PathBuf],
    manager_channel: u8,
    json: bool,
) -> anyhow::Result<()> {
    let engine = speech_engine(config)?;
    for file in files {
        let transcribed = transcribe_file(config, engine.as_ref(), file, manager_channel).await?;
        if json {
            // One JSON document per line, so several files stay machine-readable.
            println!(
                "{}",
                serde_json::json!({
                    "file": file.display().to_string(),
                    "duration_secs": transcribed.audio.duration.as_secs_f64(),
                    "transcript": transcribed.transcript,
                })
            );
        } else {
            if files.len() > 1 {
                println!("== {}", file.display());
            }
            print!("{}", render(&transcribed));
        }
    }
    Ok(())
}

pub async fn transcribe_file(
    config: &Config,
    engine: &dyn AsrEngine,
    file: &Path,
    manager_channel: u8,
) -> anyhow::Result<Transcribed> {
    let limits = DecodeLimits {
        max_duration: Duration::from_secs(u64::from(config.max_duration_secs)),
    };
    let path = file.to_path_buf();
    let decoded = tokio::task::spawn_blocking(move || rop_audio::decode_file(&path, &limits))
        .await?
        .with_context(|| format!("{}", file.display()))?;
    let transcript = rop_asr::transcribe_call(engine, decoded.channels, manager_channel).await?;
    Ok(Transcribed {
        audio: decoded.info,
        transcript,
    })
}

/// The dialogue for people: one line per utterance, then the metrics.
pub fn render(transcribed: &Transcribed) -> String {
    let (audio, transcript) = (&transcribed.audio, &transcribed.transcript);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({}), {} Гц, {}, {}; {} ({}), {:.2} × реального времени",
        audio.container,
        audio.codec,
        audio.sample_rate,
        if audio.channels == 2 {
            "стерео"
        } else {
            "моно"
        },
        clock(audio.duration.as_secs_f64()),
        transcript.engine,
        transcript.model,
        transcript.real_time_factor,
    );
    for segment in &transcript.segments {
        let _ = writeln!(
            out,
            "[{}–{}] {}: {}",
            clock(segment.start),
            clock(segment.end),
            segment.role.title(),
            segment.text
        );
    }
    let metrics = &transcript.metrics;
    let _ = write!(out, "# тишина {:.0} %", metrics.silence_share * 100.0);
    if let Some(share) = metrics.manager_talk_share {
        let _ = write!(out, ", доля речи менеджера {:.0} %", share * 100.0);
    }
    let _ = writeln!(
        out,
        ", самый длинный монолог {:.1} с, перебиваний {}, темп {:.0} слов/мин",
        metrics.longest_monologue_secs, metrics.interruptions, metrics.speech_rate_wpm
    );
    out
}

fn clock(seconds: f64) -> String {
    let tenths = (seconds * 10.0).round() as u64;
    format!(
        "{:02}:{:02}.{}",
        tenths / 600,
        tenths / 10 % 60,
        tenths % 10
    )
}
