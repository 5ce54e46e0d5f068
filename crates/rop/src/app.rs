//! Builds the running service from a [`Config`]: opens the database chosen
//! by its URL, applies migrations, makes sure an API key exists, and serves
//! the API on a listener until the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rop_api::{AppState, Limits, RateLimit};
use rop_blob::LocalDirStore;
use rop_domain::Store;
use rop_fetch::{guarded_client, ClientConfig, UrlGuard};
use rop_storage_postgres::PostgresStore;
use rop_storage_sqlite::SqliteStore;
use tokio::net::TcpListener;

use crate::config::{redact_url, Config};
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

/// A server ready to accept connections.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
}

impl Server {
    /// Prepares storage, directories and the router. `listener` may be bound
    /// to port 0 (tests).
    pub async fn build(config: &Config, listener: TcpListener) -> anyhow::Result<Self> {
        let store = open_store(&config.database_url()).await?;
        ensure_api_key(store.as_ref()).await?;

        let staging_dir = config.data_dir.join("staging");
        tokio::fs::create_dir_all(&staging_dir)
            .await
            .with_context(|| format!("cannot create {}", staging_dir.display()))?;
        remove_stale_staging(&staging_dir).await;
        let blobs = LocalDirStore::open_dir(config.data_dir.join("blobs"))
            .await
            .context("cannot open the blob store")?;

        let guard = UrlGuard {
            allow_private: config.fetch_allow_private,
            allow_loopback: config.fetch_allow_loopback,
        };
        let http = guarded_client(&ClientConfig {
            guard,
            ..ClientConfig::default()
        });
        let state = AppState {
            store,
            blobs: Arc::new(blobs),
            http,
            guard,
            limits: Limits {
                max_upload_bytes: config.max_upload_bytes,
                max_duration_secs: config.max_duration_secs,
                probe_timeout: Duration::from_millis(config.probe_timeout_ms),
            },
            rate_limit: RateLimit::per_minute(config.rate_limit_per_minute),
            staging_dir,
            caches: Default::default(),
            metrics: rop_api::prometheus(),
        };
        Ok(Self {
            listener,
            router: rop_api::router(state),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")
    }
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
