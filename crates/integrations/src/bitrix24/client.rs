//! Bitrix24 REST (integrations.md §3): methods called through an inbound
//! webhook or with an OAuth token, answers `{"result": …}` or
//! `{"error", "error_description"}`, and a leaky bucket that drains two
//! requests a second — we pace ourselves to it and wait out its 503.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rop_fetch::GuardedClient;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// The bucket drains 2 requests a second on standard plans.
const REQUEST_SPACING: Duration = Duration::from_millis(500);
const LIMIT_RETRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Bitrix24Error {
    /// `NO_AUTH_FOUND`, `expired_token` after a refresh, `INVALID_CREDENTIALS` …
    #[error("Bitrix24 не принимает доступ: {0}")]
    Unauthorized(String),
    /// `QUERY_LIMIT_EXCEEDED` or `OPERATION_TIME_LIMIT` even after waiting.
    #[error("Bitrix24 просит подождать: превышен лимит запросов")]
    RateLimited,
    /// Another error Bitrix24 explained (`ACCESS_DENIED`, `ERROR_NOT_FOUND` …).
    #[error("Bitrix24 ответил ошибкой: {0}")]
    Api(String),
    #[error("Bitrix24 недоступен: {0}")]
    Unavailable(String),
}

/// Where a method is called and with what.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// The base the method name is appended to, and the `auth` token when
    /// the call needs one in its body.
    async fn base(&self) -> Result<(Url, Option<String>), Bitrix24Error>;
    /// Called once on `expired_token`: whether a fresh token is now there.
    async fn refreshed(&self, stale: &str) -> Result<bool, Bitrix24Error>;
}

/// Spaces this process's requests to the portal.
#[derive(Default)]
pub struct Pacer {
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |next| next.max(now));
        *next = Some(at + REQUEST_SPACING);
        drop(next);
        tokio::time::sleep_until(at).await;
    }
}

pub struct Bitrix24Client {
    http: GuardedClient,
    endpoint: Arc<dyn Endpoint>,
    pacer: Arc<Pacer>,
}

/// A method's answer: `result` and, for lists, `next`.
pub struct Answer {
    pub result: Value,
    pub next: Option<u64>,
}

impl Bitrix24Client {
    pub fn new(http: GuardedClient, endpoint: Arc<dyn Endpoint>, pacer: Arc<Pacer>) -> Self {
        Self {
            http,
            endpoint,
            pacer,
        }
    }

    /// Calls `method` with JSON `params`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Answer, Bitrix24Error> {
        let mut refreshed = false;
        let mut waits = 0;
        loop {
            let (base, token) = self.endpoint.base().await?;
            let url = base
                .join(&format!("{method}.json"))
                .map_err(|e| Bitrix24Error::Unavailable(format!("адрес метода: {e}")))?;
            let mut body = params.clone();
            if let (Some(token), Value::Object(map)) = (&token, &mut body) {
                map.insert("auth".into(), Value::String(token.clone()));
            }
            self.pacer.wait().await;
            let response = self
                .http
                .post(&url)
                .map_err(|forbidden| Bitrix24Error::Unavailable(forbidden.to_string()))?
                .json(&body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| {
                    Bitrix24Error::Unavailable(
                        rop_fetch::forbidden_cause(&e)
                            .map_or_else(|| e.to_string(), |f| f.to_string()),
                    )
                })?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))?;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = value.get("error").and_then(Value::as_str).unwrap_or("");
            let text = || {
                let description = value
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match (code, description) {
                    ("", "") => format!("HTTP {status}"),
                    ("", d) => d.to_owned(),
                    (c, "") => c.to_owned(),
                    (c, d) => format!("{c}: {d}"),
                }
            };
            if (200..300).contains(&status) && value.get("error").is_none() {
                let Some(result) = value.get("result").cloned() else {
                    return Err(Bitrix24Error::Unavailable("ответ без result".into()));
                };
                return Ok(Answer {
                    result,
                    next: value.get("next").and_then(Value::as_u64),
                });
            }
            match code {
                "QUERY_LIMIT_EXCEEDED" | "OVERLOAD_LIMIT" | "OPERATION_TIME_LIMIT"
                    if waits < LIMIT_RETRIES =>
                {
                    waits += 1;
                    tracing::debug!(method, "Bitrix24 asked to slow down");
                    tokio::time::sleep(Duration::from_secs(1 << waits.min(4))).await;
                }
                "QUERY_LIMIT_EXCEEDED" | "OVERLOAD_LIMIT" | "OPERATION_TIME_LIMIT" => {
                    return Err(Bitrix24Error::RateLimited)
                }
                "expired_token" if !refreshed && token.is_some() => {
                    refreshed = true;
                    let stale = token.unwrap_or_default();
                    if !self.endpoint.refreshed(&stale).await? {
                        return Err(Bitrix24Error::Unauthorized(text()));
                    }
                }
                _ if matches!(status, 401 | 403)
                    || matches!(
                        code,
                        "NO_AUTH_FOUND" | "INVALID_CREDENTIALS" | "expired_token" | "invalid_token"
                    ) =>
                {
                    return Err(Bitrix24Error::Unauthorized(text()))
                }
                _ if status >= 500 && code.is_empty() => {
                    return Err(Bitrix24Error::Unavailable(text()))
                }
                _ => return Err(Bitrix24Error::Api(text())),
            }
        }
    }
}

/// Bitrix24's numbers come as strings as often as numbers.
pub fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
