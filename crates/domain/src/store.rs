//! The storage trait. SQLite and PostgreSQL implement it in their own crates;
//! the same test suite runs against both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::analysis::{Checklist, Table};
use crate::audit::{AuditEntry, NewAuditEntry};
use crate::call::{CallDetails, CallFilter, CallPage, DeletedCall, NewCall, NewCallEvent};
use crate::delivery::{ClaimedDelivery, DeliveryAttempt, DeliveryOutcome};
use crate::id::{CallId, ManagerId, OfficeId, TableId};
use crate::integrations::{
    ClaimedTask, Client, ClientUpdate, NewTask, TaskOutcome, TaskRecord, TelephonyCall,
    TelephonyFilter, TelephonyUpdate,
};
use crate::jobs::{ClaimedJob, JobKind, JobOutcome, NewJob};
use crate::keys::{ApiKey, ApiSecret};
use crate::people::{Manager, ManagerUpdate, Office, OfficeUpdate, UpsertCounts};
use crate::settings::ConnectionSettings;
use crate::stats::{Dashboard, StatsQuery};
use crate::tables::TableReadiness;
use crate::users::{NewSession, NewUser, Session, User, UserCredentials, UserUpdate};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (a repeated call_id, a taken username).
    #[error("already exists")]
    Duplicate,
    #[error("not found")]
    NotFound,
    /// Stored data that no longer parses: a bug or a hand-edited database.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Wraps a driver error; for `map_err` in the backends.
