//! Resumable HTTP downloads into `.partial/`.

use std::path::Path;
use std::time::Duration;

use reqwest::{header, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::files::sha256_file;
use crate::progress::Progress;

/// Hosts without internet access must give up quickly and move on to the
/// next source.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stalled transfer counts as broken after this long without data.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests per file; a new request is made only after the previous one
/// delivered some bytes, so a dead server costs one attempt.
const MAX_ATTEMPTS: u32 = 4;

fn client_for(url: &reqwest::Url) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("rop-models/", env!("CARGO_PKG_VERSION")));
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if loopback {
        // A proxy from the environment must not see local mirrors (and
        // tests' traffic must stay on this machine).
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|error| format!("не удалось создать HTTP-клиент: {error}"))
}

fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if error.is_connect() {
        "нет соединения".to_owned()
    } else if error.is_timeout() {
        "истекло время ожидания".to_owned()
    } else {
        "ошибка HTTP".to_owned()
    };
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// `Content-Range: bytes START-END/TOTAL` → START.
fn range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Downloads `url` into `dest`, continuing a partial file left there by an
/// earlier run, and checks the result against `sha256` when it is pinned
/// (a mismatching file is deleted).
pub(crate) async fn download(
    url: &str,
    dest: &Path,
    sha256: Option<&str>,
    progress: &Progress,
) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|error| format!("неверный адрес {url}: {error}"))?;
    let client = client_for(&parsed)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut offset = tokio::fs::metadata(dest)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut request = client.get(parsed.clone());
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let mut response = request.send().await.map_err(|error| describe(&error))?;
        let status = response.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 && range_start(&response) == Some(offset) => {
                true
            }
            StatusCode::OK => false,
            StatusCode::PARTIAL_CONTENT if attempts < MAX_ATTEMPTS => {
                // Not the range asked for: start over from the beginning.
                let _ = tokio::fs::remove_file(dest).await;
                continue;
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // The partial file is already whole.
                break;
            }
            StatusCode::NOT_FOUND => return Err("файла нет на сервере (HTTP 404)".to_owned()),
            other => return Err(format!("сервер ответил HTTP {}", other.as_u16())),
        };
        if !append {
            offset = 0;
        }
        let total = response.content_length().map(|len| len + offset);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(dest)
            .await
            .map_err(|error| format!("не удалось записать {}: {error}", dest.display()))?;
        let verb = if append {
            "докачиваю"
        } else {
            "скачиваю"
        };
        let mut step = progress.bytes(format!("{verb} {name}"), total);
        step.set(offset);
        let mut received = 0u64;
        let outcome = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(error) = file.write_all(&chunk).await {
                        return Err(format!("не удалось записать {}: {error}", dest.display()));
                    }
                    received += chunk.len() as u64;
                    step.inc(chunk.len() as u64);
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(describe(&error)),
            }
        };
        file.flush()
            .await
            .map_err(|error| format!("не удалось записать {}: {error}", dest.display()))?;
        drop(file);
        match outcome {
            Ok(()) => {
                if let Some(total) = total {
                    let len = offset + received;
                    if len != total {
                        return Err(format!("получено {len} байт из {total}"));
                    }
                }
                step.done();
                break;
            }
            Err(error) if received > 0 && attempts < MAX_ATTEMPTS => {
                drop(step);
                progress.note(&format!("{name}: обрыв загрузки ({error}), продолжаю"));
            }
            Err(error) => return Err(error),
        }
    }
    if let Some(expected) = sha256 {
        let path = dest.to_owned();
        let actual = tokio::task::spawn_blocking(move || sha256_file(&path, |_| {}))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("не удалось прочитать {}: {error}", dest.display()))?;
        if actual != expected {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(format!(
                "контрольная сумма {name} не совпала: sha256 {actual}, ожидалась {expected}"
            ));
        }
    }
    Ok(())
}
