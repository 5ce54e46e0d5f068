//! The local model in a child process: the `rop-llm` program, reached
//! through its OpenAI-compatible endpoint on loopback.
//!
//! llama.cpp and whisper.cpp each bundle their own ggml, and the two cannot
//! share one binary, so `rop` keeps llama.cpp out of its own. The child is
//! started at the first question (or by [`LocalLlamaProcess::start`]),
//! started again if it dies, killed when this side is dropped, and ends by
//! itself when this process ends however it ends: it watches its stdin, the
//! pipe this side holds open.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

use crate::engine::{Completion, LanguageModel, LlmError, Prompt, DEFAULT_CONTEXT_TOKENS};
use crate::openai::{OpenAiChat, OpenAiChatConfig};

/// The program's file name, next to `rop` in a build or an installation.
pub const PROGRAM_NAME: &str = "rop-llm";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLlamaProcessConfig {
    /// The `rop-llm` program.
    pub program: PathBuf,
    /// The GGUF file.
    pub model_path: PathBuf,
    /// CPU threads; 0 means all cores.
    pub threads: u32,
    /// The context window: prompt and answer together.
    pub context_tokens: u32,
    /// For one answer, the wait behind other questions included.
    pub timeout: Duration,
    /// For loading the model.
    pub start_timeout: Duration,
}

impl LocalLlamaProcessConfig {
    /// Defaults for everything but the files: all cores, 8192 tokens,
    /// 5 minutes per answer, 2 minutes to load.
    pub fn new(program: impl Into<PathBuf>, model_path: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            model_path: model_path.into(),
            threads: 0,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            timeout: Duration::from_secs(300),
            start_timeout: Duration::from_secs(120),
        }
    }
}

/// Where `rop-llm` is when it was built or installed beside the running
/// program. Test binaries run from `target/<profile>/deps/`, one level
/// below the programs.
pub fn program_beside_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent()?;
    }
    Some(dir.join(format!("{PROGRAM_NAME}{}", std::env::consts::EXE_SUFFIX)))
}

#[derive(Debug)]
pub struct LocalLlamaProcess {
    config: LocalLlamaProcessConfig,
    model_name: String,
    running: tokio::sync::Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    /// Tells this start from a later one.
    generation: u64,
    child: Child,
    chat: OpenAiChat,
    /// The child's stdin; it exits when this closes.
    _lifeline: ChildStdin,
}

impl LocalLlamaProcess {
    /// Checks the files; starts nothing yet.
    pub fn new(config: LocalLlamaProcessConfig) -> Result<Self, LlmError> {
        if !config.program.is_file() {
            return Err(LlmError::Failed(format!(
                "программа языковой модели {} не найдена; соберите её командой \
                 `cargo build --release -p rop-llm --features server` (scripts/run.sh делает это) \
                 или укажите путь в llm_program",
                config.program.display()
            )));
        }
        if !config.model_path.is_file() {
            return Err(LlmError::Failed(format!(
                "файл языковой модели {} не найден; установите модели командой `rop models install`",
                config.model_path.display()
            )));
        }
        let model_name = model_name(&config.model_path);
        Ok(Self {
            config,
            model_name,
            running: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts the process (loads the model) unless it runs already.
    pub async fn start(&self) -> Result<(), LlmError> {
        self.chat().await.map(drop)
    }

    /// The child's process id while it runs.
    pub async fn pid(&self) -> Option<u32> {
        let mut running = self.running.lock().await;
        let current = running.as_mut()?;
        match current.child.try_wait() {
            Ok(None) => current.child.id(),
            _ => None,
        }
    }

    /// The running process's client and generation, starting the process
    /// when there is none or it has exited.
    async fn chat(&self) -> Result<(u64, OpenAiChat), LlmError> {
        let mut running = self.running.lock().await;
        let mut generation = 0;
        if let Some(current) = running.as_mut() {
            generation = current.generation;
            match current.child.try_wait() {
                Ok(None) => return Ok((generation, current.chat.clone())),
                Ok(Some(status)) => {
                    tracing::warn!(%status, "the language model process exited; starting it again");
                }
                Err(error) => {
                    tracing::warn!(%error, "the language model process is lost; starting it again");
                }
            }
            *running = None;
        }
        let started = self.spawn(generation + 1).await?;
        let chat = started.chat.clone();
        *running = Some(started);
        Ok((generation + 1, chat))
    }

    async fn spawn(&self, generation: u64) -> Result<Running, LlmError> {
        let config = &self.config;
        let token: String = rand::random::<[u8; 24]>()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut command = Command::new(&config.program);
        command
            .arg("--model")
            .arg(&config.model_path)
            .arg("--threads")
            .arg(config.threads.to_string())
            .arg("--context-tokens")
            .arg(config.context_tokens.to_string())
            .arg("--exit-with-stdin")
            .env("ROP_LLM_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            LlmError::Failed(format!(
                "программа языковой модели {} не запустилась: {error}",
                config.program.display()
            ))
        })?;
        let (Some(lifeline), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(LlmError::Unavailable(
                "процесс языковой модели запущен без каналов".into(),
            ));
        };
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(config.start_timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok(Some(url.trim().to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let url = match announced {
            Ok(Ok(Some(url))) => url,
            Ok(_) => {
                let status = child
                    .wait()
                    .await
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(LlmError::Unavailable(format!(
                    "процесс языковой модели завершился при запуске ({status}); причина — в журнале выше"
                )));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(LlmError::Unavailable(format!(
                    "языковая модель не загрузилась за {} с",
                    config.start_timeout.as_secs()
                )));
            }
        };
        // The child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base_url = Url::parse(&url).map_err(|error| {
            LlmError::Unavailable(format!(
                "процесс языковой модели назвал адрес «{url}»: {error}"
            ))
        })?;
        tracing::info!(model = %self.model_name, pid = ?child.id(), "language model process started");
        let chat = OpenAiChat::new(OpenAiChatConfig {
            base_url,
            api_key: Some(token),
            model: self.model_name.clone(),
            timeout: config.timeout,
        })?;
        Ok(Running {
            generation,
            child,
            chat,
            _lifeline: lifeline,
        })
    }

    /// Ends the process after a failure it may be the cause of (it died, it
    /// hangs, it is stuck on a question nobody waits for); the next
    /// question starts a fresh one.
    async fn stop(&self, generation: u64) {
        let mut running = self.running.lock().await;
        if running.as_ref().is_some_and(|r| r.generation == generation) {
            if let Some(mut stopped) = running.take() {
                let _ = stopped.child.start_kill();
                let _ = stopped.child.wait().await;
            }
        }
    }
}

fn model_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |stem| stem.to_string_lossy().into_owned(),
    )
}

#[async_trait]
impl LanguageModel for LocalLlamaProcess {
    fn name(&self) -> &'static str {
        "llama.cpp"
    }

    fn model(&self) -> String {
        self.model_name.clone()
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let (generation, chat) = self.chat().await?;
        let answer = chat.complete(prompt).await;
        if let Err(LlmError::Unavailable(message)) = &answer {
            tracing::warn!(%message, "the language model process failed a question; restarting it");
            self.stop(generation).await;
        }
        answer
    }
}
