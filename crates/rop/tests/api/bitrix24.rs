//! Bitrix24 end to end over loopback HTTP, against the double of
//! `rop_testkit::bitrix24`: an inbound webhook and an OAuth application,
//! the export of the telephony statistics into the pipeline under the
//! portal's leaky bucket, the timeline comment written back, and the
//! call-end event with its application token.

use std::time::Duration;

use chrono::Utc;
use rop_integrations::bitrix24::CALL_TASK;
use rop_integrations::tasks::TaskHandler;
use rop_testkit::bitrix24::{
    call_id, B24User, Bitrix24Double, StatRecord, CLIENT_ID, CLIENT_SECRET,
};
use rop_testkit::transcription::TranscriptionDouble;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::pipeline::{stereo_wav, wait_for, with_workers};

const APP_TOKEN: &str = "app-token-5f2c1a9e7b3d";
const IN_MARCH: &str = "2026-03-10T11:19:38+03:00";

async fn put_settings(app: &TestApp, body: Value) -> reqwest::Response {
    app.put("/api/v1/integrations/bitrix24")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app.post(path).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn user(id: i64, name: &str) -> B24User {
    B24User {
        id,
        name: name.into(),
        last_name: "Иванова".into(),
        email: format!("{id}@example.ru"),
        inner_phone: Some(format!("{}", 100 + id)),
    }
}

fn record(id: i64, user: i64, file: Option<i64>) -> StatRecord {
    StatRecord {
        id,
        portal_user_id: user,
        phone: "79001234567".into(),
        call_type: 2,
        duration: 95,
        start: IN_MARCH.into(),
        record_file_id: file,
        crm_entity_type: Some("CONTACT".into()),
        crm_entity_id: Some(797),
        failed_code: "200".into(),
    }
}

async fn connect_webhook(app: &TestApp, bitrix: &Bitrix24Double) {
    let response = put_settings(
        app,
        json!({
            "enabled": true, "auth_mode": "webhook", "webhook_url": bitrix.webhook_url(),
            "application_token": APP_TOKEN, "realtime": true, "write_comment": true
        }),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A webhook: refused when malformed, its secret never shown, the users
/// read page by page; another secret is refused by the portal. Then an
/// OAuth application: consent, code exchange, and a refresh once the
/// hour is over.
async fn connects_by_webhook_and_by_oauth(backend: Backend) {
    let app = spawn_app(backend).await;
    let bitrix = Bitrix24Double::start().await;
    for id in 1..=55 {
        bitrix.add_user(user(id, &format!("Сотрудник {id}")));
    }

    for (bad, field) in [
        (
            json!({"enabled": true, "webhook_url": format!("{}/crm/", bitrix.base_url())}),
            "webhook_url",
        ),
        (
            json!({"enabled": true, "webhook_url": bitrix.webhook_url(), "realtime": true}),
            "application_token",
        ),
        (json!({"enabled": true, "auth_mode": "oauth"}), "client_id"),
    ] {
        let response = put_settings(&app, bad).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    assert!(app
        .store
        .setting("integration.bitrix24")
        .await
        .unwrap()
        .is_none());

    connect_webhook(&app, &bitrix).await;
    let shown = get(&app, "/api/v1/integrations/bitrix24").await;
    let secret = bitrix
        .webhook_url()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(!shown.to_string().contains(&secret), "{shown}");
    assert!(!shown.to_string().contains(APP_TOKEN));
    let audit = app.store.audit_entries(None, 10).await.unwrap();
    assert!(audit
        .iter()
        .all(|e| !e.details.contains(&secret) && !e.details.contains(APP_TOKEN)));

    let (status, body) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!((status, &body["users"]), (200, &json!(55)), "{body}");
    let settings = get(&app, "/api/v1/integrations/bitrix24").await;
    assert_eq!(settings["users"][0]["name"], "Сотрудник 1 Иванова");

    let wrong = bitrix.webhook_url().replace(&secret, "not-the-secret");
    let response = put_settings(
        &app,
        json!({"enabled": true, "webhook_url": wrong, "realtime": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (status, body) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("bitrix24_unauthorized"))
    );

    // An application.
    let response = put_settings(
        &app,
        json!({
            "enabled": true, "auth_mode": "oauth", "portal_url": bitrix.base_url(),
            "oauth_url": bitrix.oauth_url(), "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "realtime": true
        }),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (status, body) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (502, &json!("bitrix24_unauthorized"))
    );
    let consent = get(&app, "/api/v1/integrations/bitrix24/oauth").await;
    let consent = consent["url"].as_str().unwrap();
    assert!(consent.starts_with(&format!("{}/oauth/authorize/", bitrix.base_url())));
    let code = bitrix.issue_code();
    let (status, body) = post(
        &app,
        "/api/v1/integrations/bitrix24/oauth",
        json!({"code": code}),
    )
    .await;
    assert_eq!((status, &body["users"]), (200, &json!(55)), "{body}");
    let (status, _) = post(
        &app,
        "/api/v1/integrations/bitrix24/oauth",
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 502, "a code works once");
    bitrix.expire_access_tokens();
    let (status, body) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(status, 200, "refreshed after expired_token: {body}");
    bitrix.expire_access_tokens();
    let (status, _) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(status, 200, "the new refresh token was stored");
}

/// The export reads the statistics by `ID > last` past 50-row pages, leaves
/// out short calls and calls without a recording, waits out the portal's
/// 503 QUERY_LIMIT_EXCEEDED, imports the recordings with their employee
/// and CRM record, and the analysis comes back as a timeline comment.
async fn exports_calls_and_comments_on_the_timeline(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let bitrix = Bitrix24Double::start().await;
    bitrix.add_user(user(1, "Анна"));
    bitrix.add_user(user(2, "Борис"));
    bitrix.add_file(9001, stereo_wav());
    bitrix.add_file(9002, stereo_wav());
    bitrix.add_record(record(7, 1, Some(9001)));
    bitrix.add_record(StatRecord {
        call_type: 1,
        duration: 40,
        phone: "79005554433".into(),
        crm_entity_type: Some("COMPANY".into()),
        crm_entity_id: Some(55),
        ..record(8, 2, Some(9002))
    });
    // Too short; no recording; before the period.
    bitrix.add_record(StatRecord {
        duration: 10,
        ..record(9, 1, Some(9001))
    });
    bitrix.add_record(record(10, 1, None));
    bitrix.add_record(StatRecord {
        start: "2026-01-10T11:00:00+03:00".into(),
        ..record(11, 1, Some(9001))
    });
    for id in 100..160 {
        bitrix.add_record(record(id, 2, None));
    }
    connect_webhook(&app, &bitrix).await;
    let (status, _) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(status, 200);
    let response = app
        .put("/api/v1/integrations/bitrix24/users")
        .json(&json!({"1": "anna"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = post(
        &app,
        "/api/v1/checklists",
        json!({"checklist_id": "script", "name": "Скрипт продаж", "stages": [
            {"stage_id": "greeting", "name": "Приветствие", "example_phrases": ["тона 440 герц"]}
        ]}),
    )
    .await;
    assert_eq!(status, 201);
    // A small bucket: our two requests a second overflow it now and then.
    bitrix.set_bucket(2, 1.0);

    let export = run_export(&app, json!({"date_from": "2026-03-01"})).await;
    assert_eq!(export["state"], "done", "{export:#}");
    let progress = &export["progress"];
    assert_eq!(progress["found"], 63, "{progress:#}");
    assert_eq!(progress["imported"], 2, "{progress:#}");
    assert_eq!(progress["skipped"], 61, "{progress:#}");
    assert_eq!(progress["failed"], 0, "{progress:#}");
    assert!(
        bitrix.limit_refusals() > 0,
        "the bucket overflowed at least once"
    );

    let first = wait_for(&app, "bitrix24-7", |c| c["status"] == "done").await;
    assert_eq!(first["manager_id"], "anna");
    assert_eq!(first["direction"], "incoming");
    assert_eq!(first["client_phone"], "79001234567");
    assert_eq!(first["call_started_at"], "2026-03-10T08:19:38Z");
    assert_eq!(first["metadata"]["crm_entity_type"], "contact");
    assert_eq!(first["metadata"]["bitrix24_call_id"], call_id(7));
    let second = wait_for(&app, "bitrix24-8", |c| c["status"] == "done").await;
    assert_eq!(second["manager_id"], "bitrix24-2");
    assert_eq!(second["direction"], "outgoing");
    for skipped in ["bitrix24-9", "bitrix24-10", "bitrix24-11"] {
        assert!(app.call_json(skipped).await.is_none(), "{skipped}");
    }
    assert_eq!(bitrix.downloads(), 2);

    let started = std::time::Instant::now();
    while bitrix.comments().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no comments written back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let comments = bitrix.comments();
    let on_contact = comments
        .iter()
        .find(|c| c["ENTITY_TYPE"] == "contact")
        .expect("a comment on the contact");
    assert_eq!(on_contact["ENTITY_ID"], 797);
    let text = on_contact["COMMENT"].as_str().unwrap();
    assert!(
        text.contains("Скрипт продаж") && text.contains("Приветствие"),
        "{text}"
    );
    assert!(comments
        .iter()
        .any(|c| c["ENTITY_TYPE"] == "company" && c["ENTITY_ID"] == 55));

    let again = run_export(&app, json!({"date_from": "2026-03-01", "user_ids": [1]})).await;
    assert_eq!(again["progress"]["imported"], 0, "{again:#}");
    assert_eq!(
        again["progress"]["skipped"], 2,
        "Анна's two calls of 30 s or more"
    );
}

async fn run_export(app: &TestApp, request: Value) -> Value {
    let (status, export) = post(app, "/api/v1/integrations/bitrix24/exports", request).await;
    assert_eq!(status, 202, "{export}");
    let id = export["id"].as_i64().unwrap();
    let started = std::time::Instant::now();
    loop {
        let export = get(app, &format!("/api/v1/integrations/bitrix24/exports/{id}")).await;
        if export["state"] != "queued" && export["state"] != "running" {
            return export;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "export never ended: {export:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Call-end events: every wrong one refused with nothing queued; a right
/// one queues the call once, and its task imports the recording — or waits
/// while Bitrix24 has not attached it yet.
async fn call_end_events_import_calls(backend: Backend) {
    let app = spawn_app(backend).await;
    let bitrix = Bitrix24Double::start().await;
    bitrix.add_file(9001, stereo_wav());
    let recorded = record(7, 1, Some(9001));
    let pending = record(8, 1, None);
    bitrix.add_record(recorded.clone());
    bitrix.add_record(pending.clone());
    let url = app.url("/exec/Bitrix24.event");

    let response = bitrix.post_call_end(&url, APP_TOKEN, &recorded).await;
    assert_eq!(response.status(), 503, "not connected yet");
    connect_webhook(&app, &bitrix).await;
    let response = bitrix.post_call_end(&url, "wrong-token", &recorded).await;
    assert_eq!(response.status(), 401);
    let client = reqwest::Client::new();
    for (body, want) in [
        ("event=ONVOXIMPLANTCALLEND&data[CALL_ID]=x", 401),
        (
            "event=ONCRMDEALADD&data[ID]=1&auth[application_token]=app-token-5f2c1a9e7b3d",
            400,
        ),
        (
            "event=ONVOXIMPLANTCALLEND&auth[application_token]=app-token-5f2c1a9e7b3d",
            400,
        ),
        ("%%%garbage", 401),
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{body}");
    }
    let response = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(app.store.tasks(CALL_TASK, 10).await.unwrap().is_empty());

    for record in [&recorded, &recorded, &pending] {
        let response = bitrix.post_call_end(&url, APP_TOKEN, record).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let tasks = app.store.tasks(CALL_TASK, 10).await.unwrap();
    assert_eq!(tasks.len(), 2, "a repeated event queues nothing more");

    // The tasks are due in 15 s; a worker runs them as if that time had come.
    let integrations = rop::app::open_integrations(&app.config).await.unwrap();
    let later = Utc::now() + chrono::Duration::seconds(20);
    for _ in 0..2 {
        let task = app
            .store
            .claim_task(
                "test-worker",
                &[CALL_TASK],
                later + chrono::Duration::minutes(5),
                later,
            )
            .await
            .unwrap()
            .expect("a due call task");
        let outcome = integrations.bitrix24.run(&task).await;
        if task.key == call_id(7) {
            assert_eq!(outcome, rop_domain::TaskOutcome::Done);
        } else {
            assert!(
                matches!(&outcome, rop_domain::TaskOutcome::Retry { error, .. } if error.contains("запись")),
                "{outcome:?}"
            );
        }
        assert!(app.store.finish_task(&task, &outcome, later).await.unwrap());
    }
    let call = app.call_json("bitrix24-7").await.expect("imported");
    assert_eq!(call["manager_id"], "bitrix24-1");
    assert_eq!(call["metadata"]["crm"], "bitrix24");
    assert!(app.call_json("bitrix24-8").await.is_none());
}

/// Bad requests refused, one export at a time, and an export whose worker
/// died goes on after the last row it had saved.
async fn exports_are_checked_and_resumed(backend: Backend) {
    let app = spawn_app(backend).await;
    let bitrix = Bitrix24Double::start().await;
    bitrix.add_user(user(1, "Анна"));
    for id in 1..=120 {
        bitrix.add_record(record(id, 1, None));
    }
    let (status, body) = post(
        &app,
        "/api/v1/integrations/bitrix24/exports",
        json!({"date_from": "2026-03-01"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_connected"))
    );
    connect_webhook(&app, &bitrix).await;
    let (status, _) = post(&app, "/api/v1/integrations/bitrix24/check", json!({})).await;
    assert_eq!(status, 200);
    for (bad, field) in [
        (json!({"date_from": "2999-01-01"}), "date_from"),
        (
            json!({"date_from": "2026-03-01", "user_ids": [42]}),
            "user_ids",
        ),
        (
            json!({"date_from": "2026-03-01", "min_duration_secs": 100000}),
            "min_duration_secs",
        ),
    ] {
        let (status, body) = post(&app, "/api/v1/integrations/bitrix24/exports", bad).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!(field)),
            "{body}"
        );
    }
    let (status, export) = post(
        &app,
        "/api/v1/integrations/bitrix24/exports",
        json!({"date_from": "2026-03-01"}),
    )
    .await;
    assert_eq!(status, 202);
    let (status, body) = post(
        &app,
        "/api/v1/integrations/bitrix24/exports",
        json!({"date_from": "2026-03-01"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("export_running"))
    );

    // A worker read up to row 100, saved that, and died.
    let now = Utc::now();
    let dead = app
        .store
        .claim_task(
            "dead-worker",
            &[rop_integrations::bitrix24::EXPORT_TASK],
            now,
            now,
        )
        .await
        .unwrap()
        .unwrap();
    let mut state: Value = serde_json::from_str(&dead.payload).unwrap();
    state["last_id"] = json!(100);
    state["progress"]["found"] = json!(100);
    state["progress"]["skipped"] = json!(100);
    assert!(app
        .store
        .save_task_progress(&dead, &state.to_string(), now, now)
        .await
        .unwrap());
    let integrations = rop::app::open_integrations(&app.config).await.unwrap();
    let later = Utc::now() + chrono::Duration::seconds(1);
    let task = app
        .store
        .claim_task(
            "second-worker",
            &[rop_integrations::bitrix24::EXPORT_TASK],
            later + chrono::Duration::minutes(5),
            later,
        )
        .await
        .unwrap()
        .expect("claimed again");
    let outcome = integrations.bitrix24.run(&task).await;
    assert!(app
        .store
        .finish_task(&task, &outcome, Utc::now())
        .await
        .unwrap());
    let id = export["id"].as_i64().unwrap();
    let export = get(&app, &format!("/api/v1/integrations/bitrix24/exports/{id}")).await;
    assert_eq!(export["state"], "done", "{export:#}");
    assert_eq!(
        export["progress"]["found"], 120,
        "rows 101–120 only: {export:#}"
    );
    assert_eq!(export["progress"]["skipped"], 120);
    let statistics_reads = bitrix
        .calls()
        .iter()
        .filter(|m| *m == "voximplant.statistic.get")
        .count();
    assert_eq!(
        statistics_reads, 2,
        "one page after row 100, then the empty one"
    );
}

on_both_backends!(
    connects_by_webhook_and_by_oauth,
    exports_calls_and_comments_on_the_timeline,
    call_end_events_import_calls,
    exports_are_checked_and_resumed,
);
