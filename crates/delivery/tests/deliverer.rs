//! The delivery worker's loop against a queue in memory that follows the
//! store's lease rules, and a real receiver on loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::{client, delivery, MemoryQueue, SECRET};
use rop_delivery::signature::verify;
use rop_delivery::{Deliverer, DelivererConfig, RetryPolicy};
use rop_domain::DeliveryOutcome;
use rop_testkit::webhook::{Reply, WebhookReceiver};
use tokio::sync::watch;

fn config(retry: RetryPolicy) -> DelivererConfig {
    DelivererConfig {
        worker_name: "test".into(),
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        retry,
        request_timeout: Duration::from_secs(2),
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_millis(400),
        give_up_after: Duration::from_secs(30),
    }
}

struct Running {
    queue: Arc<MemoryQueue>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(retry: RetryPolicy) -> Running {
    let queue = Arc::new(MemoryQueue::default());
    let (stop, stopped) = watch::channel(false);
    let task = Deliverer::with_queue(queue.clone(), client(), config(retry)).spawn(stopped);
    Running { queue, stop, task }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gap(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap()
}

#[tokio::test]
async fn failures_are_retried_with_backoff_until_delivered() {
    let receiver = WebhookReceiver::start().await;
    receiver.script([Reply::status(503), Reply::status(500)]);
    let running = start(quick());
    let d = delivery(&receiver.url(), SECRET);
    running.queue.add(d.clone());
    until("delivered", || running.queue.is_done(&d.delivery_id)).await;

    let outcomes = running.queue.outcomes(&d.delivery_id);
    assert!(matches!(outcomes[0], DeliveryOutcome::Retry { .. }));
    assert!(matches!(outcomes[1], DeliveryOutcome::Retry { .. }));
    assert_eq!(outcomes[2], DeliveryOutcome::Delivered);
    let log = running.queue.log();
    let attempts: Vec<(u32, Option<u16>)> = log
        .iter()
        .map(|(_, a, _)| (a.attempt, a.status_code))
        .collect();
    assert_eq!(attempts, [(1, Some(503)), (2, Some(500)), (3, Some(200))]);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        // One idempotency key for every attempt, each freshly signed.
        assert_eq!(r.header("x-rop-delivery"), Some(d.delivery_id.as_str()));
        assert!(verify(
            SECRET,
            r.header("x-rop-timestamp").unwrap(),
            &r.body,
            r.header("x-rop-signature").unwrap(),
            Utc::now(),
            Duration::from_secs(60),
        ));
    }
    // Equal jitter: at least half the backoff (100 ms, then 200 ms).
    assert!(gap(requests[0].at, requests[1].at) >= Duration::from_millis(45));
    assert!(gap(requests[1].at, requests[2].at) >= Duration::from_millis(95));
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_final_answer_fails_at_once() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::status(400));
    let running = start(quick());
    let d = delivery(&receiver.url(), SECRET);
    running.queue.add(d.clone());
    until("failed", || running.queue.is_done(&d.delivery_id)).await;
    assert_eq!(
        running.queue.outcomes(&d.delivery_id),
        [DeliveryOutcome::Failed]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1);
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = WebhookReceiver::start().await;
    receiver.script([Reply::status(429).header("Retry-After", "1")]);
    let running = start(quick());
    let d = delivery(&receiver.url(), SECRET);
    running.queue.add(d.clone());
    until("delivered", || running.queue.is_done(&d.delivery_id)).await;
    let log = running.queue.log();
    let DeliveryOutcome::Retry { at } = log[0].2 else {
        panic!("{log:?}");
    };
    let asked = (at - log[0].1.at).num_milliseconds();
    assert!((950..=1_500).contains(&asked), "{asked} ms");
    let requests = receiver.requests();
    assert!(gap(requests[0].at, requests[1].at) >= Duration::from_millis(950));
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}

#[tokio::test]
async fn retries_give_up_after_the_policy_window() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::status(503));
    let running = start(RetryPolicy {
        give_up_after: Duration::from_millis(600),
        ..quick()
    });
    let d = delivery(&receiver.url(), SECRET);
    running.queue.add(d.clone());
    until("given up", || running.queue.is_done(&d.delivery_id)).await;
    let outcomes = running.queue.outcomes(&d.delivery_id);
    assert_eq!(outcomes.last(), Some(&DeliveryOutcome::Failed));
    assert!(outcomes.len() >= 2, "{outcomes:?}");
    let last_try = receiver.requests().last().unwrap().at;
    assert!(gap(receiver.requests()[0].at, last_try) <= Duration::from_millis(700));
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_the_result_when_it_is_back() {
    let mut receiver = WebhookReceiver::start().await;
    receiver.stop().await;
    let running = start(quick());
    let d = delivery(&receiver.url(), SECRET);
    running.queue.add(d.clone());
    until("two refused attempts", || {
        running.queue.outcomes(&d.delivery_id).len() >= 2
    })
    .await;
    assert!(receiver.requests().is_empty());
    receiver.restart().await;
    until("delivered", || running.queue.is_done(&d.delivery_id)).await;
    assert_eq!(
        running.queue.outcomes(&d.delivery_id).last(),
        Some(&DeliveryOutcome::Delivered)
    );
    assert_eq!(receiver.requests().len(), 1);
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_the_send_in_flight_and_claims_nothing_more() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::ok().delay(Duration::from_millis(600)));
    let running = start(quick());
    let first = delivery(&receiver.url(), SECRET);
    running.queue.add(first.clone());
    receiver.wait_for_requests(1, Duration::from_secs(5)).await;
    running.stop.send(true).unwrap();
    let later = delivery(&receiver.url(), SECRET);
    running.queue.add(later.clone());
    tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .expect("stops after the send in flight")
        .unwrap();
    assert_eq!(
        running.queue.outcomes(&first.delivery_id),
        [DeliveryOutcome::Delivered]
    );
    assert!(running.queue.outcomes(&later.delivery_id).is_empty());
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn many_deliveries_are_shared_by_the_slots_once_each() {
    let receiver = WebhookReceiver::start().await;
    let running = start(quick());
    let deliveries: Vec<_> = (0..10).map(|_| delivery(&receiver.url(), SECRET)).collect();
    for d in &deliveries {
        running.queue.add(d.clone());
    }
    receiver
        .wait_for_requests(10, Duration::from_secs(10))
        .await;
    until("all delivered", || {
        deliveries
            .iter()
            .all(|d| running.queue.is_done(&d.delivery_id))
    })
    .await;
    let mut ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("x-rop-delivery").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(receiver.requests().len(), 10);
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
}
