use async_trait::async_trait;
use rop_domain::Word;

/// A stretch of speech on one channel, times in seconds from its start.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizedSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Word timings, when the engine gives them.
    pub words: Vec<Word>,
}

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// Worth retrying later: a remote server is down, busy or slow.
    #[error("{0}")]
    Unavailable(String),
    /// Retrying the same input cannot help: no model, a rejected request.
    #[error("{0}")]
    Failed(String),
}

#[async_trait]
pub trait AsrEngine: Send + Sync + 'static {
    /// `whisper.cpp`, `openai`, … as the transcript records it.
    fn name(&self) -> &'static str;
    /// The model, as the transcript records it.
    fn model(&self) -> String;
    /// The configured language (`ru`, `auto`, …).
    fn language(&self) -> String;
    /// Transcribes one channel of 16 kHz mono audio.
    async fn transcribe(&self, samples: Vec<f32>) -> Result<Vec<RecognizedSegment>, AsrError>;
}
