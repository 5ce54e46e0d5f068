//! Language models that answer with JSON of a given schema.
//!
//! Engines implementing [`LanguageModel`]: `LocalLlama` (feature `local`)
//! runs a GGUF model in-process with llama.cpp, its output constrained by a
//! grammar made from the schema ([`grammar`]); [`OpenAiChat`] asks any
//! OpenAI-compatible chat-completions server (Ollama, vLLM, llama.cpp
//! server, a cloud API) for structured output; [`LocalLlamaProcess`] runs
//! `LocalLlama` in a child process, the `rop-llm` program (feature
//! `server`), and talks to it as to such a server — what `rop` uses, since
//! llama.cpp and whisper.cpp cannot share one binary. None trusts the
//! answer: callers validate it.
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
mod process;
#[cfg(feature = "server")]
pub mod server;

pub use engine::{
    Completion, LanguageModel, LlmError, Prompt, DEFAULT_BATCH, DEFAULT_CONTEXT_TOKENS,
};
#[cfg(feature = "local")]
pub use local::{linked_ggml_version, LocalLlama, LocalLlamaConfig, BUNDLED_GGML_VERSION};
pub use openai::{OpenAiChat, OpenAiChatConfig};
pub use process::{
    program_beside_current_exe, LocalLlamaProcess, LocalLlamaProcessConfig, PROGRAM_NAME,
};
