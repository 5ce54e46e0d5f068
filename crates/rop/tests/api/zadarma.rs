//! Zadarma end to end over loopback HTTP, against the double of
//! `rop_testkit::zadarma`: settings, «Получить АТС», the clients directory,
//! notifications with routing and the journal, recordings entering the
//! pipeline, click-to-call and the WebRTC key; and every kind of bad
//! notification refused with nothing changed.

use std::time::Duration;

use rop_domain::TelephonyFilter;
use rop_testkit::transcription::TranscriptionDouble;
use rop_testkit::zadarma::{ZadarmaDouble, KEY, SECRET};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::pipeline::{stereo_wav, wait_for, with_workers};

const CLIENT: &str = "+79001234567";
const OUR_NUMBER: &str = "+74951234567";
const STARTED: &str = "2024-05-01 12:00:00";

/// Connects the app to the double with extension 101 answered by `anna`
/// and the client +7 900 123-45-67 assigned to her.
async fn connect(app: &TestApp, zadarma: &ZadarmaDouble) {
    let response = app
        .put("/api/v1/integrations/zadarma")
        .json(&json!({
            "enabled": true,
            "api_url": zadarma.base_url(),
            "key": KEY,
            "secret": SECRET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = app
        .post("/api/v1/integrations/zadarma/pbx")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = app
        .put("/api/v1/integrations/zadarma/extensions")
        .json(&json!({"101": "anna"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = app
        .post("/api/v1/clients")
        .json(&json!({"clients": [
            {"phone": "8 (900) 123-45-67", "name": "Иван Петров", "manager_id": "anna"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn start_fields<'a>(pbx_call_id: &'a str, caller: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("event", "NOTIFY_START"),
        ("call_start", STARTED),
        ("pbx_call_id", pbx_call_id),
        ("caller_id", caller),
        ("called_did", OUR_NUMBER),
    ]
}

async fn journal(app: &TestApp) -> Vec<Value> {
    app.get("/api/v1/telephony/calls")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn settings_routing_and_the_journal(backend: Backend) {
    let app = spawn_app(backend).await;
    let zadarma = ZadarmaDouble::start().await;
    connect(&app, &zadarma).await;

    let settings: Value = app
        .get("/api/v1/integrations/zadarma")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["secret"], "••••4201", "{settings}");
    assert!(!settings.to_string().contains(SECRET));
    assert_eq!(settings["pbx_id"], "1234");
    assert_eq!(
        settings["extensions"],
        json!([
            {"number": "100", "manager_id": null},
            {"number": "101", "manager_id": "anna"},
            {"number": "102", "manager_id": null},
        ])
    );
    let balance: Value = app
        .post("/api/v1/integrations/zadarma/check")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance, json!({"balance": 10.34, "currency": "USD"}));
    // The settings change is in the audit log, without the secret.
    let audit = app.store.audit_entries(None, 10).await.unwrap();
    let entry = audit.iter().find(|e| e.action == "zadarma.update").unwrap();
    assert!(!entry.details.contains(SECRET), "{}", entry.details);

    let url = app.url("/exec/Zadarma.notify");
    assert!(zadarma.check_url(&url).await, "zd_echo came back");

    // An assigned client rings his manager's extension first.
    let response = zadarma.notify(&url, &start_fields("in_1", CLIENT)).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        reply,
        json!({"redirect": "101", "return_timeout": 20, "caller_name": "Иван Петров"})
    );
    // Anyone else goes the PBX's own way: an empty answer.
    let response = zadarma
        .notify(&url, &start_fields("in_2", "+79990000000"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");

    for fields in [
        vec![
            ("event", "NOTIFY_INTERNAL"),
            ("call_start", STARTED),
            ("pbx_call_id", "in_1"),
            ("caller_id", CLIENT),
            ("called_did", OUR_NUMBER),
            ("internal", "101"),
        ],
        vec![
            ("event", "NOTIFY_ANSWER"),
            ("call_start", STARTED),
            ("pbx_call_id", "in_1"),
            ("caller_id", CLIENT),
            ("destination", "101"),
            ("internal", "101"),
        ],
        vec![
            ("event", "NOTIFY_END"),
            ("call_start", STARTED),
            ("pbx_call_id", "in_1"),
            ("caller_id", CLIENT),
            ("called_did", OUR_NUMBER),
            ("internal", "101"),
            ("duration", "95"),
            ("disposition", "answered"),
            ("status_code", "16"),
            ("is_recorded", "0"),
            ("call_id_with_rec", ""),
        ],
    ] {
        let response = zadarma.notify(&url, &fields).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let rows = journal(&app).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let row = rows.iter().find(|r| r["pbx_call_id"] == "in_1").unwrap();
    assert_eq!(row["direction"], "incoming");
    assert_eq!(row["client_phone"], CLIENT);
    assert_eq!(row["client_name"], "Иван Петров");
    assert_eq!(row["manager_id"], "anna");
    assert_eq!(row["routed_to"], "101");
    assert_eq!(row["extension"], "101");
    assert_eq!(row["duration_secs"], 95);
    assert_eq!(row["disposition"], "answered");
    assert_eq!(row["last_event"], "NOTIFY_END");
    // 12:00 in the PBX's zone (UTC+3 by default).
    assert_eq!(row["started_at"], "2024-05-01T09:00:00Z");
    assert!(row["answered_at"].is_string() && row["ended_at"].is_string());
    // Not recorded: nothing to fetch.
    assert!(app
        .store
        .tasks(rop_integrations::zadarma::RECORDING_TASK, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn recordings_enter_the_pipeline_with_their_manager(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let zadarma = ZadarmaDouble::start().await;
    connect(&app, &zadarma).await;
    zadarma.add_recording("1714564800.1", stereo_wav());
    zadarma.add_recording("1714564900.2", stereo_wav());
    let url = app.url("/exec/Zadarma.notify");

    // Incoming: answered on 101 (anna), recorded.
    for fields in [
        start_fields("in_7", CLIENT),
        vec![
            ("event", "NOTIFY_END"),
            ("call_start", STARTED),
            ("pbx_call_id", "in_7"),
            ("caller_id", CLIENT),
            ("called_did", OUR_NUMBER),
            ("internal", "101"),
            ("duration", "3"),
            ("disposition", "answered"),
            ("is_recorded", "1"),
            ("call_id_with_rec", "1714564800.1"),
        ],
        // The recording is stored: fetch it now instead of in 40 s.
        vec![
            ("event", "NOTIFY_RECORD"),
            ("pbx_call_id", "in_7"),
            ("call_id_with_rec", "1714564800.1"),
        ],
        // Zadarma may repeat itself; the recording is fetched once.
        vec![
            ("event", "NOTIFY_RECORD"),
            ("pbx_call_id", "in_7"),
            ("call_id_with_rec", "1714564800.1"),
        ],
        // Outgoing from extension 100 (nobody's), recorded.
        vec![
            ("event", "NOTIFY_OUT_START"),
            ("call_start", STARTED),
            ("pbx_call_id", "out_8"),
            ("internal", "100"),
            ("destination", "89005554433"),
        ],
        vec![
            ("event", "NOTIFY_OUT_END"),
            ("call_start", STARTED),
            ("pbx_call_id", "out_8"),
            ("caller_id", "100"),
            ("destination", "89005554433"),
            ("internal", "100"),
            ("duration", "3"),
            ("disposition", "answered"),
            ("is_recorded", "1"),
            ("call_id_with_rec", "1714564900.2"),
        ],
        vec![
            ("event", "NOTIFY_RECORD"),
            ("pbx_call_id", "out_8"),
            ("call_id_with_rec", "1714564900.2"),
        ],
    ] {
        let response = zadarma.notify(&url, &fields).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    let started = std::time::Instant::now();
    while app.call_json("zadarma-1714564800.1").await.is_none()
        || app.call_json("zadarma-1714564900.2").await.is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(20), "no calls made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let incoming = wait_for(&app, "zadarma-1714564800.1", |c| c["status"] == "done").await;
    assert_eq!(incoming["manager_id"], "anna");
    assert_eq!(incoming["direction"], "incoming");
    assert_eq!(incoming["client_phone"], CLIENT);
    assert_eq!(incoming["client_name"], "Иван Петров");
    assert_eq!(incoming["call_started_at"], "2024-05-01T09:00:00Z");
    assert_eq!(incoming["metadata"]["pbx_call_id"], "in_7");
    assert_eq!(incoming["metadata"]["source"], "zadarma");
    assert!(incoming["transcript"]["segments"].as_array().unwrap().len() >= 2);

    let outgoing = wait_for(&app, "zadarma-1714564900.2", |c| c["status"] == "done").await;
    assert_eq!(outgoing["direction"], "outgoing");
    assert_eq!(outgoing["client_phone"], "89005554433");
    // Extension 100 is nobody's yet: the call is kept under the extension.
    assert_eq!(outgoing["manager_id"], "zadarma-100");

    assert_eq!(zadarma.downloads(), 2, "each recording downloaded once");
    let rows = app
        .store
        .telephony_calls(&TelephonyFilter {
            managers: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    let linked: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.pbx_call_id.as_str(),
                r.call_id.as_ref().map(|c| c.as_str().to_owned()),
            )
        })
        .collect();
    assert!(
        linked.contains(&("in_7", Some("zadarma-1714564800.1".into()))),
        "{linked:?}"
    );
    assert!(
        linked.contains(&("out_8", Some("zadarma-1714564900.2".into()))),
        "{linked:?}"
    );
    let tasks = app
        .store
        .tasks(rop_integrations::zadarma::RECORDING_TASK, 10)
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t.state == rop_domain::TaskState::Done));
}

async fn bad_notifications_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let zadarma = ZadarmaDouble::start().await;
    let url = app.url("/exec/Zadarma.notify");
    // Not connected yet: refused.
    let response = zadarma.notify(&url, &start_fields("in_1", CLIENT)).await;
    assert_eq!(response.status(), 503);
    connect(&app, &zadarma).await;

    let client = reqwest::Client::new();
    let form = |fields: &[(&str, &str)]| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
    };
    let start = start_fields("in_1", CLIENT);
    let good = rop_testkit::zadarma::notification_signature(SECRET, &start);
    let cases: Vec<(&str, Option<String>, String, u16)> = vec![
        ("no signature", None, form(&start), 401),
        (
            "signed with another secret",
            Some(rop_testkit::zadarma::notification_signature(
                "other", &start,
            )),
            form(&start),
            401,
        ),
        (
            "a field changed after signing",
            Some(good.clone()),
            form(&start_fields("in_1", "+79990000000")),
            401,
        ),
        (
            "unknown event",
            Some(good.clone()),
            form(&[("event", "NOTIFY_WHATEVER"), ("pbx_call_id", "x")]),
            400,
        ),
        (
            "no pbx_call_id (not among the signed fields)",
            Some(good.clone()),
            form(
                &start
                    .iter()
                    .copied()
                    .filter(|(k, _)| *k != "pbx_call_id")
                    .collect::<Vec<_>>(),
            ),
            400,
        ),
        (
            "not a form at all",
            Some(good.clone()),
            "\u{1}\u{2}%%%".into(),
            400,
        ),
        (
            "too large",
            Some(good.clone()),
            "a=".to_owned() + &"b".repeat(100_000),
            413,
        ),
    ];
    for (what, signature, body, status) in cases {
        let mut request = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Signature", signature);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
    }
    assert!(journal(&app).await.is_empty(), "nothing was written");

    // The raw-digest form of the signature (the TypeScript SDK's) is
    // accepted too, and a multipart body is read like a form.
    let raw = {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{CLIENT}{OUR_NUMBER}{STARTED}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let mut multipart = reqwest::multipart::Form::new();
    for (name, value) in start_fields("in_1", CLIENT) {
        multipart = multipart.text(name.to_owned(), value.to_owned());
    }
    let response = client
        .post(&url)
        .header("Signature", raw)
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(journal(&app).await.len(), 1);
}

async fn click_to_call_and_the_webrtc_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let zadarma = ZadarmaDouble::start().await;
    connect(&app, &zadarma).await;
    let call = |from: &str, to: &str| {
        app.post("/api/v1/integrations/zadarma/callback")
            .json(&json!({"from": from, "to": to}))
            .send()
    };
    let response = call("999", CLIENT).await.unwrap();
    assert_eq!(response.status(), 400);
    let response = call("101", "позвоните мне").await.unwrap();
    assert_eq!(response.status(), 400);
    let before = zadarma.requests().len();
    let response = call("101", "8 900 123-45-67").await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let requests = zadarma.requests();
    assert_eq!(requests.len(), before + 1, "refusals never reached Zadarma");
    let (path, params) = requests.last().unwrap();
    assert_eq!(path, "/v1/request/callback/");
    assert_eq!(
        (params["from"].as_str(), params["to"].as_str()),
        ("101", "79001234567")
    );

    let key = |ext: &str| {
        app.get(&format!(
            "/api/v1/integrations/zadarma/webrtc-key?extension={ext}"
        ))
        .send()
    };
    assert_eq!(key("101").await.unwrap().status(), 400, "WebRTC is off");
    let response = app
        .put("/api/v1/integrations/zadarma")
        .json(&json!({
            "enabled": true,
            "api_url": zadarma.base_url(),
            "key": KEY,
            "webrtc_enabled": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the secret is kept when not sent");
    let login: Value = key("101").await.unwrap().json().await.unwrap();
    assert_eq!(login, json!({"key": "webrtc-key-101", "login": "1234-101"}));

    // A wrong secret: Zadarma's refusal comes back in words.
    let response = app
        .put("/api/v1/integrations/zadarma")
        .json(&json!({
            "enabled": true,
            "api_url": zadarma.base_url(),
            "key": KEY,
            "secret": "wrong-secret-0000",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .post("/api/v1/integrations/zadarma/check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "zadarma_unauthorized");
}

on_both_backends!(
    settings_routing_and_the_journal,
    recordings_enter_the_pipeline_with_their_manager,
    bad_notifications_change_nothing,
    click_to_call_and_the_webrtc_key,
);
