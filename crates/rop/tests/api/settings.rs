//! offices-update, managers-update and the connection settings.

use rop_domain::OfficeId;
use serde_json::json;

use crate::helpers::{error_of, spawn_app, Backend, TestApp};
use crate::on_both_backends;

async fn post_json(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    app.post(path).json(&body).send().await.unwrap()
}

fn ids(list: &[rop_domain::ManagerId]) -> Vec<&str> {
    list.iter().map(|id| id.as_str()).collect()
}

async fn offices_are_upserted_and_memberships_replaced(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = post_json(
        &app,
        "/api/v1/settings/offices-update",
        json!({"offices": [
            {"office_title": "Офис продаж Центр", "office_id": "office_001",
             "leader_ids": ["leader_123", "leader_456"], "managers_ids": ["manager_789", "manager_012"]},
            {"office_title": "Север", "office_id": "office_002", "managers_ids": ["manager_789"]}
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"created": 2, "updated": 0})
    );

    let office = app
        .store
        .office(&OfficeId::parse("office_001").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(office.title.as_deref(), Some("Офис продаж Центр"));
    assert_eq!(ids(&office.leader_ids), ["leader_123", "leader_456"]);
    assert_eq!(ids(&office.manager_ids), ["manager_012", "manager_789"]);
    // Everyone mentioned exists as a placeholder.
    assert_eq!(app.store.managers().await.unwrap().len(), 4);

    // A second sync replaces the listed memberships, keeps the omitted list,
    // and leaves offices that are not in the request alone.
    let response = post_json(
        &app,
        "/api/v1/settings/offices-update",
        json!({"offices": [{"office_id": "office_001", "managers_ids": ["manager_555"]}]}),
    )
    .await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"created": 0, "updated": 1})
    );
    let office = app
        .store
        .office(&OfficeId::parse("office_001").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        office.title.as_deref(),
        Some("Офис продаж Центр"),
        "title kept when omitted"
    );
    assert_eq!(
        ids(&office.leader_ids),
        ["leader_123", "leader_456"],
        "leaders kept when omitted"
    );
    assert_eq!(ids(&office.manager_ids), ["manager_555"]);
    let other = app
        .store
        .office(&OfficeId::parse("office_002").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&other.manager_ids), ["manager_789"]);
}

