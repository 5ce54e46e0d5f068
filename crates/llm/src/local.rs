//! A GGUF model run in-process by llama.cpp.
//!
//! One context serves one request at a time. It keeps what it evaluated
//! last, so a prompt that starts like the previous one (the same system
//! text and transcript, another task) reads only the part after the shared
//! prefix. Answers are sampled greedily under a grammar made from the
//! prompt's schema, so they are JSON of that schema unless cut short.

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use crate::engine::{
    Completion, LanguageModel, LlmError, Prompt, DEFAULT_BATCH, DEFAULT_CONTEXT_TOKENS,
};
use crate::grammar::gbnf_from_schema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLlamaConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// CPU threads for reading prompts and writing answers.
    pub threads: u32,
    /// The context window: prompt and answer together.
    pub context_tokens: u32,
    pub batch: u32,
}

impl LocalLlamaConfig {
    /// Defaults for everything but the file: all cores, 8192 tokens.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        Self {
            model_path: model_path.into(),
            threads,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            batch: DEFAULT_BATCH,
        }
    }
}

pub struct LocalLlama {
    model_name: String,
    context_tokens: u32,
    session: Arc<Mutex<Session>>,
}

impl std::fmt::Debug for LocalLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlama")
            .field("model", &self.model_name)
            .field("context_tokens", &self.context_tokens)
            .finish_non_exhaustive()
    }
}

/// The ggml release llama.cpp is built with (llama-cpp-sys-2 0.1.160).
pub const BUNDLED_GGML_VERSION: &str = "0.26.0";

/// The ggml release llama.cpp runs on in this binary. whisper.cpp bundles
/// an older one; with both linked into one binary, the linker keeps one
/// definition of each ggml symbol, and link order decides whose.
pub fn linked_ggml_version() -> String {
    // SAFETY: `ggml_version` returns a pointer to a static C string.
    unsafe { CStr::from_ptr(llama_cpp_sys_2::ggml_version()) }
        .to_string_lossy()
        .into_owned()
}

/// llama.cpp's global state: set up once per process, never torn down.
fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default());
            warn_about_foreign_ggml();
            LlamaBackend::init().map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|error| LlmError::Failed(format!("llama.cpp не запустился: {error}")))
}

fn warn_about_foreign_ggml() {
    let linked = linked_ggml_version();
    if linked != BUNDLED_GGML_VERSION {
        tracing::warn!(
            linked = %linked,
            bundled = BUNDLED_GGML_VERSION,
            "llama.cpp runs on another copy of ggml than it was built with \
             (whisper.cpp's, by link order); its answers are not vouched for"
        );
    }
}

impl LocalLlama {
    /// Loads the model and makes its context. Slow (seconds): call once and
    /// share the result.
    pub fn load(config: LocalLlamaConfig) -> Result<Self, LlmError> {
        let path = &config.model_path;
        if !path.is_file() {
            return Err(LlmError::Failed(format!(
                "файл языковой модели {} не найден; установите модели командой `rop models install`",
                path.display()
            )));
        }
        if config.threads == 0 || config.context_tokens == 0 || config.batch == 0 {
            return Err(LlmError::Failed(format!(
                "threads, context_tokens и batch должны быть больше нуля: {config:?}"
            )));
        }
        let threads = i32::try_from(config.threads).unwrap_or(i32::MAX);
        let backend = backend()?;
        // llama.cpp's model and context set-up is not safe to run
        // concurrently; loads are rare, so they simply take turns.
        static LOADING: Mutex<()> = Mutex::new(());
        let _turn = LOADING.lock().unwrap_or_else(PoisonError::into_inner);

        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|error| {
                LlmError::Failed(format!(
                    "языковая модель {} не загружена: {error}",
                    path.display()
                ))
            })?;
        let template = model
            .meta_val_str("tokenizer.chat_template")
            .unwrap_or_default();
        if !template.contains("<|im_start|>") {
            tracing::warn!(
                model = %path.display(),
                "the model's chat template is not ChatML; answers may be poor"
            );
        }
        if config.context_tokens > model.n_ctx_train() {
            tracing::warn!(
                context_tokens = config.context_tokens,
                trained = model.n_ctx_train(),
                "the context is longer than the model was trained for"
            );
        }
        let model = Arc::new(model);
        // SAFETY: the context refers to the model, so it must not outlive
        // it. `Session` owns both, never hands the context out, and declares
        // `context` before `model`, so the context is dropped first; the
        // `Arc` keeps the model at one address for as long as it lives.
        let model_ref: &'static LlamaModel = unsafe { &*Arc::as_ptr(&model) };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(config.context_tokens))
            .with_n_batch(config.batch)
            .with_n_ubatch(config.batch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context = model_ref.new_context(backend, params).map_err(|error| {
            LlmError::Failed(format!(
                "контекст языковой модели ({} токенов) не создан: {error}",
                config.context_tokens
            ))
        })?;
        let batch = LlamaBatch::new(config.batch as usize, 1);

        let model_name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        tracing::info!(
            model = %model_name,
            context_tokens = config.context_tokens,
            threads = config.threads,
            "local language model loaded"
        );
        Ok(Self {
            model_name,
            context_tokens: config.context_tokens,
            session: Arc::new(Mutex::new(Session {
                context,
                model,
                batch,
                batch_size: config.batch as usize,
                evaluated: Vec::new(),
            })),
        })
    }

