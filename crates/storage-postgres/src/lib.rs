//! PostgreSQL implementation of [`rop_domain::Store`], for installations that
//! scale out: any number of `rop serve` and `rop worker` processes share one
//! database. Concurrency is left to PostgreSQL's own guarantees (unique
//! constraints, `ON CONFLICT`, row locks), never to checks in the application.

mod analysis;
mod integrations;
mod jobs;
mod rows;
mod search;
mod stats;
mod web;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_domain::store::StoreResult;
use rop_domain::{
    ApiKey, ApiSecret, AudioSource, AuditEntry, CallDetails, CallFilter, CallId, CallPage,
    Checklist, ClaimedDelivery, ClaimedJob, ClaimedTask, Client, ClientUpdate, ConnectionSettings,
    Dashboard, DeletedCall, DeliveryAttempt, DeliveryOutcome, JobKind, JobOutcome, Manager,
    ManagerId, ManagerUpdate, NewAuditEntry, NewCall, NewCallEvent, NewJob, NewSession, NewTask,
    NewUser, Office, OfficeId, OfficeUpdate, Session, StatsQuery, Store, StoreError, Table,
    TableId, TableReadiness, TaskOutcome, TaskRecord, TelephonyCall, TelephonyFilter,
    TelephonyUpdate, Transcript, UpsertCounts, User, UserCredentials, UserUpdate,
};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use tokio::sync::{Notify, OnceCell};

use jobs::insert_event;
use rows::{backend, call_from_row, event_from_row, manager_from_row, office_from_rows};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const CONNECTION_SETTINGS_KEY: &str = "connection";
const API_KEY_BOOTSTRAP_KEY: &str = "api_key_bootstrapped";

