use async_trait::async_trait;

/// A local model's context window by default: enough for a half-hour
/// call's transcript and a long answer.
pub const DEFAULT_CONTEXT_TOKENS: u32 = 8192;
/// Tokens a local model evaluates per step while reading a prompt.
pub const DEFAULT_BATCH: u32 = 512;

/// One question to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Who the model is and how it answers; the same for every question.
    pub system: String,
    /// The long material every question of one call shares (the
    /// transcript). Sent right after `system`, so its evaluation is reused.
    pub context: String,
    /// The question itself: a checklist's stages, a table's columns.
    pub task: String,
    /// JSON schema the answer must follow (objects, arrays, strings,
    /// numbers, integers, booleans, `enum`, `null` through `type` lists).
    pub schema: serde_json::Value,
    /// A short name of the schema for servers that want one (`checklist`).
    pub schema_name: String,
    pub max_tokens: u32,
}

/// A model's answer with its costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The raw answer; JSON when the engine kept to the schema.
    pub text: String,
    pub prompt_tokens: u32,
    /// Prompt tokens taken from the cache instead of evaluated.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// Seconds spent reading the prompt and writing the answer.
    pub prompt_secs: f64,
    pub generation_secs: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Worth retrying later: a server is down, busy, slow or rate-limited.
    #[error("{0}")]
    Unavailable(String),
    /// Retrying the same prompt cannot help: no model file, a rejected
    /// request, a prompt longer than the context.
    #[error("{0}")]
    Failed(String),
}

#[async_trait]
pub trait LanguageModel: Send + Sync + 'static {
    /// `llama.cpp` or `openai`, as results record it.
    fn name(&self) -> &'static str;
    /// The model, as results record it.
    fn model(&self) -> String;
    /// Answers `prompt`; the text is meant to be JSON of `prompt.schema`,
    /// but callers check.
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError>;
}
