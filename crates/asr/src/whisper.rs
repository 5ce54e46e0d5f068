//! whisper.cpp in-process (the embedded default).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};

use async_trait::async_trait;
use rop_domain::Word;
use tokio::sync::Semaphore;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
    WhisperVadContext, WhisperVadContextParams, WhisperVadParams,
};

use crate::engine::{AsrEngine, AsrError, RecognizedSegment};
use crate::SAMPLE_RATE;

#[derive(Debug, Clone)]
pub struct WhisperConfig {
    /// A whisper.cpp (ggml) model file.
    pub model: PathBuf,
    /// Silero VAD for whisper.cpp; without it silence is decoded too
    /// (slower, and Whisper tends to invent words in silence).
    pub vad_model: Option<PathBuf>,
    /// `ru`, `en`, … or `auto` to detect.
    pub language: String,
    /// Threads of one transcription.
    pub threads: usize,
    /// Transcriptions run at the same time; more than one only pays with
    /// spare cores (each uses `threads`).
    pub parallel: usize,
    /// Shrink the encoder's context to the length of each window: much
    /// faster on short utterances, at some cost in accuracy.
    pub short_context: bool,
}

pub struct WhisperEngine {
    context: Arc<WhisperContext>,
    config: WhisperConfig,
    permits: Semaphore,
    /// Decoder states and VAD contexts of finished transcriptions, kept
    /// for the next: each costs a hundred megabytes of buffers to set up,
    /// more than a short utterance takes to recognise.
    idle: Arc<Mutex<Idle>>,
}

#[derive(Default)]
struct Idle {
    states: Vec<WhisperState>,
    vads: Vec<WhisperVadContext>,
}

static LOGGING: Once = Once::new();

impl WhisperEngine {
    /// Loads the model (once; every transcription shares it).
    pub fn load(config: WhisperConfig) -> Result<Self, AsrError> {
        LOGGING.call_once(whisper_rs::install_logging_hooks);
        if !config.model.is_file() {
            return Err(AsrError::Failed(format!(
                "нет файла модели распознавания {} (установите: rop models install)",
                config.model.display()
            )));
        }
        if let Some(vad) = &config.vad_model {
            if !vad.is_file() {
                return Err(AsrError::Failed(format!(
                    "нет файла модели VAD {} (установите: rop models install)",
                    vad.display()
                )));
            }
        }
        let path = config
            .model
            .to_str()
            .ok_or_else(|| AsrError::Failed("путь к модели должен быть в UTF-8".into()))?;
        let context = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|error| {
                AsrError::Failed(format!(
                    "модель {} не загружается: {error}",
                    config.model.display()
                ))
            })?;
        Ok(Self {
            context: Arc::new(context),
            permits: Semaphore::new(config.parallel.max(1)),
            idle: Arc::default(),
            config,
        })
    }
}

#[async_trait]
impl AsrEngine for WhisperEngine {
    fn name(&self) -> &'static str {
        "whisper.cpp"
    }

    fn model(&self) -> String {
        self.config
            .model
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn language(&self) -> String {
        self.config.language.clone()
    }

    async fn transcribe(&self, samples: Vec<f32>) -> Result<Vec<RecognizedSegment>, AsrError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AsrError::Unavailable("engine closed".into()))?;
        let context = self.context.clone();
        let config = self.config.clone();
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || run(&context, &config, &idle, samples))
            .await
            .map_err(|error| AsrError::Failed(format!("whisper task: {error}")))?
    }
}

/// Longest stretch handed to Whisper at once: its window is 30 s.
const MAX_WINDOW_SECS: f64 = 28.0;
/// A pause this long between speech parts starts a new window rather than
/// being decoded.
const MAX_GAP_SECS: f64 = 2.0;
/// Sound kept around each part VAD found, so word edges are not clipped.
const PAD_SECS: f64 = 0.2;

