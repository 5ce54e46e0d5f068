//! Listing, reading and deleting calls; table readiness.

use chrono::Utc;
use rop_domain::Table;
use serde_json::json;

use crate::helpers::{error_of, spawn_app, Backend, TestApp};
use crate::on_both_backends;

async fn seed_calls(app: &TestApp) {
    // Links to an unresolvable host: accepted, the probe's failure only noted.
    for (i, manager, day) in [
        (1, "m1", 1),
        (2, "m2", 2),
        (3, "m1", 3),
        (4, "m1", 4),
        (5, "m3", 5),
        (6, "m1", 6),
        (7, "m2", 7),
    ] {
        let call_id = format!("call-{i}");
        let started = format!("2025-03-{day:02}T09:00:00Z");
        let response = app
            .upload(&[
                ("call_id", &call_id),
                ("manager_id", manager),
                ("audio_url", "https://crm.invalid/a.mp3"),
                ("call_started_at", &started),
            ])
            .await;
        assert_eq!(response.status(), 200);
    }
}

async fn list(app: &TestApp, query: &str) -> serde_json::Value {
    let response = app
        .get(&format!("/api/v1/calls?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn call_ids(page: &serde_json::Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list_pages_with_a_cursor_and_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    seed_calls(&app).await;

    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let page = list(&app, &query).await;
        seen.extend(call_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["call-7", "call-6", "call-5", "call-4", "call-3", "call-2", "call-1"]
    );

    assert_eq!(
        call_ids(&list(&app, "manager_id=m1").await),
        ["call-6", "call-4", "call-3", "call-1"]
    );
    assert_eq!(
        call_ids(&list(&app, "from=2025-03-03&to=2025-03-05").await),
        ["call-5", "call-4", "call-3"]
    );
    assert_eq!(
        call_ids(&list(&app, "from=2025-03-06T09:00:00Z").await),
        ["call-7", "call-6"]
    );
    assert_eq!(
        call_ids(&list(&app, "status=received&manager_id=m2").await),
        ["call-7", "call-2"]
    );
    assert!(call_ids(&list(&app, "status=done").await).is_empty());
    assert!(
        call_ids(&list(&app, "min_score=50").await).is_empty(),
        "no call is analysed yet"
    );

    app.post("/api/v1/settings/offices-update")
        .json(&json!({"offices": [{"office_id": "north", "managers_ids": ["m2", "m3"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        call_ids(&list(&app, "office_id=north").await),
        ["call-7", "call-5", "call-2"]
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", ""),
        ("status=lost", "status"),
        ("from=yesterday", "from"),
        ("cursor=zzz", "cursor"),
        ("min_score=101", "min_score"),
    ] {
        let (status, code, named) = error_of(
            app.get(&format!("/api/v1/calls?{query}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"), "{query}");
        if !field.is_empty() {
            assert_eq!(named.as_deref(), Some(field), "{query}");
        }
    }
}

async fn unknown_calls_are_404_and_delete_removes_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    seed_calls(&app).await;
    let (status, code, _) = error_of(app.get("/api/v1/calls/nope").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "call_not_found"));
    let (status, _, _) = error_of(app.delete("/api/v1/calls/nope").send().await.unwrap()).await;
    assert_eq!(status, 404);

    app.store
        .insert_table(&deals_table(), Utc::now())
        .await
        .unwrap();
    let response = app.delete("/api/v1/calls/call-3").send().await.unwrap();
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "deleted", "call_id": "call-3"})
    );
    assert!(app.call_json("call-3").await.is_none());
    let (status, _, _) = error_of(
        app.get("/api/v1/tables/call-ready?tab=TBL_1755863365&call=call-3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "the call is gone for call-ready too");
    // The id may be used again after deletion.
    let again = app
        .upload(&[
            ("call_id", "call-3"),
            ("manager_id", "m1"),
            ("audio_url", "https://crm.invalid/b.mp3"),
        ])
        .await;
    assert_eq!(again.status(), 200);
}

async fn call_ready_reports_table_data(backend: Backend) {
    let app = spawn_app(backend).await;
    seed_calls(&app).await;
    let ready = |tab: &str, call: &str| {
        app.get(&format!("/api/v1/tables/call-ready?tab={tab}&call={call}"))
            .send()
    };

    let (status, code, _) = error_of(ready("TBL_1755863365", "call-1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "table_not_found"));
    app.store
        .insert_table(&deals_table(), Utc::now())
        .await
        .unwrap();
    let (status, code, _) = error_of(ready("TBL_1755863365", "no-such-call").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "call_not_found"));

    // Until the call is analysed; tests/api/analysis.rs sees it become ready.
    let response = ready("TBL_1755863365", "call-1").await.unwrap();
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"ready": false})
    );

    for query in ["tab=TBL_1755863365", "call=call-1", "tab=&call=call-1", ""] {
        let (status, _, _) = error_of(
            app.get(&format!("/api/v1/tables/call-ready?{query}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{query}");
    }
}

on_both_backends!(
    list_pages_with_a_cursor_and_filters,
    unknown_calls_are_404_and_delete_removes_everything,
    call_ready_reports_table_data,
);

fn deals_table() -> Table {
    serde_json::from_value(json!({
        "table_id": "TBL_1755863365",
        "name": "Сделки",
        "columns": [{"key": "budget", "title": "Бюджет", "type": "integer"}]
    }))
    .unwrap()
}
