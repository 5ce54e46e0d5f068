//! Configuration: built-in defaults, then a TOML file (`--config` /
//! `ROP_CONFIG`), then `ROP_*` environment variables, then command-line
//! flags — each overriding the one before. With nothing configured at all,
//! `rop serve` runs on SQLite under `./data`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Database, audio and staging files live here.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    pub models_dir: PathBuf,
    /// Allow audio links into private networks (on-premise CRMs).
    pub fetch_allow_private: bool,
    /// Allow audio links to this machine (tests, single-host setups).
    pub fetch_allow_loopback: bool,
    pub max_upload_bytes: u64,
    pub max_duration_secs: u32,
    /// Requests per minute per API key; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Upload-time probe of an audio link, in milliseconds.
    pub probe_timeout_ms: u64,
    /// Calls processed at the same time by `serve` (0: none, API only) and
    /// by `worker`.
    pub worker_concurrency: usize,
    /// Attempts each processing step gets before the call fails.
    pub job_attempts: u32,
    /// A worker's hold on a job; another worker takes over this long after
    /// the last heartbeat of a worker that died.
    pub job_lease_secs: u64,
    /// Delay before the first retry of a failed step, doubled for each next.
    pub retry_base_secs: u64,
    /// Longest time one download of a recording may take.
    pub download_timeout_secs: u64,
    /// Speech recognition: `whisper` (whisper.cpp in this process) or
    /// `openai` (a server with OpenAI's `/v1/audio/transcriptions`).
    pub asr_engine: AsrEngineKind,
    /// whisper.cpp model file [default: `ggml-base.bin` in the models directory].
    pub asr_model: Option<PathBuf>,
    /// Skip silence with the Silero VAD model (`ggml-silero-v6.2.0.bin` in
    /// the models directory).
    pub asr_vad: bool,
    /// Language of the calls: `ru`, `en`, … or `auto`.
    pub asr_language: String,
    /// Threads of one transcription; 0 = every core.
    pub asr_threads: usize,
    /// Shrink Whisper's encoder context to each utterance's length (faster
    /// on phone calls, slightly less accurate).
    pub asr_short_context: bool,
    /// `openai` engine: the API root, e.g. `http://asr:8000/v1/`.
    pub asr_url: Option<String>,
    /// `openai` engine: bearer token, when the server wants one.
    pub asr_api_key: Option<String>,
    /// `openai` engine: model name the server knows.
    pub asr_remote_model: String,
    /// `openai` engine: time limit of one request.
    pub asr_timeout_secs: u64,
    /// Language model for checklists and tables: `local` (llama.cpp with
    /// the installed Qwen model, in the `rop-llm` process beside `rop`),
    /// `openai` (a server with OpenAI's `/v1/chat/completions`: Ollama,
    /// vLLM, llama.cpp server, a cloud API) or `none` (phrase rules only;
    /// tables are not filled).
    pub llm_engine: LlmEngineKind,
    /// `local` engine: the GGUF file [default: Qwen2.5-Coder-1.5B-Instruct
    /// in the models directory].
    pub llm_model: Option<PathBuf>,
    /// `local` engine: CPU threads; 0 = every core.
    pub llm_threads: u32,
    /// `local` engine: the context window in tokens (prompt and answer).
    pub llm_context_tokens: u32,
    /// `local` engine: the `rop-llm` program [default: next to `rop`].
    pub llm_program: Option<PathBuf>,
    /// `openai` engine: the API root, e.g. `http://127.0.0.1:11434/v1/`.
    pub llm_url: Option<String>,
    /// `openai` engine: bearer token, when the server wants one.
    pub llm_api_key: Option<String>,
    /// `openai` engine: model name the server knows.
    pub llm_remote_model: String,
    /// Time limit of one answer (`local` and `openai`).
    pub llm_timeout_secs: u64,
    /// Webhooks sent at the same time.
    pub webhook_concurrency: usize,
    /// Time limit of one webhook request.
    pub webhook_timeout_secs: u64,
    /// Delay before the first retry of a webhook, doubled for each next
    /// (with jitter, at most an hour); retries stop after 24 hours.
    pub webhook_retry_base_secs: u64,
    /// Where recordings are kept: `local` (`<data_dir>/blobs`) or `s3` (a
    /// bucket that every `serve` and `worker` host of the installation shares).
    pub blob_store: BlobStoreKind,
    pub s3_bucket: Option<String>,
    pub s3_region: String,
    /// Root URL of an S3-compatible server (MinIO, Ceph, Yandex Object
    /// Storage, …); unset for AWS itself.
    pub s3_endpoint: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Objects go under `<prefix>/audio/…` inside the bucket.
    pub s3_prefix: Option<String>,
    /// Allow a plain-HTTP `s3_endpoint` (a server on the same host or LAN).
    pub s3_allow_http: bool,
    /// `<bucket>.<endpoint>` addressing instead of `<endpoint>/<bucket>`.
    pub s3_virtual_hosted_style: bool,
    /// Log filter, e.g. `info` or `rop=debug,info` (`RUST_LOG` wins).
    pub log: String,
    /// The address the CRM and browsers reach this server at (behind a
    /// proxy); shown on the Подключение page. Unset: the page's own address.
    pub public_url: Option<String>,
    /// The company's time zone as hours from UTC (Moscow: 3), for days on
    /// charts and times on pages.
    pub utc_offset_hours: i32,
    /// How long a web login lasts, hours.
    pub session_hours: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    Local,
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmEngineKind {
    Local,
    OpenAi,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsrEngineKind {
    Whisper,
    OpenAi,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            models_dir: PathBuf::from("./models"),
            fetch_allow_private: false,
            fetch_allow_loopback: false,
            max_upload_bytes: 100 * 1024 * 1024,
            max_duration_secs: 2700,
            rate_limit_per_minute: 60,
            probe_timeout_ms: 5000,
            worker_concurrency: 1,
            job_attempts: 5,
            job_lease_secs: 60,
            retry_base_secs: 10,
            download_timeout_secs: 600,
            asr_engine: AsrEngineKind::Whisper,
            asr_model: None,
            asr_vad: true,
            asr_language: "ru".to_owned(),
            asr_threads: 0,
            asr_short_context: true,
            asr_url: None,
            asr_api_key: None,
            asr_remote_model: "whisper-1".to_owned(),
            asr_timeout_secs: 600,
            llm_engine: LlmEngineKind::Local,
            llm_model: None,
            llm_threads: 0,
            llm_context_tokens: rop_llm::DEFAULT_CONTEXT_TOKENS,
            llm_program: None,
            llm_url: None,
            llm_api_key: None,
            llm_remote_model: "qwen2.5-coder:1.5b".to_owned(),
            llm_timeout_secs: 300,
            webhook_concurrency: 4,
            webhook_timeout_secs: 15,
            webhook_retry_base_secs: 30,
            blob_store: BlobStoreKind::Local,
            s3_bucket: None,
            s3_region: "us-east-1".to_owned(),
            s3_endpoint: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: None,
            s3_allow_http: false,
            s3_virtual_hosted_style: false,
            log: "info".to_owned(),
            public_url: None,
            utc_offset_hours: 3,
            session_hours: 12,
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<PathBuf>,
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("ROP_").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract::<Config>()
            .map_err(Box::new)?
            .validated()
    }

    /// Values that parse but cannot work.
    fn validated(self) -> Result<Self, Box<figment::Error>> {
        let problem = if self.job_attempts == 0 {
            Some("job_attempts: нужна хотя бы одна попытка")
        } else if self.job_lease_secs < 3 {
            Some("job_lease_secs: не меньше 3 секунд")
        } else if self.download_timeout_secs == 0 {
            Some("download_timeout_secs: должно быть больше нуля")
        } else if self.asr_engine == AsrEngineKind::OpenAi && self.asr_url.is_none() {
            Some("asr_url: движок openai требует адрес сервера распознавания")
        } else if self
            .asr_url
            .as_deref()
            .is_some_and(|url| url::Url::parse(url).is_err())
        {
            Some("asr_url: некорректный адрес")
        } else if self.asr_timeout_secs == 0 {
            Some("asr_timeout_secs: должно быть больше нуля")
        } else if self.llm_engine == LlmEngineKind::OpenAi && self.llm_url.is_none() {
            Some("llm_url: движок openai требует адрес сервера языковой модели")
        } else if self
            .llm_url
            .as_deref()
            .is_some_and(|url| url::Url::parse(url).is_err())
        {
            Some("llm_url: некорректный адрес")
        } else if self.llm_timeout_secs == 0 || self.webhook_timeout_secs == 0 {
            Some("llm_timeout_secs и webhook_timeout_secs должны быть больше нуля")
        } else if self.llm_context_tokens < 512 {
            Some("llm_context_tokens: не меньше 512")
        } else if self.webhook_concurrency == 0 {
            Some("webhook_concurrency: нужен хотя бы один")
        } else if self.public_url.as_deref().is_some_and(|url| {
            url::Url::parse(url).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        }) {
            Some("public_url: нужен адрес вида https://rop.example.ru")
        } else if !(-12..=14).contains(&self.utc_offset_hours) {
            Some("utc_offset_hours: от -12 до 14")
        } else if self.session_hours == 0 || self.session_hours > 24 * 30 {
            Some("session_hours: от 1 до 720")
        } else {
            self.s3_problem()
        };
        match problem {
            Some(problem) => Err(Box::new(figment::Error::from(problem.to_owned()))),
            None => Ok(self),
        }
    }

    /// What an `s3` blob store needs and a wrong value that would otherwise
    /// surface only at the first upload.
    fn s3_problem(&self) -> Option<&'static str> {
        if self.blob_store != BlobStoreKind::S3 {
            return None;
        }
        let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
        let endpoint = self.s3_endpoint.as_deref().map(url::Url::parse);
        if !given(&self.s3_bucket) {
            Some("s3_bucket: хранилище s3 требует имя бакета")
        } else if !given(&self.s3_access_key_id) || !given(&self.s3_secret_access_key) {
            Some("s3_access_key_id, s3_secret_access_key: хранилище s3 требует ключи доступа")
        } else if matches!(&endpoint, Some(Err(_)))
            || matches!(&endpoint, Some(Ok(url)) if !matches!(url.scheme(), "http" | "https"))
        {
            Some("s3_endpoint: некорректный адрес, нужен http(s)://…")
        } else if matches!(&endpoint, Some(Ok(url)) if url.scheme() == "http")
            && !self.s3_allow_http
        {
            Some("s3_endpoint: адрес http:// без шифрования — включите s3_allow_http, если это намеренно")
        } else {
            None
        }
    }

    /// The blob store these settings describe; `validated` has checked it.
    pub fn blob_store_spec(&self) -> rop_blob::BlobStoreSpec {
        match self.blob_store {
            BlobStoreKind::Local => rop_blob::BlobStoreSpec::LocalDir(self.data_dir.join("blobs")),
            BlobStoreKind::S3 => {
                let text = |value: &Option<String>| value.clone().unwrap_or_default();
                rop_blob::BlobStoreSpec::S3(Box::new(rop_blob::S3Config {
                    bucket: text(&self.s3_bucket),
                    region: self.s3_region.clone(),
                    endpoint: self
                        .s3_endpoint
                        .as_deref()
                        .and_then(|u| url::Url::parse(u).ok()),
                    access_key_id: text(&self.s3_access_key_id),
                    secret_access_key: text(&self.s3_secret_access_key),
                    prefix: self.s3_prefix.clone(),
                    allow_http: self.s3_allow_http,
                    virtual_hosted_style: self.s3_virtual_hosted_style,
                    // Downloads for decoding land next to the other staged
                    // files, on the data disk rather than a small /tmp.
                    staging_dir: Some(self.data_dir.join("staging")),
                }))
            }
        }
    }

    /// The whisper.cpp model: the configured file, or the one `rop models
    /// install` puts in the models directory.
    pub fn whisper_model(&self) -> PathBuf {
        self.asr_model.clone().unwrap_or_else(|| {
            rop_models::model_path(&self.models_dir, rop_models::WHISPER_BASE)
                .unwrap_or_else(|| self.models_dir.join("ggml-base.bin"))
        })
    }

    pub fn vad_model(&self) -> Option<PathBuf> {
        self.asr_vad.then(|| {
            rop_models::model_path(&self.models_dir, rop_models::SILERO_VAD)
                .unwrap_or_else(|| self.models_dir.join("ggml-silero-v6.2.0.bin"))
        })
    }

    /// The local language model: the configured file, or the one `rop
    /// models install` puts in the models directory.
    pub fn llm_model(&self) -> PathBuf {
        self.llm_model.clone().unwrap_or_else(|| {
            rop_models::model_path(&self.models_dir, rop_models::QWEN_CODER_1_5B).unwrap_or_else(
                || {
                    self.models_dir
                        .join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
                },
            )
        })
    }

    /// The `rop-llm` program: the configured one, or the one beside `rop`.
    pub fn llm_program(&self) -> PathBuf {
        self.llm_program
            .clone()
            .or_else(rop_llm::program_beside_current_exe)
            .unwrap_or_else(|| PathBuf::from(rop_llm::PROGRAM_NAME))
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("rop.db").display()),
        }
    }
}