async fn managers_are_upserted_and_placeholders_named(backend: Backend) {
    let app = spawn_app(backend).await;
    post_json(
        &app,
        "/api/v1/settings/offices-update",
        json!({"offices": [{"office_id": "o1", "managers_ids": ["manager_789"]}]}),
    )
    .await;
    let response = post_json(
        &app,
        "/api/v1/settings/managers-update",
        json!({"managers": [
            {"manager_id": "manager_789", "name": "Иван", "surname": "Иванов", "middlename": "Иванович"},
            {"manager_id": "manager_100", "name": "Мария", "surname": "Петрова"}
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"created": 1, "updated": 1})
    );
    let managers = app.store.managers().await.unwrap();
    let ivan = managers
        .iter()
        .find(|m| m.manager_id.as_str() == "manager_789")
        .unwrap();
    assert_eq!(
        (
            ivan.name.as_deref(),
            ivan.surname.as_deref(),
            ivan.middlename.as_deref()
        ),
        (Some("Иван"), Some("Иванов"), Some("Иванович"))
    );
    let maria = managers
        .iter()
        .find(|m| m.manager_id.as_str() == "manager_100")
        .unwrap();
    assert_eq!(maria.middlename, None);
}

async fn invalid_sync_requests_name_the_field_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = "я".repeat(300);
    let cases = [
        ("/api/v1/settings/offices-update", json!({}), None),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": "none"}),
            Some("offices"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_title": "x"}]}),
            Some("offices[0]"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": ""}]}),
            Some("offices[0].office_id"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": 5}]}),
            Some("offices[0].office_id"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": "a", "leader_ids": "l1"}]}),
            Some("offices[0].leader_ids"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": "a", "managers_ids": [""]}]}),
            Some("offices[0].managers_ids[0]"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": "a", "office_title": long}]}),
            Some("offices[0].office_title"),
        ),
        (
            "/api/v1/settings/offices-update",
            json!({"offices": [{"office_id": "a"}, {"office_id": "a"}]}),
            Some("offices[1].office_id"),
        ),
        (
            "/api/v1/settings/managers-update",
            json!({"managers": [{"name": "Иван"}]}),
            Some("managers[0]"),
        ),
        (
            "/api/v1/settings/managers-update",
            json!({"managers": [{"manager_id": "m", "name": ["Иван"]}]}),
            Some("managers[0].name"),
        ),
        (
            "/api/v1/settings/managers-update",
            json!({"managers": [{"manager_id": "m", "surname": long}]}),
            Some("managers[0].surname"),
        ),
        ("/api/v1/settings/managers-update", json!([]), None),
    ];
    for (path, body, field) in cases {
        let (status, code, named) = error_of(post_json(&app, path, body.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"), "{body}");
        if let Some(field) = field {
            assert!(
                named.as_deref().is_some_and(|n| n.starts_with(field)),
                "{body}: {named:?}"
            );
        }
    }
    assert!(app.store.managers().await.unwrap().is_empty());
    assert!(app
        .store
        .office(&OfficeId::parse("a").unwrap())
        .await
        .unwrap()
        .is_none());
}

async fn connection_settings_round_trip_and_validate(backend: Backend) {
    let app = spawn_app(backend).await;
    let current: serde_json::Value = app
        .get("/api/v1/settings/connection")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        current,
        json!({"min_call_duration_secs": 0, "manager_channel": 0, "allow_private_networks": false})
    );
    let put = |body: serde_json::Value| {
        app.client
            .put(app.url("/api/v1/settings/connection"))
            .header("X-Api-Key", &app.key)
            .json(&body)
            .send()
    };
    assert_eq!(
        put(json!({"min_call_duration_secs": 20, "manager_channel": 1}))
            .await
            .unwrap()
            .status(),
        200
    );
    for (body, field) in [
        (json!({"manager_channel": 2}), "manager_channel"),
        (
            json!({"min_call_duration_secs": -1}),
            "min_call_duration_secs",
        ),
        (
            json!({"min_call_duration_secs": "20"}),
            "min_call_duration_secs",
        ),
        (json!({"unknown": 1}), "unknown"),
    ] {
        let (status, _, named) = error_of(put(body.clone()).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(named.is_none_or(|n| n.contains(field)), "{body}");
    }
    let saved: serde_json::Value = app
        .get("/api/v1/settings/connection")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        saved,
        json!({"min_call_duration_secs": 20, "manager_channel": 1, "allow_private_networks": false})
    );

    // The change went to the audit log as made by the API key; saving the
    // same values again and the refused requests changed nothing and left
    // no entry.
    assert_eq!(
        put(json!({"min_call_duration_secs": 20, "manager_channel": 1}))
            .await
            .unwrap()
            .status(),
        200
    );
    let entries = app.store.audit_entries(None, 100).await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (
            entries[0].actor.as_str(),
            entries[0].action.as_str(),
            entries[0].target.as_str()
        ),
        ("API", "connection.update", "connection")
    );
    let details: serde_json::Value = serde_json::from_str(&entries[0].details).unwrap();
    for (side, duration, channel) in [("before", 0, 0), ("after", 20, 1)] {
        assert_eq!(
            details[side]["min_call_duration_secs"], duration,
            "{details}"
        );
        assert_eq!(details[side]["manager_channel"], channel, "{details}");
    }
}

on_both_backends!(
    offices_are_upserted_and_memberships_replaced,
    managers_are_upserted_and_placeholders_named,
    invalid_sync_requests_name_the_field_and_change_nothing,
    connection_settings_round_trip_and_validate,
);