pub fn backend_error(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Reads a stored text value (a status, a direction) back into its type.
pub fn parse_stored<T: std::str::FromStr>(raw: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(corrupt)
}

/// Reads a stored identifier back into its newtype.
pub fn parse_stored_id<T: TryFrom<String>>(raw: String) -> StoreResult<T>
where
    T::Error: std::fmt::Display,
{
    T::try_from(raw).map_err(corrupt)
}

/// Reads stored JSON back.
pub fn parse_stored_json<T: serde::de::DeserializeOwned>(raw: &str) -> StoreResult<T> {
    serde_json::from_str(raw).map_err(corrupt)
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Applies this backend's migrations; safe to run from several processes.
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;

    // --- API keys -------------------------------------------------------

    /// Stores `candidate` as the installation's key unless a key was ever
    /// created; returns whether it was stored. Safe under concurrent starts.
    async fn ensure_api_key(&self, candidate: &ApiSecret, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Keys that authenticate now: the current one and any still in grace.
    async fn valid_api_keys(&self, now: DateTime<Utc>) -> StoreResult<Vec<ApiKey>>;
    /// Makes `new_secret` the current key; the previous keys keep working
    /// until `old_valid_until` (use `now` for no grace).
    async fn rotate_api_key(
        &self,
        new_secret: &ApiSecret,
        old_valid_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- settings -------------------------------------------------------

    async fn connection_settings(&self) -> StoreResult<ConnectionSettings>;
    async fn save_connection_settings(&self, settings: &ConnectionSettings) -> StoreResult<()>;

    // --- calls ----------------------------------------------------------

    /// Stores a call, its manager (as a placeholder if new) and its first
    /// history lines in one transaction. `Duplicate` when the call_id exists.
    async fn insert_call(&self, call: &NewCall) -> StoreResult<()>;
    async fn call(&self, call_id: &CallId) -> StoreResult<Option<CallDetails>>;
    async fn list_calls(&self, filter: &CallFilter) -> StoreResult<CallPage>;
    /// Deletes a call and everything derived from it.
    async fn delete_call(&self, call_id: &CallId) -> StoreResult<Option<DeletedCall>>;
    async fn add_call_event(&self, call_id: &CallId, event: &NewCallEvent) -> StoreResult<()>;

    /// Records where the download step put the call's audio.
    async fn set_downloaded_audio(&self, call_id: &CallId, blob_key: &str) -> StoreResult<()>;

    // --- jobs -----------------------------------------------------------

    /// Leases the next due job of one of `kinds` to `worker` until
    /// `lease_until`: a queued job whose time has come, or a running one
    /// whose lease ran out. Sets the call's status to the job's step.
    async fn claim_job(
        &self,
        worker: &str,
        kinds: &[JobKind],
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedJob>>;
    /// Extends the lease; `false` when the worker no longer holds it.
    async fn extend_lease(&self, job: &ClaimedJob, until: DateTime<Utc>) -> StoreResult<bool>;
    /// Applies the outcome to the job, the call and its history at once;
    /// `false` (and nothing changed) when the worker no longer holds the lease.
    async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Jobs whose worker vanished during their last allowed attempt: their
    /// lease ran out and nobody may claim them again. Claim them as `worker`
    /// so the caller can fail them.
    async fn claim_abandoned_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ClaimedJob>>;
    /// Returns when a job may have become due (one was queued, here or in
    /// another process), or after `timeout`.
    async fn wait_for_jobs(&self, timeout: std::time::Duration);

    // --- people and offices --------------------------------------------

    async fn upsert_managers(
        &self,
        managers: &[ManagerUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts>;
    async fn upsert_offices(
        &self,
        offices: &[OfficeUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts>;
    async fn managers(&self) -> StoreResult<Vec<Manager>>;
    async fn office(&self, office_id: &OfficeId) -> StoreResult<Option<Office>>;

    // --- checklists and tables ------------------------------------------

    /// `Duplicate` when the id is taken.
    async fn insert_checklist(&self, checklist: &Checklist, now: DateTime<Utc>) -> StoreResult<()>;
    /// Replaces a checklist's definition; `NotFound` when there is none.
    async fn update_checklist(&self, checklist: &Checklist, now: DateTime<Utc>) -> StoreResult<()>;
    /// Deletes the definition; results already computed stay with their calls.
    async fn delete_checklist(&self, checklist_id: &str) -> StoreResult<bool>;
    async fn checklist(&self, checklist_id: &str) -> StoreResult<Option<Checklist>>;
    /// All checklists, oldest first.
    async fn checklists(&self) -> StoreResult<Vec<Checklist>>;

    async fn insert_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()>;
    async fn update_table(&self, table: &Table, now: DateTime<Utc>) -> StoreResult<()>;
    /// Deletes the table and the data extracted for it.
    async fn delete_table(&self, table_id: &TableId) -> StoreResult<bool>;
    async fn table(&self, table_id: &TableId) -> StoreResult<Option<Table>>;
    async fn tables(&self) -> StoreResult<Vec<Table>>;
    async fn table_readiness(&self, table_id: &str, call_id: &str) -> StoreResult<TableReadiness>;

    /// Offices `manager_id` belongs to, as a manager or a leader; for filters.
    async fn manager_offices(&self, manager_id: &ManagerId) -> StoreResult<Vec<OfficeId>>;

    /// Queues the analysis of a transcribed call again (after a checklist
    /// changed). `NotFound` without the call; `false` when it has no
    /// transcript or is still being processed.
    async fn requeue_analysis(
        &self,
        call_id: &CallId,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // --- webhook deliveries --------------------------------------------

    /// Leases the next due delivery until `lease_until`.
    async fn claim_delivery(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>>;
    /// Logs the attempt and applies its outcome; when the call has no
    /// delivery left pending, the call is `done`. `false` (nothing changed)
    /// when the worker no longer holds the lease.
    async fn finish_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Sends a delivery again from the first attempt (an administrator's
    /// resend). `NotFound` when the call has no such delivery.
    async fn resend_delivery(
        &self,
        call_id: &CallId,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The earliest moment a pending delivery becomes due, if any.
    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>>;

    // --- web users -----------------------------------------------------

    /// `Duplicate` when the username is taken.
    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;
    /// Everyone, by username.
    async fn users(&self) -> StoreResult<Vec<User>>;
    async fn user_count(&self) -> StoreResult<u64>;
    /// The user of this name (exact match) with his password hash.
    async fn user_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>>;
    /// `false` when there is no such user. A new password deletes the
    /// user's sessions in the same transaction.
    async fn update_user(&self, update: &UserUpdate) -> StoreResult<bool>;
    /// Deletes the user and his sessions; `false` when there is none.
    async fn delete_user(&self, id: i64) -> StoreResult<bool>;

    async fn create_session(&self, session: &NewSession) -> StoreResult<()>;
    /// The session with this token hash and its user, unless it expired by `now`.
    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Removes expired sessions; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    // --- audit log -----------------------------------------------------

    async fn add_audit_entry(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    /// Newest first; entries with ids below `before_id` when given.
    async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;

    // --- figures for the web interface ----------------------------------

    /// Every office with its people, by id.
    async fn offices(&self) -> StoreResult<Vec<Office>>;
    async fn dashboard(&self, query: &StatsQuery) -> StoreResult<Dashboard>;

    // --- integrations ----------------------------------------------------

    /// A stored settings value (JSON) by key, e.g. `setting_keys::ZADARMA`.
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn save_setting(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Replaces the value only if it is still `expected` (`None`: absent);
    /// returns whether it did. For single-use OAuth refresh tokens, where
    /// two processes must not both spend the same one.
    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool>;

    /// Adds or replaces clients by phone; `None` fields replace too.
    async fn upsert_clients(
        &self,
        clients: &[ClientUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<UpsertCounts>;
    /// The client with this normalized phone.
    async fn client_by_phone(&self, phone: &str) -> StoreResult<Option<Client>>;
    /// Clients by phone, those whose phone or name contains `search`
    /// (case-insensitive) when given, at most `limit` after `offset`.
    async fn clients(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Client>>;
    async fn delete_client(&self, phone: &str) -> StoreResult<bool>;

    /// Creates or merges the journal row of `update.pbx_call_id`: fields
    /// given replace the stored ones, `None` fields keep them; direction and
    /// start time are set by the first notification only.
    async fn record_telephony(&self, update: &TelephonyUpdate) -> StoreResult<()>;
    async fn telephony_call(&self, pbx_call_id: &str) -> StoreResult<Option<TelephonyCall>>;
    /// Newest first.
    async fn telephony_calls(&self, filter: &TelephonyFilter) -> StoreResult<Vec<TelephonyCall>>;

    /// Queues a task unless one of the same kind and key exists; returns
    /// whether it was queued. When the existing one is still queued, it
    /// becomes due at the earlier of the two times.
    async fn enqueue_task(&self, task: &NewTask, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Leases the next due task of one of `kinds` (all kinds when empty):
    /// a queued one whose time has come or a running one whose lease ran
    /// out with attempts left. A running one whose lease ran out on its last
    /// attempt is marked failed instead.
    async fn claim_task(
        &self,
        worker: &str,
        kinds: &[&str],
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedTask>>;
    /// Saves a running task's progress and extends its lease; `false` when
    /// the worker no longer holds it (it was cancelled or re-leased).
    async fn save_task_progress(
        &self,
        task: &ClaimedTask,
        payload: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// `false` (nothing changed) when the worker no longer holds the lease.
    async fn finish_task(
        &self,
        task: &ClaimedTask,
        outcome: &TaskOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Cancels a queued or running task; `false` when it is already over.
    async fn cancel_task(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Tasks of one kind, newest first.
    async fn tasks(&self, kind: &str, limit: u32) -> StoreResult<Vec<TaskRecord>>;
    async fn task(&self, id: i64) -> StoreResult<Option<TaskRecord>>;
}
