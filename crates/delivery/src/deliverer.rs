//! The delivery worker: claim a due delivery, send it, record the attempt
//! and what comes next. Deliveries are rows leased like jobs, so any number
//! of workers in any number of processes share them, and a worker killed
//! mid-send costs only the lease: the delivery is sent again (at least once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::store::StoreResult;
use rop_domain::{ClaimedDelivery, DeliveryAttempt, DeliveryOutcome, Store, StoreError};
use rop_fetch::GuardedClient;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::retry::RetryPolicy;
use crate::send::{send, AttemptReport, Verdict};

/// What the worker needs of the store; every [`Store`] is one (through
/// [`Deliverer::new`]). Tests of the loop give a queue in memory.
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>>;
    async fn finish(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
}

struct StoreQueue(Arc<dyn Store>);

#[async_trait]
impl DeliveryQueue for StoreQueue {
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>> {
        self.0.claim_delivery(worker, lease_until, now).await
    }

    async fn finish(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.0
            .finish_delivery(delivery, attempt, outcome, now)
            .await
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.0.next_delivery_due().await
    }
}

#[derive(Debug, Clone)]
pub struct DelivererConfig {
    /// Names this process's leases; unique per process.
    pub worker_name: String,
    /// Deliveries sent at the same time by this process.
    pub concurrency: usize,
    /// How long a claimed delivery stays ours. There is no heartbeat: a send
    /// is bounded by `request_timeout`, so the lease is made at least that
    /// plus a margin for recording the result.
    pub lease: Duration,
    /// The longest sleep when nothing is due: a new delivery waits at most
    /// this long for a worker.
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
    /// For the whole exchange with the receiver, connection included.
    pub request_timeout: Duration,
}

impl Default for DelivererConfig {
    fn default() -> Self {
        Self {
            worker_name: format!(
                "deliverer-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            concurrency: 4,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Time a worker keeps after the request times out, to record the attempt.
const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// The shortest idle sleep, so that a delivery due "now" that another worker
/// took does not spin us.
const MIN_IDLE: Duration = Duration::from_millis(20);

/// The webhook workers of one process.
pub struct Deliverer {
    queue: Arc<dyn DeliveryQueue>,
    client: GuardedClient,
    config: DelivererConfig,
}

impl Deliverer {
    /// `client` should be [`crate::webhook_client`] with the installation's
    /// guard settings.
    pub fn new(store: Arc<dyn Store>, client: GuardedClient, config: DelivererConfig) -> Self {
        Self::with_queue(Arc::new(StoreQueue(store)), client, config)
    }

    pub fn with_queue(
        queue: Arc<dyn DeliveryQueue>,
        client: GuardedClient,
        mut config: DelivererConfig,
    ) -> Self {
        config.lease = config.lease.max(config.request_timeout + LEASE_MARGIN);
        config.concurrency = config.concurrency.max(1);
        Self {
            queue,
            client,
            config,
        }
    }

    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Works until `shutdown` turns true (or its sender is dropped). Sends
    /// in flight then are finished and recorded; nothing new is claimed.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        tracing::info!(
            worker = %self.config.worker_name,
            concurrency = self.config.concurrency,
            "webhook delivery started"
        );
        let this = Arc::new(self);
        let mut slots = JoinSet::new();
        for slot in 0..this.config.concurrency {
            slots.spawn(this.clone().slot(slot, shutdown.clone()));
        }
        while slots.join_next().await.is_some() {}
        tracing::info!(worker = %this.config.worker_name, "webhook delivery stopped");
    }

    async fn slot(self: Arc<Self>, slot: usize, mut shutdown: watch::Receiver<bool>) {
        let worker = format!("{}/{slot}", self.config.worker_name);
        while !*shutdown.borrow() {
            let wait = match self.deliver_next(&worker).await {
                Ok(true) => continue,
                Ok(false) => self.idle_wait().await,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim a webhook delivery");
                    self.config.poll_interval
                }
            };
            let stopped = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                changed = shutdown.changed() => changed.is_err(),
            };
            if stopped {
                break;
            }
        }
    }

