//! API key authentication and the per-key rate limit.
//!
//! The key is accepted as the `apiKey` query parameter (seed 002), the
//! `X-Api-Key` header or `Authorization: Bearer`. Presented and stored keys
//! are compared as SHA-256 digests in constant time, against every valid key,
//! so neither timing nor length tells an attacker anything.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
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

pub async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = presented_key(&request).ok_or_else(ApiError::unauthorized)?;
    let presented = digest(&presented);
    let keys = state.store.valid_api_keys(chrono::Utc::now()).await?;
    let mut matched = None;
    for key in &keys {
        // No early exit: every key is compared whatever the outcome.
        if bool::from(digest(key.secret.expose()).ct_eq(&presented)) {
            matched = Some(key.id);
        }
    }
    let key_id = matched.ok_or_else(ApiError::unauthorized)?;
    state.rate_limit.check(key_id)?;
    Ok(next.run(request).await)
}
