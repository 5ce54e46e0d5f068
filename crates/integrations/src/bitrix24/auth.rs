//! Where Bitrix24 methods are called: an inbound webhook as is, or an
//! application's OAuth token (integrations.md §3.1). The access token lives
//! an hour; a refresh spends the refresh token, so the new pair is swapped
//! into the store before it is used, as for amoCRM.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::integrations::setting_keys;
use rop_domain::Store;
use rop_fetch::GuardedClient;
use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{Bitrix24Error, Endpoint};
use super::settings::Bitrix24Settings;

const EXPIRY_MARGIN_SECS: i64 = 60;

pub struct Webhook(pub Url);

#[async_trait]
impl Endpoint for Webhook {
    async fn base(&self) -> Result<(Url, Option<String>), Bitrix24Error> {
        Ok((self.0.clone(), None))
    }

    async fn refreshed(&self, _stale: &str) -> Result<bool, Bitrix24Error> {
        Ok(false)
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    /// `https://portal/rest/`: where the methods are called.
    pub client_endpoint: String,
}

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    client_endpoint: String,
}

pub struct OauthTokens {
    store: Arc<dyn Store>,
    http: GuardedClient,
    settings: Bitrix24Settings,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

fn not_signed_in() -> Bitrix24Error {
    Bitrix24Error::Unauthorized(
        "вход в Bitrix24 не выполнен: нажмите «Войти через Bitrix24» в настройках".into(),
    )
}

impl OauthTokens {
    pub fn new(
        store: Arc<dyn Store>,
        http: GuardedClient,
        settings: Bitrix24Settings,
        refreshing: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            store,
            http,
            settings,
            refreshing,
        }
    }

    async fn stored(&self) -> Result<Option<(String, TokenPair)>, Bitrix24Error> {
        let raw = self
            .store
            .setting(setting_keys::BITRIX24_TOKENS)
            .await
            .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|raw| {
            let pair = serde_json::from_str(&raw).ok()?;
            Some((raw, pair))
        }))
    }

    async fn grant(&self, params: &[(&str, &str)]) -> Result<TokenPair, Bitrix24Error> {
        let mut url = Url::parse(&self.settings.oauth_url)
            .and_then(|base| base.join("/oauth/token/"))
            .map_err(|e| Bitrix24Error::Unavailable(format!("сервер авторизации: {e}")))?;
        url.query_pairs_mut()
            .extend_pairs(params)
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", &self.settings.client_secret);
        let response = self
            .http
            .get(&url)
            .map_err(|forbidden| Bitrix24Error::Unavailable(forbidden.to_string()))?
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                Bitrix24Error::Unavailable(
                    rop_fetch::forbidden_cause(&e).map_or_else(|| e.to_string(), |f| f.to_string()),
                )
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))?;
        if let Ok(grant) = serde_json::from_slice::<Grant>(&bytes) {
            if (200..300).contains(&status) {
                return Ok(TokenPair {
                    access_token: grant.access_token,
                    refresh_token: grant.refresh_token,
                    expires_at: Utc::now()
                        + chrono::Duration::seconds(grant.expires_in.unwrap_or(3600)),
                    client_endpoint: grant.client_endpoint,
                });
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let reason = value
            .get("error_description")
            .or_else(|| value.get("error"))
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        Err(Bitrix24Error::Unauthorized(reason))
    }

    /// Exchanges an authorization code (it lives 30 seconds) and stores
    /// the pair.
    pub async fn exchange_code(&self, code: &str) -> Result<(), Bitrix24Error> {
        let pair = self
            .grant(&[("grant_type", "authorization_code"), ("code", code)])
            .await?;
        if Url::parse(&pair.client_endpoint).is_err() {
            return Err(Bitrix24Error::Unavailable(
                "Bitrix24 не назвал адрес REST портала".into(),
            ));
        }
        let json = serde_json::to_string(&pair).map_err(|e| Bitrix24Error::Api(e.to_string()))?;
        self.store
            .save_setting(setting_keys::BITRIX24_TOKENS, &json)
            .await
            .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))
    }

    async fn refresh(&self, stale: Option<&str>) -> Result<TokenPair, Bitrix24Error> {
        let _one_at_a_time = self.refreshing.lock().await;
        let Some((raw, pair)) = self.stored().await? else {
            return Err(not_signed_in());
        };
        let expiring =
            pair.expires_at <= Utc::now() + chrono::Duration::seconds(EXPIRY_MARGIN_SECS);
        if !expiring && stale.is_none_or(|stale| stale != pair.access_token) {
            return Ok(pair);
        }
        let fresh = match self
            .grant(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &pair.refresh_token),
            ])
            .await
        {
            Ok(fresh) => fresh,
            Err(error) => {
                if let Some((_, now_stored)) = self.stored().await? {
                    if now_stored.refresh_token != pair.refresh_token {
                        return Ok(now_stored);
                    }
                }
                tracing::warn!(error = %error, "Bitrix24 refused to refresh the token");
                return Err(Bitrix24Error::Unauthorized(format!(
                    "не удалось обновить токен ({error}); войдите в Bitrix24 заново"
                )));
            }
        };
        let json = serde_json::to_string(&fresh).map_err(|e| Bitrix24Error::Api(e.to_string()))?;
        let swapped = self
            .store
            .swap_setting(setting_keys::BITRIX24_TOKENS, Some(&raw), &json)
            .await
            .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))?;
        if swapped {
            tracing::info!("Bitrix24 token refreshed");
            Ok(fresh)
        } else {
            self.stored()
                .await?
                .map(|(_, winner)| winner)
                .ok_or_else(not_signed_in)
        }
    }
}

#[async_trait]
impl Endpoint for OauthTokens {
    async fn base(&self) -> Result<(Url, Option<String>), Bitrix24Error> {
        let pair = self.refresh(None).await?;
        let mut base = Url::parse(&pair.client_endpoint)
            .map_err(|e| Bitrix24Error::Unavailable(format!("адрес REST портала: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok((base, Some(pair.access_token)))
    }

    async fn refreshed(&self, stale: &str) -> Result<bool, Bitrix24Error> {
        self.refresh(Some(stale)).await.map(|_| true)
    }
}
