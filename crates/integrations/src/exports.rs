//! What the CRM exports share: the counters an administrator watches, and
//! the export as a durable task that saves its cursor after every page, so
//! a restart goes on from where it stopped.

use chrono::{DateTime, Utc};
use rop_domain::{ClaimedTask, NewTask, Store, StoreError, TaskRecord, TaskState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The counters the interface shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportProgress {
    /// Calls of the period read so far.
    pub found: u64,
    /// Handed to the pipeline.
    pub imported: u64,
    /// Left out: another user, direction or duration, no recording, or
    /// imported before.
    pub skipped: u64,
    /// Could not be imported (a broken link, a refusal).
    pub failed: u64,
    /// Where the export is: amoCRM's `leads`, `contacts`, `companies`;
    /// `done` at the end.
    pub stage: String,
    pub last_error: Option<String>,
}

/// What an export task's payload holds besides its own cursor.
pub trait ExportPayload: Serialize + DeserializeOwned {
    type Request: Clone + Serialize;
    fn request(&self) -> &Self::Request;
    fn progress(&self) -> &ExportProgress;
}

/// An export as the interface shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportView<R> {
    pub id: i64,
    pub state: TaskState,
    pub request: R,
    pub progress: ExportProgress,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl<R> ExportView<R> {
    pub fn is_active(&self) -> bool {
        matches!(self.state, TaskState::Queued | TaskState::Running)
    }
}

/// The exports of one kind (`amocrm.export`, `bitrix24.export`) as rows
/// of the task queue.
pub(crate) struct Exports<'a> {
    pub store: &'a dyn Store,
    pub kind: &'static str,
}

/// How long a page may take before another worker may take the export over.
const LEASE_SECS: i64 = 300;
const ATTEMPTS: u32 = 10;

impl Exports<'_> {
    fn view<P: ExportPayload>(task: TaskRecord) -> Option<ExportView<P::Request>> {
        let payload: P = serde_json::from_str(&task.payload).ok()?;
        Some(ExportView {
            id: task.id,
            state: task.state,
            request: payload.request().clone(),
            progress: payload.progress().clone(),
            error: task.last_error,
            created_at: task.created_at,
            updated_at: task.updated_at,
        })
    }

    /// Newest first.
    pub async fn list<P: ExportPayload>(
        &self,
        limit: u32,
    ) -> Result<Vec<ExportView<P::Request>>, StoreError> {
        Ok(self
            .store
            .tasks(self.kind, limit)
            .await?
            .into_iter()
            .filter_map(Self::view::<P>)
            .collect())
    }

    pub async fn get<P: ExportPayload>(
        &self,
        id: i64,
    ) -> Result<Option<ExportView<P::Request>>, StoreError> {
        Ok(self
            .store
            .task(id)
            .await?
            .filter(|task| task.kind == self.kind)
            .and_then(Self::view::<P>))
    }

    /// Whether one is queued or running: two would read the same pages and
    /// share the CRM's request limit.
    pub async fn running(&self) -> Result<bool, StoreError> {
        Ok(self
            .store
            .tasks(self.kind, 5)
            .await?
            .iter()
            .any(|t| matches!(t.state, TaskState::Queued | TaskState::Running)))
    }

    pub async fn queue<P: ExportPayload>(
        &self,
        payload: &P,
    ) -> Result<ExportView<P::Request>, StoreError> {
        let now = Utc::now();
        let json = serde_json::to_string(payload).map_err(rop_domain::store::backend_error)?;
        self.store
            .enqueue_task(
                &NewTask {
                    kind: self.kind.to_owned(),
                    key: uuid::Uuid::new_v4().simple().to_string(),
                    payload: json,
                    due_at: now,
                    max_attempts: ATTEMPTS,
                },
                now,
            )
            .await?;
        let queued = self
            .list::<P>(5)
            .await?
            .into_iter()
            .find(ExportView::is_active)
            .ok_or_else(|| StoreError::Backend("the export just queued is gone".into()))?;
        tracing::info!(kind = self.kind, export = queued.id, "export started");
        Ok(queued)
    }

    /// `false` when there is no such export or it is already over.
    pub async fn stop(&self, id: i64) -> Result<bool, StoreError> {
        match self.store.task(id).await? {
            Some(task) if task.kind == self.kind => self.store.cancel_task(id, Utc::now()).await,
            _ => Ok(false),
        }
    }

    /// Saves the cursor and counters after a page and extends the lease;
    /// `Ok(false)` when the export was stopped (or taken over).
    pub async fn save<P: ExportPayload>(
        &self,
        task: &ClaimedTask,
        payload: &P,
    ) -> Result<bool, String> {
        let json = serde_json::to_string(payload).map_err(|e| e.to_string())?;
        let now = Utc::now();
        self.store
            .save_task_progress(
                task,
                &json,
                now + chrono::Duration::seconds(LEASE_SECS),
                now,
            )
            .await
            .map_err(|e| e.to_string())
    }
}
