//! Checklists ("Скрипты и промты") and tables ("Таблицы") — what the
//! business asks of every call — and what the analysis found (PRODUCT.md §5).
//!
//! Definitions arrive as JSON from the API and the UI. They deserialize into
//! the types below and then pass [`Checklist::validate`] /
//! [`Table::validate`], which name the first offending field, so nothing
//! invalid is ever stored.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::call::{Call, Direction};
use crate::id::{OfficeId, TableId};

/// A definition that cannot be stored: which field, and why (Russian).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidDefinition {
    /// Path of the field, e.g. `stages[2].weight`.
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidDefinition {
    InvalidDefinition {
        field: field.into(),
        message: message.into(),
    }
}

const MAX_NAME_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 8_000;
const MAX_STAGES: usize = 50;
const MAX_COLUMNS: usize = 50;
const MAX_PHRASES: usize = 50;
const MAX_ID_CHARS: usize = 64;

fn check_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), InvalidDefinition> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "Поле обязательно"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("Не длиннее {max} символов")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(invalid(field, "Недопустимые управляющие символы"));
    }
    Ok(())
}

/// Latin letters, digits, `_` and `-`: ids that travel in URLs and JSON keys.
fn check_id(field: &str, value: &str) -> Result<(), InvalidDefinition> {
    if value.is_empty() || value.len() > MAX_ID_CHARS {
        return Err(invalid(field, format!("От 1 до {MAX_ID_CHARS} символов")));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(field, "Только латинские буквы, цифры, «_» и «-»"));
    }
    Ok(())
}

/// Which engine judges a checklist or fills a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The installation's engine (`analysis_engine` in the configuration).
    #[default]
    Default,
    /// The language model, local or remote.
    Llm,
    /// Example and forbidden phrases only; instant, no model.
    Rules,
}

/// Where results go, and the secret their signature is made with. (Other
/// keys are ignored: the API shows `secret_set` in place of the secret, and
/// a definition read back must be accepted as it is.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub url: String,
    /// HMAC-SHA256 key of the `X-Rop-Signature` header. Never shown back by
    /// the API in full.
    #[serde(default)]
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .finish()
    }
}

impl Webhook {
    fn validate(&self, field: &str) -> Result<(), InvalidDefinition> {
        let url = url::Url::parse(self.url.trim())
            .map_err(|_| invalid(format!("{field}.url"), "Некорректный адрес"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                format!("{field}.url"),
                "Адрес должен начинаться с http:// или https://",
            ));
        }
        check_text(&format!("{field}.url"), &self.url, 2_000, true)?;
        check_text(&format!("{field}.secret"), &self.secret, 256, false)
    }
}

/// Which calls a checklist or table applies to. Every non-empty list
/// narrows; an empty filter matches every call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Filters {
    /// Deal stages (`deal_stage_id` of the upload).
    pub deal_stage_ids: Vec<String>,
    /// Sales funnels (`stage_id` of the upload).
    pub stage_ids: Vec<String>,
    /// Offices the call's manager belongs to.
    pub office_ids: Vec<OfficeId>,
    pub directions: Vec<Direction>,
    /// Calls at least this long, in seconds.
    pub min_duration_secs: Option<u32>,
}

impl Filters {
    /// Whether the filters admit `call`, whose manager works in `offices`.
    pub fn admit(&self, call: &Call, offices: &[OfficeId]) -> bool {
        let listed = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_ref().is_some_and(|v| list.contains(v))
        };
        let duration = call
            .audio
            .as_ref()
            .map(|audio| audio.duration_secs)
            .or(call.declared_duration);
        listed(&self.deal_stage_ids, &call.deal_stage_id)
            && listed(&self.stage_ids, &call.stage_id)
            && (self.office_ids.is_empty() || self.office_ids.iter().any(|o| offices.contains(o)))
            && (self.directions.is_empty()
                || call.direction.is_some_and(|d| self.directions.contains(&d)))
            && self
                .min_duration_secs
                .is_none_or(|min| duration.is_some_and(|d| d >= f64::from(min)))
    }

    fn validate(&self) -> Result<(), InvalidDefinition> {
        for (name, list) in [
            ("filters.deal_stage_ids", &self.deal_stage_ids),
            ("filters.stage_ids", &self.stage_ids),
        ] {
            for (i, value) in list.iter().enumerate() {
                check_text(&format!("{name}[{i}]"), value, 256, true)?;
            }
        }
        Ok(())
    }
}