/// Hides the password of a database URL in logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url()))
            .field("models_dir", &self.models_dir)
            .field("fetch_allow_private", &self.fetch_allow_private)
            .field("fetch_allow_loopback", &self.fetch_allow_loopback)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_duration_secs", &self.max_duration_secs)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("probe_timeout_ms", &self.probe_timeout_ms)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("job_attempts", &self.job_attempts)
            .field("job_lease_secs", &self.job_lease_secs)
            .field("retry_base_secs", &self.retry_base_secs)
            .field("download_timeout_secs", &self.download_timeout_secs)
            .field("asr_engine", &self.asr_engine)
            .field("asr_model", &self.asr_model)
            .field("asr_vad", &self.asr_vad)
            .field("asr_language", &self.asr_language)
            .field("asr_threads", &self.asr_threads)
            .field("asr_short_context", &self.asr_short_context)
            .field("asr_url", &self.asr_url)
            .field("asr_api_key", &self.asr_api_key.as_ref().map(|_| "***"))
            .field("asr_remote_model", &self.asr_remote_model)
            .field("llm_engine", &self.llm_engine)
            .field("llm_model", &self.llm_model)
            .field("llm_threads", &self.llm_threads)
            .field("llm_context_tokens", &self.llm_context_tokens)
            .field("llm_program", &self.llm_program)
            .field("llm_url", &self.llm_url)
            .field("llm_api_key", &self.llm_api_key.as_ref().map(|_| "***"))
            .field("llm_remote_model", &self.llm_remote_model)
            .field("llm_timeout_secs", &self.llm_timeout_secs)
            .field("webhook_concurrency", &self.webhook_concurrency)
            .field("webhook_timeout_secs", &self.webhook_timeout_secs)
            .field("webhook_retry_base_secs", &self.webhook_retry_base_secs)
            .field("blob_store", &self.blob_store)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_endpoint", &self.s3_endpoint.as_deref().map(redact_url))
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &self.s3_secret_access_key.as_ref().map(|_| "***"),
            )
            .field("s3_prefix", &self.s3_prefix)
            .field("s3_allow_http", &self.s3_allow_http)
            .field("s3_virtual_hosted_style", &self.s3_virtual_hosted_style)
            .field("public_url", &self.public_url)
            .field("utc_offset_hours", &self.utc_offset_hours)
            .field("session_hours", &self.session_hours)
            .finish()
    }
}

