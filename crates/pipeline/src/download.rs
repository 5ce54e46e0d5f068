//! Step `download`: fetches the call's recording from its link into the
//! blob store, through the URL guard, with byte and time limits.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use rop_blob::BlobStore;
use rop_domain::{Call, JobKind, Store, StoreError};
use rop_fetch::{download_to_file, AudioClients, DownloadError, DownloadLimits};
use url::Url;

use crate::worker::{Step, StepDone, StepError};

pub struct DownloadStep {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub http: AudioClients,
    /// Where a download is written before it moves into the blob store.
    pub staging_dir: PathBuf,
    pub limits: DownloadLimits,
}

#[async_trait]
impl Step for DownloadStep {
    fn kind(&self) -> JobKind {
        JobKind::Download
    }

    async fn run(&self, call: &Call) -> Result<StepDone, StepError> {
        if call.audio_blob.is_some() {
            // An uploaded file, or a download recorded by an earlier run.
            return Ok(StepDone::then(JobKind::Decode, "Запись уже в хранилище"));
        }
        let link = call
            .audio_url
            .as_deref()
            .ok_or_else(|| StepError::Permanent {
                code: "no_audio".into(),
                message: "У звонка нет ни ссылки на запись, ни файла".into(),
            })?;
        let url = Url::parse(link).map_err(|error| StepError::Permanent {
            code: "invalid_url".into(),
            message: format!("Ссылка на запись некорректна: {error}"),
        })?;

        let staged = self
            .staging_dir
            .join(format!("download-{}", uuid::Uuid::new_v4().simple()));
        let settings = self.store.connection_settings().await?;
        let http = self.http.client(settings.allow_private_networks);
        let downloaded = download_to_file(http, &url, &staged, self.limits)
            .await
            .map_err(|error| self.explain(error))?;
        // One key per call: a repeated run overwrites instead of leaving
        // an orphan behind.
        let key = format!("audio/call-{}", call.seq);
        let stored = self.blobs.put_file(&key, &staged).await;
        if stored.is_err() {
            let _ = tokio::fs::remove_file(&staged).await;
        }
        stored.map_err(|error| StepError::Transient(format!("blob store: {error}")))?;
        match self.store.set_downloaded_audio(&call.call_id, &key).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                // Deleted while downloading: its job is gone too, and the
                // file must not outlive it.
                let _ = self.blobs.delete(&key).await;
                return Err(StepError::Permanent {
                    code: "deleted".into(),
                    message: "Звонок удалён во время скачивания".into(),
                });
            }
            Err(error) => return Err(error.into()),
        }
        Ok(StepDone::then(
            JobKind::Decode,
            format!(
                "Запись скачана: {}, {} байт",
                downloaded.format.name(),
                downloaded.bytes
            ),
        ))
    }
}

impl DownloadStep {
    fn explain(&self, error: DownloadError) -> StepError {
        let (code, message) = match error {
            DownloadError::Transient(detail) => return StepError::Transient(detail),
            DownloadError::Permanent { code, message } => (code, message),
        };
        let text = match code {
            "unreachable" => format!("Запись недоступна по ссылке ({message})"),
            "forbidden_url" => format!("Ссылка на запись запрещена ({message})"),
            "too_large" => format!(
                "Запись больше допустимых {} МБ",
                self.limits.max_bytes / (1024 * 1024)
            ),
            "not_audio" => format!("По ссылке не аудио ({message})"),
            "empty" => "По ссылке пустой файл".to_owned(),
            _ => format!("Запись не скачана: {message}"),
        };
        StepError::Permanent {
            code: code.to_owned(),
            message: text,
        }
    }
}
