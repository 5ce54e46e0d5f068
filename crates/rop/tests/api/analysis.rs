//! Checklists and tables through the API, calls scored by phrase rules, and
//! the signed webhooks that carry the results to the CRM — each on SQLite
//! and PostgreSQL, over real HTTP on loopback.

use std::time::Duration;

use rop_delivery::signature;
use rop_testkit::chat::ChatDouble;
use rop_testkit::transcription::TranscriptionDouble;
use rop_testkit::webhook::{Reply, WebhookReceiver};
use serde_json::{json, Value};

use crate::helpers::{error_of, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::pipeline::{
    api_key_of, free_port, job, spawn_serve_with, stereo_wav, wait_done, wait_for, wait_ready,
    with_workers,
};

const SECRET: &str = "webhook-secret-1";

/// The double hears the left channel (the manager) as «тон 440 герц» and
/// the right one (the client) as «тон 1000 герц».
fn checklist(webhook_url: &str) -> Value {
    json!({
        "checklist_id": "script",
        "name": "Скрипт продаж",
        "general_instruction": "Оцените звонок по этапам",
        "stages": [
            {"stage_id": "greeting", "name": "Приветствие", "weight": 2,
             "instruction": "Менеджер здоровается",
             "example_phrases": ["тона 440 герц"]},
            {"stage_id": "needs", "name": "Выявление потребности",
             "example_phrases": ["тон 1000 герц"]},
            {"stage_id": "rude", "name": "Без запретных слов",
             "example_phrases": ["тон"], "forbidden_phrases": ["440"]}
        ],
        "webhook": {"url": webhook_url, "secret": SECRET}
    })
}

pub async fn create(app: &TestApp, path: &str, body: &Value) -> Value {
    let response = app.post(path).json(body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn checklists_and_tables_are_managed_through_the_api(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let created = create(
        &app,
        "/api/v1/checklists",
        &checklist("https://crm.example.ru/hook"),
    )
    .await;
    assert_eq!(created["checklist_id"], "script");
    assert_eq!(created["active"], true);
    assert_eq!(created["stages"][1]["weight"], 1, "weight defaults to 1");
    assert_eq!(created["webhook"]["secret_set"], true);
    assert!(
        created["webhook"].get("secret").is_none(),
        "secrets are write-only"
    );

    // The same id again is a conflict; a generated id is CHK_<unix time>.
    let again = app
        .post("/api/v1/checklists")
        .json(&checklist("https://crm.example.ru/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(again).await.0, 409);
    let mut unnamed = checklist("https://crm.example.ru/hook");
    unnamed.as_object_mut().unwrap().remove("checklist_id");
    let generated = create(&app, "/api/v1/checklists", &unnamed).await;
    assert!(generated["checklist_id"]
        .as_str()
        .unwrap()
        .starts_with("CHK_"));

    // Invalid definitions name the field and change nothing.
    for (body, field) in [
        (json!({"name": "x", "stages": []}), "stages"),
        (
            json!({"name": "x", "stages": [{"stage_id": "a", "name": "A", "weight": 0}]}),
            "stages[0].weight",
        ),
        (
            json!({"name": "x", "stages": [{"stage_id": "a b", "name": "A"}]}),
            "stages[0].stage_id",
        ),
        (
            json!({"name": "x", "stages": [{"stage_id": "a", "name": "A", "colour": 1}]}),
            "stages[0]",
        ),
        (
            json!({"name": "x", "stages": [{"stage_id": "a", "name": "A"}],
                   "webhook": {"url": "ftp://crm"}}),
            "webhook.url",
        ),
        (
            json!({"name": "x", "stages": [{"stage_id": "a", "name": "A"}], "filters": {"directions": ["sideways"]}}),
            "filters.directions[0]",
        ),
    ] {
        let response = app
            .post("/api/v1/checklists")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, got) = error_of(response).await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"), "{body}");
        assert!(
            got.as_deref().is_some_and(|got| got.starts_with(field)),
            "{body}: field {got:?}, expected {field}"
        );
    }
    let list: Value = app
        .get("/api/v1/checklists")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // An update without the secret keeps it; the id comes from the path.
    let mut changed = checklist("https://crm.example.ru/other");
    changed["name"] = json!("Новый скрипт");
    changed["webhook"] = json!({"url": "https://crm.example.ru/other"});
    let response = app
        .put("/api/v1/checklists/script")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored = app.store.checklist("script").await.unwrap().unwrap();
    assert_eq!(stored.name, "Новый скрипт");
    assert_eq!(stored.webhook.as_ref().unwrap().secret, SECRET);
    // The body's id must agree with the path's.
    let response = app
        .put("/api/v1/checklists/missing")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (
            400,
            "invalid_request".to_owned(),
            Some("checklist_id".to_owned())
        )
    );
    changed.as_object_mut().unwrap().remove("checklist_id");
    let response = app
        .put("/api/v1/checklists/missing")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 404);

    // Tables: TBL_<unix> ids, typed columns, enum values required.
    let table = json!({
        "name": "Сделка",
        "instruction": "Данные о заказе",
        "columns": [
            {"key": "zamer", "title": "Замер назначен", "type": "boolean"},
            {"key": "okna", "title": "Количество окон", "type": "integer"},
            {"key": "obekt", "title": "Объект", "type": "enum", "values": ["квартира", "дом"]}
        ]
    });
    let created = create(&app, "/api/v1/tables", &table).await;
    let table_id = created["table_id"].as_str().unwrap().to_owned();
    assert!(table_id.starts_with("TBL_"), "{created}");
    let fetched: Value = app
        .get(&format!("/api/v1/tables/{table_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["columns"][2]["values"], json!(["квартира", "дом"]));
    let mut bad = table.clone();
    bad["columns"][2]["values"] = json!([]);
    let (status, _, field) =
        error_of(app.post("/api/v1/tables").json(&bad).send().await.unwrap()).await;
    assert_eq!((status, field.as_deref()), (400, Some("columns[2].values")));
    let mut bad = table.clone();
    bad["columns"][0]["type"] = json!("money");
    let (status, _, field) =
        error_of(app.post("/api/v1/tables").json(&bad).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(field.unwrap().starts_with("columns[0]"));

    // Deleting: gone for good; a second delete is a 404.
    let deleted = app
        .delete(&format!("/api/v1/tables/{table_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let again = app
        .delete(&format!("/api/v1/tables/{table_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(again).await.0, 404);
    assert_eq!(
        app.delete("/api/v1/checklists/script")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let gone = app.get("/api/v1/checklists/script").send().await.unwrap();
    assert_eq!(error_of(gone).await.0, 404);

    // Every change, and only the changes, went to the audit log as made by
    // the API key, the definitions without their webhook secrets.
    let mut entries = app.store.audit_entries(None, 100).await.unwrap();
    entries.reverse();
    let generated_id = generated["checklist_id"].as_str().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
            .collect::<Vec<_>>(),
        [
            ("API", "checklist.create", "script"),
            ("API", "checklist.create", generated_id),
            ("API", "checklist.update", "script"),
            ("API", "table.create", table_id.as_str()),
            ("API", "table.delete", table_id.as_str()),
            ("API", "checklist.delete", "script"),
        ]
    );
    assert!(entries.iter().all(|e| !e.details.contains(SECRET)));
    let details = |i: usize| serde_json::from_str::<Value>(&entries[i].details).unwrap();
    assert_eq!(
        details(0)["webhook"],
        json!({"url": "https://crm.example.ru/hook", "secret": "***"})
    );
    assert_eq!(details(2)["name"], "Новый скрипт");
    assert_eq!(
        details(2)["webhook"],
        json!({"url": "https://crm.example.ru/other", "secret": "***"}),
        "the kept secret is masked too"
    );
    assert_eq!(
        details(3)["columns"][2]["values"],
        json!(["квартира", "дом"])
    );
    assert_eq!(entries[5].details, "");
}

pub fn stage<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage_id"] == id)
        .unwrap_or_else(|| panic!("no stage {id}: {result:#}"))
}

async fn a_call_is_scored_by_rules_and_the_result_delivered_signed(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let receiver = WebhookReceiver::start().await;
    // Two failures first: the third attempt gets through.
    receiver.script([Reply::status(503), Reply::status(500), Reply::ok()]);
    let app = spawn_app_with(backend, |c| {
        with_workers(c, &asr);
        c.webhook_retry_base_secs = 1;
    })
    .await;
    create(&app, "/api/v1/checklists", &checklist(&receiver.url())).await;
    // A checklist whose filters do not admit the call is not applied.
    let mut other = checklist(&receiver.url());
    other["checklist_id"] = json!("outgoing_only");
    other["filters"] = json!({"directions": ["outgoing"]});
    create(&app, "/api/v1/checklists", &other).await;
    app.upload_file(
        "scored",
        stereo_wav(),
        &[("direction", "incoming"), ("deal_id", "D-7")],
    )
    .await;

    let call = wait_for(&app, "scored", |call| call["status"] == "done").await;
    assert_eq!(job(&call, "analyze")["state"], "done", "{call:#}");
    let results = call["checklists"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{call:#}");
    let result = &results[0];
    assert_eq!(result["engine"], "rules");
    // The manager's line «тон 440 герц» matches «тона 440 герц» (another
    // word form); the client's «тон 1000 герц» does not count for the
    // manager; the forbidden «440» fails the third stage.
    let greeting = stage(result, "greeting");
    assert_eq!(
        (greeting["status"].as_str(), greeting["score"].as_i64()),
        (Some("completed"), Some(1))
    );
    assert_eq!(greeting["quote"], "тон 440 герц");
    let quote_start = greeting["quote_start"].as_f64().unwrap();
    assert!((0.1..0.4).contains(&quote_start), "{greeting}");
    let needs = stage(result, "needs");
    assert_eq!(
        (needs["status"].as_str(), needs["score"].as_i64()),
        (Some("failed"), Some(-1))
    );
    assert_eq!(needs["quote"], "");
    assert_eq!(stage(result, "rude")["status"], "failed");
    assert_eq!(
        (result["total_score"].as_u64(), result["max_score"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(result["completion_percentage"], 50.0);
    assert_eq!(call["completion_percentage"], 50.0);

    // One webhook, three attempts, one delivery id, a valid signature.
    let deliveries = call["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{call:#}");
    let delivery = &deliveries[0];
    assert_eq!(delivery["state"], "delivered");
    assert_eq!(delivery["event"], "checklist.result");
    let attempts = delivery["attempts"].as_array().unwrap();
    let statuses: Vec<_> = attempts.iter().map(|a| a["status_code"].as_u64()).collect();
    assert_eq!(statuses, [Some(503), Some(500), Some(200)]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    let delivery_id = delivery["delivery_id"].as_str().unwrap();
    for request in &requests {
        assert_eq!(request.header("x-rop-delivery"), Some(delivery_id));
        assert_eq!(request.header("x-rop-event"), Some("checklist.result"));
        let timestamp = request.header("x-rop-timestamp").unwrap();
        assert!(
            signature::verify(
                SECRET,
                timestamp,
                request.body.as_ref(),
                request.header("x-rop-signature").unwrap(),
                chrono::Utc::now(),
                Duration::from_secs(300),
            ),
            "signature of {request:?}"
        );
        assert!(!signature::verify(
            "another secret",
            timestamp,
            request.body.as_ref(),
            request.header("x-rop-signature").unwrap(),
            chrono::Utc::now(),
            Duration::from_secs(300),
        ));
    }
    let body = requests[2].json();
    for key in [
        "call_id",
        "manager_id",
        "deal_id",
        "checklist_id",
        "checklist_name",
        "total_score",
        "max_score",
        "completion_percentage",
        "stages",
        "timestamp",
    ] {
        assert!(body.get(key).is_some(), "{key} in {body:#}");
    }
    assert_eq!(
        (body["call_id"].as_str(), body["deal_id"].as_str()),
        (Some("scored"), Some("D-7"))
    );
    assert_eq!(body["stages"][0]["quote"], "тон 440 герц");
    let history: Vec<&str> = call["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        history.iter().any(|m| m.contains("доставлен")),
        "{history:#?}"
    );
}

async fn a_rejected_webhook_fails_for_good_and_can_be_resent(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let receiver = WebhookReceiver::start().await;
    receiver.answer_always(Reply::status(400).body("{\"error\": \"unknown hook\"}"));
    let app = spawn_app_with(backend, |c| {
        with_workers(c, &asr);
        c.webhook_retry_base_secs = 1;
    })
    .await;
    create(&app, "/api/v1/checklists", &checklist(&receiver.url())).await;
    app.upload_file("rejected", stereo_wav(), &[]).await;
    let call = wait_for(&app, "rejected", |call| {
        call["status"] == "done" && call["deliveries"][0]["state"] == "failed"
    })
    .await;
    let delivery = &call["deliveries"][0];
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 400 is final: {call:#}");
    assert_eq!(attempts[0]["status_code"], 400);
    let history: Vec<&str> = call["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        history
            .iter()
            .any(|m| m.contains("не доставлен") && m.contains("400")),
        "{history:#?}"
    );

    // The receiver is fixed; an administrator resends with the same id.
    receiver.answer_always(Reply::ok());
    let delivery_id = delivery["delivery_id"].as_str().unwrap().to_owned();
    let response = app
        .post(&format!(
            "/api/v1/calls/rejected/deliveries/{delivery_id}/resend"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = wait_for(&app, "rejected", |call| {
        call["deliveries"][0]["state"] == "delivered"
    })
    .await;
    assert_eq!(call["status"], "done");
    assert_eq!(
        call["deliveries"][0]["attempts"].as_array().unwrap().len(),
        2
    );
    let last = receiver.requests().pop().unwrap();
    assert_eq!(last.header("x-rop-delivery"), Some(delivery_id.as_str()));
    let unknown = app
        .post("/api/v1/calls/rejected/deliveries/nope/resend")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(unknown).await.0, 404);
}

async fn reanalysis_applies_a_changed_checklist(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let mut definition = checklist("https://crm.example.ru/hook");
    definition.as_object_mut().unwrap().remove("webhook");
    create(&app, "/api/v1/checklists", &definition).await;
    app.upload_file("again", stereo_wav(), &[]).await;
    let call = wait_for(&app, "again", |call| call["status"] == "done").await;
    assert_eq!(call["checklists"][0]["total_score"], 2);

    // The script changes: the third stage no longer forbids «440».
    definition["stages"][2]["forbidden_phrases"] = json!(["грубость"]);
    let response = app
        .put("/api/v1/checklists/script")
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .post("/api/v1/calls/again/reanalyze")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let call = wait_for(&app, "again", |call| {
        call["status"] == "done" && call["checklists"][0]["total_score"] == 3
    })
    .await;
    assert_eq!(
        call["checklists"].as_array().unwrap().len(),
        1,
        "replaced, not added"
    );
    assert_eq!(call["completion_percentage"], 75.0);

    let missing = app
        .post("/api/v1/calls/nope/reanalyze")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(missing).await.0, 404);
    // A call that was never transcribed cannot be analysed again.
    app.upload_file("short", stereo_wav(), &[("duration", "1")])
        .await;
    let response = app
        .post("/api/v1/calls/short/reanalyze")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (409, "not_transcribed".to_owned(), None)
    );
}

on_both_backends!(
    checklists_and_tables_are_managed_through_the_api,
    a_call_is_scored_by_rules_and_the_result_delivered_signed,
    a_rejected_webhook_fails_for_good_and_can_be_resent,
    reanalysis_applies_a_changed_checklist,
    a_language_model_server_scores_and_fills_and_bad_answers_fail_cleanly,
);

/// The receiver is down and the server is killed and started again: the
/// webhook still arrives once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_survives_a_restart_while_the_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let asr = TranscriptionDouble::start(None).await;
    let mut receiver = WebhookReceiver::start().await;
    let hook = receiver.url();
    receiver.stop().await;
    let settings = [("ROP_WEBHOOK_RETRY_BASE_SECS", "1")];

    let mut server = spawn_serve_with(dir.path(), port, &asr.base_url(), &settings);
    wait_ready(&client, &base).await;
    let key = api_key_of(dir.path());
    let response = client
        .post(format!("{base}/api/v1/checklists"))
        .header("X-Api-Key", &key)
        .json(&checklist(&hook))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let form = reqwest::multipart::Form::new()
        .text("call_id", "restart")
        .text("manager_id", "m1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(stereo_wav()).file_name("call.wav"),
        );
    let response = client
        .post(format!("{base}/api/v1/calls/audio-upload"))
        .header("X-Api-Key", &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call_url = format!("{base}/api/v1/calls/restart");
    let started = std::time::Instant::now();
    loop {
        let call: Value = client
            .get(&call_url)
            .header("X-Api-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if call["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            assert_eq!(call["status"], "delivering", "{call:#}");
            assert_eq!(call["deliveries"][0]["state"], "pending", "{call:#}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no attempt: {call:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();

    receiver.restart().await;
    let mut server = spawn_serve_with(dir.path(), port, &asr.base_url(), &settings);
    wait_ready(&client, &base).await;
    let requests = receiver.wait_for_requests(1, Duration::from_secs(60)).await;
    let call = wait_done(&client, &base, &key, "restart").await;
    server.kill().unwrap();
    server.wait().unwrap();
    let delivery = &call["deliveries"][0];
    assert_eq!(delivery["state"], "delivered", "{call:#}");
    assert_eq!(
        requests[0].header("x-rop-delivery"),
        delivery["delivery_id"].as_str()
    );
    let attempts = delivery["attempts"].as_array().unwrap();
    assert!(
        attempts.len() >= 2 && attempts[0]["status_code"].is_null(),
        "{call:#}"
    );
}

/// The model's answers for the tone dialogue: every stage claimed done
/// (the code then keeps only what the transcript proves), and the table
/// filled with words the code turns into typed values.
fn model_answer(request: &Value) -> String {
    let properties = &request["response_format"]["json_schema"]["schema"]["properties"];
    let stage = |quote: &str| {
        json!({"evidence_line": 1, "evidence_quote": quote, "explanation": "Сказано в звонке",
               "is_done": true, "percent": 90})
    };
    if properties.get("01_greeting").is_some() {
        json!({
            "01_greeting": stage("тон 440 герц"),
            "02_needs": stage("тон 1000 герц"),
            "03_rude": stage("тон 440 герц"),
        })
        .to_string()
    } else {
        json!({"zamer": true, "okna": "три", "obekt": "квартира"}).to_string()
    }
}

fn deals_table() -> Value {
    json!({
        "table_id": "TBL_1755863365",
        "name": "Сделка",
        "columns": [
            {"key": "zamer", "title": "Замер назначен", "type": "boolean"},
            {"key": "okna", "title": "Количество окон", "type": "integer"},
            {"key": "obekt", "title": "Объект", "type": "enum", "values": ["квартира", "дом"]}
        ]
    })
}

async fn a_language_model_server_scores_and_fills_and_bad_answers_fail_cleanly(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let chat = ChatDouble::start(Some("llm-key")).await;
    chat.answer_with(model_answer);
    let app = spawn_app_with(backend, |c| {
        with_workers(c, &asr);
        c.llm_engine = rop::config::LlmEngineKind::OpenAi;
        c.llm_url = Some(chat.base_url());
        c.llm_api_key = Some("llm-key".into());
        c.job_attempts = 1;
    })
    .await;
    let mut definition = checklist("https://crm.example.ru/hook");
    definition.as_object_mut().unwrap().remove("webhook");
    create(&app, "/api/v1/checklists", &definition).await;
    create(&app, "/api/v1/tables", &deals_table()).await;

    // One unreadable answer is asked again; the second is used.
    chat.reply_with("Конечно! Вот оценка звонка.");
    app.upload_file("judged", stereo_wav(), &[]).await;
    let call = wait_for(&app, "judged", |call| call["status"] == "done").await;
    let result = &call["checklists"][0];
    assert_eq!(result["engine"], "llm", "{call:#}");
    assert_eq!(stage(result, "greeting")["status"], "completed");
    assert_eq!(stage(result, "greeting")["quote"], "тон 440 герц");
    // Claimed done, but the words are the client's: not the manager's stage.
    let needs = stage(result, "needs");
    assert_eq!(
        (needs["status"].as_str(), needs["quote"].as_str()),
        (Some("failed"), Some(""))
    );
    // Claimed done, but a forbidden phrase was said.
    assert_eq!(stage(result, "rude")["status"], "failed");
    let ready: Value = app
        .get("/api/v1/tables/call-ready?tab=TBL_1755863365&call=judged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"ready": true, "data": {"zamer": true, "okna": 3, "obekt": "квартира"}})
    );
    let request = chat.last_request();
    let user = request["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("тон 440 герц"),
        "the transcript goes to the model: {user}"
    );

    // Two unreadable answers: the call fails with a clear reason and no
    // result of the analysis is stored.
    chat.reply_with("не JSON");
    chat.reply_with("{\"01_greeting\": 5}");
    app.upload_file("garbled", stereo_wav(), &[]).await;
    let call = wait_for(&app, "garbled", |call| call["status"] == "failed").await;
    assert_eq!(call["failure_code"], "analysis_failed", "{call:#}");
    assert!(
        call["status_reason"].as_str().unwrap().contains("дважды"),
        "{call:#}"
    );
    assert_eq!(call["checklists"], json!([]));
    assert_eq!(call["tables"], json!([]));
    assert_eq!(call["deliveries"], json!([]));
    assert!(call["completion_percentage"].is_null());
}
