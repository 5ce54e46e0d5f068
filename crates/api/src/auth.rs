//! API key authentication and the per-key rate limit.
//!
//! The key is accepted as the `apiKey` query parameter (seed 002), the
//! `X-Api-Key` header or `Authorization: Bearer`. Presented and stored keys
//! are compared as SHA-256 digests in constant time, against every valid key,
//! so neither timing nor length tells an attacker anything. The digests are
//! kept in memory (see `cache`); a key that matches none of them makes one
//! fresh read, so a key rotated in elsewhere works at once, while a revoked
//! key stops working within a second.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use rop_domain::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<i64>>,
}

impl RateLimit {
    /// `per_minute == 0` disables the limit.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| governor::RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    fn check(&self, key_id: i64) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }
}

fn presented_key(request: &Request) -> Option<String> {
    if let Some(query) = request.uri().query() {
        let from_query = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "apiKey")
            .map(|(_, value)| value.into_owned());
        if from_query.is_some() {
            return from_query;
        }
    }
    let headers = request.headers();
    if let Some(value) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_owned());
    }
    let bearer = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = bearer.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A valid key as kept in memory: its digest only, never the secret.
#[derive(Clone)]
pub(crate) struct KnownKey {
    id: i64,
    digest: [u8; 32],
    expires_at: Option<DateTime<Utc>>,
}

async fn load_keys(store: &dyn Store) -> Result<Arc<[KnownKey]>, ApiError> {
    let keys = store.valid_api_keys(Utc::now()).await?;
    Ok(keys
        .iter()
        .map(|key| KnownKey {
            id: key.id,
            digest: digest(key.secret.expose()),
            expires_at: key.expires_at,
        })
        .collect())
}

/// The id of the key whose digest is `presented`, comparing against every
/// key still valid at `now` without an early exit.
fn match_key(keys: &[KnownKey], presented: &[u8; 32], now: DateTime<Utc>) -> Option<i64> {
    let mut matched = None;
    for key in keys {
        let equal = bool::from(key.digest.ct_eq(presented));
        let valid = key.expires_at.is_none_or(|until| until > now);
        if equal && valid {
            matched = Some(key.id);
        }
    }
    matched
}

pub async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = presented_key(&request).ok_or_else(ApiError::unauthorized)?;
    let presented = digest(&presented);
    let store = state.store.as_ref();
    let cache = &state.caches.api_keys;
    let now = Utc::now();
    let (keys, loaded_at) = cache.get(|| load_keys(store)).await?;
    let mut matched = match_key(&keys, &presented, now);
    if matched.is_none() {
        // Perhaps a key rotated in by another process since the last load.
        let keys = cache.refresh(loaded_at, || load_keys(store)).await?;
        matched = match_key(&keys, &presented, now);
    }
    let key_id = matched.ok_or_else(ApiError::unauthorized)?;
    state.rate_limit.check(key_id)?;
    Ok(next.run(request).await)
}
