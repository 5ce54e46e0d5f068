//! The processing pipeline's download step: the whole recording, streamed to
//! disk through the guarded client, under a size cap and a deadline, so that
//! neither a huge file nor a slow-drip source can exhaust memory, disk or a
//! worker.

use std::io;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::CONTENT_TYPE;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::client::{classify_failure, is_transient_status, GuardedClient, RequestFailure};
use crate::sniff::{sniff, AudioFormat, Sniffed};

/// Enough of the head for every format `sniff` knows; the same amount the
/// upload-time probe looks at, so both steps judge a file alike.
const SNIFF_BYTES: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Refused when declared by `Content-Length`, cut off when it arrives
    /// without one: a source may lie about or omit the size.
    pub max_bytes: u64,
    /// Whole download, first connection to `fsync`. The client's read
    /// timeout alone would let a source that drips a byte now and then hold
    /// a worker for ever.
    pub total_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    pub bytes: u64,
    pub format: AudioFormat,
    /// As the source sent it; informational only, the format comes from the
    /// bytes.
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// Worth retrying later: timeouts, connection errors, 5xx, 408, 429, a
    /// body cut off mid-way, a local I/O error writing the file.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help. `code` is one of `unreachable`, `forbidden_url`,
    /// `too_large`, `not_audio`, `empty`; the caller turns it into words for
    /// users, `message` is for logs.
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
}

impl DownloadError {
    fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }
}

/// Downloads `url` into `dest` (created or truncated). On success the file is
/// complete and on disk; on any failure, cancellation included, a file this
/// call created is removed, so a partial file is never mistaken for a
/// recording.
pub async fn download_to_file(
    client: &GuardedClient,
    url: &Url,
    dest: &Path,
    limits: DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let mut partial = PartialFile {
        path: dest,
        created: false,
    };
    let outcome = tokio::time::timeout(
        limits.total_timeout,
        fetch(client, url, &mut partial, limits.max_bytes),
    )
    .await;
    match outcome {
        Ok(Ok(downloaded)) => {
            partial.created = false;
            Ok(downloaded)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(DownloadError::Transient(format!(
            "not downloaded within {} ms",
            limits.total_timeout.as_millis()
        ))),
    }
}

async fn fetch(
    client: &GuardedClient,
    url: &Url,
    partial: &mut PartialFile<'_>,
    max_bytes: u64,
) -> Result<Downloaded, DownloadError> {
    let response = client
        .get(url)
        .map_err(|forbidden| {
            DownloadError::permanent(
                "forbidden_url",
                format!("the link is forbidden: {forbidden}"),
            )
        })?
        .send()
        .await
        .map_err(|error| request_failure(&error))?;
    let status = response.status();
    if is_transient_status(status) {
        return Err(DownloadError::Transient(format!(
            "the source answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(DownloadError::permanent(
            "unreachable",
            format!("the source answered {status}"),
        ));
    }
    if let Some(declared) = response.content_length().filter(|&n| n > max_bytes) {
        return Err(DownloadError::permanent(
            "too_large",
            format!("the source declares {declared} bytes, more than the limit of {max_bytes}"),
        ));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);

    let mut file = partial.create().map_err(|error| local_failure(&error))?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut format = None;
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| request_failure(&error))?;
        received += chunk.len() as u64;
        if received > max_bytes {
            return Err(DownloadError::permanent(
                "too_large",
                format!("more than the limit of {max_bytes} bytes arrived"),
            ));
        }
        if format.is_none() {
            let room = SNIFF_BYTES - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if head.len() == SNIFF_BYTES {
                // Judged as soon as the head is in, so that a large HTML page
                // is not downloaded whole only to be refused.
                format = Some(audio_format(&head)?);
            }
        }
        file.write_all(&chunk)
            .await
            .map_err(|error| local_failure(&error))?;
    }
    if received == 0 {
        return Err(DownloadError::permanent(
            "empty",
            "the source sent an empty body",
        ));
    }
    let format = match format {
        Some(format) => format,
        None => audio_format(&head)?,
    };
    // tokio's file hands writes to a background thread: flush waits for the
    // last one, sync_all makes the recording survive a crash once we say Ok.
    file.flush().await.map_err(|error| local_failure(&error))?;
    file.sync_all()
        .await
        .map_err(|error| local_failure(&error))?;
    Ok(Downloaded {
        bytes: received,
        format,
        content_type,
    })
}

fn audio_format(head: &[u8]) -> Result<AudioFormat, DownloadError> {
    match sniff(head) {
        Sniffed::Audio { format, .. } => Ok(format),
        Sniffed::NotAudio(what) => Err(DownloadError::permanent(
            "not_audio",
            format!("the source sent {what}, not audio"),
        )),
    }
}

/// Removes the file it created when dropped, unless the download succeeded:
/// the error paths, the deadline and a caller that gives up all end here.
struct PartialFile<'a> {
    path: &'a Path,
    created: bool,
}

impl PartialFile<'_> {
    /// Opened synchronously (one quick system call): an open still pending
    /// on tokio's blocking pool when the deadline struck could create the
    /// file after the clean-up had removed it.
    fn create(&mut self) -> io::Result<tokio::fs::File> {
        let file = std::fs::File::create(self.path)?;
        self.created = true;
        Ok(tokio::fs::File::from_std(file))
    }
}

impl Drop for PartialFile<'_> {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        match std::fs::remove_file(self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                %error,
                "cannot remove a partial download"
            ),
        }
    }
}

fn request_failure(error: &reqwest::Error) -> DownloadError {
    match classify_failure(error) {
        RequestFailure::Forbidden(forbidden) => {
            DownloadError::permanent("forbidden_url", forbidden.to_string())
        }
        RequestFailure::Transient(detail) => DownloadError::Transient(detail),
    }
}

fn local_failure(error: &io::Error) -> DownloadError {
    DownloadError::Transient(format!("cannot write the downloaded file: {error}"))
}