/// One step of the sales script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub stage_id: String,
    pub name: String,
    /// What a good manager does at this stage.
    #[serde(default)]
    pub instruction: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Phrases that show the stage was done (any word form).
    #[serde(default)]
    pub example_phrases: Vec<String>,
    /// Phrases the manager must not say; one of them fails the stage.
    #[serde(default)]
    pub forbidden_phrases: Vec<String>,
}

fn default_weight() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

/// A sales script to score calls against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checklist {
    /// Generated as `CHK_<unix time>` when not given.
    #[serde(default)]
    pub checklist_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_true")]
    pub active: bool,
    /// What the whole script is about; read before every stage.
    #[serde(default)]
    pub general_instruction: String,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub engine: EngineChoice,
}

impl Checklist {
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        check_id("checklist_id", &self.checklist_id)?;
        check_text("name", &self.name, MAX_NAME_CHARS, true)?;
        check_text("description", &self.description, MAX_TEXT_CHARS, false)?;
        check_text(
            "general_instruction",
            &self.general_instruction,
            MAX_TEXT_CHARS,
            false,
        )?;
        if self.stages.is_empty() {
            return Err(invalid("stages", "Нужен хотя бы один этап"));
        }
        if self.stages.len() > MAX_STAGES {
            return Err(invalid("stages", format!("Не больше {MAX_STAGES} этапов")));
        }
        let mut seen = HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let at = |name: &str| format!("stages[{i}].{name}");
            check_id(&at("stage_id"), &stage.stage_id)?;
            if !seen.insert(stage.stage_id.as_str()) {
                return Err(invalid(at("stage_id"), "Этап с таким id уже есть"));
            }
            check_text(&at("name"), &stage.name, MAX_NAME_CHARS, true)?;
            check_text(
                &at("instruction"),
                &stage.instruction,
                MAX_TEXT_CHARS,
                false,
            )?;
            if !(1..=100).contains(&stage.weight) {
                return Err(invalid(at("weight"), "Вес — целое число от 1 до 100"));
            }
            for (name, phrases) in [
                ("example_phrases", &stage.example_phrases),
                ("forbidden_phrases", &stage.forbidden_phrases),
            ] {
                if phrases.len() > MAX_PHRASES {
                    return Err(invalid(at(name), format!("Не больше {MAX_PHRASES} фраз")));
                }
                for (j, phrase) in phrases.iter().enumerate() {
                    check_text(&format!("{}[{j}]", at(name)), phrase, 300, true)?;
                }
            }
        }
        self.filters.validate()?;
        if let Some(webhook) = &self.webhook {
            webhook.validate("webhook")?;
        }
        Ok(())
    }

    pub fn max_score(&self) -> u32 {
        self.stages.iter().map(|s| s.weight).sum()
    }
}

/// Type of a table column's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Number,
    Integer,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// One of `values`.
    Enum,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Latin snake_case, e.g. `data_zvonka`.
    pub key: String,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// What to put here; read by the model.
    #[serde(default)]
    pub description: String,
    /// The allowed values of an `enum` column.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Column {
    /// Checks `value` against the column's type; `null` is always allowed.
    pub fn admits(&self, value: &Value) -> bool {
        match (&self.kind, value) {
            (_, Value::Null) => true,
            (ColumnType::String, Value::String(_)) => true,
            (ColumnType::Number, Value::Number(_)) => true,
            (ColumnType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (ColumnType::Boolean, Value::Bool(_)) => true,
            (ColumnType::Date, Value::String(s)) => {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
            }
            (ColumnType::Enum, Value::String(s)) => self.values.contains(s),
            _ => false,
        }
    }
}

