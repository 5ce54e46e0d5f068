//! The part of amoCRM's API v4 we use (integrations.md §2): Bearer tokens,
//! HAL lists where an empty page is `204 No Content`, problem+json errors,
//! and no more than 7 requests a second per integration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use rop_fetch::GuardedClient;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// amoCRM allows 7 requests a second; we keep a little below it so that
/// clock jitter never makes an eighth fall into one second.
const REQUEST_SPACING: Duration = Duration::from_millis(150);
/// How often a 429 is waited out before the request is given up.
const RATE_LIMIT_RETRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AmocrmError {
    /// No token yet, or amoCRM refused it even after a refresh.
    #[error("amoCRM не принимает доступ: {0}")]
    Unauthorized(String),
    /// 429 even after waiting.
    #[error("amoCRM просит подождать: больше 7 запросов в секунду")]
    RateLimited,
    /// A 4xx/5xx with amoCRM's explanation (`detail`, validation errors).
    #[error("amoCRM ответила ошибкой: {0}")]
    Api(String),
    /// No answer, or not the JSON we expect.
    #[error("amoCRM недоступна: {0}")]
    Unavailable(String),
}

/// Where the Bearer token comes from: a long-lived token, or the OAuth
/// pair that refreshes itself.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<String, AmocrmError>;
    /// Called once when amoCRM answers 401 to `stale`: a fresh token to
    /// retry with, or `None` when there is none to get (a long-lived token).
    async fn refreshed(&self, stale: &str) -> Result<Option<String>, AmocrmError>;
}

/// Spaces the requests of one process to amoCRM (its limit is per
/// integration, so every request of ours waits its turn here).
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

pub struct AmocrmClient {
    base_url: Url,
    http: GuardedClient,
    tokens: Arc<dyn TokenSource>,
    pacer: Arc<Pacer>,
    timeout: Duration,
}

