//! The JSON bodies of PRODUCT.md §6, and the deliveries an analysis makes.
//!
//! A body is built once, when the analysis is stored, and then sent and
//! signed byte for byte the same on every attempt, so `timestamp` is the
//! moment the result was ready, not the moment of an attempt (that one is
//! in `X-Rop-Timestamp`).

use chrono::{DateTime, SecondsFormat, Utc};
use rop_domain::{
    Call, Checklist, ChecklistResult, DeliveryEvent, NewDelivery, StageResult, StageStatus, Table,
    TableResult, Webhook,
};
use serde::Serialize;
use serde_json::Value;

/// Field order follows the product document, so a person reading a body
/// sees it in the order the documentation lists.
#[derive(Serialize)]
struct ChecklistBody<'a> {
    event: &'static str,
    call_id: &'a str,
    manager_id: &'a str,
    deal_id: Option<&'a str>,
    checklist_id: &'a str,
    checklist_name: &'a str,
    total_score: u32,
    max_score: u32,
    completion_percentage: f64,
    stages: Vec<StageBody<'a>>,
    timestamp: String,
}

#[derive(Serialize)]
struct StageBody<'a> {
    stage_id: &'a str,
    stage_name: &'a str,
    score: i8,
    percentage: u8,
    status: &'static str,
    comment: &'a str,
    quote: &'a str,
    quote_start: Option<f64>,
    quote_end: Option<f64>,
}

#[derive(Serialize)]
struct TableBody<'a> {
    event: &'static str,
    call_id: &'a str,
    table_id: &'a str,
    table_name: &'a str,
    extracted_data: &'a std::collections::BTreeMap<String, Value>,
    processing_time: f64,
    timestamp: String,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn stage_body(stage: &StageResult) -> StageBody<'_> {
    StageBody {
        stage_id: &stage.stage_id,
        stage_name: &stage.stage_name,
        score: stage.score,
        percentage: stage.percentage,
        status: match stage.status {
            StageStatus::Completed => "completed",
            StageStatus::Failed => "failed",
        },
        comment: &stage.comment,
        quote: &stage.quote,
        // A time without the words it points at would mislead.
        quote_start: stage.quote_start.filter(|_| !stage.quote.is_empty()),
        quote_end: stage.quote_end.filter(|_| !stage.quote.is_empty()),
    }
}

/// The `checklist.result` body.
pub fn checklist_body(call: &Call, result: &ChecklistResult, now: DateTime<Utc>) -> String {
    let body = ChecklistBody {
        event: DeliveryEvent::ChecklistResult.as_str(),
        call_id: call.call_id.as_str(),
        manager_id: call.manager_id.as_str(),
        deal_id: call.deal_id.as_deref(),
        checklist_id: &result.checklist_id,
        checklist_name: &result.checklist_name,
        total_score: result.total_score,
        max_score: result.max_score,
        completion_percentage: result.completion_percentage,
        stages: result.stages.iter().map(stage_body).collect(),
        timestamp: rfc3339(now),
    };
    serde_json::to_string(&body).expect("plain data always serializes")
}

/// Seconds from the upload to `now`, to the millisecond.
fn processing_secs(call: &Call, now: DateTime<Utc>) -> f64 {
    let ms = (now - call.received_at).num_milliseconds().max(0);
    ms as f64 / 1000.0
}

/// The `table.result` body.
pub fn table_body(call: &Call, result: &TableResult, now: DateTime<Utc>) -> String {
    let body = TableBody {
        event: DeliveryEvent::TableResult.as_str(),
        call_id: call.call_id.as_str(),
        table_id: result.table_id.as_str(),
        table_name: &result.table_name,
        extracted_data: &result.extracted_data,
        processing_time: processing_secs(call, now),
        timestamp: rfc3339(now),
    };
    serde_json::to_string(&body).expect("plain data always serializes")
}

/// A webhook worth sending to: one with an address.
fn target(webhook: Option<&Webhook>) -> Option<&Webhook> {
    webhook.filter(|w| !w.url.trim().is_empty())
}

fn delivery(event: DeliveryEvent, source_id: &str, webhook: &Webhook, body: String) -> NewDelivery {
    NewDelivery {
        delivery_id: uuid::Uuid::new_v4().to_string(),
        event,
        source_id: source_id.to_owned(),
        url: webhook.url.trim().to_owned(),
        secret: webhook.secret.clone(),
        body,
    }
}