fn run(
    context: &WhisperContext,
    config: &WhisperConfig,
    idle: &Mutex<Idle>,
    samples: Vec<f32>,
) -> Result<Vec<RecognizedSegment>, AsrError> {
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let windows = match &config.vad_model {
        Some(vad_model) => {
            let cached = idle.lock().ok().and_then(|mut idle| idle.vads.pop());
            let mut vad = match cached {
                Some(vad) => vad,
                None => load_vad(vad_model, config.threads)?,
            };
            let windows = speech_windows(&mut vad, &samples)?;
            if let Ok(mut idle) = idle.lock() {
                idle.vads.push(vad);
            }
            windows
        }
        None => vec![(0, samples.len())],
    };
    let cached = idle.lock().ok().and_then(|mut idle| idle.states.pop());
    let mut state = match cached {
        Some(state) => state,
        None => context
            .create_state()
            .map_err(|error| AsrError::Failed(format!("whisper state: {error}")))?,
    };
    let segments = transcribe_windows(context, config, &mut state, &samples, windows);
    // A state whose run failed is dropped rather than trusted again.
    if segments.is_ok() {
        if let Ok(mut idle) = idle.lock() {
            idle.states.push(state);
        }
    }
    segments
}

fn transcribe_windows(
    context: &WhisperContext,
    config: &WhisperConfig,
    state: &mut WhisperState,
    samples: &[f32],
    windows: Vec<(usize, usize)>,
) -> Result<Vec<RecognizedSegment>, AsrError> {
    let end_of_text = context.token_eot();
    let mut segments = Vec::new();
    for (from, to) in windows {
        let offset = from as f64 / f64::from(SAMPLE_RATE);
        let mut window = samples[from..to].to_vec();
        // whisper.cpp refuses input under a second; silence after it is harmless.
        let minimum = SAMPLE_RATE as usize + SAMPLE_RATE as usize / 10;
        if window.len() < minimum {
            window.resize(minimum, 0.0);
        }
        let params = params_for(config, window.len());
        state
            .full(params, &window)
            .map_err(|error| AsrError::Failed(format!("whisper: {error}")))?;
        collect(
            state,
            end_of_text,
            offset,
            to as f64 / f64::from(SAMPLE_RATE),
            &mut segments,
        );
    }
    Ok(segments)
}

fn params_for(config: &WhisperConfig, samples: usize) -> FullParams<'_, '_> {
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_n_threads(config.threads.clamp(1, 64) as i32);
    params.set_language(Some(config.language.as_str()));
    params.set_print_special(false);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    params.set_token_timestamps(true);
    params.set_suppress_blank(true);
    params.set_suppress_nst(true);
    // Windows are independent utterances; carrying text over invites
    // repetition loops.
    params.set_no_context(true);
    if config.short_context {
        // The encoder's cost grows with its context; a short window needs
        // only its share of the 1500 positions of 30 s (plus a margin).
        let seconds = samples as f64 / f64::from(SAMPLE_RATE);
        let context = ((seconds / 30.0 * 1500.0).ceil() as i32 + 128).min(1500);
        params.set_audio_ctx(context);
    }
    params
}

/// Sample ranges worth decoding: speech as Silero VAD finds it, padded,
/// and joined into windows of at most [`MAX_WINDOW_SECS`].
fn load_vad(vad_model: &std::path::Path, threads: usize) -> Result<WhisperVadContext, AsrError> {
    let path = vad_model
        .to_str()
        .ok_or_else(|| AsrError::Failed("путь к модели VAD должен быть в UTF-8".into()))?;
    let mut context_params = WhisperVadContextParams::default();
    context_params.set_n_threads(threads.clamp(1, 64) as i32);
    context_params.set_use_gpu(false);
    WhisperVadContext::new(path, context_params)
        .map_err(|error| AsrError::Failed(format!("модель VAD не загружается: {error}")))
}

