//! The synchronous check at upload time: fetch the first bytes of the link
//! (HTTP Range) and decide whether it is audio we can take, without
//! downloading the file.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use url::Url;

use crate::client::{classify_failure, is_transient_status, GuardedClient, RequestFailure};
use crate::guard::Forbidden;
use crate::sniff::{sniff, AudioFormat, Sniffed};

/// How many bytes the probe asks for: enough for every header we sniff.
const PROBE_BYTES: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub struct ProbeLimits {
    /// Whole probe, connection to last byte.
    pub timeout: Duration,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    Audio {
        format: AudioFormat,
        /// Size of the whole file, when the server says.
        total_bytes: Option<u64>,
        duration_secs: Option<f64>,
    },
    NotAudio(&'static str),
    /// The source says the file is not there or not ours: 403, 404, 410 …
    Unreachable(StatusCode),
    TooLarge(u64),
    Forbidden(Forbidden),
    /// Timeouts, 5xx, connection failures: worth trying again later.
    Transient(String),
}

pub async fn probe(client: &GuardedClient, url: &Url, limits: ProbeLimits) -> ProbeOutcome {
    match tokio::time::timeout(limits.timeout, probe_inner(client, url, limits.max_bytes)).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Transient(format!(
            "no answer within {} ms",
            limits.timeout.as_millis()
        )),
    }
}

async fn probe_inner(client: &GuardedClient, url: &Url, max_bytes: u64) -> ProbeOutcome {
    let request = match client.get(url) {
        Ok(request) => request,
        Err(forbidden) => return ProbeOutcome::Forbidden(forbidden),
    };
    let response = match request
        .header(RANGE, format!("bytes=0-{}", PROBE_BYTES - 1))
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return request_failure(&error),
    };
    let status = response.status();
    if is_transient_status(status) {
        return ProbeOutcome::Transient(format!("the source answered {status}"));
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // Only an empty file cannot satisfy a range starting at byte 0.
        return ProbeOutcome::NotAudio("an empty file");
    }
    if !status.is_success() {
        return ProbeOutcome::Unreachable(status);
    }
    let total_bytes = total_size(&response);
    if let Some(total) = total_bytes.filter(|&total| total > max_bytes) {
        return ProbeOutcome::TooLarge(total);
    }
    let mut head = Vec::with_capacity(PROBE_BYTES);
    let mut body = response.bytes_stream();
    while head.len() < PROBE_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => {
                let room = PROBE_BYTES - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(Err(error)) => return request_failure(&error),
            None => break,
        }
    }
    match sniff(&head) {
        Sniffed::Audio {
            format,
            duration_secs,
        } => ProbeOutcome::Audio {
            format,
            total_bytes,
            duration_secs,
        },
        Sniffed::NotAudio(what) => ProbeOutcome::NotAudio(what),
    }
}

fn request_failure(error: &reqwest::Error) -> ProbeOutcome {
    match classify_failure(error) {
        RequestFailure::Forbidden(forbidden) => ProbeOutcome::Forbidden(forbidden.clone()),
        RequestFailure::Transient(detail) => ProbeOutcome::Transient(detail),
    }
}

/// Whole-file size from `Content-Range: bytes 0-8191/123456` (206) or from
/// `Content-Length` when the server ignored the range (200).
fn total_size(response: &reqwest::Response) -> Option<u64> {
    if response.status() == StatusCode::PARTIAL_CONTENT {
        let range = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
        return range.rsplit_once('/')?.1.trim().parse().ok();
    }
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
