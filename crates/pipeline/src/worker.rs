//! The worker loop: claim a due job, run its step while heartbeating the
//! lease, record the outcome. Everything a worker knows is in the database,
//! so any number of workers in any number of processes can share the work,
//! and a worker killed at any point costs only the lease time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use rop_domain::{
    Call, ClaimedJob, JobKind, JobOutcome, NewCallEvent, NewJob, StepOutput, Store, StoreError,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// One step of the pipeline.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    fn kind(&self) -> JobKind;
    /// Runs the step for `call`. Must be harmless to run again for the same
    /// call: a worker may die after the work and before recording it.
    async fn run(&self, call: &Call) -> Result<StepDone, StepError>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepDone {
    pub next: Next,
    /// A line for the call's history, in Russian.
    pub message: String,
    /// Stored together with the job's end, so it exists exactly once.
    pub output: StepOutput,
}

impl StepDone {
    pub fn then(next: JobKind, message: impl Into<String>) -> Self {
        Self {
            next: Next::Step(next),
            message: message.into(),
            output: StepOutput::Nothing,
        }
    }

    pub fn with_output(mut self, output: StepOutput) -> Self {
        self.output = output;
        self
    }
}

/// Where the call goes after a successful step.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Step(JobKind),
    /// Nothing left to do: the call is `done`.
    Finish,
    /// The call needs no processing after all (shorter than the minimum).
    Skip {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// Retry later with backoff (network trouble, a busy source, a full disk).
    Transient(String),
    /// Retrying cannot help; the call fails with this reason.
    Permanent {
        /// Machine-readable: `not_audio`, `too_large`, `unreachable`, …
        code: String,
        /// For people, in Russian.
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this process's leases; unique per process.
    pub name: String,
    /// Jobs run at the same time in this process.
    pub concurrency: usize,
    /// How long a claimed job stays ours without a heartbeat.
    pub lease: Duration,
    /// How often to look for due jobs when nothing wakes us.
    pub poll: Duration,
    /// Attempts each queued step gets.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: format!(
                "worker-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            concurrency: 1,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            max_attempts: 5,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
        }
    }
}

/// The workers of one process.
pub struct Workers {
    store: Arc<dyn Store>,
    steps: HashMap<JobKind, Arc<dyn Step>>,
    kinds: Vec<JobKind>,
    config: WorkerConfig,
}

