use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::json;

use crate::fileserver::{self, wav};
use crate::helpers::{error_of, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

async fn multipart_upload_with_link_is_queued_and_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let form = Form::new()
        .text("manager_id", "mgr_001")
        .text("call_id", "call_12345_20250619")
        .text("deal_id", "deal_5678")
        .text("deal_stage_id", "stage_qualification")
        .text("direction", "outgoing")
        .text("duration", "95")
        .text("call_started_at", "2025-06-19T10:00:00+03:00")
        .text("utm_source", "яндекс")
        .text("audio_url", files.url("/call.mp3"));
    let response = app
        .post("/api/v1/calls/audio-upload")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "queued", "call_id": "call_12345_20250619"})
    );

    let call = app.call_json("call_12345_20250619").await.expect("stored");
    assert_eq!(call["status"], "received");
    assert_eq!(call["manager_id"], "mgr_001");
    assert_eq!(call["deal_stage_id"], "stage_qualification");
    assert_eq!(call["direction"], "outgoing");
    assert_eq!(call["declared_duration"], 95.0);
    assert_eq!(call["call_started_at"], "2025-06-19T07:00:00Z");
    assert_eq!(call["metadata"], json!({"utm_source": "яндекс"}));
    assert_eq!(call["audio_url"], files.url("/call.mp3"));
    let history = call["history"].as_array().unwrap();
    assert!(history
        .iter()
        .any(|e| e["step"] == "probe" && e["message"].as_str().unwrap().contains("MP3")));
    // The unknown manager exists now, as a placeholder without a name.
    let managers = app.store.managers().await.unwrap();
    assert_eq!(managers.len(), 1);
    assert_eq!(managers[0].manager_id.as_str(), "mgr_001");
    assert_eq!(managers[0].name, None);
}

async fn urlencoded_and_json_bodies_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let wav_url = files.url("/call.wav");
    let response = app
        .upload(&[
            ("call_id", "form-1"),
            ("manager_id", "m1"),
            ("audio_url", &wav_url),
        ])
        .await;
    assert_eq!(response.status(), 200);

    let response = app
        .post("/api/v1/calls/audio-upload")
        .json(&json!({
            "call_id": 987654,
            "manager_id": 42,
            "audio_url": files.url("/call.ogg"),
            "duration": 61.5,
            "crm_flag": true,
            "source": null,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = app.call_json("987654").await.unwrap();
    assert_eq!(call["manager_id"], "42");
    assert_eq!(call["declared_duration"], 61.5);
    assert_eq!(call["metadata"], json!({"crm_flag": "true"}));
}

async fn file_part_goes_to_the_blob_store_and_delete_removes_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let audio = wav(1, true);
    app.upload_file("with-file", audio.clone(), &[]).await;
    let call = app.call_json("with-file").await.unwrap();
    assert_eq!(call["uploaded_file_bytes"], audio.len() as u64);
    assert_eq!(call["audio_url"], serde_json::Value::Null);
    assert_eq!(app.files_in("blobs"), 1);
    assert_eq!(app.files_in("staging"), 0);

    let response = app.delete("/api/v1/calls/with-file").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.files_in("blobs"),
        0,
        "the audio is deleted with the call"
    );
    assert!(app.call_json("with-file").await.is_none());
}

async fn file_part_that_is_not_audio_or_too_big_changes_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.max_upload_bytes = 64 * 1024).await;
    let cases = [
        (b"<html><body>oops</body></html>".to_vec(), "not_audio"),
        (fileserver::PNG.to_vec(), "not_audio"),
        (wav(10, true), "too_large"),
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        let call_id = format!("bad-file-{i}");
        let form = Form::new()
            .text("call_id", call_id.clone())
            .text("manager_id", "m1")
            .part("file", Part::bytes(bytes).file_name("x.wav"));
        let response = app
            .post("/api/v1/calls/audio-upload")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (400, code.to_owned(), Some("file".to_owned()))
        );
        assert!(app.call_json(&call_id).await.is_none());
    }
    assert_eq!(app.files_in("blobs"), 0);
    assert_eq!(app.files_in("staging"), 0, "staged parts are removed");
    assert!(
        app.store.managers().await.unwrap().is_empty(),
        "no placeholder manager either"
    );
}