/// One page of a HAL list.
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Lead {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub responsible_user_id: Option<i64>,
    #[serde(default)]
    pub status_id: Option<i64>,
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub custom_fields_values: Vec<CustomFieldValues>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomFieldValues {
    pub field_id: i64,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub values: Vec<CustomFieldValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomFieldValue {
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "_embedded")]
    pub embedded: PipelineStatuses,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PipelineStatuses {
    #[serde(default)]
    pub statuses: Vec<Status>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomField {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

/// A call note (`call_in` / `call_out`) on a lead, contact or company.
#[derive(Debug, Clone, Deserialize)]
pub struct CallNote {
    pub id: i64,
    pub entity_id: i64,
    pub note_type: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub responsible_user_id: Option<i64>,
    #[serde(default)]
    pub created_by: Option<i64>,
    #[serde(default)]
    pub params: CallParams,
}

/// Types are loose in the wild (a duration as a string, a status as a
/// number or text), so every field is read leniently.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallParams {
    #[serde(default)]
    pub uniq: Value,
    #[serde(default)]
    pub duration: Value,
    #[serde(default)]
    pub link: Value,
    #[serde(default)]
    pub phone: Value,
    #[serde(default)]
    pub call_status: Value,
    #[serde(default)]
    pub call_result: Value,
    #[serde(default)]
    pub source: Value,
}

impl CallParams {
    pub fn text(value: &Value) -> Option<String> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn duration_secs(&self) -> Option<u32> {
        match &self.duration {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| d.round().min(f64::from(u32::MAX)) as u32)
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl AmocrmClient {
    pub fn new(
        base_url: Url,
        http: GuardedClient,
        tokens: Arc<dyn TokenSource>,
        pacer: Arc<Pacer>,
    ) -> Self {
        Self {
            base_url,
            http,
            tokens,
            pacer,
            timeout: Duration::from_secs(30),
        }
    }

    /// One request with the token; a 401 refreshes the token once and
    /// retries once (the SDK's behaviour), a 429 is waited out. `None` is
    /// amoCRM's 204: nothing there.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, AmocrmError> {
        let url = self
            .base_url
            .join(path_and_query)
            .map_err(|e| AmocrmError::Unavailable(format!("адрес API: {e}")))?;
        let mut token = self.tokens.token().await?;
        let mut refreshed = false;
        let mut waits = 0;
        loop {
            self.pacer.wait().await;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .map_err(|forbidden| AmocrmError::Unavailable(forbidden.to_string()))?
                .bearer_auth(&token)
                .timeout(self.timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| {
                AmocrmError::Unavailable(
                    rop_fetch::forbidden_cause(&e).map_or_else(|| e.to_string(), |f| f.to_string()),
                )
            })?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| AmocrmError::Unavailable(e.to_string()))?;
            match status {
                204 => return Ok(None),
                200..=299 => {
                    return serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| AmocrmError::Unavailable(format!("ответ не JSON: {e}")))
                }
                401 if !refreshed => {
                    refreshed = true;
                    match self.tokens.refreshed(&token).await? {
                        Some(fresh) => token = fresh,
                        None => return Err(AmocrmError::Unauthorized(problem(&bytes, status))),
                    }
                }
                401 | 403 => return Err(AmocrmError::Unauthorized(problem(&bytes, status))),
                429 if waits < RATE_LIMIT_RETRIES => {
                    waits += 1;
                    tracing::debug!(path = %url.path(), "amoCRM asked to slow down");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                429 => return Err(AmocrmError::RateLimited),
                _ => return Err(AmocrmError::Api(problem(&bytes, status))),
            }
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<Option<T>, AmocrmError> {
        match self.send(Method::GET, path_and_query, None).await? {
            None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| AmocrmError::Unavailable(format!("неожиданный ответ: {e}"))),
        }
    }

    async fn list<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        entity: &str,
    ) -> Result<Page<T>, AmocrmError> {
        let Some(value) = self.send(Method::GET, path_and_query, None).await? else {
            return Ok(Page {
                items: Vec::new(),
                has_next: false,
            });
        };
        let items = value
            .pointer(&format!("/_embedded/{entity}"))
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        let items: Vec<T> = serde_json::from_value(items)
            .map_err(|e| AmocrmError::Unavailable(format!("неожиданный список {entity}: {e}")))?;
        let has_next = value.pointer("/_links/next/href").is_some() && !items.is_empty();
        Ok(Page { items, has_next })
    }

    /// Every user of the account (pages of 250).
    pub async fn users(&self) -> Result<Vec<User>, AmocrmError> {
        let mut users = Vec::new();
        for page in 1..=100 {
            let found: Page<User> = self
                .list(&format!("/api/v4/users?page={page}&limit=250"), "users")
                .await?;
            users.extend(found.items);
            if !found.has_next {
                break;
            }
        }
        Ok(users)
    }

    pub async fn pipelines(&self) -> Result<Vec<Pipeline>, AmocrmError> {
        Ok(self
            .list("/api/v4/leads/pipelines", "pipelines")
            .await?
            .items)
    }

    pub async fn lead_fields(&self) -> Result<Vec<CustomField>, AmocrmError> {
        let mut fields = Vec::new();
        for page in 1..=20 {
            let found: Page<CustomField> = self
                .list(
                    &format!("/api/v4/leads/custom_fields?page={page}&limit=250"),
                    "custom_fields",
                )
                .await?;
            fields.extend(found.items);
            if !found.has_next {
                break;
            }
        }
        Ok(fields)
    }

    /// A lead, `None` when amoCRM has no such lead (204).
    pub async fn lead(&self, id: i64) -> Result<Option<Lead>, AmocrmError> {
        self.get(&format!("/api/v4/leads/{id}")).await
    }

    /// One page of call notes of an entity type (`leads`, `contacts`,
    /// `companies`) changed within `[from, to]` (unix seconds, both ends
    /// included).
    pub async fn call_notes(
        &self,
        entity: &str,
        note_types: &[&str],
        from: i64,
        to: i64,
        page: u32,
    ) -> Result<Page<CallNote>, AmocrmError> {
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for note_type in note_types {
                query.append_pair("filter[note_type][]", note_type);
            }
            query
                .append_pair("filter[updated_at][from]", &from.to_string())
                .append_pair("filter[updated_at][to]", &to.to_string())
                .append_pair("order[updated_at]", "asc")
                .append_pair("limit", "250")
                .append_pair("page", &page.to_string());
            query.finish()
        };
        self.list(&format!("/api/v4/{entity}/notes?{query}"), "notes")
            .await
    }

    /// Adds a text note to a lead, contact or company.
    pub async fn add_note(&self, entity: &str, id: i64, text: &str) -> Result<(), AmocrmError> {
        let body = serde_json::json!([{"note_type": "common", "params": {"text": text}, "request_id": "0"}]);
        self.send(
            Method::POST,
            &format!("/api/v4/{entity}/{id}/notes"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// Sets text custom fields of a lead.
    pub async fn update_lead_fields(
        &self,
        id: i64,
        values: &[(i64, String)],
    ) -> Result<(), AmocrmError> {
        let fields: Vec<Value> = values
            .iter()
            .map(|(field_id, value)| {
                serde_json::json!({"field_id": field_id, "values": [{"value": value}]})
            })
            .collect();
        let body = serde_json::json!({ "custom_fields_values": fields });
        self.send(Method::PATCH, &format!("/api/v4/leads/{id}"), Some(&body))
            .await
            .map(|_| ())
    }
}

/// amoCRM's explanation of a refusal: `detail` and the validation errors
/// of problem+json, or the status alone when the body says nothing.
pub(crate) fn problem(body: &[u8], status: u16) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return format!("HTTP {status}");
    };
    let mut text = value
        .get("detail")
        .or_else(|| value.get("title"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    if let Some(hint) = value.get("hint").and_then(Value::as_str) {
        text.push_str(&format!(" ({hint})"));
    }
    let errors = value
        .get("validation-errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("errors").and_then(Value::as_array))
        .flatten();
    for error in errors {
        let path = error.get("path").and_then(Value::as_str).unwrap_or("?");
        let detail = error.get("detail").and_then(Value::as_str).unwrap_or("");
        text.push_str(&format!("; {path}: {detail}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_one_line() {
        let body = br#"{"title":"Bad Request","type":"https://httpstatus.es/400","status":400,"detail":"Request validation failed",
 "validation-errors":[{"request_id":"0","errors":[{"code":"NotSupportedChoice","path":"custom_fields_values.0.field_id","detail":"The value you selected is not a valid choice."}]}]}"#;
        assert_eq!(
            problem(body, 400),
            "Request validation failed; custom_fields_values.0.field_id: The value you selected is not a valid choice."
        );
        assert_eq!(problem(b"Too Many Requests", 429), "HTTP 429");
    }

    #[test]
    fn loose_durations_are_read() {
        let params = |duration: Value| CallParams {
            duration,
            ..CallParams::default()
        };
        assert_eq!(params(serde_json::json!(95)).duration_secs(), Some(95));
        assert_eq!(params(serde_json::json!("130")).duration_secs(), Some(130));
        assert_eq!(params(serde_json::json!(-1)).duration_secs(), None);
        assert_eq!(params(serde_json::json!(null)).duration_secs(), None);
    }
}