fn speech_windows(
    vad: &mut WhisperVadContext,
    samples: &[f32],
) -> Result<Vec<(usize, usize)>, AsrError> {
    let mut params = WhisperVadParams::default();
    params.set_max_speech_duration(MAX_WINDOW_SECS as f32);
    let found = vad
        .segments_from_samples(params, samples)
        .map_err(|error| AsrError::Failed(format!("VAD: {error}")))?;
    let rate = f64::from(SAMPLE_RATE);
    let parts = found.map(|part| {
        (
            (f64::from(part.start) / 100.0 - PAD_SECS).max(0.0),
            (f64::from(part.end) / 100.0 + PAD_SECS).min(samples.len() as f64 / rate),
        )
    });
    Ok(join_parts(parts)
        .into_iter()
        .map(|(start, end)| {
            (
                (start * rate) as usize,
                ((end * rate) as usize).min(samples.len()),
            )
        })
        .filter(|(from, to)| to > from)
        .collect())
}

/// Speech parts (seconds, in order) → windows for Whisper.
fn join_parts(parts: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut windows: Vec<(f64, f64)> = Vec::new();
    for (start, end) in parts {
        match windows.last_mut() {
            Some((window_start, window_end))
                if start - *window_end <= MAX_GAP_SECS
                    && end - *window_start <= MAX_WINDOW_SECS =>
            {
                *window_end = window_end.max(end);
            }
            _ => windows.push((start, end)),
        }
    }
    windows
}

/// Whisper's segments of the last window, moved to the call's timeline.
fn collect(
    state: &WhisperState,
    end_of_text: i32,
    offset: f64,
    window_end: f64,
    segments: &mut Vec<RecognizedSegment>,
) {
    let clamp = |t: f64| (t + offset).min(window_end);
    for segment in state.as_iter() {
        let text = segment
            .to_str_lossy()
            .map(|text| text.trim().to_owned())
            .unwrap_or_default();
        if text.is_empty() {
            continue;
        }
        let mut words: Vec<Word> = Vec::new();
        let mut pending: Option<(f64, f64, Vec<u8>)> = None;
        for index in 0..segment.n_tokens() {
            let Some(token) = segment.get_token(index) else {
                continue;
            };
            if token.token_id() >= end_of_text {
                continue;
            }
            let data = token.token_data();
            let bytes = token.to_bytes().unwrap_or_default();
            let (start, end) = (clamp(data.t0 as f64 / 100.0), clamp(data.t1 as f64 / 100.0));
            match pending.as_mut() {
                Some((_, word_end, text)) if !bytes.starts_with(b" ") => {
                    text.extend_from_slice(bytes);
                    *word_end = end;
                }
                _ => {
                    flush_word(&mut words, pending.take());
                    pending = Some((start, end, bytes.to_vec()));
                }
            }
        }
        flush_word(&mut words, pending);
        segments.push(RecognizedSegment {
            start: clamp(segment.start_timestamp() as f64 / 100.0),
            end: clamp(segment.end_timestamp() as f64 / 100.0),
            text,
            words,
        });
    }
}

fn flush_word(words: &mut Vec<Word>, word: Option<(f64, f64, Vec<u8>)>) {
    let Some((start, end, bytes)) = word else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if !text.is_empty() {
        words.push(Word { start, end, text });
    }
}

#[cfg(test)]
mod tests {
    use super::join_parts;

    #[test]
    fn speech_parts_join_into_windows_without_long_pauses() {
        let parts = [
            (0.5, 2.0),
            (2.5, 6.0),
            (9.0, 12.0),
            (12.5, 38.0),
            (38.5, 41.0),
            (41.5, 42.0),
        ];
        assert_eq!(
            join_parts(parts.into_iter()),
            [(0.5, 6.0), (9.0, 12.0), (12.5, 38.0), (38.5, 42.0)],
            "a 3 s pause splits; a window never passes 28 s"
        );
        assert!(join_parts(std::iter::empty()).is_empty());
    }
}
