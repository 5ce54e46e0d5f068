//! Where Bitrix24 methods are called: an inbound webhook as is, or an
//! application's OAuth token (integrations.md §3.1). The access token lives
//! an hour; its refresh token can be spent once (`TokenSlot` keeps that
//! safe).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rop_fetch::GuardedClient;
use serde::Deserialize;
use url::Url;

use super::client::{Bitrix24Error, Endpoint};
use super::settings::Bitrix24Settings;
use crate::tokens::{TokenError, TokenPair, TokenSlot};

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

#[derive(Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    client_endpoint: String,
}

pub struct OauthTokens {
    slot: TokenSlot,
    http: GuardedClient,
    settings: Bitrix24Settings,
}

impl OauthTokens {
    pub(crate) fn new(slot: TokenSlot, http: GuardedClient, settings: Bitrix24Settings) -> Self {
        Self {
            slot,
            http,
            settings,
        }
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
                    client_endpoint: Some(grant.client_endpoint),
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
        if pair
            .client_endpoint
            .as_deref()
            .is_none_or(|e| Url::parse(e).is_err())
        {
            return Err(Bitrix24Error::Unavailable(
                "Bitrix24 не назвал адрес REST портала".into(),
            ));
        }
        self.slot
            .save(&pair)
            .await
            .map_err(|e| Bitrix24Error::Unavailable(e.to_string()))
    }

    async fn fresh(&self, stale: Option<&str>) -> Result<TokenPair, Bitrix24Error> {
        let refresh = |refresh_token: String| async move {
            self.grant(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ])
            .await
        };
        self.slot
            .fresh(stale, refresh)
            .await
            .map_err(|error| match error {
                TokenError::NotSignedIn => Bitrix24Error::Unauthorized(
                    "вход в Bitrix24 не выполнен: нажмите «Войти через Bitrix24» в настройках"
                        .into(),
                ),
                TokenError::Refused(error) => Bitrix24Error::Unauthorized(format!(
                    "не удалось обновить токен ({error}); войдите в Bitrix24 заново"
                )),
                TokenError::Store(error) => Bitrix24Error::Unavailable(error.to_string()),
            })
    }
}

#[async_trait]
impl Endpoint for OauthTokens {
    async fn base(&self) -> Result<(Url, Option<String>), Bitrix24Error> {
        let pair = self.fresh(None).await?;
        let mut base = pair
            .client_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok())
            .ok_or_else(|| Bitrix24Error::Unavailable("нет адреса REST портала".into()))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok((base, Some(pair.access_token)))
    }

    async fn refreshed(&self, stale: &str) -> Result<bool, Bitrix24Error> {
        self.fresh(Some(stale)).await.map(|_| true)
    }
}
