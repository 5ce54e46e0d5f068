//! Hands a recording found by an integration to the pipeline as an ordinary
//! call: the same skip rule and first step as an upload through the API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rop_domain::{
    AudioSource, CallId, CallStatus, ConnectionSettings, Direction, JobKind, ManagerId, NewCall,
    NewCallEvent, NewJob, Store, StoreError,
};
use url::Url;

/// A recording and what the integration knows about its call.
pub struct ImportedCall {
    pub call_id: CallId,
    pub manager_id: ManagerId,
    pub recording: Url,
    pub direction: Option<Direction>,
    pub client_phone: Option<String>,
    pub client_name: Option<String>,
    pub deal_id: Option<String>,
    pub deal_stage_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<f64>,
    pub metadata: BTreeMap<String, String>,
    /// The first history line: where the call came from.
    pub origin: String,
}

/// Stores the call with its download queued (or as skipped when shorter
/// than the minimum). `Ok(false)` when a call with this id exists already,
/// so importing the same recording twice is harmless.
pub async fn submit(
    store: &dyn Store,
    call: ImportedCall,
    job_attempts: u32,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let settings: ConnectionSettings = store.connection_settings().await?;
    let skip_reason = settings.skip_reason(call.duration_secs);
    let mut events = vec![NewCallEvent::info(now, "upload", call.origin)];
    if let Some(reason) = &skip_reason {
        events.push(NewCallEvent::info(now, "upload", reason.clone()));
    }
    let status = if skip_reason.is_some() {
        CallStatus::Skipped
    } else {
        CallStatus::Received
    };
    let new_call = NewCall {
        call_id: call.call_id,
        manager_id: call.manager_id,
        deal_id: call.deal_id,
        deal_stage_id: call.deal_stage_id,
        stage_id: None,
        direction: call.direction,
        client_phone: call.client_phone,
        client_name: call.client_name,
        call_started_at: call.started_at,
        declared_duration_secs: call.duration_secs,
        source: AudioSource::Url(call.recording),
        manager_channel: None,
        metadata: call.metadata,
        status,
        status_reason: skip_reason,
        received_at: now,
        events,
        first_job: (status == CallStatus::Received).then_some(NewJob {
            kind: JobKind::Download,
            max_attempts: job_attempts,
        }),
    };
    match store.insert_call(&new_call).await {
        Ok(()) => {
            tracing::info!(call_id = %new_call.call_id, status = %status, "imported call accepted");
            Ok(true)
        }
        Err(StoreError::Duplicate) => Ok(false),
        Err(error) => Err(error),
    }
}