/// The business's own fields, extracted from every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// `TBL_<unix time>`; generated when not given.
    #[serde(default = "unset_table_id")]
    #[schema(value_type = String)]
    pub table_id: TableId,
    pub name: String,
    #[serde(default)]
    pub instruction: String,
    #[serde(default = "default_true")]
    pub active: bool,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub engine: EngineChoice,
}

/// Placeholder id of a table the API has not named yet.
pub const UNSET_TABLE_ID: &str = "TBL_unset";

fn unset_table_id() -> TableId {
    TableId::parse(UNSET_TABLE_ID).expect("valid id")
}

impl Table {
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        let id = self.table_id.as_str();
        let digits = id.strip_prefix("TBL_").unwrap_or("");
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 20 {
            return Err(invalid("table_id", "Id таблицы — TBL_<число>"));
        }
        check_text("name", &self.name, MAX_NAME_CHARS, true)?;
        check_text("instruction", &self.instruction, MAX_TEXT_CHARS, false)?;
        if self.columns.is_empty() {
            return Err(invalid("columns", "Нужна хотя бы одна колонка"));
        }
        if self.columns.len() > MAX_COLUMNS {
            return Err(invalid(
                "columns",
                format!("Не больше {MAX_COLUMNS} колонок"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, column) in self.columns.iter().enumerate() {
            let at = |name: &str| format!("columns[{i}].{name}");
            let key_ok = column.key.len() <= MAX_ID_CHARS
                && column.key.starts_with(|c: char| c.is_ascii_lowercase())
                && column
                    .key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !key_ok {
                return Err(invalid(
                    at("key"),
                    "Ключ — латиница в snake_case, например data_zvonka",
                ));
            }
            if !seen.insert(column.key.as_str()) {
                return Err(invalid(at("key"), "Колонка с таким ключом уже есть"));
            }
            check_text(&at("title"), &column.title, MAX_NAME_CHARS, true)?;
            check_text(
                &at("description"),
                &column.description,
                MAX_TEXT_CHARS,
                false,
            )?;
            match column.kind {
                ColumnType::Enum => {
                    if column.values.is_empty() || column.values.len() > 100 {
                        return Err(invalid(at("values"), "У перечисления от 1 до 100 значений"));
                    }
                    let mut distinct = HashSet::new();
                    for (j, value) in column.values.iter().enumerate() {
                        check_text(
                            &format!("{}[{j}]", at("values")),
                            value,
                            MAX_NAME_CHARS,
                            true,
                        )?;
                        if !distinct.insert(value.as_str()) {
                            return Err(invalid(
                                format!("{}[{j}]", at("values")),
                                "Значение повторяется",
                            ));
                        }
                    }
                }
                _ if !column.values.is_empty() => {
                    return Err(invalid(at("values"), "Значения задаются только для enum"));
                }
                _ => {}
            }
        }
        self.filters.validate()?;
        if let Some(webhook) = &self.webhook {
            webhook.validate("webhook")?;
        }
        Ok(())
    }

    /// Checks extracted data: every column present, values of their types,
    /// nothing else.
    pub fn check_data(&self, data: &BTreeMap<String, Value>) -> Result<(), String> {
        for column in &self.columns {
            match data.get(&column.key) {
                None => return Err(format!("нет колонки {}", column.key)),
                Some(value) if !column.admits(value) => {
                    return Err(format!("{}: {value} не подходит по типу", column.key))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = data
            .keys()
            .find(|k| !self.columns.iter().any(|c| &c.key == *k))
        {
            return Err(format!("лишняя колонка {extra}"));
        }
        Ok(())
    }
}

// --- results ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Completed,
    Failed,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// Which engine produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisEngine {
    Llm,
    Rules,
}

/// How one stage went on one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageResult {
    pub stage_id: String,
    pub stage_name: String,
    /// 1 done, −1 not done.
    pub score: i8,
    /// 0–100: how fully and how surely it was done.
    pub percentage: u8,
    pub status: StageStatus,
    /// Why, in Russian.
    pub comment: String,
    /// Words of the transcript that prove it; empty when there are none.
    pub quote: String,
    /// Where the quote is in the call, seconds.
    pub quote_start: Option<f64>,
    pub quote_end: Option<f64>,
    pub weight: u32,
}

/// A checklist scored on one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChecklistResult {
    pub checklist_id: String,
    pub checklist_name: String,
    /// Sum of the weights of completed stages.
    pub total_score: u32,
    /// Sum of all weights.
    pub max_score: u32,
    /// 100 × total / max.
    pub completion_percentage: f64,
    pub stages: Vec<StageResult>,
    pub engine: AnalysisEngine,
    pub analyzed_at: DateTime<Utc>,
}

impl ChecklistResult {
    /// Totals exactly as PRODUCT.md §5 defines them.
    pub fn new(
        checklist: &Checklist,
        stages: Vec<StageResult>,
        engine: AnalysisEngine,
        analyzed_at: DateTime<Utc>,
    ) -> Self {
        let total_score = stages
            .iter()
            .filter(|s| s.status == StageStatus::Completed)
            .map(|s| s.weight)
            .sum();
        let max_score = checklist.max_score();
        let completion_percentage = if max_score == 0 {
            0.0
        } else {
            (1000.0 * f64::from(total_score) / f64::from(max_score)).round() / 10.0
        };
        Self {
            checklist_id: checklist.checklist_id.clone(),
            checklist_name: checklist.name.clone(),
            total_score,
            max_score,
            completion_percentage,
            stages,
            engine,
            analyzed_at,
        }
    }
}

/// A table filled from one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TableResult {
    #[schema(value_type = String)]
    pub table_id: TableId,
    pub table_name: String,
    #[schema(value_type = Object)]
    pub extracted_data: BTreeMap<String, Value>,
    pub engine: AnalysisEngine,
    pub analyzed_at: DateTime<Utc>,
}

/// Everything one run of the analysis step produced for a call. Stored at
/// once, replacing an earlier analysis of the same call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallAnalysis {
    pub checklists: Vec<ChecklistResult>,
    pub tables: Vec<TableResult>,
    pub deliveries: Vec<crate::delivery::NewDelivery>,
    /// Tasks that take the results back to the CRM the call came from
    /// (`write_back_task`); queued again when they already ran.
    pub crm_tasks: Vec<crate::integrations::NewTask>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checklist() -> Checklist {
        serde_json::from_value(serde_json::json!({
            "checklist_id": "sales",
            "name": "Продажи",
            "stages": [
                {"stage_id": "greeting", "name": "Приветствие", "weight": 2,
                 "example_phrases": ["добрый день"]},
                {"stage_id": "budget", "name": "Бюджет"}
            ],
            "webhook": {"url": "https://crm.example.ru/hook", "secret": "s"}
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_checklist_passes_and_defaults_apply() {
        let c = checklist();
        c.validate().unwrap();
        assert!(c.active);
        assert_eq!(c.stages[1].weight, 1);
        assert_eq!(c.max_score(), 3);
    }

    #[test]
    fn invalid_checklists_name_the_field() {
        let mut c = checklist();
        c.stages[1].weight = 0;
        assert_eq!(c.validate().unwrap_err().field, "stages[1].weight");
        let mut c = checklist();
        c.stages[1].stage_id = "greeting".into();
        assert_eq!(c.validate().unwrap_err().field, "stages[1].stage_id");
        let mut c = checklist();
        c.webhook = Some(Webhook {
            url: "ftp://x".into(),
            secret: String::new(),
        });
        assert_eq!(c.validate().unwrap_err().field, "webhook.url");
        let mut c = checklist();
        c.stages.clear();
        assert_eq!(c.validate().unwrap_err().field, "stages");
        let mut c = checklist();
        c.stages[0].example_phrases.push("  ".into());
        assert_eq!(
            c.validate().unwrap_err().field,
            "stages[0].example_phrases[1]"
        );
    }

    #[test]
    fn totals_follow_the_weights() {
        let c = checklist();
        let stage = |id: &str, weight, status| StageResult {
            stage_id: id.into(),
            stage_name: id.into(),
            score: if status == StageStatus::Completed {
                1
            } else {
                -1
            },
            percentage: 100,
            status,
            comment: String::new(),
            quote: String::new(),
            quote_start: None,
            quote_end: None,
            weight,
        };
        let result = ChecklistResult::new(
            &c,
            vec![
                stage("greeting", 2, StageStatus::Completed),
                stage("budget", 1, StageStatus::Failed),
            ],
            AnalysisEngine::Rules,
            Utc::now(),
        );
        assert_eq!((result.total_score, result.max_score), (2, 3));
        assert_eq!(result.completion_percentage, 66.7);
    }

    fn table() -> Table {
        serde_json::from_value(serde_json::json!({
            "table_id": "TBL_1755863365",
            "name": "Сделка",
            "columns": [
                {"key": "budget", "title": "Бюджет", "type": "integer"},
                {"key": "callback", "title": "Перезвонить", "type": "boolean"},
                {"key": "product", "title": "Продукт", "type": "enum", "values": ["окна", "двери"]},
                {"key": "meeting", "title": "Встреча", "type": "date"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn tables_validate_columns_and_data() {
        let t = table();
        t.validate().unwrap();
        let mut bad = t.clone();
        bad.columns[1].key = "Callback".into();
        assert_eq!(bad.validate().unwrap_err().field, "columns[1].key");
        let mut bad = t.clone();
        bad.columns[2].values.clear();
        assert_eq!(bad.validate().unwrap_err().field, "columns[2].values");
        let mut bad = t.clone();
        bad.table_id = TableId::parse("TBL_x").unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "table_id");

        let data = |v: Value| serde_json::from_value::<BTreeMap<String, Value>>(v).unwrap();
        t.check_data(&data(serde_json::json!({
            "budget": 300000, "callback": true, "product": "окна", "meeting": "2026-11-25"
        })))
        .unwrap();
        t.check_data(&data(serde_json::json!({
            "budget": null, "callback": null, "product": null, "meeting": null
        })))
        .unwrap();
        assert!(t
            .check_data(&data(serde_json::json!({
                "budget": 1.5, "callback": true, "product": "окна", "meeting": null
            })))
            .is_err());
        assert!(t
            .check_data(&data(serde_json::json!({
                "budget": 1, "callback": true, "product": "крыши", "meeting": null
            })))
            .is_err());
        assert!(t
            .check_data(&data(serde_json::json!({"budget": 1})))
            .is_err());
    }

    #[test]
    fn filters_admit_matching_calls() {
        let now = Utc::now();
        let call = Call {
            call_id: crate::CallId::parse("c1").unwrap(),
            manager_id: crate::ManagerId::parse("m1").unwrap(),
            deal_id: None,
            deal_stage_id: Some("s1".into()),
            stage_id: None,
            direction: Some(Direction::Incoming),
            client_phone: None,
            client_name: None,
            call_started_at: None,
            declared_duration: Some(120.0),
            audio_url: None,
            uploaded_file_bytes: None,
            status: crate::CallStatus::Analyzing,
            status_reason: None,
            failure_code: None,
            received_at: now,
            updated_at: now,
            completion_percentage: None,
            audio: None,
            manager_channel: None,
            metadata: Default::default(),
            seq: 1,
            audio_blob: None,
        };
        let office = OfficeId::parse("o1").unwrap();
        assert!(Filters::default().admit(&call, &[]));
        let f = Filters {
            deal_stage_ids: vec!["s1".into()],
            directions: vec![Direction::Incoming],
            min_duration_secs: Some(60),
            ..Filters::default()
        };
        assert!(f.admit(&call, &[]));
        let f = Filters {
            office_ids: vec![office.clone()],
            ..Filters::default()
        };
        assert!(!f.admit(&call, &[]));
        assert!(f.admit(&call, &[office]));
        let f = Filters {
            min_duration_secs: Some(121),
            ..Filters::default()
        };
        assert!(!f.admit(&call, &[]));
    }
}
