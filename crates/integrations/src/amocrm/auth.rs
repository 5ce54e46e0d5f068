//! amoCRM's OAuth (integrations.md §2.1): an authorization code becomes a
//! token pair; the access token lives a day and is refreshed with a refresh
//! token that can be spent once (`TokenSlot` keeps that safe). A
//! long-lived token is used as it is.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rop_fetch::GuardedClient;
use serde::Deserialize;
use url::Url;

use super::client::{problem, AmocrmError, TokenSource};
use super::settings::{AmocrmSettings, AuthMode};
use crate::tokens::{TokenError, TokenPair, TokenSlot};

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// The token source of the settings in force.
pub struct Tokens {
    slot: TokenSlot,
    http: GuardedClient,
    settings: AmocrmSettings,
}

impl Tokens {
    pub(crate) fn new(slot: TokenSlot, http: GuardedClient, settings: AmocrmSettings) -> Self {
        Self {
            slot,
            http,
            settings,
        }
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
        self.slot
            .save(&pair)
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
            client_endpoint: None,
        })
    }

    async fn fresh(&self, stale: Option<&str>) -> Result<String, AmocrmError> {
        let refresh = |refresh_token: String| {
            self.grant(serde_json::json!({
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "redirect_uri": self.settings.redirect_uri,
            }))
        };
        match self.slot.fresh(stale, refresh).await {
            Ok(pair) => Ok(pair.access_token),
            Err(TokenError::NotSignedIn) => Err(AmocrmError::Unauthorized(
                "вход в amoCRM не выполнен: нажмите «Войти через amoCRM» в настройках".into(),
            )),
            Err(TokenError::Refused(error)) => Err(AmocrmError::Unauthorized(format!(
                "не удалось обновить токен ({error}); подключите amoCRM заново"
            ))),
            Err(TokenError::Store(error)) => Err(AmocrmError::Unavailable(error.to_string())),
        }
    }
}

#[async_trait]
impl TokenSource for Tokens {
    async fn token(&self) -> Result<String, AmocrmError> {
        match self.settings.auth_mode {
            AuthMode::LongLivedToken => Ok(self.settings.long_lived_token.clone()),
            AuthMode::Oauth => self.fresh(None).await,
        }
    }

    async fn refreshed(&self, stale: &str) -> Result<Option<String>, AmocrmError> {
        match self.settings.auth_mode {
            // The SDK refuses to refresh a long-lived token, and so do we.
            AuthMode::LongLivedToken => Ok(None),
            AuthMode::Oauth => self.fresh(Some(stale)).await.map(Some),
        }
    }
}
