//! Health, readiness, metrics, the OpenAPI document, unknown routes.

use crate::helpers::{error_of, spawn_app, Backend};
use crate::on_both_backends;

async fn health_readiness_and_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    let health: serde_json::Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["database"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );

    app.get("/api/v1/calls").send().await.unwrap();
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rop_http_requests_total{route=\"/api/v1/calls\""),
        "{metrics}"
    );
    assert!(!metrics.contains(&app.key), "metrics never carry the key");
}

async fn openapi_documents_every_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc: serde_json::Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/v1/calls/audio-upload", "post"),
        ("/api/v1/calls", "get"),
        ("/api/v1/calls/{call_id}", "get"),
        ("/api/v1/calls/{call_id}", "delete"),
        ("/api/v1/settings/offices-update", "post"),
        ("/api/v1/settings/managers-update", "post"),
        ("/api/v1/settings/connection", "put"),
        ("/api/v1/tables/call-ready", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
    let upload = &doc["paths"]["/api/v1/calls/audio-upload"]["post"];
    for status in ["200", "400", "401", "409", "429"] {
        assert!(
            upload["responses"][status].is_object(),
            "upload documents {status}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    // Each CRM's export is documented with its own request.
    let export_schema = |crm: &str| {
        let response = &doc["paths"][format!("/api/v1/integrations/{crm}/exports/{{id}}")]["get"]
            ["responses"]["200"]["content"]["application/json"]["schema"];
        let reference = response["$ref"].as_str().unwrap_or_default();
        let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
        let schema = doc["components"]["schemas"][&name].clone();
        assert!(schema.is_object(), "{crm}: {response}");
        schema.to_string()
    };
    let (amocrm, bitrix24) = (export_schema("amocrm"), export_schema("bitrix24"));
    assert!(
        amocrm.contains("date_to") && amocrm.contains("reexport"),
        "{amocrm}"
    );
    assert!(
        !bitrix24.contains("date_to") && bitrix24.contains("min_duration_secs"),
        "{bitrix24}"
    );
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, code, _) = error_of(app.get("/api/v1/nothing").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) =
        error_of(app.client.put(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
}

on_both_backends!(
    health_readiness_and_metrics,
    openapi_documents_every_endpoint,
    unknown_routes_and_methods_answer_json,
);