    /// The context window: prompt and answer together must fit in it.
    pub fn context_tokens(&self) -> u32 {
        self.context_tokens
    }
}

#[async_trait]
impl LanguageModel for LocalLlama {
    fn name(&self) -> &'static str {
        "llama.cpp"
    }

    fn model(&self) -> String {
        self.model_name.clone()
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let grammar = gbnf_from_schema(&prompt.schema)
            .map_err(|error| LlmError::Failed(error.to_string()))?;
        let shared = self.session.clone();
        let prompt = prompt.clone();
        tokio::task::spawn_blocking(move || {
            let mut session = shared.lock().unwrap_or_else(|poisoned| {
                // A panic mid-request left the cache in an unknown state.
                let mut session = poisoned.into_inner();
                session.forget();
                shared.clear_poison();
                session
            });
            session.complete(&prompt, &grammar)
        })
        .await
        .map_err(|error| LlmError::Failed(format!("llama.cpp: {error}")))?
    }
}

/// The loaded model and its context, with what the context holds.
struct Session {
    // Fields drop in declaration order: the context before the model it
    // refers to (see `LocalLlama::load`).
    context: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    model: Arc<LlamaModel>,
    batch_size: usize,
    /// The tokens whose keys and values the context holds, position by
    /// position.
    evaluated: Vec<LlamaToken>,
}

