//! amoCRM end to end over loopback HTTP, against the double of
//! `rop_testkit::amocrm`: sign-in by OAuth (single-use refresh tokens) and
//! by a long-lived token, the export of call notes into the pipeline with
//! deal, stage and manager, the write-back of the analysis to the deal, and
//! an export that goes on from its saved page after its worker died.

use std::time::Duration;

use chrono::Utc;
use rop_integrations::amocrm::EXPORT_TASK;
use rop_integrations::tasks::TaskHandler;
use rop_testkit::amocrm::{AmocrmDouble, CallNote, Lead, User, CLIENT_ID, CLIENT_SECRET};
use rop_testkit::transcription::TranscriptionDouble;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::pipeline::{stereo_wav, wait_for, with_workers};

/// 2024-05-01 12:00:00 UTC, inside May.
const IN_MAY: i64 = 1_714_564_800;
const REDIRECT: &str = "https://rop.example.ru/settings/integrations/amocrm/oauth";

async fn put_settings(app: &TestApp, body: Value) -> reqwest::Response {
    app.put("/api/v1/integrations/amocrm")
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

fn note(id: i64, entity: &'static str, entity_id: i64, user: i64) -> CallNote {
    CallNote {
        id,
        entity,
        entity_id,
        incoming: true,
        created_at: IN_MAY,
        responsible_user_id: user,
        duration: 95,
        phone: "+79001234567".into(),
        link: String::new(),
        call_status: 4,
        call_result: "Договорились о встрече".into(),
    }
}

fn checklist() -> Value {
    json!({
        "checklist_id": "script",
        "name": "Скрипт продаж",
        "stages": [
            {"stage_id": "greeting", "name": "Приветствие", "example_phrases": ["тона 440 герц"]},
            {"stage_id": "offer", "name": "Предложение", "example_phrases": ["коммерческое предложение"]}
        ]
    })
}

/// OAuth: the code is exchanged once, the token refreshed on 401 with the
/// single-use refresh token (one refresh for two requests that need it),
/// secrets never shown back; then a long-lived token, which is never
/// refreshed.
async fn signs_in_refreshes_and_checks(backend: Backend) {
    let app = spawn_app(backend).await;
    let amocrm = AmocrmDouble::start().await;
    amocrm.add_user(User {
        id: 11,
        name: "Анна".into(),
        email: "anna@example.ru".into(),
    });

    // Not enough to switch on: refused, nothing saved.
    let response = put_settings(
        &app,
        json!({"enabled": true, "base_url": amocrm.base_url(), "auth_mode": "oauth"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "client_id");
    assert_eq!(
        get(&app, "/api/v1/integrations/amocrm").await["enabled"],
        false
    );

    let response = put_settings(
        &app,
        json!({
            "enabled": true, "base_url": amocrm.base_url(), "auth_mode": "oauth",
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT,
        }),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let shown = get(&app, "/api/v1/integrations/amocrm").await;
    assert_eq!(shown["signed_in"], false);
    assert_ne!(shown["client_secret"], CLIENT_SECRET);
    assert!(!shown.to_string().contains(CLIENT_SECRET));
    let audit = app.store.audit_entries(None, 10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "amocrm.update"));
    assert!(audit.iter().all(|e| !e.details.contains(CLIENT_SECRET)));

    // Before the sign-in there is no token to use.
    let (status, body) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "amocrm_unauthorized");

    let consent = get(&app, "/api/v1/integrations/amocrm/oauth").await;
    let consent = consent["url"].as_str().unwrap();
    assert!(consent.starts_with(&amocrm.base_url()), "{consent}");
    assert!(consent.contains(CLIENT_ID) && consent.contains("state="));

    let code = amocrm.issue_code(REDIRECT);
    let (status, body) = post(
        &app,
        "/api/v1/integrations/amocrm/oauth",
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"], 1);
    assert_eq!(
        get(&app, "/api/v1/integrations/amocrm").await["signed_in"],
        true
    );
    // A code works once.
    let (status, _) = post(
        &app,
        "/api/v1/integrations/amocrm/oauth",
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 502);
    // The first pair is still the stored one.
    let (status, _) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(amocrm.token_grants(), 1);

    // A day later: two requests at once meet the 401, one refresh serves
    // both, and the spent refresh token is never offered again.
    amocrm.expire_access_tokens();
    let (first, second) = tokio::join!(
        post(&app, "/api/v1/integrations/amocrm/check", json!({})),
        post(&app, "/api/v1/integrations/amocrm/check", json!({})),
    );
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    assert_eq!(amocrm.token_grants(), 2, "one refresh");
    amocrm.expire_access_tokens();
    let (status, _) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 200, "the new refresh token was stored and works");
    assert_eq!(amocrm.token_grants(), 3);
    assert_eq!(amocrm.rate_limited(), 0);

    // A long-lived token: used as is, never refreshed.
    let response = put_settings(
        &app,
        json!({
            "enabled": true, "base_url": amocrm.base_url(), "auth_mode": "long_lived_token",
            "long_lived_token": amocrm.long_lived_token(),
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (status, _) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 200);
    let response = put_settings(
        &app,
        json!({
            "enabled": true, "base_url": amocrm.base_url(), "auth_mode": "long_lived_token",
            "long_lived_token": "revoked-token",
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (status, body) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "amocrm_unauthorized");
    assert_eq!(
        amocrm.token_grants(),
        3,
        "a long-lived token is not refreshed"
    );
}

/// The export: call notes of the period on deals, contacts and companies
/// (two pages of them), filtered, imported with deal, stage, manager and
/// mapped fields; the clients directory filled; the analysis written back
/// as a note and a field on the deal; a second export imports nothing
/// again unless asked to re-export; never more than 7 requests a second.
async fn exports_calls_and_writes_back(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let amocrm = AmocrmDouble::start().await;
    for (id, name) in [(11, "Анна"), (12, "Борис")] {
        amocrm.add_user(User {
            id,
            name: name.into(),
            email: format!("{id}@example.ru"),
        });
    }
    amocrm.add_pipeline(100, "Продажи", &[(200, "Переговоры")]);
    amocrm.add_custom_field(300, "Источник");
    amocrm.add_custom_field(301, "Оценка звонка");
    amocrm.add_lead(Lead {
        id: 5001,
        name: "Окна для дачи".into(),
        price: 120_000,
        pipeline_id: 100,
        status_id: 200,
        responsible_user_id: 11,
        custom_fields: vec![(300, "yandex".into())],
    });
    let recording = amocrm.add_recording("call-1.wav", stereo_wav());
    let other = amocrm.add_recording("call-2.wav", stereo_wav());
    amocrm.add_call_note(CallNote {
        link: recording.clone(),
        ..note(901, "leads", 5001, 11)
    });
    amocrm.add_call_note(CallNote {
        link: other,
        incoming: false,
        duration: 40,
        phone: "89005554433".into(),
        ..note(902, "leads", 5001, 12)
    });
    // Before the period: amoCRM does not return it.
    amocrm.add_call_note(CallNote {
        link: recording.clone(),
        created_at: IN_MAY - 3 * 86_400,
        ..note(903, "leads", 5001, 11)
    });
    // Longer than the limit; a link that is not one; no recording at all.
    amocrm.add_call_note(CallNote {
        link: recording.clone(),
        duration: 5000,
        ..note(904, "leads", 5001, 11)
    });
    amocrm.add_call_note(CallNote {
        link: "ftp://files/x.mp3".into(),
        ..note(905, "leads", 5001, 11)
    });
    amocrm.add_call_note(note(906, "contacts", 7001, 11));
    // Enough calls without recordings on companies for two pages.
    for id in 0..260 {
        amocrm.add_call_note(note(10_000 + id, "companies", 8001, 12));
    }

    let response = put_settings(
        &app,
        json!({
            "enabled": true, "base_url": amocrm.base_url(), "auth_mode": "long_lived_token",
            "long_lived_token": amocrm.long_lived_token(),
            "field_mapping": [
                {"amocrm": "lead.field.300", "key": "utm_source"},
                {"amocrm": "lead.status", "key": "stage_name"},
                {"amocrm": "note.call_result", "key": "result"}
            ],
            "write_note": true,
            "field_updates": [{"field_id": 301, "value": "score"}]
        }),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (status, body) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!((status, &body["users"]), (200, &json!(2)));
    let response = app
        .put("/api/v1/integrations/amocrm/users")
        .json(&json!({"11": "anna"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = post(&app, "/api/v1/checklists", checklist()).await;
    assert_eq!(status, 201);

    let request = json!({
        "date_from": "2024-05-01", "date_to": "2024-05-31",
        "direction": "all", "min_duration_secs": 0, "max_duration_secs": 3600
    });
    let export = run_export(&app, request.clone()).await;
    assert_eq!(export["state"], "done", "{export:#}");
    let progress = &export["progress"];
    assert_eq!(progress["found"], 265, "{progress:#}");
    assert_eq!(progress["imported"], 2, "{progress:#}");
    assert_eq!(progress["skipped"], 262, "{progress:#}");
    assert_eq!(progress["failed"], 1, "{progress:#}");

    let first = wait_for(&app, "amocrm-901", |c| c["status"] == "done").await;
    assert_eq!(first["manager_id"], "anna");
    assert_eq!(first["deal_id"], "5001");
    assert_eq!(first["deal_stage_id"], "200");
    assert_eq!(first["direction"], "incoming");
    assert_eq!(first["client_phone"], "+79001234567");
    assert_eq!(first["call_started_at"], "2024-05-01T12:00:00Z");
    assert_eq!(first["metadata"]["utm_source"], "yandex");
    assert_eq!(first["metadata"]["stage_name"], "Переговоры");
    assert_eq!(first["metadata"]["result"], "Договорились о встрече");
    assert_eq!(first["metadata"]["crm"], "amocrm");
    let second = wait_for(&app, "amocrm-902", |c| c["status"] == "done").await;
    assert_eq!(
        second["manager_id"], "amocrm-12",
        "an unmapped user keeps his own id"
    );
    assert_eq!(second["direction"], "outgoing");
    for skipped in ["amocrm-903", "amocrm-904", "amocrm-905", "amocrm-906"] {
        assert!(app.call_json(skipped).await.is_none(), "{skipped}");
    }
    let client = app
        .store
        .client_by_phone("79001234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.source, "amocrm");
    assert_eq!(client.manager_id.unwrap().as_str(), "anna");

    // The analysis goes back to the deal: a note per call and the score.
    let started = std::time::Instant::now();
    while amocrm.notes_added().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no notes written back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let notes = amocrm.notes_added();
    assert!(notes.iter().all(|(lead, _)| *lead == 5001));
    let text = notes[0].1["params"]["text"].as_str().unwrap();
    assert!(
        text.contains("Скрипт продаж") && text.contains("Приветствие"),
        "{text}"
    );
    let updates = amocrm.lead_updates();
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(updates[0].1["custom_fields_values"][0]["field_id"], 301);
    assert_eq!(
        updates[0].1["custom_fields_values"][0]["values"][0]["value"],
        "50"
    );
    let call = wait_for(&app, "amocrm-901", |c| {
        c["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("записаны в amoCRM"))
    })
    .await;
    assert_eq!(call["status"], "done");
    // Analysed again: the write-back that already ran is queued anew.
    let (status, _) = post(&app, "/api/v1/calls/amocrm-901/reanalyze", json!({})).await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    while amocrm.notes_added().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no note after re-analysis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Again: everything was imported before.
    let export = run_export(&app, request.clone()).await;
    assert_eq!(export["progress"]["imported"], 0, "{export:#}");
    assert_eq!(export["progress"]["skipped"], 264);
    // Re-export: the two recordings are imported anew.
    let mut again = request.clone();
    again["reexport"] = json!(true);
    again["user_ids"] = json!([11]);
    let export = run_export(&app, again).await;
    assert_eq!(
        export["progress"]["imported"], 1,
        "only Анна's call: {export:#}"
    );
    assert_eq!(amocrm.downloads(), 3);

    assert_eq!(amocrm.rate_limited(), 0, "amoCRM never had to refuse us");
    let times: Vec<_> = amocrm.api_requests().into_iter().map(|(t, _)| t).collect();
    for window in times.windows(8) {
        assert!(
            window[7].duration_since(window[0]) >= Duration::from_millis(950),
            "eight requests within a second"
        );
    }
}

/// Starts an export and waits for it to end.
async fn run_export(app: &TestApp, request: Value) -> Value {
    let (status, export) = post(app, "/api/v1/integrations/amocrm/exports", request).await;
    assert_eq!(status, 202, "{export}");
    let id = export["id"].as_i64().unwrap();
    let started = std::time::Instant::now();
    loop {
        let export = get(app, &format!("/api/v1/integrations/amocrm/exports/{id}")).await;
        if export["state"] != "queued" && export["state"] != "running" {
            return export;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "export never ended: {export:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bad requests are refused with nothing queued; one export at a time; an
/// export stops on request; and an export whose worker died goes on from
/// the page it had saved, counting nothing twice.
async fn exports_are_checked_stopped_and_resumed(backend: Backend) {
    let app = spawn_app(backend).await;
    let amocrm = AmocrmDouble::start().await;
    amocrm.add_user(User {
        id: 12,
        name: "Борис".into(),
        email: "b@example.ru".into(),
    });
    for id in 0..260 {
        amocrm.add_call_note(note(20_000 + id, "companies", 8001, 12));
    }
    let request = json!({"date_from": "2024-05-01", "date_to": "2024-05-31"});

    let (status, body) = post(&app, "/api/v1/integrations/amocrm/exports", request.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_connected"))
    );
    let response = put_settings(
        &app,
        json!({
            "enabled": true, "base_url": amocrm.base_url(), "auth_mode": "long_lived_token",
            "long_lived_token": amocrm.long_lived_token(),
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (status, _) = post(&app, "/api/v1/integrations/amocrm/check", json!({})).await;
    assert_eq!(status, 200);
    for (bad, field) in [
        (
            json!({"date_from": "2024-05-31", "date_to": "2024-05-01"}),
            "date_to",
        ),
        (
            json!({"date_from": "2024-05-01", "date_to": "2024-05-31", "user_ids": [99]}),
            "user_ids",
        ),
        (
            json!({"date_from": "2024-05-01", "date_to": "2024-05-31",
                   "min_duration_secs": 60, "max_duration_secs": 30}),
            "max_duration_secs",
        ),
    ] {
        let (status, body) = post(&app, "/api/v1/integrations/amocrm/exports", bad).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!(field)),
            "{body}"
        );
    }
    let (status, _) = post(
        &app,
        "/api/v1/integrations/amocrm/exports",
        json!({"date_from": "май", "date_to": 5}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(get(&app, "/api/v1/integrations/amocrm/exports")
        .await
        .as_array()
        .unwrap()
        .is_empty());

    // No worker runs in this app: the export waits, and a second one is
    // refused until the first is stopped.
    let (status, first) = post(&app, "/api/v1/integrations/amocrm/exports", request.clone()).await;
    assert_eq!(status, 202);
    let (status, body) = post(&app, "/api/v1/integrations/amocrm/exports", request.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("export_running"))
    );
    let id = first["id"].as_i64().unwrap();
    let (status, stopped) = post(
        &app,
        &format!("/api/v1/integrations/amocrm/exports/{id}/stop"),
        json!({}),
    )
    .await;
    assert_eq!((status, &stopped["state"]), (200, &json!("cancelled")));
    let (status, _) = post(
        &app,
        "/api/v1/integrations/amocrm/exports/999999/stop",
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // A worker took the export, read the first page of companies, saved
    // its cursor and died. Another worker claims it once the lease is over.
    let (status, export) = post(&app, "/api/v1/integrations/amocrm/exports", request).await;
    assert_eq!(status, 202);
    let id = export["id"].as_i64().unwrap();
    let now = Utc::now();
    let dead = app
        .store
        .claim_task("dead-worker", &[EXPORT_TASK], now, now)
        .await
        .unwrap()
        .unwrap();
    let mut state: Value = serde_json::from_str(&dead.payload).unwrap();
    state["entity"] = json!(2);
    state["page"] = json!(2);
    state["progress"]["found"] = json!(250);
    state["progress"]["skipped"] = json!(250);
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
            &[EXPORT_TASK],
            later + chrono::Duration::minutes(5),
            later,
        )
        .await
        .unwrap()
        .expect("the dead worker's export is claimed again");
    assert_eq!(task.attempt, 2);
    let outcome = integrations.amocrm.run(&task).await;
    assert!(app
        .store
        .finish_task(&task, &outcome, Utc::now())
        .await
        .unwrap());
    let export = get(&app, &format!("/api/v1/integrations/amocrm/exports/{id}")).await;
    assert_eq!(export["state"], "done", "{export:#}");
    assert_eq!(export["progress"]["found"], 260, "{export:#}");
    assert_eq!(export["progress"]["skipped"], 260);
    let notes_read: Vec<String> = amocrm
        .api_requests()
        .into_iter()
        .map(|(_, request)| request)
        .filter(|request| request.contains("/notes"))
        .collect();
    assert_eq!(
        notes_read.len(),
        1,
        "only the page not yet read: {notes_read:?}"
    );
    assert!(notes_read[0].contains("/api/v4/companies/notes") && notes_read[0].contains("page=2"));
}

on_both_backends!(
    signs_in_refreshes_and_checks,
    exports_calls_and_writes_back,
    exports_are_checked_stopped_and_resumed,
);