#[cfg(test)]
// figment's Jail API returns its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rop.toml",
                "listen = \"127.0.0.1:9000\"\nrate_limit_per_minute = 10\nmax_duration_secs = 60",
            )?;
            jail.set_env("ROP_RATE_LIMIT_PER_MINUTE", "20");
            jail.set_env("ROP_FETCH_ALLOW_PRIVATE", "true");
            jail.set_env("ROP_CONFIG", "ignored-here");
            let overrides = Overrides {
                data_dir: Some("/srv/rop".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("rop.toml")), &overrides).unwrap();
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.max_duration_secs, 60);
            assert_eq!(config.rate_limit_per_minute, 20);
            assert!(config.fetch_allow_private);
            assert_eq!(config.data_dir, PathBuf::from("/srv/rop"));
            assert_eq!(config.database_url(), "sqlite:///srv/rop/rop.db");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("rop.toml", "lisen = \"127.0.0.1:9000\"")?;
            assert!(Config::load(Some(Path::new("rop.toml")), &Overrides::default()).is_err());
            jail.create_file("bad.toml", "max_duration_secs = \"long\"")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &Overrides::default()).is_err());
            assert!(Config::load(Some(Path::new("missing.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        figment::Jail::expect_with(|jail| {
            for (name, value, key, good) in [
                ("ROP_JOB_ATTEMPTS", "0", "job_attempts", "5"),
                ("ROP_JOB_LEASE_SECS", "1", "job_lease_secs", "60"),
                (
                    "ROP_DOWNLOAD_TIMEOUT_SECS",
                    "0",
                    "download_timeout_secs",
                    "60",
                ),
                ("ROP_ASR_ENGINE", "openai", "asr_url", "whisper"),
                (
                    "ROP_ASR_URL",
                    "not a url",
                    "asr_url",
                    "http://127.0.0.1:9/v1/",
                ),
                ("ROP_ASR_TIMEOUT_SECS", "0", "asr_timeout_secs", "60"),
                ("ROP_BLOB_STORE", "s3", "s3_bucket", "local"),
            ] {
                jail.set_env(name, value);
                let error = Config::load(None, &Overrides::default()).unwrap_err();
                assert!(error.to_string().contains(key), "{error}");
                jail.set_env(name, good);
            }
            assert!(Config::load(None, &Overrides::default()).is_ok());
            Ok(())
        });
    }

    #[test]
    fn s3_blob_store_needs_a_bucket_keys_and_a_usable_endpoint() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROP_BLOB_STORE", "s3");
            jail.set_env("ROP_S3_BUCKET", "calls");
            let error = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("s3_access_key_id"), "{error}");
            jail.set_env("ROP_S3_ACCESS_KEY_ID", "id");
            jail.set_env("ROP_S3_SECRET_ACCESS_KEY", "secret");
            jail.set_env("ROP_S3_ENDPOINT", "minio:9000");
            let error = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("s3_endpoint"), "{error}");
            jail.set_env("ROP_S3_ENDPOINT", "http://minio:9000");
            let error = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains("s3_allow_http"), "{error}");
            jail.set_env("ROP_S3_ALLOW_HTTP", "true");
            jail.set_env("ROP_S3_PREFIX", "office-1");
            let config = Config::load(None, &Overrides::default()).unwrap();
            match config.blob_store_spec() {
                rop_blob::BlobStoreSpec::S3(s3) => {
                    assert_eq!(s3.bucket, "calls");
                    assert_eq!(s3.endpoint.unwrap().as_str(), "http://minio:9000/");
                    assert_eq!(s3.prefix.as_deref(), Some("office-1"));
                    assert!(s3.allow_http);
                }
                other => panic!("{other:?}"),
            }
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_database_password() {
        let config = Config {
            database_url: Some("postgres://rop:hunter2@db/rop".into()),
            asr_api_key: Some("sk-secret".into()),
            blob_store: BlobStoreKind::S3,
            s3_secret_access_key: Some("s3-secret".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert!(!format!("{config:?}").contains("s3-secret"));
    }
}