async fn required_fields_are_named_in_the_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let link = "https://crm.example.com/a.mp3";
    for (fields, field) in [
        (vec![("manager_id", "m"), ("audio_url", link)], "call_id"),
        (vec![("call_id", "c"), ("audio_url", link)], "manager_id"),
        (vec![("call_id", "c"), ("manager_id", "m")], "audio_url"),
        (
            vec![("call_id", " "), ("manager_id", "m"), ("audio_url", link)],
            "call_id",
        ),
        (
            vec![
                ("call_id", "c"),
                ("manager_id", "m"),
                ("audio_url", "no link"),
            ],
            "audio_url",
        ),
        (
            vec![
                ("call_id", "c"),
                ("manager_id", "m"),
                ("audio_url", link),
                ("duration", "abc"),
            ],
            "duration",
        ),
        (
            vec![
                ("call_id", "c"),
                ("manager_id", "m"),
                ("audio_url", link),
                ("direction", "up"),
            ],
            "direction",
        ),
    ] {
        let (status, code, named) = error_of(app.upload(&fields).await).await;
        assert_eq!(
            (status, code.as_str(), named.as_deref()),
            (400, "invalid_request", Some(field)),
            "{fields:?}"
        );
    }
    let long_id = "x".repeat(257);
    let (_, _, field) = error_of(
        app.upload(&[
            ("call_id", &long_id),
            ("manager_id", "m"),
            ("audio_url", link),
        ])
        .await,
    )
    .await;
    assert_eq!(field.as_deref(), Some("call_id"));

    let form = Form::new()
        .text("call_id", "both")
        .text("manager_id", "m")
        .text("audio_url", link)
        .part("file", Part::bytes(wav(1, true)).file_name("a.wav"));
    let response = app
        .post("/api/v1/calls/audio-upload")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.1, "invalid_request");
    assert!(app.call_json("both").await.is_none());
}

