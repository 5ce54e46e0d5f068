//! Builds the running service from a [`Config`]: opens the database chosen
//! by its URL, applies migrations, makes sure an API key exists, and serves
//! the API and runs the pipeline's workers until the shutdown future
//! completes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rop_analysis::Analyzer;
use rop_api::{AppState, Limits, RateLimit};
use rop_asr::{AsrEngine, OpenAiConfig, OpenAiEngine, WhisperConfig, WhisperEngine};
use rop_audio::DecodeLimits;
use rop_blob::BlobStore;
use rop_delivery::{Deliverer, DelivererConfig, RetryPolicy};
use rop_domain::Store;
use rop_fetch::{AudioClients, ClientConfig, DownloadLimits, UrlGuard};
use rop_integrations::TaskWorker;
use rop_llm::{
    LanguageModel, LocalLlamaProcess, LocalLlamaProcessConfig, OpenAiChat, OpenAiChatConfig,
};
use rop_pipeline::{AnalyzeStep, DecodeStep, DownloadStep, TranscribeStep, WorkerConfig, Workers};
use rop_storage_postgres::PostgresStore;
use rop_storage_sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{redact_url, AsrEngineKind, Config, LlmEngineKind};
use crate::keys::generate_api_key;

/// Opens the storage backend the URL names and applies its migrations.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Arc::new(
            PostgresStore::connect(url)
                .await
                .with_context(|| format!("cannot connect to {}", redact_url(url)))?,
        )
    } else if url.starts_with("sqlite:") {
        if let Some(parent) = sqlite_file(url).and_then(|path| path.parent().map(Path::to_path_buf))
        {
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        Arc::new(
            SqliteStore::connect(url)
                .await
                .with_context(|| format!("cannot open {url}"))?,
        )
    } else {
        bail!(
            "unsupported database URL `{}`: use sqlite://FILE or postgres://…",
            redact_url(url)
        );
    };
    store.migrate().await.context("database migration failed")?;
    Ok(store)
}

fn sqlite_file(url: &str) -> Option<&Path> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

/// Makes sure the installation has an API key; true when one was just made.
pub async fn ensure_api_key(store: &dyn Store) -> anyhow::Result<bool> {
    let created = store
        .ensure_api_key(&generate_api_key(), chrono::Utc::now())
        .await
        .context("cannot create the API key")?;
    if created {
        // The key itself is never logged; the operator asks the CLI for it.
        tracing::info!("API key generated; `rop api-key show` prints it");
    }
    Ok(created)
}

/// The name of the administrator made at first start.
pub const FIRST_ADMIN: &str = "admin";