pub struct PostgresStore {
    pool: PgPool,
    /// Fed by a `LISTEN rop_jobs` connection, started by the first worker
    /// that waits (commands such as `rop api-key show` never start it).
    jobs_queued: Arc<Notify>,
    listener: OnceCell<()>,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        // No idle timeout or lifetime, so sqlx starts no maintenance task:
        // that task can spin at full CPU while a runtime shuts down with the
        // pool still referenced (its sleep returns at once). A connection the
        // server dropped is found by the check before each acquire instead.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(true)
            .connect(url)
            .await
            .map_err(backend)?;
        Ok(Self {
            pool,
            jobs_queued: Arc::new(Notify::new()),
            listener: OnceCell::new(),
        })
    }

    async fn start_listener(&self) {
        let pool = self.pool.clone();
        let wake = self.jobs_queued.clone();
        tokio::spawn(async move {
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen(jobs::CHANNEL).await {
                        Ok(()) => loop {
                            match listener.recv().await {
                                Ok(_) => wake.notify_waiters(),
                                Err(error) => {
                                    tracing::warn!(%error, "LISTEN connection lost");
                                    break;
                                }
                            }
                        },
                        Err(error) => tracing::warn!(%error, "LISTEN failed"),
                    },
                    Err(error) => tracing::warn!(%error, "cannot open the LISTEN connection"),
                }
                // Workers still poll meanwhile; reconnect without hammering.
                wake.notify_waiters();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

pub(crate) fn unique_violation(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ => backend(error),
    }
}

/// Creates placeholder people for unknown ids. Ids are inserted in sorted
/// order so that two concurrent transactions cannot deadlock on them.
async fn ensure_people<'a>(
    tx: &mut Transaction<'_, Postgres>,
    ids: impl Iterator<Item = &'a str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let ids: Vec<&str> = ids.collect::<BTreeSet<_>>().into_iter().collect();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO managers (manager_id, created_at, updated_at)
         SELECT id, $2, $2 FROM UNNEST($1::text[]) AS id ORDER BY id
         ON CONFLICT (manager_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        // The migrator takes an advisory lock, so concurrent starts are safe.
        MIGRATOR.run(&self.pool).await.map_err(backend)?;
        search::backfill(&self.pool).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn ensure_api_key(&self, candidate: &ApiSecret, now: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // A concurrent starter blocks on this row until we commit, then sees it.
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
                .bind(now)
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
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(ApiKey {
                    id: row.try_get("id").map_err(backend)?,
                    secret: ApiSecret::new(row.try_get("secret").map_err(backend)?),
                    created_at: row.try_get("created_at").map_err(backend)?,
                    expires_at: row.try_get("expires_at").map_err(backend)?,
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "UPDATE api_keys SET expires_at = $1 WHERE expires_at IS NULL OR expires_at > $1",
        )
        .bind(old_valid_until)
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
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unique_violation)?;
        tx.commit().await.map_err(backend)
    }

    async fn connection_settings(&self) -> StoreResult<ConnectionSettings> {
        let value: Option<Json<Value>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(CONNECTION_SETTINGS_KEY)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        match value {
            None => Ok(ConnectionSettings::default()),
            Some(Json(json)) => {
                serde_json::from_value(json).map_err(|e| StoreError::Corrupt(e.to_string()))
            }
        }
    }

    async fn save_connection_settings(&self, settings: &ConnectionSettings) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(CONNECTION_SETTINGS_KEY)
        .bind(Json(settings))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_call(&self, call: &NewCall) -> StoreResult<()> {
        let (audio_url, blob_key, blob_bytes) = match &call.source {
            AudioSource::Url(url) => (Some(url.as_str()), None, None),
            AudioSource::Blob { key, size_bytes } => {
                (None, Some(key.as_str()), i64::try_from(*size_bytes).ok())
            }
        };
        let occurred = call.call_started_at.unwrap_or(call.received_at);

        let mut tx = self.pool.begin().await.map_err(backend)?;
        ensure_people(
            &mut tx,
            std::iter::once(call.manager_id.as_str()),
            call.received_at,
        )
        .await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO calls (call_id, manager_id, deal_id, deal_stage_id, stage_id, direction,
                client_phone, client_name, call_started_at, declared_duration, audio_url,
                blob_key, blob_bytes, metadata, status, status_reason, received_at, occurred_at,
                updated_at, manager_channel)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $17, $19)
             RETURNING seq",
        )
        .bind(call.call_id.as_str())
        .bind(call.manager_id.as_str())
        .bind(&call.deal_id)
        .bind(&call.deal_stage_id)
        .bind(&call.stage_id)
        .bind(call.direction.map(|d| d.as_str()))
        .bind(&call.client_phone)
        .bind(&call.client_name)
        .bind(call.call_started_at)
        .bind(call.declared_duration_secs)
        .bind(audio_url)
        .bind(blob_key)
        .bind(blob_bytes)
        .bind(Json(&call.metadata))
        .bind(call.status.as_str())
        .bind(&call.status_reason)
        .bind(call.received_at)
        .bind(occurred)
        .bind(call.manager_channel.map(i16::from))
        .fetch_one(&mut *tx)
        .await
        .map_err(unique_violation)?;
        for event in &call.events {
            insert_event(&mut tx, seq, event).await?;
        }
        if let Some(job) = call.first_job {
            jobs::insert_job(&mut tx, seq, job, call.received_at).await?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn call(&self, call_id: &CallId) -> StoreResult<Option<CallDetails>> {
        // REPEATABLE READ: the call, its history and its results are one snapshot.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
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
        let transcript = sqlx::query_scalar::<_, Json<Transcript>>(
            "SELECT document FROM transcripts WHERE call_seq = $1",
        )
        .bind(call.seq)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .map(|Json(transcript)| transcript);
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
        let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM calls WHERE TRUE");
        if let Some(from) = filter.from {
            query.push(" AND occurred_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            query.push(" AND occurred_at < ").push_bind(to);
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
        if let Some(terms) = filter.text.as_deref().and_then(search::tsquery_terms) {
            query
                .push(
                    " AND seq IN (SELECT call_seq FROM transcript_search
                      WHERE terms @@ plainto_tsquery('simple', ",
                )
                .push_bind(terms)
                .push("))");
        }
        if let Some(before) = filter.before_seq {
            query.push(" AND seq < ").push_bind(before);
        }
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(filter.limit) + 1);
        let rows = query.build().fetch_all(&self.pool).await.map_err(backend)?;
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
        let row =
            sqlx::query("DELETE FROM calls WHERE call_id = $1 RETURNING blob_key, audio_blob_key")
                .bind(call_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.map(|row| {
            let uploaded: Option<String> = row.try_get("blob_key").map_err(backend)?;
            let downloaded: Option<String> = row.try_get("audio_blob_key").map_err(backend)?;
            Ok(DeletedCall {
                blob_keys: uploaded.into_iter().chain(downloaded).collect(),
            })
        })
        .transpose()
    }

    async fn add_call_event(&self, call_id: &CallId, event: &NewCallEvent) -> StoreResult<()> {
        let done = sqlx::query(
            "INSERT INTO call_events (call_seq, at, step, level, message)
             SELECT seq, $2, $3, $4, $5 FROM calls WHERE call_id = $1",
        )
        .bind(call_id.as_str())
        .bind(event.at)
        .bind(&event.step)
        .bind(event.level.as_str())
        .bind(&event.message)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_downloaded_audio(&self, call_id: &CallId, blob_key: &str) -> StoreResult<()> {
        let updated = sqlx::query("UPDATE calls SET audio_blob_key = $2 WHERE call_id = $1")
            .bind(call_id.as_str())
            .bind(blob_key)
            .execute(&self.pool)
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
        jobs::claim(&self.pool, worker, kinds, lease_until, now).await
    }

    async fn extend_lease(&self, job: &ClaimedJob, until: DateTime<Utc>) -> StoreResult<bool> {
        jobs::extend_lease(&self.pool, job, until).await
    }

    async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        jobs::finish(&self.pool, job, outcome, now).await
    }

    async fn claim_abandoned_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ClaimedJob>> {
        jobs::claim_abandoned(&self.pool, worker, now).await
    }

    async fn wait_for_jobs(&self, timeout: std::time::Duration) {
        self.listener.get_or_init(|| self.start_listener()).await;
        let _ = tokio::time::timeout(timeout, self.jobs_queued.notified()).await;
    }

    async fn upsert_managers(
        &self,
        managers: &[ManagerUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        let mut sorted: Vec<&ManagerUpdate> = managers.iter().collect();
        sorted.sort_by(|a, b| a.manager_id.cmp(&b.manager_id));
        let mut counts = UpsertCounts::default();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for manager in sorted {
            // xmax = 0 only on a row this statement inserted.
            let created: bool = sqlx::query_scalar(
                "INSERT INTO managers (manager_id, name, surname, middlename, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (manager_id) DO UPDATE SET name = excluded.name,
                    surname = excluded.surname, middlename = excluded.middlename,
                    updated_at = excluded.updated_at
                 RETURNING (xmax = 0)",
            )
            .bind(manager.manager_id.as_str())
            .bind(&manager.name)
            .bind(&manager.surname)
            .bind(&manager.middlename)
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

    async fn upsert_offices(
        &self,
        offices: &[OfficeUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        let mut sorted: Vec<&OfficeUpdate> = offices.iter().collect();
        sorted.sort_by(|a, b| a.office_id.cmp(&b.office_id));
        let people: Vec<&str> = sorted
            .iter()
            .flat_map(|office| office.leader_ids.iter().chain(office.manager_ids.iter()))
            .flatten()
            .map(ManagerId::as_str)
            .collect();
        let mut counts = UpsertCounts::default();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        ensure_people(&mut tx, people.into_iter(), now).await?;
        for office in sorted {
            let created: bool = sqlx::query_scalar(
                "INSERT INTO offices (office_id, title, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (office_id) DO UPDATE SET
                    title = COALESCE(excluded.title, offices.title), updated_at = excluded.updated_at
                 RETURNING (xmax = 0)",
            )
            .bind(office.office_id.as_str())
            .bind(&office.title)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
            for (role, members) in [
                ("leader", &office.leader_ids),
                ("manager", &office.manager_ids),
            ] {
                let Some(members) = members else { continue };
                sqlx::query("DELETE FROM office_members WHERE office_id = $1 AND role = $2")
                    .bind(office.office_id.as_str())
                    .bind(role)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                let ids: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
                sqlx::query(
                    "INSERT INTO office_members (office_id, role, person_id)
                     SELECT $1, $2, id FROM UNNEST($3::text[]) AS id
                     ON CONFLICT DO NOTHING",
                )
                .bind(office.office_id.as_str())
                .bind(role)
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            if created {
                counts.created += 1;
            } else {
                counts.updated += 1;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(counts)
    }

    async fn managers(&self) -> StoreResult<Vec<Manager>> {
        sqlx::query("SELECT * FROM managers ORDER BY manager_id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(manager_from_row)
            .collect()
    }

    async fn office(&self, office_id: &OfficeId) -> StoreResult<Option<Office>> {
        let Some(row) = sqlx::query("SELECT office_id, title FROM offices WHERE office_id = $1")
            .bind(office_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let members = sqlx::query(
            "SELECT role, person_id FROM office_members WHERE office_id = $1 ORDER BY person_id",
        )
        .bind(office_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        office_from_rows(&row, &members).map(Some)
    }

    async fn insert_checklist(&self, checklist: &Checklist, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::CHECKLISTS
            .insert(
                &self.pool,
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
                &self.pool,
                &checklist.checklist_id,
                &checklist.name,
                checklist,
                now,
            )
            .await
    }

    async fn delete_checklist(&self, checklist_id: &str) -> StoreResult<bool> {
        analysis::CHECKLISTS.delete(&self.pool, checklist_id).await
    }

    async fn checklist(&self, checklist_id: &str) -> StoreResult<Option<Checklist>> {
        analysis::CHECKLISTS.get(&self.pool, checklist_id).await
    }

    async fn checklists(&self) -> StoreResult<Vec<Checklist>> {
        analysis::CHECKLISTS.all(&self.pool).await
    }

    async fn insert_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::TABLES
            .insert(&self.pool, table.table_id.as_str(), &table.name, table, now)
            .await
    }

    async fn update_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()> {
        analysis::TABLES
            .update(&self.pool, table.table_id.as_str(), &table.name, table, now)
            .await
    }

    async fn delete_table(&self, table_id: &TableId) -> StoreResult<bool> {
        analysis::TABLES.delete(&self.pool, table_id.as_str()).await
    }

    async fn table(&self, table_id: &TableId) -> StoreResult<Option<Table>> {
        analysis::TABLES.get(&self.pool, table_id.as_str()).await
    }

    async fn tables(&self) -> StoreResult<Vec<Table>> {
        analysis::TABLES.all(&self.pool).await
    }

    async fn manager_offices(&self, manager_id: &ManagerId) -> StoreResult<Vec<OfficeId>> {
        analysis::manager_offices(&self.pool, manager_id).await
    }

    async fn requeue_analysis(
        &self,
        call_id: &CallId,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
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
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let event = NewCallEvent::info(now, "analyze", "Запрошен повторный анализ");
        insert_event(&mut tx, call_seq, &event).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn claim_delivery(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>> {
        analysis::claim_delivery(&self.pool, worker, lease_until, now).await
    }

    async fn finish_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        analysis::finish_delivery(&self.pool, delivery, attempt, outcome, now).await
    }

    async fn resend_delivery(
        &self,
        call_id: &CallId,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        analysis::resend_delivery(&self.pool, call_id, delivery_id, now).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        analysis::next_delivery_due(&self.pool).await
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
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let table_known: bool = row.try_get("table_known").map_err(backend)?;
        let call_seq: Option<i64> = row.try_get("call_seq").map_err(backend)?;
        let data: Option<Json<Value>> = row.try_get("data").map_err(backend)?;
        Ok(match (table_known, call_seq, data) {
            (false, _, _) => TableReadiness::UnknownTable,
            (true, None, _) => TableReadiness::UnknownCall,
            (true, Some(_), None) => TableReadiness::NotReady,
            (true, Some(_), Some(Json(data))) => TableReadiness::Ready(data),
        })
    }

    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(manager) = &user.manager_id {
            ensure_people(&mut tx, std::iter::once(manager.as_str()), user.created_at).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, manager_id, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.manager_id.as_ref().map(|m| m.as_str()))
        .bind(user.created_at)
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
        web::users(&self.pool).await
    }

    async fn user_count(&self) -> StoreResult<u64> {
        web::user_count(&self.pool).await
    }

    async fn user_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>> {
        web::user_credentials(&self.pool, username).await
    }

    async fn update_user(&self, update: &UserUpdate) -> StoreResult<bool> {
        web::update_user(&self.pool, update).await
    }

    async fn delete_user(&self, id: i64) -> StoreResult<bool> {
        web::delete_user(&self.pool, id).await
    }

    async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        web::create_session(&self.pool, session).await
    }

    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>> {
        web::session(&self.pool, token_hash, now).await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        web::delete_session(&self.pool, token_hash).await
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        web::delete_expired_sessions(&self.pool, now).await
    }

    async fn add_audit_entry(&self, entry: &NewAuditEntry) -> StoreResult<()> {
        web::add_audit_entry(&self.pool, entry).await
    }

    async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        web::audit_entries(&self.pool, before_id, limit).await
    }

    async fn offices(&self) -> StoreResult<Vec<Office>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
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
                office_from_rows(office, members)
            })
            .collect()
    }

    async fn dashboard(&self, query: &StatsQuery) -> StoreResult<Dashboard> {
        stats::dashboard(&self.pool, query).await
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        integrations::setting(&self.pool, key).await
    }

    async fn save_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        integrations::save_setting(&self.pool, key, value).await
    }

    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool> {
        integrations::swap_setting(&self.pool, key, expected, value).await
    }

    async fn upsert_clients(
        &self,
        clients: &[ClientUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts> {
        integrations::upsert_clients(&self.pool, clients, now).await
    }

    async fn client_by_phone(&self, phone: &str) -> StoreResult<Option<Client>> {
        integrations::client_by_phone(&self.pool, phone).await
    }

    async fn clients(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Client>> {
        integrations::clients(&self.pool, search, offset, limit).await
    }

    async fn delete_client(&self, phone: &str) -> StoreResult<bool> {
        integrations::delete_client(&self.pool, phone).await
    }

    async fn record_telephony(&self, update: &TelephonyUpdate) -> StoreResult<()> {
        integrations::record_telephony(&self.pool, update).await
    }

    async fn telephony_call(&self, pbx_call_id: &str) -> StoreResult<Option<TelephonyCall>> {
        integrations::telephony_call(&self.pool, pbx_call_id).await
    }

    async fn telephony_calls(&self, filter: &TelephonyFilter) -> StoreResult<Vec<TelephonyCall>> {
        integrations::telephony_calls(&self.pool, filter).await
    }

    async fn enqueue_task(&self, task: &NewTask, now: DateTime<Utc>) -> StoreResult<bool> {
        integrations::enqueue_task(&self.pool, task, now).await
    }

    async fn claim_task(
        &self,
        worker: &str,
        kinds: &[&str],
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedTask>> {
        integrations::claim_task(&self.pool, worker, kinds, lease_until, now).await
    }

    async fn save_task_progress(
        &self,
        task: &ClaimedTask,
        payload: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        integrations::save_task_progress(&self.pool, task, payload, lease_until, now).await
    }

    async fn finish_task(
        &self,
        task: &ClaimedTask,
        outcome: &TaskOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        integrations::finish_task(&self.pool, task, outcome, now).await
    }

    async fn cancel_task(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        integrations::cancel_task(&self.pool, id, now).await
    }

    async fn tasks(&self, kind: &str, limit: u32) -> StoreResult<Vec<TaskRecord>> {
        integrations::tasks(&self.pool, kind, limit).await
    }

    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        integrations::task(&self.pool, id).await
    }
}
