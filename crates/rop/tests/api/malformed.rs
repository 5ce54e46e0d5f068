//! Hostile and broken bodies: always a 400 with a JSON error, never a 500.

use crate::helpers::{error_of, spawn_app, Backend};
use crate::on_both_backends;

async fn broken_bodies_are_400_never_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = "я".repeat(600_000);
    let huge_json = format!(
        r#"{{"call_id":"c","manager_id":"m","audio_url":"https://a.ru/a.mp3","note":"{huge}"}}"#
    );
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            b"{not json".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            b"[1,2,3]".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            b"\"text\"".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            br#"{"call_id":{"a":1},"manager_id":"m","audio_url":"https://a.ru/a"}"#.to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            br#"{"call_id":true,"manager_id":"m","audio_url":"https://a.ru/a"}"#.to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            br#"{"call_id":"c","manager_id":["m"],"audio_url":"https://a.ru/a"}"#.to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            huge_json.into_bytes(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            deep.clone().into_bytes(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/json",
            vec![0xff, 0xfe, 0x00, 0x7b],
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/x-www-form-urlencoded",
            b"call_id=%ZZ&manager_id=m".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "application/x-www-form-urlencoded",
            format!(
                "call_id=c&manager_id=m&audio_url=https://a.ru/a&x={}",
                "a".repeat(5000)
            )
            .into_bytes(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\ngarbage".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "multipart/form-data",
            b"no boundary".to_vec(),
        ),
        (
            "/api/v1/calls/audio-upload",
            "text/plain",
            b"call_id=c".to_vec(),
        ),
        ("/api/v1/calls/audio-upload", "", Vec::new()),
        (
            "/api/v1/settings/offices-update",
            "application/json",
            b"{\"offices\": [".to_vec(),
        ),
        (
            "/api/v1/settings/offices-update",
            "application/json",
            deep.into_bytes(),
        ),
        (
            "/api/v1/settings/managers-update",
            "application/json",
            b"null".to_vec(),
        ),
        (
            "/api/v1/settings/managers-update",
            "application/json",
            br#"{"managers": [{"manager_id": "m", "name": 7}]}"#.to_vec(),
        ),
    ];
    for (path, content_type, body) in cases {
        let mut request = app.post(path).body(body.clone());
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.unwrap();
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            status,
            400,
            "{path} {content_type} {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert_eq!(code, "invalid_request");
    }
    let calls: serde_json::Value = app
        .get("/api/v1/calls")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        calls["calls"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
    assert!(app.store.managers().await.unwrap().is_empty());
}

on_both_backends!(broken_bodies_are_400_never_500);
