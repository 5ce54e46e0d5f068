//! SQLite implementation of [`rop_domain::Store`], the embedded default.
//!
//! WAL mode lets readers run beside the writer. All writes go through a pool
//! of exactly one connection: SQLite allows one writer at a time anyway, and
//! queueing in the pool avoids the lock-upgrade `SQLITE_BUSY` errors that
//! concurrent read-then-write transactions would otherwise hit.

mod analysis;
mod group_commit;
mod integrations;
mod jobs;
mod rows;
mod search;
mod stats;
mod web;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::store::{parse_stored_json, StoreResult};
use rop_domain::{
    ApiKey, ApiSecret, AuditEntry, CallDetails, CallFilter, CallId, CallPage, Checklist,
    ClaimedDelivery, ClaimedJob, ClaimedTask, Client, ClientUpdate, ConnectionSettings, Dashboard,
    DeletedCall, DeliveryAttempt, DeliveryOutcome, JobKind, JobOutcome, Manager, ManagerId,
    ManagerUpdate, NewAuditEntry, NewCall, NewCallEvent, NewJob, NewSession, NewTask, NewUser,
    Office, OfficeId, OfficeUpdate, Session, StatsQuery, Store, StoreError, Table, TableId,
    TableReadiness, TaskOutcome, TaskRecord, TelephonyCall, TelephonyFilter, TelephonyUpdate,
    Transcript, UpsertCounts, User, UserCredentials, UserUpdate,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::Notify;

use jobs::insert_event;
use rows::{backend, call_from_row, event_from_row, from_ms, manager_from_row, ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const CONNECTION_SETTINGS_KEY: &str = "connection";
const API_KEY_BOOTSTRAP_KEY: &str = "api_key_bootstrapped";

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    calls: group_commit::CallInserter,
    /// Wakes this process's workers when a job is queued.
    jobs_queued: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database named by a `sqlite:` URL.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a call is on disk before the upload is answered, even
            // across a power cut, not just a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Statement journals of the multi-row inserts stay in memory
            // rather than in a temporary file created per batch.
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10));
        // No idle timeout or lifetime: a file needs no recycled connections,
        // and without them sqlx starts no maintenance task. That task can
        // spin at full CPU while a runtime shuts down with the pool still
        // referenced (its sleep returns at once), which hung a test run.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    .statement_cache_capacity(group_commit::STATEMENT_CACHE),
            )
            .await
            .map_err(backend)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        let jobs_queued = Arc::new(Notify::new());
        let calls = group_commit::CallInserter::start(writer.clone(), jobs_queued.clone())?;
        Ok(Self {
            reader,
            writer,
            calls,
            jobs_queued,
        })
    }
}

pub(crate) fn unique_violation(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ => backend(error),
    }
}

