//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rop_delivery::DeliveryQueue;
use rop_domain::store::StoreResult;
use rop_domain::{CallId, ClaimedDelivery, DeliveryAttempt, DeliveryEvent, DeliveryOutcome};
use rop_fetch::{GuardedClient, UrlGuard};

pub const SECRET: &str = "whsec_test";
pub const BODY: &str = r#"{"event":"checklist.result","call_id":"call_1","total_score":2}"#;

/// A webhook client that may reach the loopback receiver.
pub fn client() -> GuardedClient {
    rop_delivery::webhook_client(UrlGuard {
        allow_loopback: true,
        allow_private: false,
    })
}

pub fn delivery(url: &str, secret: &str) -> ClaimedDelivery {
    ClaimedDelivery {
        delivery_id: uuid::Uuid::new_v4().to_string(),
        call_id: CallId::parse("call_1").unwrap(),
        event: DeliveryEvent::ChecklistResult,
        url: url.to_owned(),
        secret: secret.to_owned(),
        body: BODY.to_owned(),
        attempt: 1,
        created_at: Utc::now(),
        worker: "test/0".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Sending,
    Done,
}

struct Row {
    delivery: ClaimedDelivery,
    state: State,
    run_after: DateTime<Utc>,
    lease_owner: Option<String>,
    attempts: u32,
}

/// The store's delivery rows, in memory, with the same lease rules.
#[derive(Default)]
pub struct MemoryQueue {
    rows: Mutex<Vec<Row>>,
    log: Mutex<Vec<(String, DeliveryAttempt, DeliveryOutcome)>>,
}

impl MemoryQueue {
    pub fn add(&self, delivery: ClaimedDelivery) {
        self.rows.lock().unwrap().push(Row {
            run_after: delivery.created_at,
            delivery,
            state: State::Pending,
            lease_owner: None,
            attempts: 0,
        });
    }

    /// Every recorded attempt with its outcome, in order.
    pub fn log(&self) -> Vec<(String, DeliveryAttempt, DeliveryOutcome)> {
        self.log.lock().unwrap().clone()
    }

    /// The outcomes recorded for one delivery.
    pub fn outcomes(&self, delivery_id: &str) -> Vec<DeliveryOutcome> {
        self.log()
            .into_iter()
            .filter(|(id, _, _)| id == delivery_id)
            .map(|(_, _, outcome)| outcome)
            .collect()
    }

    pub fn is_done(&self, delivery_id: &str) -> bool {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.delivery.delivery_id == delivery_id && r.state == State::Done)
    }
}

#[async_trait]
impl DeliveryQueue for MemoryQueue {
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedDelivery>> {
        let mut rows = self.rows.lock().unwrap();
        let Some(row) = rows
            .iter_mut()
            .filter(|r| r.state != State::Done && r.run_after <= now)
            .min_by_key(|r| r.run_after)
        else {
            return Ok(None);
        };
        row.state = State::Sending;
        row.run_after = lease_until;
        row.lease_owner = Some(worker.to_owned());
        row.attempts += 1;
        Ok(Some(ClaimedDelivery {
            attempt: row.attempts,
            worker: worker.to_owned(),
            ..row.delivery.clone()
        }))
    }

    async fn finish(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut rows = self.rows.lock().unwrap();
        let Some(row) = rows.iter_mut().find(|r| {
            r.delivery.delivery_id == delivery.delivery_id
                && r.state == State::Sending
                && r.lease_owner.as_deref() == Some(delivery.worker.as_str())
        }) else {
            return Ok(false);
        };
        row.lease_owner = None;
        match outcome {
            DeliveryOutcome::Retry { at } => {
                row.state = State::Pending;
                row.run_after = *at;
            }
            DeliveryOutcome::Delivered | DeliveryOutcome::Failed => {
                row.state = State::Done;
                row.run_after = now;
            }
        }
        self.log.lock().unwrap().push((
            delivery.delivery_id.clone(),
            attempt.clone(),
            outcome.clone(),
        ));
        Ok(true)
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.state != State::Done)
            .map(|r| r.run_after)
            .min())
    }
}
