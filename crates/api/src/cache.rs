//! Short-lived in-memory copies of what every request reads: the API keys
//! and the connection settings. Without them each upload paid two extra
//! database round trips for values that change a few times a year.
//!
//! Changes made by another process (`rop api-key rotate`, a second `rop
//! serve` on the same PostgreSQL) are seen within [`FRESH_FOR`]; changes
//! made through this process invalidate the copy at once.

use std::future::Future;
use std::time::{Duration, Instant};

use rop_domain::ConnectionSettings;
use tokio::sync::{Mutex, RwLock};

use crate::auth::KnownKey;

/// How long a loaded value is trusted.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);

/// The copies one server process keeps; part of [`crate::AppState`].
#[derive(Default)]
pub struct Caches {
    pub(crate) api_keys: Cached<std::sync::Arc<[KnownKey]>>,
    pub(crate) connection_settings: Cached<ConnectionSettings>,
}

pub(crate) struct Cached<T> {
    value: RwLock<Option<(T, Instant)>>,
    /// One load at a time: a burst of requests after expiry waits for the
    /// first one's load instead of each hitting the database.
    loading: Mutex<()>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self {
            value: RwLock::new(None),
            loading: Mutex::new(()),
        }
    }
}

impl<T: Clone> Cached<T> {
    /// The cached value if fresh, otherwise a newly loaded one; with the
    /// moment it was loaded, for [`Cached::refresh`].
    pub async fn get<E, F, Fut>(&self, load: F) -> Result<(T, Instant), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(entry) = self.fresh(None).await {
            return Ok(entry);
        }
        self.reload(None, load).await
    }

    /// Loads again unless another request already did so after `seen`, the
    /// load time of the value the caller found wanting (a key that did not
    /// match may be one that was just created).
    pub async fn refresh<E, F, Fut>(&self, seen: Instant, load: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Ok(self.reload(Some(seen), load).await?.0)
    }

    pub async fn invalidate(&self) {
        *self.value.write().await = None;
    }

    async fn fresh(&self, loaded_after: Option<Instant>) -> Option<(T, Instant)> {
        let guard = self.value.read().await;
        let (value, loaded_at) = guard.as_ref()?;
        let fresh = match loaded_after {
            Some(seen) => *loaded_at > seen,
            None => loaded_at.elapsed() < FRESH_FOR,
        };
        fresh.then(|| (value.clone(), *loaded_at))
    }

    async fn reload<E, F, Fut>(
        &self,
        loaded_after: Option<Instant>,
        load: F,
    ) -> Result<(T, Instant), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _one_at_a_time = self.loading.lock().await;
        // Someone may have loaded while this request waited for the lock.
        if let Some(entry) = self.fresh(loaded_after).await {
            return Ok(entry);
        }
        let started = Instant::now();
        let value = load().await?;
        *self.value.write().await = Some((value.clone(), started));
        Ok((value, started))
    }
}