impl Session {
    fn complete(&mut self, prompt: &Prompt, grammar: &str) -> Result<Completion, LlmError> {
        let tokens = self.tokenize(prompt);
        let n_ctx = self.context.n_ctx() as usize;
        if tokens.len() >= n_ctx {
            return Err(LlmError::Failed(format!(
                "запрос длиннее контекста языковой модели: {} токенов при контексте {n_ctx}; \
                 сократите текст или увеличьте context_tokens",
                tokens.len()
            )));
        }
        let mut grammar = LlamaSampler::grammar(&self.model, grammar, "root").map_err(|error| {
            LlmError::Failed(format!("llama.cpp не принял грамматику ответа: {error}"))
        })?;

        let started = Instant::now();
        let cached = self.reuse_prefix(&tokens);
        let mut logits = self.evaluate(&tokens[cached..])?;
        let prompt_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let budget = (prompt.max_tokens as usize).min(n_ctx - tokens.len());
        let model = self.model.clone();
        let vocab = model.vocab();
        let mut text = Vec::new();
        let mut generated = 0;
        let mut finished = false;
        while generated < budget {
            let Some(token) = self.pick(&mut grammar, logits) else {
                self.forget();
                return Err(LlmError::Failed(
                    "грамматика ответа не допускает ни одного токена".into(),
                ));
            };
            if vocab.is_eog(token) {
                finished = true;
                break;
            }
            if let Err(error) = grammar.try_accept(token) {
                self.forget();
                return Err(LlmError::Failed(format!(
                    "грамматика ответа не приняла токен: {error}"
                )));
            }
            text.extend(vocab.token_to_piece(token, false, None));
            generated += 1;
            if generated < budget {
                logits = self.evaluate(&[token])?;
            }
        }
        let generation_secs = started.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&text).into_owned();
        // Out of budget right after the closing brace: the grammar would
        // have allowed nothing but the end, so the answer is whole.
        finished = finished || serde_json::from_str::<serde_json::Value>(&text).is_ok();
        tracing::debug!(
            prompt_tokens = tokens.len(),
            cached_tokens = cached,
            completion_tokens = generated,
            prompt_secs,
            generation_secs,
            "local completion"
        );
        if !finished {
            let head: String = text.chars().take(200).collect();
            return Err(LlmError::Failed(format!(
                "ответ модели не уместился в {budget} токенов (max_tokens = {}, контекст {n_ctx}): {head}…",
                prompt.max_tokens
            )));
        }
        Ok(Completion {
            text,
            prompt_tokens: count(tokens.len()),
            cached_tokens: count(cached),
            completion_tokens: count(generated),
            prompt_secs,
            generation_secs,
        })
    }

    /// The prompt in Qwen's ChatML. Each part is tokenized on its own: the
    /// tokens of the context then do not depend on the task after it (so
    /// prompts sharing a context share a token prefix), and only the
    /// template's own markers may become special tokens, never text that
    /// happens to spell `<|im_end|>`.
    fn tokenize(&self, prompt: &Prompt) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        if vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
        let user_tail = if prompt.context.is_empty() {
            prompt.task.clone()
        } else {
            format!("\n\n{}", prompt.task)
        };
        let parts: [(&str, bool); 6] = [
            ("<|im_start|>system\n", true),
            (&prompt.system, false),
            ("<|im_end|>\n<|im_start|>user\n", true),
            (&prompt.context, false),
            (&user_tail, false),
            ("<|im_end|>\n<|im_start|>assistant\n", true),
        ];
        for (text, special) in parts {
            if !text.is_empty() {
                vocab.tokenize_into(text.as_bytes(), &mut tokens, false, special);
            }
        }
        tokens
    }

    /// Keeps the cached part `tokens` starts with and drops the rest;
    /// returns how many tokens are kept. The last prompt token is always
    /// evaluated again: the answer starts from its logits.
    fn reuse_prefix(&mut self, tokens: &[LlamaToken]) -> usize {
        let mut common = self
            .evaluated
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len().saturating_sub(1));
        if common < self.evaluated.len() {
            let dropped = self
                .context
                .clear_kv_cache_seq(Some(0), Some(count(common)), None);
            if !matches!(dropped, Ok(true)) {
                self.context.clear_kv_cache();
                common = 0;
            }
            self.evaluated.truncate(common);
        }
        common
    }

    /// Evaluates `tokens` after what the context holds; returns the index of
    /// the logits of the last one.
    fn evaluate(&mut self, tokens: &[LlamaToken]) -> Result<i32, LlmError> {
        let mut last = 0;
        for chunk in tokens.chunks(self.batch_size) {
            self.batch.clear();
            let start = self.evaluated.len();
            for (i, token) in chunk.iter().enumerate() {
                let position = i32::try_from(start + i).unwrap_or(i32::MAX);
                let wanted = i + 1 == chunk.len();
                if let Err(error) = self.batch.add(*token, position, &[0], wanted) {
                    self.forget();
                    return Err(LlmError::Failed(format!("llama.cpp: {error}")));
                }
            }
            if let Err(error) = self.context.decode(&mut self.batch) {
                self.forget();
                return Err(LlmError::Failed(format!(
                    "llama.cpp не смог вычислить токены: {error}"
                )));
            }
            self.evaluated.extend_from_slice(chunk);
            last = self.batch.n_tokens() - 1;
        }
        Ok(last)
    }

    /// The most likely token the grammar allows. The grammar is first asked
    /// about the single most likely token only: checking all 150 000
    /// candidates each step costs more than the check usually saves.
    fn pick(&self, grammar: &mut LlamaSampler, logits: i32) -> Option<LlamaToken> {
        let scores = self.context.get_logits_ith(logits);
        let best = argmax(scores.iter().copied())?;
        let mut single = LlamaTokenDataArray::new(
            vec![LlamaTokenData::new(
                LlamaToken::new(i32::try_from(best).ok()?),
                scores[best],
                0.0,
            )],
            false,
        );
        grammar.apply(&mut single);
        if single.data[0].logit().is_finite() {
            return Some(single.data[0].id());
        }
        let mut all = self.context.token_data_array_ith(logits);
        grammar.apply(&mut all);
        let best = argmax(all.data.iter().map(LlamaTokenData::logit))?;
        Some(all.data[best].id())
    }

    /// Empties the cache: after an error its contents are unknown.
    fn forget(&mut self) {
        self.context.clear_kv_cache();
        self.evaluated.clear();
    }
}

