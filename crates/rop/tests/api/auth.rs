//! API key: where it is accepted, rotation with a grace period, rate limit.

use std::process::Command;

use crate::helpers::{error_of, spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

const PROTECTED: [(&str, &str); 9] = [
    ("POST", "/api/v1/calls/audio-upload"),
    ("GET", "/api/v1/calls"),
    ("GET", "/api/v1/calls/c1"),
    ("DELETE", "/api/v1/calls/c1"),
    ("POST", "/api/v1/settings/offices-update"),
    ("POST", "/api/v1/settings/managers-update"),
    ("GET", "/api/v1/settings/connection"),
    ("PUT", "/api/v1/settings/connection"),
    ("GET", "/api/v1/tables/call-ready?tab=TBL_1&call=c1"),
];

fn request(app: &TestApp, method: &str, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method.parse().unwrap(), app.url(path))
}

async fn status_with_key(app: &TestApp, key: &str) -> u16 {
    request(app, "GET", "/api/v1/calls")
        .header("X-Api-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn every_endpoint_needs_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let wrong = format!("{}x", app.key);
    for (method, path) in PROTECTED {
        let response = request(&app, method, path).send().await.unwrap();
        assert_eq!(
            error_of(response).await.1,
            "unauthorized",
            "{method} {path} without a key"
        );
        let response = request(&app, method, path)
            .header("X-Api-Key", &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path} with a wrong key");
        let response = request(&app, method, path)
            .header("Authorization", format!("Bearer {}", &app.key[..10]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path} with a key prefix");
    }
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path} is public"
        );
    }
}

async fn key_is_accepted_in_query_header_and_bearer(backend: Backend) {
    let app = spawn_app(backend).await;
    let by_query = app
        .client
        .get(app.url(&format!("/api/v1/calls?apiKey={}", app.key)))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    assert_eq!(status_with_key(&app, &app.key).await, 200);
    let by_bearer = app
        .client
        .get(app.url("/api/v1/calls"))
        .header("Authorization", format!("Bearer {}", app.key))
        .send()
        .await
        .unwrap();
    assert_eq!(by_bearer.status(), 200);
}

fn rop(app: &TestApp, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_rop"))
        .args(args)
        .arg("--database-url")
        .arg(app.config.database_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rop {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn rotation_keeps_the_old_key_for_the_grace_period(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.key.clone();
    assert_eq!(
        rop(&app, &["api-key", "show"]).trim(),
        first,
        "show prints the key alone"
    );

    let second = rop(&app, &["api-key", "rotate", "--grace", "1h"])
        .trim()
        .to_owned();
    assert_ne!(second, first);
    assert_eq!(rop(&app, &["api-key", "show"]).trim(), second);
    assert_eq!(status_with_key(&app, &second).await, 200);
    assert_eq!(
        status_with_key(&app, &first).await,
        200,
        "the old key works during the grace period"
    );

    let third = rop(&app, &["api-key", "rotate"]).trim().to_owned();
    assert_eq!(
        status_with_key(&app, &third).await,
        200,
        "a key rotated in by another process works at once"
    );
    // The server keeps key digests in memory for up to a second.
    let revoked_at = std::time::Instant::now();
    while status_with_key(&app, &second).await != 401 {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(3),
            "no grace: the old key must stop within a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status_with_key(&app, &first).await,
        401,
        "earlier grace periods end too"
    );
}

async fn rate_limit_answers_429_with_retry_after(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.rate_limit_per_minute = 5).await;
    for _ in 0..5 {
        assert_eq!(status_with_key(&app, &app.key).await, 200);
    }
    let response = app.get("/api/v1/calls").send().await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(response).await.0, 429);
    // Authentication comes first: a wrong key is a 401 even when the limit is spent.
    assert_eq!(status_with_key(&app, "nope").await, 401);
}

on_both_backends!(
    every_endpoint_needs_the_key,
    key_is_accepted_in_query_header_and_bearer,
    rotation_keeps_the_old_key_for_the_grace_period,
    rate_limit_answers_429_with_retry_after,
);
