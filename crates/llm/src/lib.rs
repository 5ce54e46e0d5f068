//! Language models that answer with JSON of a given schema.
//!
//! Two engines implement [`LanguageModel`]: `LocalLlama` (feature `local`)
//! runs a GGUF model in-process with llama.cpp, its output constrained by a
//! grammar made from the schema ([`grammar`]); [`OpenAiChat`] asks any
//! OpenAI-compatible chat-completions
//! server (Ollama, vLLM, llama.cpp server, a cloud API) for structured
//! output. Neither trusts the answer: callers validate it.
//!
//! A [`Prompt`] puts the long, shared part (the transcript) before the
//! task, so one call's checklists and tables reuse the evaluated transcript
//! (llama.cpp's KV cache, a server's prompt cache) instead of reading it
//! again for each.

mod engine;
pub mod grammar;
#[cfg(feature = "local")]
mod local;
mod openai;

pub use engine::{Completion, LanguageModel, LlmError, Prompt};
#[cfg(feature = "local")]
pub use local::{
    linked_ggml_version, LocalLlama, LocalLlamaConfig, BUNDLED_GGML_VERSION, DEFAULT_BATCH,
    DEFAULT_CONTEXT_TOKENS,
};
pub use openai::{OpenAiChat, OpenAiChatConfig};
