//! Group commit for call inserts. With `synchronous=FULL` every commit waits
//! for an fsync; uploads that arrive together share one transaction (and one
//! fsync) instead of queueing for one each, and one multi-row statement per
//! table instead of a handful of statements per call: each statement is a
//! round trip to sqlx's connection thread. A repeated `call_id` is skipped
//! by `ON CONFLICT DO NOTHING` and fails only its own upload.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rop_domain::store::StoreResult;
use rop_domain::{AudioSource, NewCall, NewCallEvent, NewJob, StoreError};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::rows::{backend, ms};

/// Upper bound on calls in one transaction, to bound each commit's latency.
const MAX_BATCH: usize = 128;

/// Prepared statements the writer keeps: each batch size is a statement of
/// its own for each of the four tables, and re-preparing them would cost
/// more than the memory they take.
pub(crate) const STATEMENT_CACHE: usize = 4 * MAX_BATCH + 64;

type Reply = oneshot::Sender<StoreResult<()>>;

#[derive(Clone)]
pub(crate) struct CallInserter {
    queue: mpsc::Sender<(NewCall, Reply)>,
}

impl CallInserter {
    pub(crate) fn start(writer: SqlitePool, jobs_queued: Arc<Notify>) -> StoreResult<Self> {
        let (queue, requests) = mpsc::channel(1024);
        // The writer loop gets a thread and a small runtime of its own: the
        // compiler cannot prove its sqlx transaction future `Send` for
        // `tokio::spawn`, and a dedicated thread suits the single writer
        // anyway. It ends when the store (the last sender) is dropped.
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(writer, requests, jobs_queued)),
                    Err(error) => tracing::error!(%error, "cannot start the SQLite writer"),
                }
            })
            .map_err(backend)?;
        Ok(Self { queue })
    }

    pub(crate) async fn insert(&self, call: NewCall) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the SQLite writer has stopped".into());
        self.queue
            .send((call, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    writer: SqlitePool,
    mut requests: mpsc::Receiver<(NewCall, Reply)>,
    jobs_queued: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let calls: Vec<&NewCall> = batch.iter().map(|(call, _)| call).collect();
        let results = match write_batch(&writer, &calls).await {
            Ok(results) => results,
            Err(error) => {
                // Something in the batch broke the shared transaction; give
                // each call a transaction of its own so one bad call cannot
                // fail the others, and each upload hears its own outcome.
                tracing::warn!(%error, calls = calls.len(), "call batch failed, storing one by one");
                let mut results = Vec::with_capacity(calls.len());
                for call in &calls {
                    results.push(match write_batch(&writer, &[*call]).await {
                        Ok(mut one) => one.pop().unwrap_or(Ok(())),
                        Err(error) => Err(backend(error)),
                    });
                }
                results
            }
        };
        jobs_queued.notify_waiters();
        for ((_, reply), result) in batch.drain(..).zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Stores the calls in one transaction with one statement per table, and
/// returns each call's outcome (`Duplicate` for a call_id already stored,
/// including one stored earlier in the same batch). An `Err` means nothing
/// was stored.
async fn write_batch(
    writer: &SqlitePool,
    calls: &[&NewCall],
) -> Result<Vec<StoreResult<()>>, sqlx::Error> {
    let metadata = calls
        .iter()
        .map(|call| serde_json::to_string(&call.metadata))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;

    let mut tx = writer.begin().await?;

    // Managers first (the calls refer to them), and only for calls about to
    // be stored: a rejected duplicate must not leave a placeholder behind.
    // This writer is the only one, so what the check sees still holds when
    // the calls are inserted below.
    let mut first_of_id = HashSet::new();
    let new_people: Vec<&NewCall> = calls
        .iter()
        .copied()
        .filter(|call| first_of_id.insert(call.call_id.as_str()))
        .collect();
    let mut managers = QueryBuilder::<Sqlite>::new(
        "INSERT INTO managers (manager_id, created_at, updated_at)
         SELECT column1, column2, column2 FROM (",
    );
    managers.push_values(&new_people, |mut row, call| {
        row.push_bind(call.manager_id.as_str())
            .push_bind(ms(call.received_at))
            .push_bind(call.call_id.as_str());
    });
    managers.push(
        ") AS new_calls WHERE NOT EXISTS (SELECT 1 FROM calls WHERE calls.call_id = new_calls.column3)
         ON CONFLICT (manager_id) DO NOTHING",
    );
    managers.build().execute(&mut *tx).await?;

    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO calls (call_id, manager_id, deal_id, deal_stage_id, stage_id, direction,
            client_phone, client_name, call_started_at, declared_duration, audio_url, blob_key,
            blob_bytes, metadata, status, status_reason, received_at, occurred_at, updated_at,
            manager_channel) ",
    );
    insert.push_values(calls.iter().zip(&metadata), |mut row, (call, metadata)| {
        let (audio_url, blob_key, blob_bytes) = match &call.source {
            AudioSource::Url(url) => (Some(url.as_str()), None, None),
            AudioSource::Blob { key, size_bytes } => {
                (None, Some(key.as_str()), i64::try_from(*size_bytes).ok())
            }
        };
        let received = ms(call.received_at);
        row.push_bind(call.call_id.as_str())
            .push_bind(call.manager_id.as_str())
            .push_bind(call.deal_id.as_deref())
            .push_bind(call.deal_stage_id.as_deref())
            .push_bind(call.stage_id.as_deref())
            .push_bind(call.direction.map(|d| d.as_str()))
            .push_bind(call.client_phone.as_deref())
            .push_bind(call.client_name.as_deref())
            .push_bind(call.call_started_at.map(ms))
            .push_bind(call.declared_duration_secs)
            .push_bind(audio_url)
            .push_bind(blob_key)
            .push_bind(blob_bytes)
            .push_bind(metadata.as_str())
            .push_bind(call.status.as_str())
            .push_bind(call.status_reason.as_deref())
            .push_bind(received)
            .push_bind(call.call_started_at.map(ms).unwrap_or(received))
            .push_bind(received)
            .push_bind(call.manager_channel.map(i64::from));
    });
    insert.push(" ON CONFLICT (call_id) DO NOTHING RETURNING seq, call_id");
    let stored: Vec<(i64, String)> = insert.build_query_as().fetch_all(&mut *tx).await?;
    let mut seq_of: HashMap<String, i64> = stored.into_iter().map(|(seq, id)| (id, seq)).collect();

    // In batch order, so that of two uploads of one call_id in the same
    // batch the first is the one stored, as the statement stored it.
    let outcomes: Vec<Option<i64>> = calls
        .iter()
        .map(|call| seq_of.remove(call.call_id.as_str()))
        .collect();
    let stored: Vec<(&NewCall, i64)> = calls
        .iter()
        .zip(&outcomes)
        .filter_map(|(call, seq)| seq.map(|seq| (*call, seq)))
        .collect();

    if !stored.is_empty() {
        let events: Vec<(i64, &NewCallEvent)> = stored
            .iter()
            .flat_map(|(call, seq)| call.events.iter().map(move |event| (*seq, event)))
            .collect();
        if !events.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO call_events (call_seq, at, step, level, message) ",
            );
            insert.push_values(&events, |mut row, (seq, event)| {
                row.push_bind(*seq)
                    .push_bind(ms(event.at))
                    .push_bind(event.step.as_str())
                    .push_bind(event.level.as_str())
                    .push_bind(event.message.as_str());
            });
            insert.build().execute(&mut *tx).await?;
        }

        let first_jobs: Vec<(i64, NewJob, i64)> = stored
            .iter()
            .filter_map(|(call, seq)| call.first_job.map(|job| (*seq, job, ms(call.received_at))))
            .collect();
        if !first_jobs.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO jobs (call_seq, kind, state, max_attempts, run_after, created_at,
                    updated_at) ",
            );
            insert.push_values(&first_jobs, |mut row, (seq, job, received)| {
                row.push_bind(*seq)
                    .push_bind(job.kind.as_str())
                    .push_bind("queued")
                    .push_bind(job.max_attempts)
                    .push_bind(*received)
                    .push_bind(*received)
                    .push_bind(*received);
            });
            insert.build().execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|seq| match seq {
            Some(_) => Ok(()),
            None => Err(StoreError::Duplicate),
        })
        .collect())
}