async fn ensure_people(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[&str],
    now: i64,
) -> StoreResult<()> {
    for id in ids {
        sqlx::query(
            "INSERT INTO managers (manager_id, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (manager_id) DO NOTHING",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Inserts a call, its manager placeholder and history inside `tx`.
#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.writer).await.map_err(backend)?;
        search::backfill(&self.writer).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn ensure_api_key(&self, candidate: &ApiSecret, now: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let first = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, 'true') ON CONFLICT (key) DO NOTHING",
        )
        .bind(API_KEY_BOOTSTRAP_KEY)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if first {
            sqlx::query("INSERT INTO api_keys (secret, created_at) VALUES ($1, $2)")
                .bind(candidate.expose())
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(first)
    }

    async fn valid_api_keys(&self, now: DateTime<Utc>) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT id, secret, created_at, expires_at FROM api_keys
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id DESC",
        )
        .bind(ms(now))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(ApiKey {
                    id: row.try_get("id").map_err(backend)?,
                    secret: ApiSecret::new(row.try_get("secret").map_err(backend)?),
                    created_at: from_ms(row.try_get("created_at").map_err(backend)?)?,
                    expires_at: row
                        .try_get::<Option<i64>, _>("expires_at")
                        .map_err(backend)?
                        .map(from_ms)
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn rotate_api_key(
        &self,
        new_secret: &ApiSecret,
        old_valid_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(
            "UPDATE api_keys SET expires_at = $1
             WHERE expires_at IS NULL OR expires_at > $1",
        )
        .bind(ms(old_valid_until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, 'true') ON CONFLICT (key) DO NOTHING",
        )
        .bind(API_KEY_BOOTSTRAP_KEY)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("INSERT INTO api_keys (secret, created_at) VALUES ($1, $2)")
            .bind(new_secret.expose())
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(unique_violation)?;
        tx.commit().await.map_err(backend)
    }

    async fn connection_settings(&self) -> StoreResult<ConnectionSettings> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(CONNECTION_SETTINGS_KEY)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        match value {
            None => Ok(ConnectionSettings::default()),
            Some(json) => parse_stored_json(&json),
        }
    }

    async fn save_connection_settings(&self, settings: &ConnectionSettings) -> StoreResult<()> {
        let json = serde_json::to_string(settings).map_err(backend)?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(CONNECTION_SETTINGS_KEY)
        .bind(json)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_call(&self, call: &NewCall) -> StoreResult<()> {
        self.calls.insert(call.clone()).await
    }

    async fn call(&self, call_id: &CallId) -> StoreResult<Option<CallDetails>> {
        // One read transaction, so the call and its history are one snapshot.
        let mut tx = self.reader.begin().await.map_err(backend)?;
        let Some(row) = sqlx::query("SELECT * FROM calls WHERE call_id = $1")
            .bind(call_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let call = call_from_row(&row)?;
        let history = sqlx::query(
            "SELECT at, step, level, message FROM call_events WHERE call_seq = $1 ORDER BY id",
        )
        .bind(call.seq)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(event_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let (checklists, tables, deliveries) = analysis::call_analysis(&mut tx, call.seq).await?;
        let jobs = sqlx::query("SELECT * FROM jobs WHERE call_seq = $1 ORDER BY id")
            .bind(call.seq)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(jobs::record_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let transcript =
            sqlx::query_scalar::<_, String>("SELECT document FROM transcripts WHERE call_seq = $1")
                .bind(call.seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .map(|document| parse_stored_json::<Transcript>(&document))
                .transpose()?;
        Ok(Some(CallDetails {
            call,
            history,
            jobs,
            transcript,
            checklists,
            tables,
            deliveries,
        }))
    }

    async fn list_calls(&self, filter: &CallFilter) -> StoreResult<CallPage> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM calls WHERE 1 = 1");
        if let Some(from) = filter.from {
            query.push(" AND occurred_at >= ").push_bind(ms(from));
        }
        if let Some(to) = filter.to {
            query.push(" AND occurred_at < ").push_bind(ms(to));
        }
        if let Some(manager) = &filter.manager_id {
            query.push(" AND manager_id = ").push_bind(manager.as_str());
        }
        stats::push_managers(&mut query, "manager_id", filter.managers.as_deref());
        if let Some(office) = &filter.office_id {
            query
                .push(
                    " AND manager_id IN (SELECT person_id FROM office_members
                      WHERE role = 'manager' AND office_id = ",
                )
                .push_bind(office.as_str())
                .push(")");
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(min) = filter.min_score {
            query.push(" AND completion_percentage >= ").push_bind(min);
        }
        if let Some(max) = filter.max_score {
            query.push(" AND completion_percentage <= ").push_bind(max);
        }
        if let Some(terms) = filter.text.as_deref().and_then(search::match_query) {
            query
                .push(
                    " AND seq IN (SELECT rowid FROM transcript_search
                      WHERE transcript_search MATCH ",
                )
                .push_bind(terms)
                .push(")");
        }
        if let Some(before) = filter.before_seq {
            query.push(" AND seq < ").push_bind(before);
        }
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows = query
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        let mut calls = rows
            .iter()
            .map(call_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let more = calls.len() > filter.limit as usize;
        calls.truncate(filter.limit as usize);
        let next_before_seq = if more {
            calls.last().map(|c| c.seq)
        } else {
            None
        };
        Ok(CallPage {
            calls,
            next_before_seq,
        })
    }

    async fn delete_call(&self, call_id: &CallId) -> StoreResult<Option<DeletedCall>> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let Some(row) = sqlx::query(
            "DELETE FROM calls WHERE call_id = $1 RETURNING seq, blob_key, audio_blob_key",
        )
        .bind(call_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        else {
            return Ok(None);
        };
        search::forget_call(&mut tx, row.try_get("seq").map_err(backend)?).await?;
        tx.commit().await.map_err(backend)?;
        let uploaded: Option<String> = row.try_get("blob_key").map_err(backend)?;
        let downloaded: Option<String> = row.try_get("audio_blob_key").map_err(backend)?;
        Ok(Some(DeletedCall {
            blob_keys: uploaded.into_iter().chain(downloaded).collect(),
        }))
    }

    async fn add_call_event(&self, call_id: &CallId, event: &NewCallEvent) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM calls WHERE call_id = $1")
            .bind(call_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let seq = seq.ok_or(StoreError::NotFound)?;
        insert_event(&mut tx, seq, event).await?;
        tx.commit().await.map_err(backend)
    }

    async fn set_downloaded_audio(&self, call_id: &CallId, blob_key: &str) -> StoreResult<()> {
        let updated = sqlx::query("UPDATE calls SET audio_blob_key = $2 WHERE call_id = $1")
            .bind(call_id.as_str())
            .bind(blob_key)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn claim_job(
        &self,
        worker: &str,
        kinds: &[JobKind],
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedJob>> {
        jobs::claim(&self.writer, worker, kinds, lease_until, now).await
    }

    async fn extend_lease(&self, job: &ClaimedJob, until: DateTime<Utc>) -> StoreResult<bool> {
        jobs::extend_lease(&self.writer, job, until).await
    }

    async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let finished = jobs::finish(&self.writer, job, outcome, now).await?;
        if finished && matches!(outcome, JobOutcome::Done { next: Some(_), .. }) {
            self.jobs_queued.notify_waiters();
        }
        Ok(finished)
    }

    async fn claim_abandoned_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ClaimedJob>> {
        jobs::claim_abandoned(&self.writer, worker, now).await
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.jobs_queued.notified()).await;
    }

    async fn upsert_managers(
        &self,
        managers: &[ManagerUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        for manager in managers {
            // The writer connection is exclusive, so nothing can slip in
            // between this check and the upsert.
            let created: bool = sqlx::query_scalar(
                "SELECT NOT EXISTS (SELECT 1 FROM managers WHERE manager_id = $1)",
            )
            .bind(manager.manager_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
            sqlx::query(
                "INSERT INTO managers (manager_id, name, surname, middlename, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (manager_id) DO UPDATE SET name = excluded.name,
                    surname = excluded.surname, middlename = excluded.middlename,
                    updated_at = excluded.updated_at",
            )
            .bind(manager.manager_id.as_str())
            .bind(&manager.name)
            .bind(&manager.surname)
            .bind(&manager.middlename)
            .bind(ms(now))
            .execute(&mut *tx)
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

    async fn upsert_offices(
        &self,
        offices: &[OfficeUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        let now = ms(now);
        let mut counts = UpsertCounts::default();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        for office in offices {
            let existed: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM offices WHERE office_id = $1)")
                    .bind(office.office_id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
            sqlx::query(
                "INSERT INTO offices (office_id, title, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (office_id) DO UPDATE SET
                    title = COALESCE(excluded.title, offices.title), updated_at = excluded.updated_at",
            )
            .bind(office.office_id.as_str())
            .bind(&office.title)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            for (role, members) in [
                ("leader", &office.leader_ids),
                ("manager", &office.manager_ids),
            ] {
                let Some(members) = members else { continue };
                ensure_people(
                    &mut tx,
                    &members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    now,
                )
                .await?;
                sqlx::query("DELETE FROM office_members WHERE office_id = $1 AND role = $2")
                    .bind(office.office_id.as_str())
                    .bind(role)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                for member in members {
                    sqlx::query(
                        "INSERT INTO office_members (office_id, role, person_id) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(office.office_id.as_str())
                    .bind(role)
                    .bind(member.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
            }
            if existed {
                counts.updated += 1;
            } else {
                counts.created += 1;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(counts)
    }

    async fn managers(&self) -> StoreResult<Vec<Manager>> {
        sqlx::query("SELECT * FROM managers ORDER BY manager_id")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?
            .iter()
            .map(manager_from_row)
            .collect()
    }

    async fn office(&self, office_id: &OfficeId) -> StoreResult<Option<Office>> {
        let mut tx = self.reader.begin().await.map_err(backend)?;
        let Some(row) = sqlx::query("SELECT office_id, title FROM offices WHERE office_id = $1")
            .bind(office_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let members = sqlx::query(
            "SELECT role, person_id FROM office_members WHERE office_id = $1 ORDER BY person_id",
        )
        .bind(office_id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        rows::office_from_rows(&row, &members).map(Some)
    }

    async fn insert_checklist(&self, checklist: &Checklist, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::CHECKLISTS
            .insert(
                &self.writer,
                &checklist.checklist_id,
                &checklist.name,
                checklist,
                now,
            )
            .await
    }

    async fn update_checklist(&self, checklist: &Checklist, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::CHECKLISTS
            .update(
                &self.writer,
                &checklist.checklist_id,
                &checklist.name,
                checklist,
                now,
            )
            .await
    }

    async fn delete_checklist(&self, checklist_id: &str) -> StoreResult<bool> {
        analysis::CHECKLISTS
            .delete(&self.writer, checklist_id)
            .await
    }

    async fn checklist(&self, checklist_id: &str) -> StoreResult<Option<Checklist>> {
        analysis::CHECKLISTS.get(&self.reader, checklist_id).await
    }

    async fn checklists(&self) -> StoreResult<Vec<Checklist>> {
        analysis::CHECKLISTS.all(&self.reader).await
    }

    async fn insert_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::TABLES
            .insert(
                &self.writer,
                table.table_id.as_str(),
                &table.name,
                table,
                now,
            )
            .await
    }

    async fn update_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::TABLES
            .update(
                &self.writer,
                table.table_id.as_str(),
                &table.name,
                table,
                now,
            )
            .await
    }

    async fn delete_table(&self, table_id: &TableId) -> StoreResult<bool> {
        analysis::TABLES
            .delete(&self.writer, table_id.as_str())
            .await
    }

    async fn table(&self, table_id: &TableId) -> StoreResult<Option<Table>> {
        analysis::TABLES.get(&self.reader, table_id.as_str()).await
    }

    async fn tables(&self) -> StoreResult<Vec<Table>> {
        analysis::TABLES.all(&self.reader).await
    }

    async fn manager_offices(&self, manager_id: &ManagerId) -> StoreResult<Vec<OfficeId>> {
        analysis::manager_offices(&self.reader, manager_id).await
    }

    async fn requeue_analysis(
        &self,
        call_id: &CallId,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let Some(row) = sqlx::query(
            "SELECT seq,
                 EXISTS (SELECT 1 FROM transcripts t WHERE t.call_seq = calls.seq) AS transcribed,
                 EXISTS (SELECT 1 FROM jobs j WHERE j.call_seq = calls.seq
                         AND j.state IN ('queued', 'running')) AS busy
             FROM calls WHERE call_id = $1",
        )
        .bind(call_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        else {
            return Err(StoreError::NotFound);
        };
        let call_seq: i64 = row.try_get("seq").map_err(backend)?;
        let transcribed: bool = row.try_get("transcribed").map_err(backend)?;
        let busy: bool = row.try_get("busy").map_err(backend)?;
        if !transcribed || busy {
            return Ok(false);
        }
        jobs::insert_job(&mut tx, call_seq, job, now).await?;
        sqlx::query(
            "UPDATE calls SET status = $2, status_reason = NULL, failure_code = NULL,
                 updated_at = $3 WHERE seq = $1",
        )
        .bind(call_seq)
        .bind(job.kind.call_status().as_str())
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let event = NewCallEvent::info(now, "analyze", "Запрошен повторный анализ");
        insert_event(&mut tx, call_seq, &event).await?;
        tx.commit().await.map_err(backend)?;
        self.jobs_queued.notify_waiters();
        Ok(true)
    }

    async fn claim_delivery(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>> {
        analysis::claim_delivery(&self.writer, worker, lease_until, now).await
    }

    async fn finish_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        analysis::finish_delivery(&self.writer, delivery, attempt, outcome, now).await
    }

    async fn resend_delivery(
        &self,
        call_id: &CallId,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        analysis::resend_delivery(&self.writer, call_id, delivery_id, now).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        analysis::next_delivery_due(&self.reader).await
    }

    async fn table_readiness(&self, table_id: &str, call_id: &str) -> StoreResult<TableReadiness> {
        let row = sqlx::query(
            "SELECT
                EXISTS (SELECT 1 FROM analysis_tables WHERE table_id = $1) AS table_known,
                (SELECT seq FROM calls WHERE call_id = $2) AS call_seq,
                (SELECT r.data FROM table_results r JOIN calls c ON c.seq = r.call_seq
                  WHERE c.call_id = $2 AND r.table_id = $1) AS data",
        )
        .bind(table_id)
        .bind(call_id)
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        let table_known: bool = row.try_get("table_known").map_err(backend)?;
        let call_seq: Option<i64> = row.try_get("call_seq").map_err(backend)?;
        let data: Option<String> = row.try_get("data").map_err(backend)?;
        Ok(match (table_known, call_seq, data) {
            (false, _, _) => TableReadiness::UnknownTable,
            (true, None, _) => TableReadiness::UnknownCall,
            (true, Some(_), None) => TableReadiness::NotReady,
            (true, Some(_), Some(data)) => TableReadiness::Ready(parse_stored_json(&data)?),
        })
    }

    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let created = ms(user.created_at);
        if let Some(manager) = &user.manager_id {
            ensure_people(&mut tx, &[manager.as_str()], created).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, manager_id, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.manager_id.as_ref().map(|m| m.as_str()))
        .bind(created)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_violation)?;
        tx.commit().await.map_err(backend)?;
        Ok(User {
            id,
            username: user.username.clone(),
            role: user.role,
            manager_id: user.manager_id.clone(),
            created_at: user.created_at,
        })
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        web::users(&self.reader).await
    }

    async fn user_count(&self) -> StoreResult<u64> {
        web::user_count(&self.reader).await
    }

    async fn user_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>> {
        web::user_credentials(&self.reader, username).await
    }

    async fn update_user(&self, update: &UserUpdate) -> StoreResult<bool> {
        web::update_user(&self.writer, update).await
    }

    async fn delete_user(&self, id: i64) -> StoreResult<bool> {
        web::delete_user(&self.writer, id).await
    }

    async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        web::create_session(&self.writer, session).await
    }

    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>> {
        web::session(&self.reader, token_hash, now).await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        web::delete_session(&self.writer, token_hash).await
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        web::delete_expired_sessions(&self.writer, now).await
    }

    async fn add_audit_entry(&self, entry: &NewAuditEntry) -> StoreResult<()> {
        web::add_audit_entry(&self.writer, entry).await
    }

    async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        web::audit_entries(&self.reader, before_id, limit).await
    }

    async fn offices(&self) -> StoreResult<Vec<Office>> {
        let mut tx = self.reader.begin().await.map_err(backend)?;
        let offices = sqlx::query("SELECT office_id, title FROM offices ORDER BY office_id")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let members = sqlx::query(
            "SELECT office_id, role, person_id FROM office_members ORDER BY office_id, person_id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut by_office: HashMap<String, Vec<_>> = HashMap::new();
        for member in members {
            let office_id: String = member.try_get("office_id").map_err(backend)?;
            by_office.entry(office_id).or_default().push(member);
        }
        offices
            .iter()
            .map(|office| {
                let office_id: String = office.try_get("office_id").map_err(backend)?;
                let members = by_office.get(&office_id).map_or(&[][..], Vec::as_slice);
                rows::office_from_rows(office, members)
            })
            .collect()
    }

    async fn dashboard(&self, query: &StatsQuery) -> StoreResult<Dashboard> {
        stats::dashboard(&self.reader, query).await
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        integrations::setting(&self.reader, key).await
    }

    async fn save_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        integrations::save_setting(&self.writer, key, value).await
    }

    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool> {
        integrations::swap_setting(&self.writer, key, expected, value).await
    }

    async fn upsert_clients(
        &self,
        clients: &[ClientUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        integrations::upsert_clients(&self.writer, clients, now).await
    }

    async fn client_by_phone(&self, phone: &str) -> StoreResult<Option<Client>> {
        integrations::client_by_phone(&self.reader, phone).await
    }

    async fn clients(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Client>> {
        integrations::clients(&self.reader, search, offset, limit).await
    }

    async fn delete_client(&self, phone: &str) -> StoreResult<bool> {
        integrations::delete_client(&self.writer, phone).await
    }

    async fn record_telephony(&self, update: &TelephonyUpdate) -> StoreResult<()> {
        integrations::record_telephony(&self.writer, update).await
    }

    async fn telephony_call(&self, pbx_call_id: &str) -> StoreResult<Option<TelephonyCall>> {
        integrations::telephony_call(&self.reader, pbx_call_id).await
    }

    async fn telephony_calls(&self, filter: &TelephonyFilter) -> StoreResult<Vec<TelephonyCall>> {
        integrations::telephony_calls(&self.reader, filter).await
    }

    async fn enqueue_task(&self, task: &NewTask, now: DateTime<Utc>) -> StoreResult<bool> {
        integrations::enqueue_task(&self.writer, task, now).await
    }

    async fn claim_task(
        &self,
        worker: &str,
        kinds: &[&str],
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedTask>> {
        integrations::claim_task(&self.writer, worker, kinds, lease_until, now).await
    }

    async fn save_task_progress(
        &self,
        task: &ClaimedTask,
        payload: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        integrations::save_task_progress(&self.writer, task, payload, lease_until, now).await
    }

    async fn finish_task(
        &self,
        task: &ClaimedTask,
        outcome: &TaskOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        integrations::finish_task(&self.writer, task, outcome, now).await
    }

    async fn cancel_task(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        integrations::cancel_task(&self.writer, id, now).await
    }

    async fn tasks(&self, kind: &str, limit: u32) -> StoreResult<Vec<TaskRecord>> {
        integrations::tasks(&self.reader, kind, limit).await
    }

    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        integrations::task(&self.reader, id).await
    }
}
