//! One attempt against a real HTTP receiver on loopback.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{client, delivery, BODY, SECRET};
use rop_delivery::send::send;
use rop_delivery::signature::{self, verify};
use rop_delivery::Verdict;
use rop_fetch::{ClientConfig, GuardedClient, UrlGuard};
use rop_testkit::webhook::{Reply, WebhookReceiver};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_2xx_is_delivered_with_signed_headers() {
    let receiver = WebhookReceiver::start().await;
    let d = delivery(&receiver.url(), SECRET);
    let report = send(&client(), &d, TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Delivered, "{report:?}");
    assert_eq!(report.status_code, Some(200));
    assert_eq!(report.error, None);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.text(), BODY);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("rop-webhooks/"));
    assert_eq!(r.header("x-rop-event"), Some("checklist.result"));
    assert_eq!(r.header("x-rop-delivery"), Some(d.delivery_id.as_str()));
    let timestamp = r.header("x-rop-timestamp").unwrap();
    let sent: i64 = timestamp.parse().unwrap();
    assert!((Utc::now().timestamp() - sent).abs() <= 5);
    let header = r.header("x-rop-signature").unwrap();
    assert!(verify(
        SECRET,
        timestamp,
        &r.body,
        header,
        Utc::now(),
        Duration::from_secs(300)
    ));
    assert_eq!(header, signature::sign(SECRET, sent, BODY));
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::status(204));
    let report = send(&client(), &delivery(&receiver.url(), ""), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Delivered);
    let r = &receiver.requests()[0];
    assert_eq!(r.header("x-rop-signature"), None);
    assert!(r.header("x-rop-timestamp").is_some());
}

#[tokio::test]
async fn a_5xx_is_retried() {
    let receiver = WebhookReceiver::start().await;
    receiver.script([Reply::status(503).body("перегружен")]);
    let report = send(&client(), &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Retry);
    assert_eq!(report.status_code, Some(503));
    assert_eq!(report.retry_after, None);
    assert_eq!(
        report.error.as_deref(),
        Some("Ответ получателя: перегружен")
    );
}

#[tokio::test]
async fn a_429_is_retried_when_the_receiver_says() {
    let receiver = WebhookReceiver::start().await;
    receiver.script([Reply::status(429).header("Retry-After", "7")]);
    let report = send(&client(), &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Retry);
    assert_eq!(report.status_code, Some(429));
    assert_eq!(report.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn other_4xx_are_final() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::status(400).body(r#"{"error":"unknown deal"}"#));
    let report = send(&client(), &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Final);
    assert_eq!(report.status_code, Some(400));
    assert!(report.error.unwrap().contains("unknown deal"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = WebhookReceiver::start().await;
    let target = WebhookReceiver::start().await;
    receiver.answer_always(Reply::redirect(308, &target.url()));
    let report = send(&client(), &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Final, "{report:?}");
    assert!(
        report.error.as_deref().unwrap().contains("перенаправляет"),
        "{report:?}"
    );
    assert!(target.requests().is_empty());
}

/// A client that follows redirects, like the one downloads use.
fn following_client() -> GuardedClient {
    GuardedClient::new(&ClientConfig {
        guard: UrlGuard {
            allow_loopback: true,
            allow_private: false,
        },
        ..ClientConfig::default()
    })
}

#[tokio::test]
async fn a_redirect_to_a_forbidden_address_is_final() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::redirect(
        301,
        "http://169.254.169.254/latest/meta-data/",
    ));
    for client in [client(), following_client()] {
        let report = send(&client, &delivery(&receiver.url(), SECRET), TIMEOUT).await;
        assert_eq!(report.verdict, Verdict::Final, "{report:?}");
    }
    let report = send(
        &following_client(),
        &delivery(&receiver.url(), SECRET),
        TIMEOUT,
    )
    .await;
    assert!(
        report.error.as_deref().unwrap().contains("запрещён"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_followed_redirect_is_final_even_when_the_target_says_200() {
    let receiver = WebhookReceiver::start().await;
    let target = WebhookReceiver::start().await;
    receiver.answer_always(Reply::redirect(302, &target.url()));
    let report = send(
        &following_client(),
        &delivery(&receiver.url(), SECRET),
        TIMEOUT,
    )
    .await;
    // The POST became a GET without the result: not delivered.
    assert_eq!(target.requests()[0].method, "GET");
    assert_eq!(report.verdict, Verdict::Final, "{report:?}");
    assert!(report.error.unwrap().contains("перенаправлен"));
}

#[tokio::test]
async fn a_forbidden_address_is_final_and_not_contacted() {
    let receiver = WebhookReceiver::start().await;
    let strict = rop_delivery::webhook_client(UrlGuard::default());
    let report = send(&strict, &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Final);
    assert_eq!(report.status_code, None);
    assert!(report.error.unwrap().contains("запрещён"));
    assert!(receiver.requests().is_empty());

    let report = send(&strict, &delivery("not a url", SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Final);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let mut receiver = WebhookReceiver::start().await;
    receiver.stop().await;
    let report = send(&client(), &delivery(&receiver.url(), SECRET), TIMEOUT).await;
    assert_eq!(report.verdict, Verdict::Retry, "{report:?}");
    assert_eq!(report.status_code, None);
    let error = report.error.unwrap();
    assert!(error.starts_with("Не удалось соединиться"), "{error}");
    assert!(!error.contains("/hook"), "{error}");
}

#[tokio::test]
async fn a_slow_receiver_is_retried() {
    let receiver = WebhookReceiver::start().await;
    receiver.script([Reply::ok().delay(Duration::from_secs(3))]);
    let started = std::time::Instant::now();
    let report = send(
        &client(),
        &delivery(&receiver.url(), SECRET),
        Duration::from_millis(300),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.verdict, Verdict::Retry, "{report:?}");
    assert_eq!(report.status_code, None);
    assert!(report.error.unwrap().contains("не ответил"));
}
