//! The server-side request forgery guard, seen from the API.

use crate::fileserver;
use crate::helpers::{error_of, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

async fn internal_addresses_are_refused_without_any_request(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.fetch_allow_loopback = false).await;
    let files = fileserver::start().await;
    let port = files.addr.port();
    let links = [
        format!("http://127.0.0.1:{port}/call.wav"),
        format!("http://localhost:{port}/call.wav"),
        format!("http://[::1]:{port}/call.wav"),
        format!("http://[::ffff:127.0.0.1]:{port}/call.wav"),
        format!("http://[::ffff:7f00:1]:{port}/call.wav"),
        format!("http://2130706433:{port}/call.wav"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/".to_owned(),
        "http://10.0.0.1/call.wav".to_owned(),
        "http://10.255.255.254:8080/call.wav".to_owned(),
        "http://192.168.1.10/call.wav".to_owned(),
        "http://172.16.5.4/call.wav".to_owned(),
        "http://[fd00::1]/call.wav".to_owned(),
        "http://0.0.0.0/call.wav".to_owned(),
        "ftp://crm.example.com/call.wav".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    for (i, link) in links.iter().enumerate() {
        let call_id = format!("ssrf-{i}");
        let (status, code, field) = error_of(
            app.upload(&[
                ("call_id", &call_id),
                ("manager_id", "m1"),
                ("audio_url", link),
            ])
            .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str(), field.as_deref()),
            (400, "forbidden_url", Some("audio_url")),
            "{link}"
        );
        assert!(app.call_json(&call_id).await.is_none());
    }
    assert_eq!(files.hits(), 0, "no request reached the loopback server");
}

async fn private_networks_are_allowed_only_when_configured(backend: Backend) {
    // With private networks allowed, a private literal passes the guard; the
    // documentation range 192.0.2.0/24 stays refused, and nothing is sent to
    // a private address in this test (the reserved address is refused first).
    let app = spawn_app_with(backend, |c| {
        c.fetch_allow_loopback = false;
        c.fetch_allow_private = true;
    })
    .await;
    let (_, code, _) = error_of(
        app.upload(&[
            ("call_id", "c1"),
            ("manager_id", "m"),
            ("audio_url", "http://192.0.2.1/a.mp3"),
        ])
        .await,
    )
    .await;
    assert_eq!(code, "forbidden_url");
    let (_, code, _) = error_of(
        app.upload(&[
            ("call_id", "c2"),
            ("manager_id", "m"),
            ("audio_url", "http://169.254.169.254/"),
        ])
        .await,
    )
    .await;
    assert_eq!(code, "forbidden_url", "link-local is never allowed");
}

/// An administrator allows an on-premise CRM in the connection settings
/// (Настройки → Подключение, or the API): it takes effect at once.
async fn private_networks_are_allowed_by_the_connection_settings(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.fetch_allow_loopback = false).await;
    let app = &app;
    let upload = |call_id: &'static str, link: &'static str| async move {
        app.upload(&[
            ("call_id", call_id),
            ("manager_id", "m"),
            ("audio_url", link),
        ])
        .await
    };
    let (_, code, _) = error_of(upload("lan-1", "http://10.255.255.1/a.wav").await).await;
    assert_eq!(code, "forbidden_url");
    let allow = |allowed: bool| {
        app.put("/api/v1/settings/connection")
            .json(&serde_json::json!({
                "min_call_duration_secs": 0,
                "manager_channel": 0,
                "allow_private_networks": allowed,
            }))
            .send()
    };
    assert_eq!(allow(true).await.unwrap().status(), 200);
    // The guard lets the link through now. What happens next depends on the
    // network the tests run in: nothing answers (the call is accepted, to be
    // downloaded later) or something does without audio (refused as such).
    let passed = upload("lan-2", "http://10.255.255.1/a.wav").await;
    if passed.status() != 200 {
        let (_, code, _) = error_of(passed).await;
        assert_ne!(code, "forbidden_url");
    }
    let (_, code, _) = error_of(upload("lan-3", "http://169.254.169.254/").await).await;
    assert_eq!(code, "forbidden_url", "link-local is never allowed");
    assert_eq!(allow(false).await.unwrap().status(), 200);
    let (_, code, _) = error_of(upload("lan-4", "http://192.168.1.10/a.wav").await).await;
    assert_eq!(code, "forbidden_url");
}

async fn redirects_to_forbidden_addresses_are_refused(backend: Backend) {
    // Loopback is allowed so that the test's file server can answer; the
    // redirect targets are not, and are refused before any connection.
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    for (i, target) in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/call.wav",
        "http://192.168.0.1/call.wav",
        "http://[fe80::1]/call.wav",
        "ftp://crm.example.com/call.wav",
    ]
    .iter()
    .enumerate()
    {
        let link = files.url(&format!(
            "/redirect?to={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        ));
        let call_id = format!("redirect-{i}");
        let (status, code, _) = error_of(
            app.upload(&[
                ("call_id", &call_id),
                ("manager_id", "m1"),
                ("audio_url", &link),
            ])
            .await,
        )
        .await;
        assert_eq!((status, code.as_str()), (400, "forbidden_url"), "{target}");
        assert!(app.call_json(&call_id).await.is_none());
    }
    // A redirect to an allowed place is followed.
    let link = files.url(&format!("/redirect?to={}", files.url("/call.mp3")));
    assert_eq!(
        app.upload(&[
            ("call_id", "ok"),
            ("manager_id", "m1"),
            ("audio_url", &link)
        ])
        .await
        .status(),
        200
    );
}

on_both_backends!(
    internal_addresses_are_refused_without_any_request,
    private_networks_are_allowed_only_when_configured,
    private_networks_are_allowed_by_the_connection_settings,
    redirects_to_forbidden_addresses_are_refused,
);