/// One delivery per checklist and per table of the analysis that has a
/// webhook, each with a fresh delivery id.
pub fn plan(
    call: &Call,
    checklists: &[(Checklist, ChecklistResult)],
    tables: &[(Table, TableResult)],
    now: DateTime<Utc>,
) -> Vec<NewDelivery> {
    let checklist_deliveries = checklists.iter().filter_map(|(checklist, result)| {
        let webhook = target(checklist.webhook.as_ref())?;
        Some(delivery(
            DeliveryEvent::ChecklistResult,
            &result.checklist_id,
            webhook,
            checklist_body(call, result, now),
        ))
    });
    let table_deliveries = tables.iter().filter_map(|(table, result)| {
        let webhook = target(table.webhook.as_ref())?;
        Some(delivery(
            DeliveryEvent::TableResult,
            result.table_id.as_str(),
            webhook,
            table_body(call, result, now),
        ))
    });
    checklist_deliveries.chain(table_deliveries).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn sorted(mut keys: Vec<&str>) -> Vec<&str> {
        keys.sort_unstable();
        keys
    }

    #[test]
    fn checklist_body_has_the_documented_fields() {
        let call = testdata::call();
        let (_, result) = testdata::checklist();
        let now = call.received_at + chrono::Duration::milliseconds(42_500);
        let body: Value = serde_json::from_str(&checklist_body(&call, &result, now)).unwrap();
        assert_eq!(
            sorted(keys(&body)),
            sorted(vec![
                "event",
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
            ])
        );
        assert_eq!(body["event"], "checklist.result");
        assert_eq!(body["call_id"], "call_12345");
        assert_eq!(body["manager_id"], "mgr_001");
        assert_eq!(body["deal_id"], "deal_5678");
        assert_eq!(body["checklist_id"], "sales");
        assert_eq!(body["checklist_name"], "Продажи");
        assert_eq!(body["total_score"], 2);
        assert_eq!(body["max_score"], 3);
        assert_eq!(body["completion_percentage"], 66.7);
        assert_eq!(body["timestamp"], "2026-11-21T10:00:42Z");
        let stages = body["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 2);
        for stage in stages {
            assert_eq!(
                sorted(keys(stage)),
                sorted(vec![
                    "stage_id",
                    "stage_name",
                    "score",
                    "percentage",
                    "status",
                    "comment",
                    "quote",
                    "quote_start",
                    "quote_end",
                ])
            );
        }
        assert_eq!(stages[0]["stage_id"], "greeting");
        assert_eq!(stages[0]["score"], 1);
        assert_eq!(stages[0]["percentage"], 90);
        assert_eq!(stages[0]["status"], "completed");
        assert_eq!(stages[0]["quote"], "Добрый день, компания «Окна»");
        assert_eq!(stages[0]["quote_start"], 1.5);
        assert_eq!(stages[1]["score"], -1);
        assert_eq!(stages[1]["status"], "failed");
        assert_eq!(stages[1]["quote"], "");
        assert_eq!(stages[1]["quote_start"], Value::Null);
    }

    #[test]
    fn a_missing_deal_is_null() {
        let mut call = testdata::call();
        call.deal_id = None;
        let (_, result) = testdata::checklist();
        let body: Value =
            serde_json::from_str(&checklist_body(&call, &result, call.received_at)).unwrap();
        assert_eq!(body["deal_id"], Value::Null);
    }

    #[test]
    fn table_body_has_the_documented_fields() {
        let call = testdata::call();
        let (_, result) = testdata::table();
        let now = call.received_at + chrono::Duration::milliseconds(42_500);
        let body: Value = serde_json::from_str(&table_body(&call, &result, now)).unwrap();
        assert_eq!(
            sorted(keys(&body)),
            sorted(vec![
                "event",
                "call_id",
                "table_id",
                "table_name",
                "extracted_data",
                "processing_time",
                "timestamp",
            ])
        );
        assert_eq!(body["event"], "table.result");
        assert_eq!(body["table_id"], "TBL_1755863365");
        assert_eq!(body["table_name"], "Сделка");
        assert_eq!(body["processing_time"], 42.5);
        assert_eq!(body["timestamp"], "2026-11-21T10:00:42Z");
        assert_eq!(
            body["extracted_data"],
            serde_json::json!({"budget": 300000, "callback": true, "meeting": null})
        );
    }

    #[test]
    fn plan_makes_one_delivery_per_webhook() {
        let call = testdata::call();
        let (checklist, checklist_result) = testdata::checklist();
        let mut silent = checklist.clone();
        silent.webhook = None;
        let (table, table_result) = testdata::table();
        let now = call.received_at;
        let deliveries = plan(
            &call,
            &[
                (checklist.clone(), checklist_result.clone()),
                (silent, checklist_result.clone()),
            ],
            &[(table, table_result.clone())],
            now,
        );
        assert_eq!(deliveries.len(), 2);
        let (first, second) = (&deliveries[0], &deliveries[1]);
        assert_eq!(first.event, DeliveryEvent::ChecklistResult);
        assert_eq!(first.source_id, "sales");
        assert_eq!(first.url, "https://crm.example.ru/hook");
        assert_eq!(first.secret, "s3cr3t");
        assert_eq!(first.body, checklist_body(&call, &checklist_result, now));
        assert_eq!(second.event, DeliveryEvent::TableResult);
        assert_eq!(second.source_id, "TBL_1755863365");
        assert_eq!(second.body, table_body(&call, &table_result, now));
        assert_ne!(first.delivery_id, second.delivery_id);
        for d in &deliveries {
            let id = uuid::Uuid::parse_str(&d.delivery_id).unwrap();
            assert_eq!(id.get_version_num(), 4);
        }
        // Another analysis of the same call is another delivery.
        let again = plan(&call, &[(checklist, checklist_result)], &[], now);
        assert_ne!(again[0].delivery_id, first.delivery_id);
    }
}