    /// Until the next delivery is due, within `MIN_IDLE..=poll_interval`.
    async fn idle_wait(&self) -> Duration {
        let poll = self.config.poll_interval.max(MIN_IDLE);
        match self.queue.next_due().await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(MIN_IDLE, poll),
            Ok(None) => poll,
            Err(error) => {
                tracing::warn!(%error, "cannot read when the next webhook is due");
                poll
            }
        }
    }

    /// Claims one due delivery, sends it and records the attempt. `false`
    /// when nothing was due.
    pub async fn deliver_next(&self, worker: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let Some(delivery) = self
            .queue
            .claim(worker, now + self.config.lease, now)
            .await?
        else {
            return Ok(false);
        };
        let started_at = Utc::now();
        let report = send(&self.client, &delivery, self.config.request_timeout).await;
        let now = Utc::now();
        let outcome = self.outcome(&delivery, &report, now);
        log_attempt(&delivery, &report, &outcome);
        let attempt = report.to_attempt(delivery.attempt, started_at);
        match self.queue.finish(&delivery, &attempt, &outcome, now).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery_id = %delivery.delivery_id,
                "lease lost before the attempt was recorded; another worker sends it"
            ),
            Err(error) => tracing::error!(
                delivery_id = %delivery.delivery_id,
                %error,
                "cannot record the attempt; it is sent again when the lease runs out"
            ),
        }
        Ok(true)
    }

    fn outcome(
        &self,
        delivery: &ClaimedDelivery,
        report: &AttemptReport,
        now: DateTime<Utc>,
    ) -> DeliveryOutcome {
        match report.verdict {
            Verdict::Delivered => DeliveryOutcome::Delivered,
            Verdict::Final => DeliveryOutcome::Failed,
            Verdict::Retry => self
                .config
                .retry
                .next_attempt_after(
                    delivery.attempt,
                    delivery.created_at,
                    now,
                    report.retry_after,
                    &mut rand::thread_rng(),
                )
                .map_or(DeliveryOutcome::Failed, |at| DeliveryOutcome::Retry { at }),
        }
    }
}

/// One line per attempt: who, where (host only: paths and queries may hold
/// tokens), how it ended. Never the body or the secret.
fn log_attempt(delivery: &ClaimedDelivery, report: &AttemptReport, outcome: &DeliveryOutcome) {
    let host = url::Url::parse(delivery.url.trim())
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default();
    let status = report.status_code.map(i64::from).unwrap_or(-1);
    let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
    // The receiver's answer may echo our body, so only errors of our own
    // (no status) are logged in words.
    let error = if report.status_code.is_none() {
        report.error.as_deref().unwrap_or_default()
    } else {
        ""
    };
    match outcome {
        DeliveryOutcome::Delivered => tracing::info!(
            delivery_id = %delivery.delivery_id,
            call_id = %delivery.call_id,
            event = delivery.event.as_str(),
            host,
            attempt = delivery.attempt,
            status,
            duration_ms,
            "webhook delivered"
        ),
        DeliveryOutcome::Retry { at } => tracing::warn!(
            delivery_id = %delivery.delivery_id,
            call_id = %delivery.call_id,
            event = delivery.event.as_str(),
            host,
            attempt = delivery.attempt,
            status,
            duration_ms,
            error,
            next_attempt_at = %at.to_rfc3339(),
            "webhook attempt failed; will retry"
        ),
        DeliveryOutcome::Failed => tracing::warn!(
            delivery_id = %delivery.delivery_id,
            call_id = %delivery.call_id,
            event = delivery.event.as_str(),
            host,
            attempt = delivery.attempt,
            status,
            duration_ms,
            error,
            "webhook failed; no more attempts"
        ),
    }
}
