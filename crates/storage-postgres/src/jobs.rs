//! The job queue on PostgreSQL. Claims lock the chosen row with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers in any number of
//! processes never take the same job and never wait for each other; every
//! transaction that queues a job sends `NOTIFY rop_jobs` to wake them.

use chrono::{DateTime, Utc};
use rop_domain::store::{parse_stored, parse_stored_id, StoreResult};
use rop_domain::{
    CallStatus, ClaimedJob, JobKind, JobOutcome, JobRecord, JobState, NewCallEvent, NewJob,
    StepOutput,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use crate::rows::backend;

/// The channel of `LISTEN`/`NOTIFY` wake-ups.
pub(crate) const CHANNEL: &str = "rop_jobs";

pub(crate) async fn notify(tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
    // Delivered at commit, and only if the transaction commits.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(crate) async fn insert_job(
    tx: &mut Transaction<'_, Postgres>,
    call_seq: i64,
    job: NewJob,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // Queuing a step again (a re-run) starts it afresh.
    sqlx::query(
        "INSERT INTO jobs (call_seq, kind, state, max_attempts, run_after, created_at, updated_at)
         VALUES ($1, $2, 'queued', $3, $4, $4, $4)
         ON CONFLICT (call_seq, kind, target) DO UPDATE SET state = 'queued', attempts = 0,
             max_attempts = excluded.max_attempts, run_after = excluded.run_after,
             lease_owner = NULL, last_error = NULL, updated_at = excluded.updated_at",
    )
    .bind(call_seq)
    .bind(job.kind.as_str())
    .bind(job.max_attempts as i32)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    notify(tx).await
}

fn claimed_from_row(row: &PgRow, worker: &str) -> StoreResult<ClaimedJob> {
    Ok(ClaimedJob {
        id: row.try_get("id").map_err(backend)?,
        kind: parse_stored(row.try_get::<&str, _>("kind").map_err(backend)?)?,
        call_id: parse_stored_id(row.try_get::<String, _>("call_id").map_err(backend)?)?,
        attempt: count(row, "attempts")?,
        max_attempts: count(row, "max_attempts")?,
        worker: worker.to_owned(),
    })
}

fn count(row: &PgRow, column: &str) -> StoreResult<u32> {
    let value: i32 = row.try_get(column).map_err(backend)?;
    Ok(value.max(0) as u32)
}

const CLAIMED_COLUMNS: &str =
    "jobs.id, jobs.kind, jobs.attempts, jobs.max_attempts, calls.call_id, calls.seq";

pub(crate) async fn claim(
    writer: &PgPool,
    worker: &str,
    kinds: &[JobKind],
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ClaimedJob>> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let mut tx = writer.begin().await.map_err(backend)?;
    let mut due = QueryBuilder::<Postgres>::new(
        "SELECT id FROM jobs WHERE state IN ('queued', 'running') AND run_after <= ",
    );
    let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
    due.push_bind(now)
        .push(" AND attempts < max_attempts AND kind = ANY(")
        .push_bind(kinds)
        .push(") ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED");
    let Some(id) = due
        .build_query_scalar::<i64>()
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
    else {
        return Ok(None);
    };
    // The conditions again: whatever chose the row, the update itself never
    // takes a job that is not due.
    let claimed = sqlx::query(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $2,
             run_after = $3, updated_at = $4
         WHERE id = $1 AND state IN ('queued', 'running') AND run_after <= $4
             AND attempts < max_attempts",
    )
    .bind(id)
    .bind(worker)
    .bind(lease_until)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    if claimed.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {CLAIMED_COLUMNS} FROM jobs JOIN calls ON calls.seq = jobs.call_seq
         WHERE jobs.id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    let job = claimed_from_row(&row, worker)?;
    let call_seq: i64 = row.try_get("seq").map_err(backend)?;
    set_call_status(&mut tx, call_seq, job.kind.call_status(), now).await?;
    tx.commit().await.map_err(backend)?;
    Ok(Some(job))
}

async fn set_call_status(
    tx: &mut Transaction<'_, Postgres>,
    call_seq: i64,
    status: CallStatus,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("UPDATE calls SET status = $2, updated_at = $3 WHERE seq = $1")
        .bind(call_seq)
        .bind(status.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(crate) async fn extend_lease(
    writer: &PgPool,
    job: &ClaimedJob,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET run_after = $3
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(job.id)
    .bind(&job.worker)
    .bind(until)
    .execute(writer)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn finish(
    writer: &PgPool,
    job: &ClaimedJob,
    outcome: &JobOutcome,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut tx = writer.begin().await.map_err(backend)?;
    let (state, run_after, error) = match outcome {
        JobOutcome::Done { .. } | JobOutcome::Skipped { .. } => (JobState::Done, now, None),
        JobOutcome::Retry { at, error, .. } => (JobState::Queued, *at, Some(error.as_str())),
        JobOutcome::Released { .. } => (JobState::Queued, now, None),
        JobOutcome::Failed { message, .. } => (JobState::Failed, now, Some(message.as_str())),
    };
    // A released job gets back the attempt its claim counted.
    let refund = i32::from(matches!(outcome, JobOutcome::Released { .. }));
    let call_seq: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET state = $3, run_after = $4, last_error = COALESCE($5, last_error),
             lease_owner = NULL, attempts = attempts - $7, updated_at = $6
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'
         RETURNING call_seq",
    )
    .bind(job.id)
    .bind(&job.worker)
    .bind(state.as_str())
    .bind(run_after)
    .bind(error)
    .bind(now)
    .bind(refund)
    .fetch_optional(&mut *tx)
    .await
    .map_err(backend)?;
    let Some(call_seq) = call_seq else {
        // The lease ran out and someone else has the job now.
        return Ok(false);
    };
    match outcome {
        JobOutcome::Done {
            next,
            event,
            output,
        } => {
            let status = match next {
                Some(next) => {
                    insert_job(&mut tx, call_seq, *next, now).await?;
                    next.kind.call_status()
                }
                None if output.has_deliveries() => CallStatus::Delivering,
                None => CallStatus::Done,
            };
            write_output(&mut tx, call_seq, output, now).await?;
            set_call_status(&mut tx, call_seq, status, now).await?;
            insert_event(&mut tx, call_seq, event).await?;
        }
        JobOutcome::Skipped { reason, event } => {
            sqlx::query(
                "UPDATE calls SET status = 'skipped', status_reason = $2, updated_at = $3
                 WHERE seq = $1",
            )
            .bind(call_seq)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            insert_event(&mut tx, call_seq, event).await?;
        }
        JobOutcome::Retry { event, .. } | JobOutcome::Released { event } => {
            insert_event(&mut tx, call_seq, event).await?
        }
        JobOutcome::Failed { reason, message } => {
            sqlx::query(
                "UPDATE calls SET status = 'failed', failure_code = $2, status_reason = $3,
                     updated_at = $4
                 WHERE seq = $1",
            )
            .bind(call_seq)
            .bind(reason)
            .bind(message)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let event = NewCallEvent::error(now, job.kind.as_str(), message.clone());
            insert_event(&mut tx, call_seq, &event).await?;
        }
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}

pub(crate) async fn claim_abandoned(
    writer: &PgPool,
    worker: &str,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut tx = writer.begin().await.map_err(backend)?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_owner = $1, updated_at = $2
         WHERE id IN (SELECT id FROM jobs
             WHERE state = 'running' AND run_after <= $2 AND attempts >= max_attempts
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(worker)
    .bind(now)
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        let row = sqlx::query(&format!(
            "SELECT {CLAIMED_COLUMNS} FROM jobs JOIN calls ON calls.seq = jobs.call_seq
             WHERE jobs.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        jobs.push(claimed_from_row(&row, worker)?);
    }
    tx.commit().await.map_err(backend)?;
    Ok(jobs)
}

pub(crate) async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    call_seq: i64,
    event: &NewCallEvent,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO call_events (call_seq, at, step, level, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(call_seq)
    .bind(event.at)
    .bind(&event.step)
    .bind(event.level.as_str())
    .bind(&event.message)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn record_from_row(row: &PgRow) -> StoreResult<JobRecord> {
    Ok(JobRecord {
        kind: parse_stored(row.try_get::<&str, _>("kind").map_err(backend)?)?,
        state: parse_stored(row.try_get::<&str, _>("state").map_err(backend)?)?,
        attempts: count(row, "attempts")?,
        max_attempts: count(row, "max_attempts")?,
        run_after: row.try_get("run_after").map_err(backend)?,
        last_error: row.try_get("last_error").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    })
}

/// Stores what a step produced, in the transaction that finishes its job.
async fn write_output(
    tx: &mut Transaction<'_, Postgres>,
    call_seq: i64,
    output: &StepOutput,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    match output {
        StepOutput::Nothing => {}
        StepOutput::Audio(facts) => {
            sqlx::query("UPDATE calls SET audio = $2 WHERE seq = $1")
                .bind(call_seq)
                .bind(Json(facts))
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        }
        StepOutput::Analysis(analysis) => {
            crate::analysis::write_analysis(tx, call_seq, analysis, now).await?;
        }
        StepOutput::Transcript(transcript) => {
            sqlx::query(
                "INSERT INTO transcripts (call_seq, engine, model, language, text, document, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (call_seq) DO UPDATE SET engine = excluded.engine,
                     model = excluded.model, language = excluded.language, text = excluded.text,
                     document = excluded.document, created_at = excluded.created_at",
            )
            .bind(call_seq)
            .bind(&transcript.engine)
            .bind(&transcript.model)
            .bind(&transcript.language)
            .bind(transcript.plain_text())
            .bind(Json(transcript.as_ref()))
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
            crate::search::index_transcript(tx, call_seq, transcript).await?;
        }
    }
    Ok(())
}