async fn repeated_call_id_is_a_conflict(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let link = files.url("/call.wav");
    let fields = [
        ("call_id", "dup"),
        ("manager_id", "m1"),
        ("audio_url", link.as_str()),
    ];
    assert_eq!(app.upload(&fields).await.status(), 200);
    let (status, code, field) = error_of(app.upload(&fields).await).await;
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (409, "duplicate_call", Some("call_id"))
    );
    // Also when the first one was skipped.
    let skipped = [
        ("call_id", "dup-skip"),
        ("manager_id", "m1"),
        ("audio_url", link.as_str()),
        ("duration", "0"),
    ];
    let response = app
        .client
        .put(app.url("/api/v1/settings/connection"))
        .header("X-Api-Key", &app.key)
        .json(&json!({"min_call_duration_secs": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.upload(&skipped).await.status(), 200);
    assert_eq!(app.upload(&skipped).await.status(), 409);
}

async fn fifty_concurrent_uploads_of_one_call_id_give_exactly_one_200(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let link = files.url("/call.wav");
    let uploads = (0..50).map(|_| {
        let request = app.post("/api/v1/calls/audio-upload").form(&[
            ("call_id", "race"),
            ("manager_id", "m1"),
            ("audio_url", link.as_str()),
        ]);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(uploads).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        49,
        "{statuses:?}"
    );
    let call = app.call_json("race").await.unwrap();
    assert_eq!(call["status"], "received");
}

/// New calls and repeats arriving together (and so committed together on
/// SQLite) each get their own answer; a rejected repeat leaves nothing behind.
async fn mixed_concurrent_uploads_store_new_calls_and_reject_repeats(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let link = files.url("/call.wav");
    let upload = |call_id: String, manager_id: String| {
        let request = app.post("/api/v1/calls/audio-upload").form(&[
            ("call_id", call_id.as_str()),
            ("manager_id", manager_id.as_str()),
            ("audio_url", link.as_str()),
        ]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(upload("mix-0".into(), "m-first".into()).await, 200);
    let uploads = (0..40).map(|n| {
        if n % 4 == 0 {
            // A repeat of a stored call, naming a manager nobody else names.
            upload("mix-0".into(), format!("m-repeat-{n}"))
        } else {
            upload(format!("mix-{}", n + 1), format!("m{}", n % 3))
        }
    });
    let statuses = futures_util::future::join_all(uploads).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        30,
        "{statuses:?}"
    );

    let page = app.get("/api/v1/calls?limit=100").send().await.unwrap();
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page["calls"].as_array().unwrap().len(), 31, "{page}");
    for n in (1..=40).filter(|n| (n - 1) % 4 != 0) {
        let call = app.call_json(&format!("mix-{n}")).await.unwrap();
        assert_eq!(call["manager_id"], format!("m{}", (n - 1) % 3));
        assert!(!call["history"].as_array().unwrap().is_empty(), "{call}");
    }
    assert_eq!(
        app.call_json("mix-0").await.unwrap()["manager_id"],
        "m-first"
    );
    let managers = app.store.managers().await.unwrap();
    let mut ids: Vec<&str> = managers.iter().map(|m| m.manager_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["m-first", "m0", "m1", "m2"]);
}

async fn calls_below_the_minimum_duration_are_skipped(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let response = app
        .client
        .put(app.url("/api/v1/settings/connection"))
        .header("X-Api-Key", &app.key)
        .json(&json!({"min_call_duration_secs": 30, "manager_channel": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let link = files.url("/call.wav");
    let response = app
        .upload(&[
            ("call_id", "short"),
            ("manager_id", "m1"),
            ("audio_url", &link),
            ("duration", "12"),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "skipped");
    assert!(body["reason"].as_str().unwrap().contains("12"));
    let hits_before = files.hits();
    let call = app.call_json("short").await.unwrap();
    assert_eq!(call["status"], "skipped");
    assert_eq!(files.hits(), hits_before);

    // No declared duration, or a long enough one: processed.
    let response = app
        .upload(&[
            ("call_id", "long"),
            ("manager_id", "m1"),
            ("audio_url", &link),
            ("duration", "30"),
        ])
        .await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "queued"
    );
    let response = app
        .upload(&[
            ("call_id", "unknown-length"),
            ("manager_id", "m1"),
            ("audio_url", &link),
        ])
        .await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "queued"
    );
}

async fn declared_limits_are_enforced(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.max_upload_bytes = 10 * 1024 * 1024).await;
    let files = fileserver::start().await;
    let cases = [
        (files.url("/call.wav"), Some("2701"), "too_long"),
        (files.url("/three-hours.wav"), None, "too_long"),
        (files.url("/huge.mp3"), None, "too_large"),
    ];
    for (i, (link, duration, code)) in cases.iter().enumerate() {
        let call_id = format!("limit-{i}");
        let mut fields = vec![
            ("call_id", call_id.as_str()),
            ("manager_id", "m1"),
            ("audio_url", link.as_str()),
        ];
        if let Some(duration) = duration {
            fields.push(("duration", duration));
        }
        let (status, got, _) = error_of(app.upload(&fields).await).await;
        assert_eq!((status, got.as_str()), (400, *code), "{link}");
        assert!(app.call_json(&call_id).await.is_none());
    }
}

async fn probe_tells_audio_from_everything_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    let silent = format!("http://{}/never.mp3", files.silent_addr);
    let cases: Vec<(String, Result<&str, &str>)> = vec![
        (files.url("/call.wav"), Ok("WAV")),
        (files.url("/call.mp3"), Ok("MP3")),
        (files.url("/call.ogg"), Ok("OGG")),
        (files.url("/page.html"), Err("not_audio")),
        (files.url("/data.json"), Err("not_audio")),
        (files.url("/image.png"), Err("not_audio")),
        (files.url("/empty.mp3"), Err("not_audio")),
        (files.url("/missing.mp3"), Err("audio_unreachable")),
        (files.url("/forbidden.mp3"), Err("audio_unreachable")),
        (files.url("/gone.mp3"), Err("audio_unreachable")),
        // The source's trouble, not the CRM's: accepted, retried later.
        (files.url("/error.mp3"), Ok("500")),
        (files.url("/unavailable.mp3"), Ok("503")),
        (silent, Ok("no answer")),
    ];
    for (i, (link, expected)) in cases.iter().enumerate() {
        let call_id = format!("probe-{i}");
        let started = std::time::Instant::now();
        let response = app
            .upload(&[
                ("call_id", &call_id),
                ("manager_id", "m1"),
                ("audio_url", link),
            ])
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the probe is bounded in time"
        );
        match expected {
            Ok(in_history) => {
                assert_eq!(response.status(), 200, "{link}");
                let call = app.call_json(&call_id).await.unwrap();
                let probe = call["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["step"] == "probe")
                    .expect("probe line in history")
                    .clone();
                assert!(
                    probe["message"].as_str().unwrap().contains(in_history),
                    "{link}: {probe}"
                );
            }
            Err(code) => {
                let (status, got, field) = error_of(response).await;
                assert_eq!(
                    (status, got.as_str(), field.as_deref()),
                    (400, *code, Some("audio_url")),
                    "{link}"
                );
                assert!(app.call_json(&call_id).await.is_none());
            }
        }
    }
}

on_both_backends!(
    multipart_upload_with_link_is_queued_and_stored,
    urlencoded_and_json_bodies_are_accepted,
    file_part_goes_to_the_blob_store_and_delete_removes_it,
    file_part_that_is_not_audio_or_too_big_changes_nothing,
    required_fields_are_named_in_the_error,
    repeated_call_id_is_a_conflict,
    fifty_concurrent_uploads_of_one_call_id_give_exactly_one_200,
    mixed_concurrent_uploads_store_new_calls_and_reject_repeats,
    calls_below_the_minimum_duration_are_skipped,
    declared_limits_are_enforced,
    probe_tells_audio_from_everything_else,
);
