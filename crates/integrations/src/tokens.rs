//! OAuth token pairs whose refresh token can be spent once (amoCRM,
//! Bitrix24). Any process may find the access token expired at the same
//! moment, so a refresh runs one at a time per process and the new pair is
//! stored with a compare-and-swap before it is used: whoever loses the swap,
//! or finds the refresh token already spent, takes the pair that won.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rop_domain::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// The stored pair.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    /// Where methods are called with this token (Bitrix24's
    /// `client_endpoint`); amoCRM has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_endpoint: Option<String>,
}

/// Why no token could be had.
pub(crate) enum TokenError<E> {
    /// No pair stored: the administrator has not signed in.
    NotSignedIn,
    /// The CRM refused the refresh token (and nobody else refreshed).
    Refused(E),
    Store(StoreError),
}

impl<E> From<StoreError> for TokenError<E> {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// The pair kept under one settings key.
#[derive(Clone)]
pub(crate) struct TokenSlot {
    store: Arc<dyn Store>,
    key: &'static str,
    /// One refresh at a time in this process; other processes are kept
    /// honest by the swap.
    refreshing: Arc<Mutex<()>>,
    /// A token is refreshed this long before the CRM would refuse it.
    margin: chrono::Duration,
}

impl TokenSlot {
    pub fn new(store: Arc<dyn Store>, key: &'static str, margin_secs: i64) -> Self {
        Self {
            store,
            key,
            refreshing: Arc::new(Mutex::new(())),
            margin: chrono::Duration::seconds(margin_secs),
        }
    }

    async fn stored(&self) -> Result<Option<(String, TokenPair)>, StoreError> {
        Ok(self.store.setting(self.key).await?.and_then(|raw| {
            let pair = serde_json::from_str(&raw).ok()?;
            Some((raw, pair))
        }))
    }

    pub async fn signed_in(&self) -> Result<bool, StoreError> {
        Ok(self.stored().await?.is_some())
    }

    /// Stores the first pair, from an authorization code.
    pub async fn save(&self, pair: &TokenPair) -> Result<(), StoreError> {
        let json = serde_json::to_string(pair).map_err(rop_domain::store::backend_error)?;
        self.store.save_setting(self.key, &json).await
    }

    /// Forgets the pair (another account or application).
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.store.save_setting(self.key, "null").await
    }

    fn expiring(&self, pair: &TokenPair) -> bool {
        pair.expires_at <= Utc::now() + self.margin
    }

    /// A pair to use: the stored one while it is good and is not `stale`
    /// (the token the CRM just refused), else a new one from `grant`,
    /// which spends the stored refresh token.
    pub async fn fresh<E, F, Fut>(
        &self,
        stale: Option<&str>,
        grant: F,
    ) -> Result<TokenPair, TokenError<E>>
    where
        E: std::fmt::Display,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<TokenPair, E>>,
    {
        let usable = |pair: &TokenPair| {
            !self.expiring(pair) && stale.is_none_or(|stale| stale != pair.access_token)
        };
        match self.stored().await? {
            None => return Err(TokenError::NotSignedIn),
            Some((_, pair)) if usable(&pair) => return Ok(pair),
            Some(_) => {}
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Read again: someone may have refreshed while we waited.
        let Some((raw, pair)) = self.stored().await? else {
            return Err(TokenError::NotSignedIn);
        };
        if usable(&pair) {
            return Ok(pair);
        }
        let fresh = match grant(pair.refresh_token.clone()).await {
            Ok(fresh) => fresh,
            Err(error) => {
                // Another process may have spent the token a moment ago.
                if let Some((_, now_stored)) = self.stored().await? {
                    if now_stored.refresh_token != pair.refresh_token {
                        return Ok(now_stored);
                    }
                }
                tracing::warn!(key = self.key, error = %error, "the CRM refused to refresh the token");
                return Err(TokenError::Refused(error));
            }
        };
        let json = serde_json::to_string(&fresh).map_err(rop_domain::store::backend_error)?;
        if self.store.swap_setting(self.key, Some(&raw), &json).await? {
            tracing::info!(key = self.key, "token refreshed");
            Ok(fresh)
        } else {
            self.stored()
                .await?
                .map(|(_, winner)| winner)
                .ok_or(TokenError::NotSignedIn)
        }
    }
}
