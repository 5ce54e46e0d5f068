//! One attempt: POST the body with its headers through the guarded client,
//! and judge the answer.
//!
//! 2xx is delivered. Network errors, timeouts, 5xx, 429 and 408 are worth
//! another attempt. Everything else is final: other 4xx, a 3xx, an address
//! the SSRF guard refuses. Redirects are not followed for webhooks: a 301 or
//! 302 would turn the POST into a GET without a body, and a receiver that
//! answered 200 to that would count as delivered while it never saw the
//! result.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rop_domain::{ClaimedDelivery, DeliveryAttempt};
use rop_fetch::{forbidden_cause, ClientConfig, GuardedClient, UrlGuard};
use url::Url;

use crate::signature;

/// What an attempt means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later, if the retry policy still allows.
    Retry,
    /// Retrying cannot help.
    Final,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong, for people (Russian); the start of the receiver's
    /// answer for a non-2xx status.
    pub error: Option<String>,
    pub duration: Duration,
    pub verdict: Verdict,
    /// The receiver's `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl AttemptReport {
    fn failed(verdict: Verdict, error: String, started: Instant) -> Self {
        Self {
            status_code: None,
            error: Some(error),
            duration: started.elapsed(),
            verdict,
            retry_after: None,
        }
    }

    /// The attempt as the store logs it.
    pub fn to_attempt(&self, attempt: u32, at: DateTime<Utc>) -> DeliveryAttempt {
        DeliveryAttempt {
            attempt,
            at,
            status_code: self.status_code,
            error: self.error.clone(),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The verdict of an HTTP status.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Final,
    }
}

/// A client for webhooks: the SSRF guard of every outgoing request, and no
/// redirects (see the module documentation).
pub fn webhook_client(guard: UrlGuard) -> GuardedClient {
    GuardedClient::new(&ClientConfig {
        guard,
        max_redirects: 0,
        ..ClientConfig::default()
    })
}

/// How much of a receiver's error answer is kept in the attempt log.
const ANSWER_SNIPPET_CHARS: usize = 200;

/// Sends `delivery` once, within `timeout` for the whole exchange.
pub async fn send(
    client: &GuardedClient,
    delivery: &ClaimedDelivery,
    timeout: Duration,
) -> AttemptReport {
    let started = Instant::now();
    let Ok(url) = Url::parse(delivery.url.trim()) else {
        return AttemptReport::failed(Verdict::Final, "Некорректный адрес вебхука".into(), started);
    };
    let request = match client.post(&url) {
        Ok(request) => request,
        Err(forbidden) => {
            return AttemptReport::failed(
                Verdict::Final,
                format!("Адрес вебхука запрещён: {forbidden}"),
                started,
            )
        }
    };
    let timestamp = Utc::now().timestamp();
    let headers = signature::headers(
        delivery.event,
        &delivery.delivery_id,
        &delivery.secret,
        timestamp,
        &delivery.body,
    );
    let request = headers
        .into_iter()
        .fold(request, |request, (name, value)| {
            request.header(name, value)
        })
        .body(delivery.body.clone())
        .timeout(timeout);
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let (verdict, message) = judge_error(error, timeout);
            return AttemptReport::failed(verdict, message, started);
        }
    };
    let status = response.status().as_u16();
    let duration = started.elapsed();
    if response.url() != &url {
        // Only a client that follows redirects gets here.
        let host = response.url().host_str().unwrap_or_default().to_owned();
        return AttemptReport {
            status_code: Some(status),
            error: Some(format!(
                "Запрос перенаправлен на {host}; укажите в настройках вебхука конечный адрес"
            )),
            duration,
            verdict: Verdict::Final,
            retry_after: None,
        };
    }
    let verdict = classify_status(status);
    let retry_after = matches!(status, 429 | 503)
        .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));
    let error = if verdict == Verdict::Delivered {
        None
    } else {
        let redirect = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match (redirect, answer_snippet(response).await) {
            (Some(location), _) => Some(format!(
                "Получатель перенаправляет запрос на {}; укажите в настройках вебхука конечный адрес",
                location_host(&url, &location)
            )),
            (None, snippet) if !snippet.is_empty() => {
                Some(format!("Ответ получателя: {snippet}"))
            }
            (None, _) => None,
        }
    };
    AttemptReport {
        status_code: Some(status),
        error,
        duration,
        verdict,
        retry_after,
    }
}

fn judge_error(error: reqwest::Error, timeout: Duration) -> (Verdict, String) {
    // The address may carry a token (some CRMs put one in the path); the
    // attempt log does not need it.
    let error = error.without_url();
    if let Some(forbidden) = forbidden_cause(&error) {
        return (
            Verdict::Final,
            format!("Адрес вебхука запрещён: {forbidden}"),
        );
    }
    if error.is_timeout() {
        return (
            Verdict::Retry,
            format!("Получатель не ответил за {:.1} с", timeout.as_secs_f64()),
        );
    }
    if error.is_redirect() {
        return (
            Verdict::Final,
            format!(
                "Получатель перенаправляет запрос ({}); укажите в настройках вебхука конечный адрес",
                error_chain(&error)
            ),
        );
    }
    if error.is_connect() {
        return (
            Verdict::Retry,
            format!("Не удалось соединиться: {}", error_chain(&error)),
        );
    }
    (
        Verdict::Retry,
        format!("Ошибка запроса: {}", error_chain(&error)),
    )
}

/// reqwest's own message is often just "error sending request"; the cause
/// that says what went wrong is further down the chain.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Host of a `Location`, relative or absolute; never its path or query.
fn location_host(base: &Url, location: &str) -> String {
    base.join(location)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "другой адрес".into())
}

/// The start of the receiver's answer, on one line.
async fn answer_snippet(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_SNIPPET_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ANSWER_SNIPPET_CHARS)
        .collect();
    line.trim().to_owned()
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_judged_as_the_product_says() {
        for ok in [200, 201, 202, 204] {
            assert_eq!(classify_status(ok), Verdict::Delivered, "{ok}");
        }
        for again in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(again), Verdict::Retry, "{again}");
        }
        for never in [301, 302, 304, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify_status(never), Verdict::Final, "{never}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
