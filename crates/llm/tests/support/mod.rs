//! Helpers shared by this crate's test binaries; each uses a part.
#![allow(dead_code)]

pub mod gbnf;
pub mod schema;

use std::path::PathBuf;

const MODEL_FILE: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// The real Qwen2.5-Coder-1.5B that `rop models install` puts in the cache
/// (scripts/test.sh runs it).
pub fn model_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let path = cache.join("rop-models").join(MODEL_FILE);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (it installs the models)",
        path.display()
    );
    path
}