/// Creates the first administrator when nobody can log in yet; returns his
/// one-time password to be printed once (never logged).
pub async fn ensure_first_admin(store: &dyn Store) -> anyhow::Result<Option<String>> {
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let password = crate::keys::random_alphanumeric(16);
    let password_hash = rop_web::password::hash(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let created = store
        .create_user(&rop_domain::NewUser {
            username: FIRST_ADMIN.to_owned(),
            password_hash,
            role: rop_domain::Role::Admin,
            manager_id: None,
            created_at: chrono::Utc::now(),
        })
        .await;
    match created {
        Ok(_) => {
            tracing::info!(
                username = FIRST_ADMIN,
                "first administrator created; the password is printed on standard output"
            );
            Ok(Some(password))
        }
        // Another process starting at the same moment made him.
        Err(rop_domain::StoreError::Duplicate) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The integrations alone, for the command line (`rop amocrm …`).
pub async fn open_integrations(config: &Config) -> anyhow::Result<rop_integrations::Integrations> {
    let core = Core::open(config).await?;
    Ok(core.integrations(config))
}

/// What the API and the workers share: storage, audio, outgoing HTTP.
struct Core {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    http: AudioClients,
    guard: UrlGuard,
    staging_dir: PathBuf,
}

impl Core {
    async fn open(config: &Config) -> anyhow::Result<Self> {
        let store = open_store(&config.database_url()).await?;
        ensure_api_key(store.as_ref()).await?;

        let staging_dir = config.data_dir.join("staging");
        tokio::fs::create_dir_all(&staging_dir)
            .await
            .with_context(|| format!("cannot create {}", staging_dir.display()))?;
        remove_stale_staging(&staging_dir).await;
        let blobs = rop_blob::open_blob_store(&config.blob_store_spec())
            .await
            .context("cannot open the blob store")?;

        let guard = UrlGuard {
            allow_private: config.fetch_allow_private,
            allow_loopback: config.fetch_allow_loopback,
        };
        let http = AudioClients::new(&ClientConfig {
            guard,
            ..ClientConfig::default()
        });
        Ok(Self {
            store,
            blobs,
            http,
            guard,
            staging_dir,
        })
    }

    /// The workers of this process, with every step this build can run.
    fn workers(&self, config: &Config, analyzer: Arc<Analyzer>) -> anyhow::Result<Arc<Workers>> {
        let engine = speech_engine(config)?;
        let decode_limits = DecodeLimits {
            max_duration: Duration::from_secs(u64::from(config.max_duration_secs)),
        };
        let decode = DecodeStep {
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            limits: decode_limits,
        };
        let transcribe = TranscribeStep {
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            engine,
            limits: decode_limits,
        };
        let analyze = AnalyzeStep {
            store: self.store.clone(),
            analyzer,
        };
        let download = DownloadStep {
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            http: self.http.clone(),
            staging_dir: self.staging_dir.clone(),
            limits: DownloadLimits {
                max_bytes: config.max_upload_bytes,
                total_timeout: Duration::from_secs(config.download_timeout_secs),
            },
        };
        let worker_config = WorkerConfig {
            concurrency: config.worker_concurrency.max(1),
            lease: Duration::from_secs(config.job_lease_secs),
            max_attempts: config.job_attempts,
            retry_base: Duration::from_secs(config.retry_base_secs),
            ..WorkerConfig::default()
        };
        Ok(Arc::new(Workers::new(
            self.store.clone(),
            vec![
                Arc::new(download),
                Arc::new(decode),
                Arc::new(transcribe),
                Arc::new(analyze),
            ],
            worker_config,
        )))
    }

    /// The integrations, as the API, the web interface and the task worker
    /// share them.
    fn integrations(&self, config: &Config) -> rop_integrations::Integrations {
        rop_integrations::Integrations::new(rop_integrations::Context {
            store: self.store.clone(),
            http: self.http.clone(),
            local_offset: chrono::FixedOffset::east_opt(config.utc_offset_hours * 3600)
                .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("UTC")),
            job_attempts: config.job_attempts,
        })
    }

    /// The runner of the integrations' background tasks (recordings to
    /// fetch, exports).
    fn task_worker(&self, integrations: &rop_integrations::Integrations) -> TaskWorker {
        TaskWorker::new(
            self.store.clone(),
            vec![
                Arc::new(integrations.zadarma.clone()),
                Arc::new(integrations.amocrm.clone()),
                Arc::new(integrations.bitrix24.clone()),
            ],
        )
    }

    /// The webhook senders of this process.
    fn deliverer(&self, config: &Config) -> Deliverer {
        let client = rop_delivery::webhook_client(self.guard);
        Deliverer::new(
            self.store.clone(),
            client,
            DelivererConfig {
                concurrency: config.webhook_concurrency,
                request_timeout: Duration::from_secs(config.webhook_timeout_secs),
                retry: RetryPolicy {
                    base: Duration::from_secs(config.webhook_retry_base_secs),
                    ..RetryPolicy::default()
                },
                ..DelivererConfig::default()
            },
        )
    }
}

/// The configured language model, loaded once per process; `None` when
/// the installation uses phrase rules only. `start_now` loads a local model
/// in the background at once (a process with workers); otherwise it starts
/// at its first question (a web-only process trying a checklist on a call).
pub fn language_model(
    config: &Config,
    start_now: bool,
) -> anyhow::Result<Option<Arc<dyn LanguageModel>>> {
    Ok(match config.llm_engine {
        LlmEngineKind::None => None,
        LlmEngineKind::Local => {
            let mut process =
                LocalLlamaProcessConfig::new(config.llm_program(), config.llm_model());
            process.threads = config.llm_threads;
            process.context_tokens = config.llm_context_tokens;
            process.timeout = Duration::from_secs(config.llm_timeout_secs);
            let model =
                Arc::new(LocalLlamaProcess::new(process).context("языковая модель не готова")?);
            if start_now {
                // Loaded in the background: the first call need not wait for it.
                let starting = model.clone();
                tokio::spawn(async move {
                    if let Err(error) = starting.start().await {
                        tracing::error!(%error, "the local language model did not start; will retry at the next call");
                    }
                });
            }
            Some(model)
        }
        LlmEngineKind::OpenAi => {
            let url = config
                .llm_url
                .as_deref()
                .context("llm_url is required for the openai engine")?;
            Some(Arc::new(
                OpenAiChat::new(OpenAiChatConfig {
                    base_url: url::Url::parse(url).context("llm_url")?,
                    api_key: config.llm_api_key.clone(),
                    model: config.llm_remote_model.clone(),
                    timeout: Duration::from_secs(config.llm_timeout_secs),
                })
                .context("языковая модель не готова")?,
            ))
        }
    })
}

/// The configured speech recogniser, loaded once per process.
pub fn speech_engine(config: &Config) -> anyhow::Result<Arc<dyn AsrEngine>> {
    Ok(match config.asr_engine {
        AsrEngineKind::Whisper => {
            let threads = match config.asr_threads {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            let engine = WhisperEngine::load(WhisperConfig {
                model: config.whisper_model(),
                vad_model: config.vad_model(),
                language: config.asr_language.clone(),
                threads,
                parallel: 1,
                short_context: config.asr_short_context,
            })
            .context("распознавание речи не готово")?;
            tracing::info!(model = %config.whisper_model().display(), threads, "whisper.cpp loaded");
            Arc::new(engine)
        }
        AsrEngineKind::OpenAi => {
            let url = config
                .asr_url
                .as_deref()
                .context("asr_url is required for the openai engine")?;
            Arc::new(
                OpenAiEngine::new(OpenAiConfig {
                    base_url: url::Url::parse(url).context("asr_url")?,
                    api_key: config.asr_api_key.clone(),
                    model: config.asr_remote_model.clone(),
                    language: config.asr_language.clone(),
                    timeout: Duration::from_secs(config.asr_timeout_secs),
                })
                .context("распознавание речи не готово")?,
            )
        }
    })
}

/// A server ready to accept connections: the API, and the workers unless
/// `worker_concurrency` is 0.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    workers: Option<(Arc<Workers>, Deliverer, TaskWorker)>,
    first_admin_password: Option<String>,
}

impl Server {
    /// Prepares storage, directories and the router. `listener` may be bound
    /// to port 0 (tests).
    pub async fn build(config: &Config, listener: TcpListener) -> anyhow::Result<Self> {
        let core = Core::open(config).await?;
        let first_admin_password = ensure_first_admin(core.store.as_ref()).await?;
        let with_workers = config.worker_concurrency > 0;
        // One model per process, shared by the workers and the editors'
        // «try on a call».
        let analyzer = Arc::new(Analyzer::new(language_model(config, with_workers)?));
        let integrations = core.integrations(config);
        let workers = if with_workers {
            Some((
                core.workers(config, analyzer.clone())?,
                core.deliverer(config),
                core.task_worker(&integrations),
            ))
        } else {
            None
        };
        let state = AppState {
            store: core.store,
            blobs: core.blobs,
            http: core.http,
            limits: Limits {
                max_upload_bytes: config.max_upload_bytes,
                max_duration_secs: config.max_duration_secs,
                probe_timeout: Duration::from_millis(config.probe_timeout_ms),
                job_attempts: config.job_attempts,
            },
            rate_limit: RateLimit::per_minute(config.rate_limit_per_minute),
            staging_dir: core.staging_dir,
            caches: Default::default(),
            metrics: rop_api::prometheus(),
            integrations,
        };
        let web = rop_web::WebState::new(
            state.store.clone(),
            state.blobs.clone(),
            Arc::new(crate::web::EngineServices::new(
                config,
                rop_delivery::webhook_client(core.guard),
                analyzer,
            )),
            state.integrations.clone(),
            rop_web::WebSettings {
                public_url: config
                    .public_url
                    .as_deref()
                    .and_then(|url| url::Url::parse(url).ok()),
                utc_offset_secs: config.utc_offset_hours * 3600,
                session_hours: config.session_hours,
                fetch_allow_private: config.fetch_allow_private,
                ..rop_web::WebSettings::default()
            },
        );
        Ok(Self {
            listener,
            router: rop_api::router(state, rop_web::router(web)),
            workers,
            first_admin_password,
        })
    }

    /// The one-time password of the administrator made at this start, if
    /// the database had no users.
    pub fn first_admin_password(&self) -> Option<&str> {
        self.first_admin_password.as_deref()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight
    /// finish and hands running jobs back to the queue.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let workers = self.workers.map(|(workers, deliverer, tasks)| {
            (
                tokio::spawn(workers.run(stopped.clone())),
                deliverer.spawn(stopped.clone()),
                tokio::spawn(tasks.run(stopped)),
            )
        });
        let served = axum::serve(
            self.listener,
            // The peer address keys the web login attempt limit.
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
        .context("HTTP server failed");
        if let Some((workers, deliverer, tasks)) = workers {
            let _ = workers.await;
            let _ = deliverer.await;
            let _ = tasks.await;
        }
        served
    }
}

/// `rop worker`: processes calls until `shutdown` completes.
pub async fn run_workers(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let core = Core::open(config).await?;
    let analyzer = Arc::new(Analyzer::new(language_model(config, true)?));
    let workers = core.workers(config, analyzer)?;
    let (stop, stopped) = watch::channel(false);
    let delivering = core.deliverer(config).spawn(stopped.clone());
    let tasks = tokio::spawn(
        core.task_worker(&core.integrations(config))
            .run(stopped.clone()),
    );
    let running = tokio::spawn(workers.run(stopped));
    shutdown.await;
    let _ = stop.send(true);
    running.await.context("the workers panicked")?;
    tasks.await.context("the integration tasks panicked")?;
    delivering.await.context("the webhook senders panicked")
}

/// Files left in staging by a process that died mid-upload. Only old ones
/// are removed: another process may share the directory.
async fn remove_stale_staging(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let cutoff = SystemTime::now() - Duration::from_secs(3600);
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < cutoff);
        if stale {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