/// The index of the largest finite score; the first one on ties.
fn argmax(scores: impl Iterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, score) in scores.enumerate() {
        if score.is_finite() && best.is_none_or(|(_, top)| score > top) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tokenizer of the model the integration tests use; tensors are
    /// not loaded.
    fn vocabulary() -> LlamaModel {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
        let path = cache
            .join("rop-models")
            .join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run scripts/test.sh (it installs the models)",
            path.display()
        );
        let params = LlamaModelParams::default().with_vocab_only(true);
        LlamaModel::load_from_file(backend().unwrap(), path, &params).unwrap()
    }

    /// Whether llama.cpp's grammar lets the model write `text` and stop.
    fn llama_accepts(model: &LlamaModel, gbnf: &str, text: &str) -> bool {
        let vocab = model.vocab();
        let mut grammar = LlamaSampler::grammar(model, gbnf, "root").unwrap();
        let allowed = |grammar: &mut LlamaSampler, token: LlamaToken| {
            let mut one =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
            grammar.apply(&mut one);
            one.data[0].logit().is_finite()
        };
        for token in vocab.tokenize(text.as_bytes(), false, false) {
            if !allowed(&mut grammar, token) {
                return false;
            }
            grammar.accept(token);
        }
        allowed(&mut grammar, vocab.eos())
    }

    #[test]
    fn llama_cpp_reads_our_grammars_as_we_do() {
        let model = vocabulary();
        let schema = json!({
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["выполнен", "не выполнен"]},
                "name": {"type": ["string", "null"], "maxLength": 12},
                "budget": {"type": ["integer", "null"]},
                "score": {"type": "number"},
                "note": {"type": "string"},
                "stages": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {
                        "type": "object",
                        "properties": {"id": {"const": "a"}, "done": {"type": "boolean"}},
                        "required": ["id"],
                        "additionalProperties": false,
                    },
                },
            },
            "required": ["verdict", "name", "budget", "score", "note", "stages"],
            "additionalProperties": false,
        });
        let gbnf = gbnf_from_schema(&schema).unwrap();
        let good = [
            r#"{"verdict":"не выполнен","name":"Ольга","budget":300000,"score":0.5,"note":"","stages":[]}"#,
            r#"{"verdict": "выполнен", "name": null, "budget": null, "score": -2, "note": "«да» \"ок\"\n\u0416", "stages": [{"id":"a"}, {"id":"a","done":true}]}"#,
        ];
        let bad = [
            r#"{"verdict":"выполнено","name":null,"budget":null,"score":1,"note":"","stages":[]}"#,
            r#"{"verdict":"выполнен","name":"Ольга Петровна Иванова","budget":null,"score":1,"note":"","stages":[]}"#,
            r#"{"verdict":"выполнен","name":null,"budget":null,"score":1,"note":"","stages":[{"id":"a"},{"id":"a"},{"id":"a"}]}"#,
            r#"{"name":null,"verdict":"выполнен","budget":null,"score":1,"note":"","stages":[]}"#,
            r#"{"verdict":"выполнен","name":null,"budget":null,"score":1,"note":"","stages":[]"#,
        ];
        for text in good {
            assert!(llama_accepts(&model, &gbnf, text), "refused {text}\n{gbnf}");
        }
        for text in bad {
            assert!(
                !llama_accepts(&model, &gbnf, text),
                "accepted {text}\n{gbnf}"
            );
        }
    }

    #[test]
    fn the_bundled_ggml_version_is_the_one_built() {
        assert_eq!(linked_ggml_version(), BUNDLED_GGML_VERSION);
    }

    #[test]
    fn argmax_skips_what_the_grammar_removed() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), Some(1));
        assert_eq!(argmax([f32::NEG_INFINITY, -5.0].into_iter()), Some(1));
        assert_eq!(argmax([f32::NEG_INFINITY].into_iter()), None);
    }
}
