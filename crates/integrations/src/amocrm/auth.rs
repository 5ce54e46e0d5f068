//! amoCRM's OAuth (integrations.md §2.1): an authorization code becomes a
//! token pair; the access token lives a day and is refreshed with a refresh
//! token that can be spent once. Every process may need a fresh token at
//! the same moment, so a new pair is stored with a compare-and-swap before
//! it is used: whoever loses the swap takes the winner's pair.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::integrations::setting_keys;
use rop_domain::Store;
use rop_fetch::GuardedClient;
use serde::{Deserialize, Serialize};
use url::Url;

use super::client::{problem, AmocrmError, TokenSource};
use super::settings::{AmocrmSettings, AuthMode};

/// A token is refreshed this long before amoCRM would refuse it.
const EXPIRY_MARGIN_SECS: i64 = 120;

/// The stored pair.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// The token source of the settings in force.
pub struct Tokens {
    store: Arc<dyn Store>,
    http: GuardedClient,
    settings: AmocrmSettings,
    /// One refresh at a time in this process; other processes are kept
    /// honest by the swap.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl Tokens {
    pub fn new(
        store: Arc<dyn Store>,
        http: GuardedClient,
        settings: AmocrmSettings,
        refreshing: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            store,
            http,
            settings,
            refreshing,
        }
    }

    async fn stored(&self) -> Result<Option<(String, TokenPair)>, AmocrmError> {
        let raw = self
            .store
            .setting(setting_keys::AMOCRM_TOKENS)
            .await
            .map_err(|e| AmocrmError::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|raw| {
            let pair = serde_json::from_str(&raw).ok()?;
            Some((raw, pair))
        }))
    }

    /// Exchanges an authorization code for the first pair and stores it.
    pub async fn exchange_code(&self, code: &str) -> Result<(), AmocrmError> {
        let pair = self
            .grant(serde_json::json!({
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.redirect_uri,
            }))
            .await?;
        let json = serde_json::to_string(&pair).map_err(|e| AmocrmError::Api(e.to_string()))?;
        self.store
            .save_setting(setting_keys::AMOCRM_TOKENS, &json)
            .await
            .map_err(|e| AmocrmError::Unavailable(e.to_string()))
    }

    async fn grant(&self, body: serde_json::Value) -> Result<TokenPair, AmocrmError> {
        let url = Url::parse(&self.settings.base_url)
            .and_then(|base| base.join("/oauth2/access_token"))
            .map_err(|e| AmocrmError::Unavailable(format!("адрес аккаунта: {e}")))?;
        let response = self
            .http
            .post(&url)
            .map_err(|forbidden| AmocrmError::Unavailable(forbidden.to_string()))?
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                AmocrmError::Unavailable(
                    rop_fetch::forbidden_cause(&e).map_or_else(|| e.to_string(), |f| f.to_string()),
                )
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| AmocrmError::Unavailable(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(AmocrmError::Unauthorized(problem(&bytes, status)));
        }
        let grant: Grant = serde_json::from_slice(&bytes)
            .map_err(|e| AmocrmError::Unavailable(format!("ответ на выдачу токена: {e}")))?;
        Ok(TokenPair {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_at: Utc::now() + chrono::Duration::seconds(grant.expires_in.unwrap_or(86_400)),
        })
    }

    /// A pair newer than `stale` if one is stored, else spends the stored
    /// refresh token on a new pair and stores it before returning it.
    async fn refresh(&self, stale: Option<&str>) -> Result<String, AmocrmError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let Some((raw, pair)) = self.stored().await? else {
            return Err(not_signed_in());
        };
        // Someone refreshed while we waited for the lock.
        if !expiring(&pair) && stale.is_none_or(|stale| stale != pair.access_token) {
            return Ok(pair.access_token);
        }
        let refreshed = self
            .grant(serde_json::json!({
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": pair.refresh_token,
                "redirect_uri": self.settings.redirect_uri,
            }))
            .await;
        let fresh = match refreshed {
            Ok(fresh) => fresh,
            Err(error) => {
                // Another process may have spent the token a moment ago.
                if let Some((_, now_stored)) = self.stored().await? {
                    if now_stored.refresh_token != pair.refresh_token {
                        return Ok(now_stored.access_token);
                    }
                }
                tracing::warn!(error = %error, "amoCRM refused to refresh the token");
                return Err(AmocrmError::Unauthorized(format!(
                    "не удалось обновить токен ({error}); подключите amoCRM заново"
                )));
            }
        };
        let json = serde_json::to_string(&fresh).map_err(|e| AmocrmError::Api(e.to_string()))?;
        let swapped = self
            .store
            .swap_setting(setting_keys::AMOCRM_TOKENS, Some(&raw), &json)
            .await
            .map_err(|e| AmocrmError::Unavailable(e.to_string()))?;
        if swapped {
            tracing::info!("amoCRM token refreshed");
            Ok(fresh.access_token)
        } else {
            match self.stored().await? {
                Some((_, winner)) => Ok(winner.access_token),
                None => Err(not_signed_in()),
            }
        }
    }
}

fn expiring(pair: &TokenPair) -> bool {
    pair.expires_at <= Utc::now() + chrono::Duration::seconds(EXPIRY_MARGIN_SECS)
}

fn not_signed_in() -> AmocrmError {
    AmocrmError::Unauthorized(
        "вход в amoCRM не выполнен: нажмите «Войти через amoCRM» в настройках".into(),
    )
}

#[async_trait]
impl TokenSource for Tokens {
    async fn token(&self) -> Result<String, AmocrmError> {
        match self.settings.auth_mode {
            AuthMode::LongLivedToken => Ok(self.settings.long_lived_token.clone()),
            AuthMode::Oauth => match self.stored().await? {
                None => Err(not_signed_in()),
                Some((_, pair)) if !expiring(&pair) => Ok(pair.access_token),
                Some(_) => self.refresh(None).await,
            },
        }
    }

    async fn refreshed(&self, stale: &str) -> Result<Option<String>, AmocrmError> {
        match self.settings.auth_mode {
            // The SDK refuses to refresh a long-lived token, and so do we.
            AuthMode::LongLivedToken => Ok(None),
            AuthMode::Oauth => self.refresh(Some(stale)).await.map(Some),
        }
    }
}
