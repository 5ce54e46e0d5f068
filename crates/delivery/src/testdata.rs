//! Small builders of a call and its results for the unit tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rop_domain::{
    AnalysisEngine, Call, CallId, CallStatus, Checklist, ChecklistResult, ManagerId, StageResult,
    StageStatus, Table, TableResult,
};

pub fn received_at() -> DateTime<Utc> {
    "2026-11-21T10:00:00Z".parse().unwrap()
}

pub fn call() -> Call {
    Call {
        call_id: CallId::parse("call_12345").unwrap(),
        manager_id: ManagerId::parse("mgr_001").unwrap(),
        deal_id: Some("deal_5678".into()),
        deal_stage_id: None,
        stage_id: None,
        direction: None,
        client_phone: None,
        client_name: None,
        call_started_at: None,
        declared_duration: None,
        audio_url: None,
        uploaded_file_bytes: None,
        status: CallStatus::Analyzing,
        status_reason: None,
        failure_code: None,
        received_at: received_at(),
        updated_at: received_at(),
        completion_percentage: None,
        audio: None,
        manager_channel: None,
        metadata: BTreeMap::new(),
        seq: 1,
        audio_blob: None,
    }
}

pub fn checklist() -> (Checklist, ChecklistResult) {
    let checklist: Checklist = serde_json::from_value(serde_json::json!({
        "checklist_id": "sales",
        "name": "Продажи",
        "stages": [
            {"stage_id": "greeting", "name": "Приветствие", "weight": 2},
            {"stage_id": "budget", "name": "Бюджет"}
        ],
        "webhook": {"url": " https://crm.example.ru/hook ", "secret": "s3cr3t"}
    }))
    .unwrap();
    let stages = vec![
        StageResult {
            stage_id: "greeting".into(),
            stage_name: "Приветствие".into(),
            score: 1,
            percentage: 90,
            status: StageStatus::Completed,
            comment: "Менеджер представился и назвал компанию".into(),
            quote: "Добрый день, компания «Окна»".into(),
            quote_start: Some(1.5),
            quote_end: Some(3.25),
            weight: 2,
        },
        StageResult {
            stage_id: "budget".into(),
            stage_name: "Бюджет".into(),
            score: -1,
            percentage: 0,
            status: StageStatus::Failed,
            comment: "Бюджет не обсуждался".into(),
            quote: String::new(),
            quote_start: Some(7.0),
            quote_end: None,
            weight: 1,
        },
    ];
    let result = ChecklistResult::new(&checklist, stages, AnalysisEngine::Rules, received_at());
    (checklist, result)
}

pub fn table() -> (Table, TableResult) {
    let table: Table = serde_json::from_value(serde_json::json!({
        "table_id": "TBL_1755863365",
        "name": "Сделка",
        "columns": [
            {"key": "budget", "title": "Бюджет", "type": "integer"},
            {"key": "callback", "title": "Перезвонить", "type": "boolean"},
            {"key": "meeting", "title": "Встреча", "type": "date"}
        ],
        "webhook": {"url": "https://crm.example.ru/tables", "secret": ""}
    }))
    .unwrap();
    let extracted_data = serde_json::from_value(serde_json::json!({
        "budget": 300000, "callback": true, "meeting": null
    }))
    .unwrap();
    let result = TableResult {
        table_id: table.table_id.clone(),
        table_name: table.name.clone(),
        extracted_data,
        engine: AnalysisEngine::Rules,
        analyzed_at: received_at(),
    };
    (table, result)
}
