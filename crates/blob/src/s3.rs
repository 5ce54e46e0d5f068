//! Objects in an S3-compatible bucket (AWS, MinIO, Ceph, Yandex Object
//! Storage, …), so that several hosts can share the recordings.

use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use url::Url;

use crate::{check_key, BlobError, BlobStore};

/// Files up to this size go up in one request; bigger ones as a multipart
/// upload in parts of this size (S3 wants at least 5 MiB per part).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: memory stays under `PART_SIZE * (this + 1)`.
const PARTS_IN_FLIGHT: usize = 2;
const READ_CHUNK: usize = 1024 * 1024;

/// Where and how to reach the bucket.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// E.g. `us-east-1`, `ru-central1`; most S3-compatible servers accept any.
    pub region: String,
    /// The server's root for anything but AWS, e.g. `http://minio:9000` or
    /// `https://storage.yandexcloud.net`; `None` means AWS itself.
    pub endpoint: Option<Url>,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects are stored under `<prefix>/<key>`, so that a bucket can be
    /// shared with other data or other installations.
    pub prefix: Option<String>,
    /// Plain-HTTP endpoints are refused unless this is set.
    pub allow_http: bool,
    /// `https://<bucket>.<endpoint>/<key>` addressing instead of
    /// `https://<endpoint>/<bucket>/<key>`. Self-hosted servers generally
    /// want path style (the default); with a custom endpoint and this set,
    /// the endpoint must already name the bucket.
    pub virtual_hosted_style: bool,
    /// Where `open` downloads objects to (anonymous files, gone when
    /// closed); default: the system's temporary directory.
    pub staging_dir: Option<PathBuf>,
}

impl S3Config {
    /// A bucket with everything else at its default.
    pub fn new(
        bucket: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        Self {
            bucket: bucket.into(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            prefix: None,
            allow_http: false,
            virtual_hosted_style: false,
            staging_dir: None,
        }
    }
}

// The secret must never reach a log line, even through `{:?}` of a config.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("staging_dir", &self.staging_dir)
            .finish()
    }
}

/// A [`BlobStore`] in an S3-compatible bucket.
pub struct S3Store {
    store: Arc<AmazonS3>,
    prefix: Option<String>,
    staging_dir: Option<PathBuf>,
    /// For messages: `bucket` at `endpoint`.
    location: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client without talking to the server.
    pub fn new(config: &S3Config) -> Result<Self, BlobError> {
        let prefix = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(prefix) => {
                check_key(prefix)
                    .map_err(|_| BlobError::Config(format!("invalid S3 prefix `{prefix}`")))?;
                Some(prefix.to_owned())
            }
        };
        if let Some(endpoint) = &config.endpoint {
            if !matches!(endpoint.scheme(), "http" | "https") {
                return Err(BlobError::Config(format!(
                    "S3 endpoint {endpoint} is neither http nor https"
                )));
            }
            if endpoint.scheme() == "http" && !config.allow_http {
                return Err(BlobError::Config(format!(
                    "S3 endpoint {endpoint} is plain HTTP: set allow_http to use it"
                )));
            }
        }
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            // Generous enough for a 100 MB recording on a slow link; a
            // connection that stalls is cut off here rather than hanging a
            // worker until its lease runs out for ever.
            .with_timeout(Duration::from_secs(600))
            .with_connect_timeout(Duration::from_secs(5));
        // The pipeline retries a failed step with its own growing pause, so
        // the client only rides out short hiccups and reports a server that
        // is down within seconds.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
        }
        let store = builder
            .build()
            .map_err(|e| BlobError::Config(format!("S3 settings: {e}")))?;
        let location = match &config.endpoint {
            Some(endpoint) => format!("`{}` at {endpoint}", config.bucket),
            None => format!("`{}` in AWS {}", config.bucket, config.region),
        };
        Ok(Self {
            store: Arc::new(store),
            prefix,
            staging_dir: config.staging_dir.clone(),
            location,
        })
    }

    /// Builds the client and checks that the bucket answers with these
    /// credentials, so that a wrong setting stops the service at start
    /// instead of failing every call later.
    pub async fn connect(config: &S3Config) -> Result<Self, BlobError> {
        let store = Self::new(config)?;
        let root = store.prefix.as_deref().map(ObjectPath::from);
        store
            .store
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(|e| BlobError::Unavailable(format!("bucket {}: {e}", store.location)))?;
        Ok(store)
    }

    fn path(&self, key: &str) -> Result<ObjectPath, BlobError> {
        check_key(key)?;
        let full = match &self.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.to_owned(),
        };
        ObjectPath::parse(full).map_err(|_| BlobError::InvalidKey(key.to_owned()))
    }

    async fn upload(&self, path: &ObjectPath, file: &Path) -> Result<(), BlobError> {
        let mut source = tokio::fs::File::open(file).await?;
        let size = source.metadata().await?.len();
        if size <= PART_SIZE as u64 {
            let mut content = Vec::with_capacity(size as usize);
            source.read_to_end(&mut content).await?;
            self.store
                .put(path, PutPayload::from(content))
                .await
                .map_err(|e| self.error(e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| self.error(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buffer = vec![0u8; READ_CHUNK];
        let sent: Result<(), BlobError> = async {
            loop {
                let read = source.read(&mut buffer).await?;
                if read == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error(e))?;
                writer.write(&buffer[..read]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                // `finish` aborts the upload itself when a part failed.
                writer.finish().await.map_err(|e| self.error(e))?;
                Ok(())
            }
            Err(error) => {
                // Parts of an unfinished upload are billed until aborted.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "multipart upload not aborted");
                }
                Err(error)
            }
        }
    }

    fn error(&self, error: object_store::Error) -> BlobError {
        match error {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other => BlobError::Unavailable(format!("S3 bucket {}: {other}", self.location)),
        }
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put_file(&self, key: &str, file: &Path) -> Result<(), BlobError> {
        let path = self.path(key)?;
        self.upload(&path, file).await?;
        // The trait moves the file: once the object is stored, the local copy
        // is only a leftover.
        tokio::fs::remove_file(file).await?;
        Ok(())
    }

    async fn open(&self, key: &str) -> Result<tokio::fs::File, BlobError> {
        let path = self.path(key)?;
        let object = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound(key.to_owned()),
            other => self.error(other),
        })?;
        // The decoders need Read + Seek over the whole recording: a local
        // anonymous file gives both and disappears with the last handle,
        // whatever way the reader ends.
        let dir = self.staging_dir.clone();
        let anonymous = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(anonymous);
        let mut stream = object.into_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(|e| self.error(e))?).await?;
        }
        file.flush().await?;
        file.seek(SeekFrom::Start(0)).await?;
        Ok(file)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(self.error(other)),
        }
    }
}
