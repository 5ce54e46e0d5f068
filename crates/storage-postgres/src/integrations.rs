//! What the integrations keep on PostgreSQL: their settings, the clients
//! directory, the telephony journal and the task queue. Claims lock the
//! chosen task with `FOR UPDATE SKIP LOCKED`, so workers in any number of
//! processes never take the same task and never wait for each other.

use chrono::{DateTime, Utc};
use rop_domain::store::{parse_stored, parse_stored_id, StoreResult};
use rop_domain::{
    ClaimedTask, Client, ClientUpdate, NewTask, TaskOutcome, TaskRecord, TaskState, TelephonyCall,
    TelephonyFilter, TelephonyUpdate, UpsertCounts,
};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::rows::backend;

/// The error of a task whose worker vanished during its last attempt.
const ABANDONED: &str = "Обработчик пропал во время последней попытки";

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(backend)
}

fn count(row: &PgRow, column: &str) -> StoreResult<u32> {
    Ok(get::<i32>(row, column)?.max(0) as u32)
}

/// Counts are `INTEGER` columns; no real count comes near the limit.
fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `raw` as a LIKE pattern that matches it anywhere, its wildcards taken
/// literally (with `ESCAPE '\'`).
fn contains_pattern(raw: &str) -> String {
    let mut pattern = String::with_capacity(raw.len() + 2);
    pattern.push('%');
    for c in raw.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

// --- settings -----------------------------------------------------------

pub(crate) async fn setting(pool: &PgPool, key: &str) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value::text FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(backend)
}

pub(crate) async fn save_setting(pool: &PgPool, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2::jsonb)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn swap_setting(
    pool: &PgPool,
    key: &str,
    expected: Option<&str>,
    value: &str,
) -> StoreResult<bool> {
    // Values are compared as JSON: `setting` returns the stored JSONB's own
    // spelling, which need not be the text that was saved. The row lock
    // taken by the UPDATE makes a concurrent swap re-check the new value.
    let done = match expected {
        None => sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2::jsonb)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map_err(backend)?,
        Some(expected) => sqlx::query(
            "UPDATE settings SET value = $3::jsonb WHERE key = $1 AND value = $2::jsonb",
        )
        .bind(key)
        .bind(expected)
        .bind(value)
        .execute(pool)
        .await
        .map_err(backend)?,
    };
    Ok(done.rows_affected() == 1)
}

// --- clients ------------------------------------------------------------

