//! The worker that runs the integrations' durable tasks (fetching a
//! recording, an export). Tasks are rows in the store: a task claimed by a
//! process that then dies is claimed again once its lease runs out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rop_domain::{ClaimedTask, Store, TaskOutcome};
use tokio::sync::watch;

/// Runs the tasks of some kinds.
#[async_trait]
pub trait TaskHandler: Send + Sync {
    /// The kinds this handler runs: `zadarma.recording`, …
    fn kinds(&self) -> &'static [&'static str];
    /// Runs one task. Long tasks save their progress with
    /// `Store::save_task_progress`, which also extends the lease, and stop
    /// when it answers `false` (the task was cancelled).
    async fn run(&self, task: &ClaimedTask) -> TaskOutcome;
}

pub struct TaskWorker {
    store: Arc<dyn Store>,
    handlers: Vec<Arc<dyn TaskHandler>>,
    name: String,
    /// How long a claimed task is ours without saving progress.
    pub lease: Duration,
    /// How often an idle worker looks for due tasks.
    pub poll: Duration,
}

impl TaskWorker {
    pub fn new(store: Arc<dyn Store>, handlers: Vec<Arc<dyn TaskHandler>>) -> Self {
        Self {
            store,
            handlers,
            name: format!("integrations-{}", uuid::Uuid::new_v4().simple()),
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(1),
        }
    }

    /// Runs tasks one at a time until `stop` turns true. A task in hand is
    /// finished first; its lease protects it if the process is killed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let kinds: Vec<&str> = self
            .handlers
            .iter()
            .flat_map(|handler| handler.kinds().iter().copied())
            .collect();
        while !*stop.borrow() {
            let now = Utc::now();
            let lease_until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
            match self
                .store
                .claim_task(&self.name, &kinds, lease_until, now)
                .await
            {
                Ok(Some(task)) => self.run_one(task).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot claim an integration task");
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll * 5) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    async fn run_one(&self, task: ClaimedTask) {
        let Some(handler) = self
            .handlers
            .iter()
            .find(|handler| handler.kinds().contains(&task.kind.as_str()))
        else {
            return;
        };
        let outcome = handler.run(&task).await;
        match &outcome {
            TaskOutcome::Done => {
                tracing::info!(kind = %task.kind, key = %task.key, "integration task done")
            }
            TaskOutcome::Retry { at, error } => tracing::warn!(
                kind = %task.kind, key = %task.key, attempt = task.attempt, retry_at = %at,
                error = %error, "integration task will be retried"
            ),
            TaskOutcome::Failed { error } => tracing::warn!(
                kind = %task.kind, key = %task.key, error = %error, "integration task failed"
            ),
        }
        if let Err(error) = self.store.finish_task(&task, &outcome, Utc::now()).await {
            tracing::warn!(kind = %task.kind, error = %error, "cannot finish an integration task");
        }
    }
}

/// When to try a failed attempt again: 1, 2, 4 … minutes, at most an hour.
pub fn backoff(attempt: u32) -> chrono::Duration {
    chrono::Duration::minutes(1i64 << attempt.saturating_sub(1).min(6))
}
