//! Checklists, tables, analysis results and webhook deliveries on SQLite.

use chrono::{DateTime, Utc};
use rop_domain::store::{parse_stored, parse_stored_id, parse_stored_json, StoreResult};
use rop_domain::{
    CallAnalysis, CallId, CallStatus, ChecklistResult, ClaimedDelivery, DeliveryAttempt,
    DeliveryOutcome, DeliveryRecord, DeliveryState, ManagerId, NewCallEvent, OfficeId, StoreError,
    TableResult,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::jobs::insert_event;
use crate::rows::{backend, from_ms, ms};
use crate::unique_violation;

/// `checklists` and `analysis_tables` share their shape: id, name, JSON
/// definition.
#[derive(Clone, Copy)]
pub(crate) struct Definitions {
    pub table: &'static str,
    pub id_column: &'static str,
}

pub(crate) const CHECKLISTS: Definitions = Definitions {
    table: "checklists",
    id_column: "checklist_id",
};
pub(crate) const TABLES: Definitions = Definitions {
    table: "analysis_tables",
    id_column: "table_id",
};

fn json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(backend)
}

impl Definitions {
    pub async fn insert<T: Serialize>(
        self,
        writer: &SqlitePool,
        id: &str,
        name: &str,
        definition: &T,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {} ({}, name, definition, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)",
            self.table, self.id_column
        ))
        .bind(id)
        .bind(name)
        .bind(json(definition)?)
        .bind(ms(now))
        .execute(writer)
        .await
        .map_err(unique_violation)?;
        Ok(())
    }

    pub async fn update<T: Serialize>(
        self,
        writer: &SqlitePool,
        id: &str,
        name: &str,
        definition: &T,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET name = $2, definition = $3, updated_at = $4 WHERE {} = $1",
            self.table, self.id_column
        ))
        .bind(id)
        .bind(name)
        .bind(json(definition)?)
        .bind(ms(now))
        .execute(writer)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn delete(self, writer: &SqlitePool, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE {} = $1",
            self.table, self.id_column
        ))
        .bind(id)
        .execute(writer)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get<T: DeserializeOwned>(
        self,
        reader: &SqlitePool,
        id: &str,
    ) -> StoreResult<Option<T>> {
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT definition FROM {} WHERE {} = $1",
            self.table, self.id_column
        ))
        .bind(id)
        .fetch_optional(reader)
        .await
        .map_err(backend)?
        .map(|raw| parse_stored_json(&raw))
        .transpose()
    }

    pub async fn all<T: DeserializeOwned>(self, reader: &SqlitePool) -> StoreResult<Vec<T>> {
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT definition FROM {} ORDER BY created_at, {}",
            self.table, self.id_column
        ))
        .fetch_all(reader)
        .await
        .map_err(backend)?
        .iter()
        .map(|raw| parse_stored_json(raw))
        .collect()
    }
}

pub(crate) async fn manager_offices(
    reader: &SqlitePool,
    manager_id: &ManagerId,
) -> StoreResult<Vec<OfficeId>> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT office_id FROM office_members WHERE person_id = $1 ORDER BY office_id",
    )
    .bind(manager_id.as_str())
    .fetch_all(reader)
    .await
    .map_err(backend)?
    .into_iter()
    .map(parse_stored_id)
    .collect()
}