/// How often one of the slots looks for jobs whose worker died on their
/// last allowed attempt.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Workers {
    pub fn new(store: Arc<dyn Store>, steps: Vec<Arc<dyn Step>>, config: WorkerConfig) -> Self {
        let steps: HashMap<JobKind, Arc<dyn Step>> =
            steps.into_iter().map(|step| (step.kind(), step)).collect();
        let kinds = steps.keys().copied().collect();
        Self {
            store,
            steps,
            kinds,
            config,
        }
    }

    /// Works until `stop` turns true. A step still running then is
    /// interrupted and its job handed back without using up an attempt.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tracing::info!(
            worker = %self.config.name,
            steps = ?self.kinds,
            concurrency = self.config.concurrency,
            "workers started"
        );
        let mut slots = JoinSet::new();
        for slot in 0..self.config.concurrency.max(1) {
            slots.spawn(self.clone().slot(slot, stop.clone()));
        }
        while slots.join_next().await.is_some() {}
        tracing::info!(worker = %self.config.name, "workers stopped");
    }

    async fn slot(self: Arc<Self>, slot: usize, mut stop: watch::Receiver<bool>) {
        let worker = format!("{}/{slot}", self.config.name);
        let mut next_sweep = tokio::time::Instant::now();
        while !*stop.borrow() {
            if slot == 0 && tokio::time::Instant::now() >= next_sweep {
                self.fail_abandoned(&worker).await;
                next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            }
            let now = Utc::now();
            let claimed = self
                .store
                .claim_job(&worker, &self.kinds, now + self.config.lease, now)
                .await;
            match claimed {
                Ok(Some(job)) => {
                    let span = tracing::info_span!(
                        "job",
                        id = job.id,
                        kind = %job.kind,
                        call_id = %job.call_id,
                        attempt = job.attempt
                    );
                    self.execute(job, &mut stop).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.store.wait_for_jobs(self.config.poll) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot claim a job");
                    tokio::select! {
                        () = tokio::time::sleep(self.config.poll) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    async fn execute(&self, job: ClaimedJob, stop: &mut watch::Receiver<bool>) {
        let call = match self.store.call(&job.call_id).await {
            Ok(Some(details)) => details.call,
            // Deleted meanwhile: its jobs went with it.
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the call; the lease will run out");
                return;
            }
        };
        let Some(step) = self.steps.get(&job.kind) else {
            return;
        };
        let outcome = tokio::select! {
            result = step.run(&call) => self.outcome(&job, result, Utc::now()),
            () = self.heartbeat(&job) => {
                tracing::warn!("lease lost; another worker has the job");
                return;
            }
            _ = stop.changed() => JobOutcome::Released {
                event: NewCallEvent::info(
                    Utc::now(),
                    job.kind.as_str(),
                    "Обработка прервана остановкой; шаг будет выполнен заново",
                ),
            },
        };
        match self.store.finish_job(&job, &outcome, Utc::now()).await {
            Ok(true) => tracing::info!(outcome = outcome_name(&outcome), "job finished"),
            Ok(false) => tracing::warn!("lease lost before the outcome was recorded"),
            Err(error) => {
                tracing::error!(%error, "cannot record the outcome; the job will run again")
            }
        }
    }

    /// Extends the lease every third of its length; returns only when the
    /// lease is lost.
    async fn heartbeat(&self, job: &ClaimedJob) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self
                .store
                .extend_lease(job, Utc::now() + self.config.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                // The next beat may get through before the lease runs out.
                Err(error) => tracing::warn!(%error, "heartbeat failed"),
            }
        }
    }

    fn outcome(
        &self,
        job: &ClaimedJob,
        result: Result<StepDone, StepError>,
        now: DateTime<Utc>,
    ) -> JobOutcome {
        let step = job.kind.as_str();
        match result {
            Ok(StepDone {
                next: Next::Skip { reason },
                message,
                ..
            }) => JobOutcome::Skipped {
                reason,
                event: NewCallEvent::info(now, step, message),
            },
            Ok(done) => JobOutcome::Done {
                next: match done.next {
                    Next::Step(kind) => Some(NewJob {
                        kind,
                        max_attempts: self.config.max_attempts,
                    }),
                    _ => None,
                },
                event: NewCallEvent::info(now, step, done.message),
                output: done.output,
            },
            Err(StepError::Transient(error)) if job.attempt < job.max_attempts => {
                let at = now + retry_delay(&self.config, job.attempt);
                JobOutcome::Retry {
                    at,
                    event: NewCallEvent::warning(
                        now,
                        step,
                        format!(
                            "Попытка {} из {} не удалась: {error}. Следующая — {}",
                            job.attempt,
                            job.max_attempts,
                            at.format("%d.%m.%Y %H:%M:%S UTC"),
                        ),
                    ),
                    error,
                }
            }
            Err(StepError::Transient(error)) => JobOutcome::Failed {
                reason: "attempts_exhausted".into(),
                message: format!(
                    "Шаг «{}» не удался за {} попыток: {error}",
                    step_title(job.kind),
                    job.attempt
                ),
            },
            Err(StepError::Permanent { code, message }) => JobOutcome::Failed {
                reason: code,
                message,
            },
        }
    }

    async fn fail_abandoned(&self, worker: &str) {
        let jobs = match self.store.claim_abandoned_jobs(worker, Utc::now()).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "cannot look for abandoned jobs");
                return;
            }
        };
        for job in jobs {
            let outcome = JobOutcome::Failed {
                reason: "worker_lost".into(),
                message: format!(
                    "Обработчик пропал во время последней попытки ({} из {}) шага «{}»; звонок не обработан",
                    job.attempt,
                    job.max_attempts,
                    step_title(job.kind),
                ),
            };
            if let Err(error) = self.store.finish_job(&job, &outcome, Utc::now()).await {
                tracing::warn!(%error, job = job.id, "cannot fail an abandoned job");
            }
        }
    }
}

/// `retry_base × 2^(attempt−1)`, capped, with ±20 % jitter so that calls
/// that failed together do not all come back at the same moment.
fn retry_delay(config: &WorkerConfig, attempt: u32) -> chrono::Duration {
    let doubled = config
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = doubled.min(config.retry_max);
    let jittered = capped.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
    chrono::Duration::from_std(jittered).unwrap_or(chrono::Duration::hours(1))
}

fn step_title(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Download => "скачивание записи",
        JobKind::Decode => "декодирование",
        JobKind::Transcribe => "распознавание речи",
        JobKind::Analyze => "анализ",
        JobKind::Deliver => "отправка результатов",
    }
}

fn outcome_name(outcome: &JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Done { .. } => "done",
        JobOutcome::Skipped { .. } => "skipped",
        JobOutcome::Retry { .. } => "retry",
        JobOutcome::Failed { .. } => "failed",
        JobOutcome::Released { .. } => "released",
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Transient(format!("database: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_stop_at_the_cap() {
        let config = WorkerConfig {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        let secs = |attempt| retry_delay(&config, attempt).num_milliseconds() as f64 / 1000.0;
        assert!((8.0..=12.0).contains(&secs(1)), "{}", secs(1));
        assert!((16.0..=24.0).contains(&secs(2)), "{}", secs(2));
        assert!((48.0..=72.0).contains(&secs(4)), "{}", secs(4));
        assert!((48.0..=72.0).contains(&secs(40)), "{}", secs(40));
    }
}
