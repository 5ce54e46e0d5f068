//! The part of Zadarma's API v1 we use (integrations.md §1.3), every request
//! signed (§1.2) and sent through the SSRF guard.

use std::time::Duration;

use rop_fetch::GuardedClient;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::signature::authorization;

/// Seconds a recording link lives: a week, so that a link survives a long
/// queue before the pipeline downloads it (Zadarma allows up to 60 days).
const RECORD_LINK_LIFETIME: &str = "604800";

/// Where and as whom to call Zadarma.
#[derive(Clone)]
pub struct Credentials {
    /// `https://api.zadarma.com` unless a sandbox or a test double is used.
    pub base_url: Url,
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("base_url", &self.base_url.as_str())
            .field("key", &self.key)
            .field("secret", &"***")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZadarmaError {
    /// Key or secret wrong (401), or the signature did not match.
    #[error("Zadarma отклонила ключ или подпись: {0}")]
    Unauthorized(String),
    /// 429: too many requests (statistics allow 3 a minute).
    #[error("Zadarma просит подождать: слишком много запросов")]
    RateLimited,
    /// `"status":"error"` or another HTTP failure, with Zadarma's message.
    #[error("Zadarma ответила ошибкой: {0}")]
    Api(String),
    /// No answer, or not the JSON we expect.
    #[error("Zadarma недоступна: {0}")]
    Unavailable(String),
}

pub struct ZadarmaClient {
    credentials: Credentials,
    http: GuardedClient,
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Balance {
    #[serde(deserialize_with = "lenient::number")]
    pub balance: f64,
    #[serde(default)]
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Pbx {
    #[serde(deserialize_with = "lenient::string")]
    pub pbx_id: String,
    #[serde(deserialize_with = "lenient::strings")]
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordLink {
    /// One link when asked by `call_id`.
    #[serde(default)]
    pub link: Option<String>,
    /// Every recording's link when asked by `pbx_call_id`.
    #[serde(default)]
    pub links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebrtcKey {
    pub key: String,
}

impl ZadarmaClient {
    pub fn new(credentials: Credentials, http: GuardedClient) -> Self {
        Self {
            credentials,
            http,
            timeout: Duration::from_secs(20),
        }
    }

    /// `GET /v1/<method>/` with `params` (and `format=json`, signed like
    /// the official clients do).
    async fn get<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[(&str, &str)],
    ) -> Result<T, ZadarmaError> {
        let path = format!("/v1/{}/", method.trim_matches('/'));
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("format", "json"));
        let mut url = self
            .credentials
            .base_url
            .join(&path)
            .map_err(|e| ZadarmaError::Unavailable(format!("адрес API: {e}")))?;
        url.set_query(Some(&super::signature::query_string(&all)));
        let header = authorization(&self.credentials.key, &self.credentials.secret, &path, &all);
        let request = self
            .http
            .get(&url)
            .map_err(|forbidden| ZadarmaError::Unavailable(forbidden.to_string()))?
            .header("Authorization", header)
            .timeout(self.timeout);
        let response = request.send().await.map_err(|e| {
            ZadarmaError::Unavailable(
                rop_fetch::forbidden_cause(&e).map_or_else(|| e.to_string(), |f| f.to_string()),
            )
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ZadarmaError::Unavailable(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = value
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        match status.as_u16() {
            401 | 403 => return Err(ZadarmaError::Unauthorized(message)),
            429 => return Err(ZadarmaError::RateLimited),
            code if code >= 400 => {
                return Err(ZadarmaError::Api(if message.is_empty() {
                    format!("HTTP {code}")
                } else {
                    message
                }))
            }
            _ => {}
        }
        if value.get("status").and_then(|s| s.as_str()) != Some("success") {
            return Err(ZadarmaError::Api(if message.is_empty() {
                "ответ без status=success".to_owned()
            } else {
                message
            }));
        }
        serde_json::from_value(value)
            .map_err(|e| ZadarmaError::Unavailable(format!("неожиданный ответ: {e}")))
    }

    /// The connection test.
    pub async fn balance(&self) -> Result<Balance, ZadarmaError> {
        self.get("info/balance", &[]).await
    }

    /// «Получить АТС»: the PBX id and its internal numbers.
    pub async fn pbx(&self) -> Result<Pbx, ZadarmaError> {
        self.get("pbx/internal", &[]).await
    }

    /// A temporary download link of a call's recording.
    pub async fn record_link(&self, call_id: &str) -> Result<String, ZadarmaError> {
        let found: RecordLink = self
            .get(
                "pbx/record/request",
                &[("call_id", call_id), ("lifetime", RECORD_LINK_LIFETIME)],
            )
            .await?;
        found
            .link
            .or_else(|| found.links.into_iter().next())
            .ok_or_else(|| ZadarmaError::Api("в ответе нет ссылки на запись".into()))
    }

    /// Click-to-call: rings `from` (an extension) first, then `to`.
    pub async fn callback(&self, from: &str, to: &str) -> Result<(), ZadarmaError> {
        self.get::<serde_json::Value>("request/callback", &[("from", from), ("to", to)])
            .await
            .map(|_| ())
    }

    /// The browser phone's key for an extension (valid 72 hours).
    pub async fn webrtc_key(&self, sip: &str) -> Result<String, ZadarmaError> {
        let key: WebrtcKey = self.get("webrtc/get_key", &[("sip", sip)]).await?;
        Ok(key.key)
    }
}

/// Zadarma's types are loose (numbers as strings and back): accept both.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn text(value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(Value::deserialize(d)?)
            .ok_or_else(|| serde::de::Error::custom("expected a string or number"))
    }

    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(items) => Ok(items.into_iter().filter_map(text).collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(serde::de::Error::custom("expected a list")),
        }
    }

    pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_f64().ok_or_else(|| serde::de::Error::custom("number")),
            Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom("expected a number")),
        }
    }
}