/// Replaces the call's analysis and queues its webhooks.
pub(crate) async fn write_analysis(
    tx: &mut Transaction<'_, Sqlite>,
    call_seq: i64,
    analysis: &CallAnalysis,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    for table in ["checklist_results", "stage_results", "table_results"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE call_seq = $1"))
            .bind(call_seq)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
    }
    for result in &analysis.checklists {
        sqlx::query(
            "INSERT INTO checklist_results
                 (call_seq, checklist_id, completion_percentage, result, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(call_seq)
        .bind(&result.checklist_id)
        .bind(result.completion_percentage)
        .bind(json(result)?)
        .bind(ms(now))
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        // A row per stage, with the call's time and manager, so the
        // dashboard counts failures in SQL without visiting the calls.
        for stage in &result.stages {
            sqlx::query(
                "INSERT INTO stage_results (call_seq, checklist_id, stage_id, stage_name,
                     status, created_at, occurred_at, manager_id)
                 SELECT seq, $2, $3, $4, $5, $6, occurred_at, manager_id
                 FROM calls WHERE seq = $1
                 ON CONFLICT DO NOTHING",
            )
            .bind(call_seq)
            .bind(&result.checklist_id)
            .bind(&stage.stage_id)
            .bind(&stage.stage_name)
            .bind(stage.status.as_str())
            .bind(ms(now))
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        }
    }
    for result in &analysis.tables {
        // A table deleted while the call was analysed gets no result.
        sqlx::query(
            "INSERT INTO table_results (call_seq, table_id, data, result, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS
                 (SELECT 1 FROM analysis_tables WHERE table_id = $2)",
        )
        .bind(call_seq)
        .bind(result.table_id.as_str())
        .bind(json(&result.extracted_data)?)
        .bind(json(result)?)
        .bind(ms(now))
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    }
    let average = (!analysis.checklists.is_empty()).then(|| {
        analysis
            .checklists
            .iter()
            .map(|c| c.completion_percentage)
            .sum::<f64>()
            / analysis.checklists.len() as f64
    });
    sqlx::query("UPDATE calls SET completion_percentage = $2 WHERE seq = $1")
        .bind(call_seq)
        .bind(average)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    for delivery in &analysis.deliveries {
        sqlx::query(
            "INSERT INTO deliveries (delivery_id, call_seq, event, source_id, url, secret, body,
                 state, run_after, retry_from, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8, $8, $8)",
        )
        .bind(&delivery.delivery_id)
        .bind(call_seq)
        .bind(delivery.event.as_str())
        .bind(&delivery.source_id)
        .bind(&delivery.url)
        .bind(&delivery.secret)
        .bind(&delivery.body)
        .bind(ms(now))
        .execute(&mut **tx)
        .await
        .map_err(unique_violation)?;
    }
    for task in &analysis.crm_tasks {
        // A task that already ran is queued again for the new results; one
        // still waiting or running is left to pick them up.
        sqlx::query(
            "INSERT INTO integration_tasks (kind, key, state, payload, max_attempts, due_at,
                 created_at, updated_at)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6)
             ON CONFLICT (kind, key) DO UPDATE SET state = 'queued', attempts = 0,
                 payload = excluded.payload, max_attempts = excluded.max_attempts,
                 due_at = excluded.due_at, worker = NULL, lease_until = NULL,
                 last_error = NULL, updated_at = excluded.updated_at
             WHERE integration_tasks.state IN ('done', 'failed', 'cancelled')",
        )
        .bind(&task.kind)
        .bind(&task.key)
        .bind(&task.payload)
        .bind(i64::from(task.max_attempts))
        .bind(ms(task.due_at))
        .bind(ms(now))
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// What `GET /calls/{id}` shows of the analysis.
pub(crate) async fn call_analysis(
    tx: &mut Transaction<'_, Sqlite>,
    call_seq: i64,
) -> StoreResult<(Vec<ChecklistResult>, Vec<TableResult>, Vec<DeliveryRecord>)> {
    let checklists = sqlx::query_scalar::<_, String>(
        "SELECT result FROM checklist_results WHERE call_seq = $1 ORDER BY checklist_id",
    )
    .bind(call_seq)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?
    .iter()
    .map(|raw| parse_stored_json(raw))
    .collect::<StoreResult<Vec<ChecklistResult>>>()?;
    let tables = sqlx::query_scalar::<_, Option<String>>(
        "SELECT result FROM table_results WHERE call_seq = $1 ORDER BY table_id",
    )
    .bind(call_seq)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?
    .into_iter()
    // Rows written before results were kept whole have only their data.
    .flatten()
    .map(|raw| parse_stored_json(&raw))
    .collect::<StoreResult<Vec<TableResult>>>()?;
    let rows = sqlx::query(
        "SELECT delivery_id, event, source_id, url, state, run_after, created_at, delivered_at
         FROM deliveries WHERE call_seq = $1 ORDER BY created_at, delivery_id",
    )
    .bind(call_seq)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        let delivery_id: String = row.try_get("delivery_id").map_err(backend)?;
        let attempts = sqlx::query(
            "SELECT attempt, at, status_code, error, duration_ms FROM delivery_attempts
             WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(&delivery_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(backend)?
        .iter()
        .map(attempt_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let state: DeliveryState = parse_stored(row.try_get::<&str, _>("state").map_err(backend)?)?;
        let run_after = from_ms(row.try_get("run_after").map_err(backend)?)?;
        deliveries.push(DeliveryRecord {
            delivery_id,
            event: parse_stored(row.try_get::<&str, _>("event").map_err(backend)?)?,
            source_id: row.try_get("source_id").map_err(backend)?,
            url: row.try_get("url").map_err(backend)?,
            state,
            attempts,
            next_attempt_at: (state == DeliveryState::Pending).then_some(run_after),
            created_at: from_ms(row.try_get("created_at").map_err(backend)?)?,
            delivered_at: row
                .try_get::<Option<i64>, _>("delivered_at")
                .map_err(backend)?
                .map(from_ms)
                .transpose()?,
        });
    }
    Ok((checklists, tables, deliveries))
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<DeliveryAttempt> {
    Ok(DeliveryAttempt {
        attempt: row.try_get("attempt").map_err(backend)?,
        at: from_ms(row.try_get("at").map_err(backend)?)?,
        status_code: row
            .try_get::<Option<i64>, _>("status_code")
            .map_err(backend)?
            .and_then(|code| u16::try_from(code).ok()),
        error: row.try_get("error").map_err(backend)?,
        duration_ms: row
            .try_get::<i64, _>("duration_ms")
            .map_err(backend)?
            .try_into()
            .unwrap_or(0),
    })
}

pub(crate) async fn claim_delivery(
    writer: &SqlitePool,
    worker: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ClaimedDelivery>> {
    // The single writer connection serialises claims, so the inner select
    // cannot race another claim.
    let Some(row) = sqlx::query(
        "UPDATE deliveries SET state = 'sending', lease_owner = $1, run_after = $2,
             attempts = attempts + 1, updated_at = $3
         WHERE delivery_id = (
             SELECT delivery_id FROM deliveries
             WHERE state IN ('pending', 'sending') AND run_after <= $3
             ORDER BY run_after, delivery_id LIMIT 1)
         RETURNING delivery_id, call_seq, event, url, secret, body, attempts, retry_from",
    )
    .bind(worker)
    .bind(ms(lease_until))
    .bind(ms(now))
    .fetch_optional(writer)
    .await
    .map_err(backend)?
    else {
        return Ok(None);
    };
    let call_seq: i64 = row.try_get("call_seq").map_err(backend)?;
    let call_id: String = sqlx::query_scalar("SELECT call_id FROM calls WHERE seq = $1")
        .bind(call_seq)
        .fetch_one(writer)
        .await
        .map_err(backend)?;
    Ok(Some(ClaimedDelivery {
        delivery_id: row.try_get("delivery_id").map_err(backend)?,
        call_id: parse_stored_id::<CallId>(call_id)?,
        event: parse_stored(row.try_get::<&str, _>("event").map_err(backend)?)?,
        url: row.try_get("url").map_err(backend)?,
        secret: row.try_get("secret").map_err(backend)?,
        body: row.try_get("body").map_err(backend)?,
        attempt: row.try_get("attempts").map_err(backend)?,
        created_at: from_ms(row.try_get("retry_from").map_err(backend)?)?,
        worker: worker.to_owned(),
    }))
}

pub(crate) async fn finish_delivery(
    writer: &SqlitePool,
    delivery: &ClaimedDelivery,
    attempt: &DeliveryAttempt,
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut tx = writer.begin().await.map_err(backend)?;
    let (state, run_after, delivered_at) = match outcome {
        DeliveryOutcome::Delivered => (DeliveryState::Delivered, now, Some(ms(now))),
        DeliveryOutcome::Retry { at } => (DeliveryState::Pending, *at, None),
        DeliveryOutcome::Failed => (DeliveryState::Failed, now, None),
    };
    let Some(call_seq) = sqlx::query_scalar::<_, i64>(
        "UPDATE deliveries SET state = $3, run_after = $4, delivered_at = $5,
             lease_owner = NULL, updated_at = $6
         WHERE delivery_id = $1 AND lease_owner = $2 AND state = 'sending'
         RETURNING call_seq",
    )
    .bind(&delivery.delivery_id)
    .bind(&delivery.worker)
    .bind(state.as_str())
    .bind(ms(run_after))
    .bind(delivered_at)
    .bind(ms(now))
    .fetch_optional(&mut *tx)
    .await
    .map_err(backend)?
    else {
        return Ok(false);
    };
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&delivery.delivery_id)
    .bind(attempt.attempt)
    .bind(ms(attempt.at))
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    if matches!(
        outcome,
        DeliveryOutcome::Delivered | DeliveryOutcome::Failed
    ) {
        let event = delivery_event(delivery, attempt, outcome, now);
        insert_event(&mut tx, call_seq, &event).await?;
        sqlx::query(
            "UPDATE calls SET status = $2, updated_at = $3
             WHERE seq = $1 AND status = $4 AND NOT EXISTS (
                 SELECT 1 FROM deliveries
                 WHERE call_seq = $1 AND state IN ('pending', 'sending'))",
        )
        .bind(call_seq)
        .bind(CallStatus::Done.as_str())
        .bind(ms(now))
        .bind(CallStatus::Delivering.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}

/// The history line of a delivery's final outcome.
pub(crate) fn delivery_event(
    delivery: &ClaimedDelivery,
    attempt: &DeliveryAttempt,
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> NewCallEvent {
    let what = match delivery.event {
        rop_domain::DeliveryEvent::ChecklistResult => "Вебхук с результатом чек-листа",
        rop_domain::DeliveryEvent::TableResult => "Вебхук с данными таблицы",
    };
    if *outcome == DeliveryOutcome::Delivered {
        NewCallEvent::info(
            now,
            "deliver",
            format!(
                "{what} доставлен с попытки {} ({})",
                attempt.attempt, delivery.delivery_id
            ),
        )
    } else {
        let why = match (attempt.status_code, &attempt.error) {
            (Some(code), _) => format!("ответ {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "нет ответа".to_owned(),
        };
        NewCallEvent::error(
            now,
            "deliver",
            format!(
                "{what} не доставлен после {} попыток: {why} ({})",
                attempt.attempt, delivery.delivery_id
            ),
        )
    }
}

pub(crate) async fn resend_delivery(
    writer: &SqlitePool,
    call_id: &CallId,
    delivery_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut tx = writer.begin().await.map_err(backend)?;
    let Some(call_seq) = sqlx::query_scalar::<_, i64>(
        "UPDATE deliveries SET state = 'pending', run_after = $3, retry_from = $3,
             attempts = 0, lease_owner = NULL, updated_at = $3
         WHERE delivery_id = $2
           AND call_seq = (SELECT seq FROM calls WHERE call_id = $1)
         RETURNING call_seq",
    )
    .bind(call_id.as_str())
    .bind(delivery_id)
    .bind(ms(now))
    .fetch_optional(&mut *tx)
    .await
    .map_err(backend)?
    else {
        return Err(StoreError::NotFound);
    };
    sqlx::query("UPDATE calls SET status = $2, updated_at = $3 WHERE seq = $1 AND status = $4")
        .bind(call_seq)
        .bind(CallStatus::Delivering.as_str())
        .bind(ms(now))
        .bind(CallStatus::Done.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    let event = NewCallEvent::info(
        now,
        "deliver",
        format!("Вебхук {delivery_id} отправляется повторно по запросу администратора"),
    );
    insert_event(&mut tx, call_seq, &event).await?;
    tx.commit().await.map_err(backend)?;
    Ok(())
}

pub(crate) async fn next_delivery_due(reader: &SqlitePool) -> StoreResult<Option<DateTime<Utc>>> {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MIN(run_after) FROM deliveries WHERE state IN ('pending', 'sending')",
    )
    .fetch_one(reader)
    .await
    .map_err(backend)?
    .map(from_ms)
    .transpose()
}