fn client_from_row(row: &PgRow) -> StoreResult<Client> {
    Ok(Client {
        phone: get(row, "phone")?,
        name: get(row, "name")?,
        manager_id: get::<Option<String>>(row, "manager_id")?
            .map(parse_stored_id)
            .transpose()?,
        source: get(row, "source")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) async fn upsert_clients(
    pool: &PgPool,
    clients: &[ClientUpdate],
    now: DateTime<Utc>,
) -> StoreResult<UpsertCounts> {
    // In phone order, so that two concurrent imports cannot deadlock.
    let mut sorted: Vec<&ClientUpdate> = clients.iter().collect();
    sorted.sort_by(|a, b| a.phone.cmp(&b.phone));
    let mut counts = UpsertCounts::default();
    let mut tx = pool.begin().await.map_err(backend)?;
    for client in sorted {
        // xmax = 0 only on a row this statement inserted.
        let created: bool = sqlx::query_scalar(
            "INSERT INTO clients (phone, name, name_folded, manager_id, source, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (phone) DO UPDATE SET name = excluded.name,
                 name_folded = excluded.name_folded, manager_id = excluded.manager_id,
                 source = excluded.source, updated_at = excluded.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&client.phone)
        .bind(&client.name)
        .bind(client.name.as_deref().map(str::to_lowercase))
        .bind(client.manager_id.as_ref().map(|m| m.as_str()))
        .bind(&client.source)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if created {
            counts.created += 1;
        } else {
            counts.updated += 1;
        }
    }
    tx.commit().await.map_err(backend)?;
    Ok(counts)
}

pub(crate) async fn client_by_phone(pool: &PgPool, phone: &str) -> StoreResult<Option<Client>> {
    sqlx::query("SELECT * FROM clients WHERE phone = $1")
        .bind(phone)
        .fetch_optional(pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(client_from_row)
        .transpose()
}

pub(crate) async fn clients(
    pool: &PgPool,
    search: Option<&str>,
    offset: u32,
    limit: u32,
) -> StoreResult<Vec<Client>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM clients");
    if let Some(search) = search {
        let pattern = contains_pattern(&search.to_lowercase());
        query
            .push(" WHERE phone LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR name_folded LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    query
        .push(" ORDER BY phone LIMIT ")
        .push_bind(i64::from(limit))
        .push(" OFFSET ")
        .push_bind(i64::from(offset));
    query
        .build()
        .fetch_all(pool)
        .await
        .map_err(backend)?
        .iter()
        .map(client_from_row)
        .collect()
}

pub(crate) async fn delete_client(pool: &PgPool, phone: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM clients WHERE phone = $1")
        .bind(phone)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected() > 0)
}

// --- telephony journal --------------------------------------------------

fn telephony_from_row(row: &PgRow) -> StoreResult<TelephonyCall> {
    Ok(TelephonyCall {
        pbx_call_id: get(row, "pbx_call_id")?,
        provider: get(row, "provider")?,
        direction: parse_stored(&get::<String>(row, "direction")?)?,
        client_phone: get(row, "client_phone")?,
        our_number: get(row, "our_number")?,
        extension: get(row, "extension")?,
        manager_id: get::<Option<String>>(row, "manager_id")?
            .map(parse_stored_id)
            .transpose()?,
        client_name: get(row, "client_name")?,
        routed_to: get(row, "routed_to")?,
        started_at: get(row, "started_at")?,
        answered_at: get(row, "answered_at")?,
        ended_at: get(row, "ended_at")?,
        duration_secs: get::<Option<i32>>(row, "duration_secs")?.map(|d| d.max(0) as u32),
        disposition: get(row, "disposition")?,
        recording_id: get(row, "recording_id")?,
        call_id: get::<Option<String>>(row, "call_id")?
            .map(parse_stored_id)
            .transpose()?,
        last_event: get(row, "last_event")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) async fn record_telephony(pool: &PgPool, update: &TelephonyUpdate) -> StoreResult<()> {
    // One statement, so notifications of one call arriving at once (the PBX
    // sends them in parallel) merge instead of overwriting each other.
    sqlx::query(
        "INSERT INTO telephony_calls (pbx_call_id, provider, direction, client_phone, our_number,
             extension, manager_id, client_name, routed_to, started_at, answered_at, ended_at,
             duration_secs, disposition, recording_id, call_id, last_event, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT (pbx_call_id) DO UPDATE SET
             client_phone = COALESCE(excluded.client_phone, telephony_calls.client_phone),
             our_number = COALESCE(excluded.our_number, telephony_calls.our_number),
             extension = COALESCE(excluded.extension, telephony_calls.extension),
             manager_id = COALESCE(excluded.manager_id, telephony_calls.manager_id),
             client_name = COALESCE(excluded.client_name, telephony_calls.client_name),
             routed_to = COALESCE(excluded.routed_to, telephony_calls.routed_to),
             answered_at = COALESCE(excluded.answered_at, telephony_calls.answered_at),
             ended_at = COALESCE(excluded.ended_at, telephony_calls.ended_at),
             duration_secs = COALESCE(excluded.duration_secs, telephony_calls.duration_secs),
             disposition = COALESCE(excluded.disposition, telephony_calls.disposition),
             recording_id = COALESCE(excluded.recording_id, telephony_calls.recording_id),
             call_id = COALESCE(excluded.call_id, telephony_calls.call_id),
             last_event = excluded.last_event,
             updated_at = excluded.updated_at",
    )
    .bind(&update.pbx_call_id)
    .bind(&update.provider)
    .bind(update.direction.as_str())
    .bind(&update.client_phone)
    .bind(&update.our_number)
    .bind(&update.extension)
    .bind(update.manager_id.as_ref().map(|m| m.as_str()))
    .bind(&update.client_name)
    .bind(&update.routed_to)
    .bind(update.started_at)
    .bind(update.answered_at)
    .bind(update.ended_at)
    .bind(update.duration_secs.map(to_i32))
    .bind(&update.disposition)
    .bind(&update.recording_id)
    .bind(update.call_id.as_ref().map(|c| c.as_str()))
    .bind(&update.last_event)
    .bind(update.at)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn telephony_call(
    pool: &PgPool,
    pbx_call_id: &str,
) -> StoreResult<Option<TelephonyCall>> {
    sqlx::query("SELECT * FROM telephony_calls WHERE pbx_call_id = $1")
        .bind(pbx_call_id)
        .fetch_optional(pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(telephony_from_row)
        .transpose()
}

pub(crate) async fn telephony_calls(
    pool: &PgPool,
    filter: &TelephonyFilter,
) -> StoreResult<Vec<TelephonyCall>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM telephony_calls WHERE TRUE");
    crate::stats::push_managers(&mut query, "manager_id", filter.managers.as_deref());
    if let Some(before) = filter.before {
        query.push(" AND started_at < ").push_bind(before);
    }
    query
        .push(" ORDER BY started_at DESC, pbx_call_id DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
    query
        .build()
        .fetch_all(pool)
        .await
        .map_err(backend)?
        .iter()
        .map(telephony_from_row)
        .collect()
}

// --- tasks --------------------------------------------------------------

fn record_from_row(row: &PgRow) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: get(row, "id")?,
        kind: get(row, "kind")?,
        key: get(row, "key")?,
        state: parse_stored(&get::<String>(row, "state")?)?,
        payload: get(row, "payload")?,
        attempts: count(row, "attempts")?,
        max_attempts: count(row, "max_attempts")?,
        last_error: get(row, "last_error")?,
        due_at: get(row, "due_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) async fn enqueue_task(
    pool: &PgPool,
    task: &NewTask,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // Asking again for work still waiting may only bring it forward; work
    // already under way or over is left alone (the WHERE makes the
    // statement return no row). xmax = 0 only on a row it inserted.
    let inserted: Option<bool> = sqlx::query_scalar(
        "INSERT INTO integration_tasks (kind, key, state, payload, max_attempts, due_at,
             created_at, updated_at)
         VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6)
         ON CONFLICT (kind, key) DO UPDATE SET due_at = excluded.due_at,
             updated_at = excluded.updated_at
         WHERE integration_tasks.state = 'queued'
             AND integration_tasks.due_at > excluded.due_at
         RETURNING (xmax = 0)",
    )
    .bind(&task.kind)
    .bind(&task.key)
    .bind(&task.payload)
    .bind(to_i32(task.max_attempts))
    .bind(task.due_at)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    Ok(inserted == Some(true))
}

/// ` AND kind = ANY(…)` unless `kinds` is empty (all kinds).
fn push_kinds(query: &mut QueryBuilder<'_, Postgres>, kinds: &[&str]) {
    if kinds.is_empty() {
        return;
    }
    let kinds: Vec<String> = kinds.iter().map(|kind| kind.to_string()).collect();
    query.push(" AND kind = ANY(").push_bind(kinds).push(")");
}

pub(crate) async fn claim_task(
    pool: &PgPool,
    worker: &str,
    kinds: &[&str],
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ClaimedTask>> {
    let mut tx = pool.begin().await.map_err(backend)?;
    // A worker that died on the last attempt leaves a task nobody may
    // claim again; without this it would show as running forever. Rows
    // another transaction holds are skipped: it is finishing them.
    sqlx::query(
        "UPDATE integration_tasks SET state = 'failed', last_error = $2, lease_until = NULL,
             updated_at = $1
         WHERE id IN (SELECT id FROM integration_tasks
             WHERE state = 'running' AND lease_until <= $1 AND attempts >= max_attempts
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(ABANDONED)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    let mut due = QueryBuilder::<Postgres>::new(
        "SELECT id FROM integration_tasks
         WHERE ((state = 'queued' AND due_at <= ",
    );
    due.push_bind(now)
        .push(") OR (state = 'running' AND lease_until <= ")
        .push_bind(now)
        .push(" AND attempts < max_attempts))");
    push_kinds(&mut due, kinds);
    due.push(" ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED");
    let Some(id) = due
        .build_query_scalar::<i64>()
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
    else {
        tx.commit().await.map_err(backend)?;
        return Ok(None);
    };
    let row = sqlx::query(
        "UPDATE integration_tasks SET state = 'running', worker = $2, lease_until = $3,
             attempts = attempts + 1, updated_at = $4
         WHERE id = $1
         RETURNING id, kind, key, payload, attempts, max_attempts",
    )
    .bind(id)
    .bind(worker)
    .bind(lease_until)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    let task = ClaimedTask {
        id: get(&row, "id")?,
        kind: get(&row, "kind")?,
        key: get(&row, "key")?,
        payload: get(&row, "payload")?,
        attempt: count(&row, "attempts")?,
        max_attempts: count(&row, "max_attempts")?,
        worker: worker.to_owned(),
    };
    tx.commit().await.map_err(backend)?;
    Ok(Some(task))
}

/// The condition that `task`'s worker still holds it: a re-claim by
/// another worker, or by the same one, counts another attempt.
const HELD: &str = "id = $1 AND state = 'running' AND worker = $2 AND attempts = $3";

pub(crate) async fn save_task_progress(
    pool: &PgPool,
    task: &ClaimedTask,
    payload: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let done = sqlx::query(&format!(
        "UPDATE integration_tasks SET payload = $4, lease_until = $5, updated_at = $6
         WHERE {HELD}"
    ))
    .bind(task.id)
    .bind(&task.worker)
    .bind(to_i32(task.attempt))
    .bind(payload)
    .bind(lease_until)
    .bind(now)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn finish_task(
    pool: &PgPool,
    task: &ClaimedTask,
    outcome: &TaskOutcome,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // max_attempts never changes after the task is queued, and the HELD
    // condition pins attempts to task.attempt, so the claim's copy decides.
    let (state, due_at, error) = match outcome {
        TaskOutcome::Done => (TaskState::Done, None, None),
        TaskOutcome::Retry { error, .. } if task.attempt >= task.max_attempts => {
            (TaskState::Failed, None, Some(error.as_str()))
        }
        TaskOutcome::Retry { at, error } => (TaskState::Queued, Some(*at), Some(error.as_str())),
        TaskOutcome::Failed { error } => (TaskState::Failed, None, Some(error.as_str())),
    };
    let done = sqlx::query(&format!(
        "UPDATE integration_tasks SET state = $4, due_at = COALESCE($5, due_at),
             last_error = COALESCE($6, last_error), lease_until = NULL, updated_at = $7
         WHERE {HELD}"
    ))
    .bind(task.id)
    .bind(&task.worker)
    .bind(to_i32(task.attempt))
    .bind(state.as_str())
    .bind(due_at)
    .bind(error)
    .bind(now)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn cancel_task(pool: &PgPool, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE integration_tasks SET state = 'cancelled', lease_until = NULL, updated_at = $2
         WHERE id = $1 AND state IN ('queued', 'running')",
    )
    .bind(id)
    .bind(now)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn tasks(pool: &PgPool, kind: &str, limit: u32) -> StoreResult<Vec<TaskRecord>> {
    sqlx::query("SELECT * FROM integration_tasks WHERE kind = $1 ORDER BY id DESC LIMIT $2")
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(backend)?
        .iter()
        .map(record_from_row)
        .collect()
}

pub(crate) async fn task(pool: &PgPool, id: i64) -> StoreResult<Option<TaskRecord>> {
    sqlx::query("SELECT * FROM integration_tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(record_from_row)
        .transpose()
}
