//! Скрипты и промты (checklists) and Таблицы (tables): lists and editors.
//! The editors post plain forms; stages and columns come as repeated
//! fields, one group per row, and are checked by the same `validate` as the
//! API's JSON.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use rop_domain::{
    CallFilter, CallId, CallStatus, Checklist, Column, ColumnType, DeliveryEvent, Direction,
    EngineChoice, Filters, InvalidDefinition, OfficeId, Stage, StoreError, Table, TableId,
    Transcript, Webhook,
};

use rop_domain::audit::definition_details;

use super::calls::encode;
use super::{all_fields, audit, field, form_fields, render, Chrome};
use crate::access::Viewer;
use crate::error::PageError;
use crate::WebState;

/// How many later seconds a generated id may move to when taken.
const ID_ATTEMPTS: i64 = 5;

pub(crate) struct DefinitionRow {
    pub id: String,
    pub href: String,
    pub name: String,
    pub active: bool,
    pub size: String,
    pub webhook: String,
}

#[derive(Template)]
#[template(path = "settings/definitions.html")]
struct ListPage {
    chrome: Chrome,
    title: &'static str,
    new_href: &'static str,
    new_label: &'static str,
    rows: Vec<DefinitionRow>,
    empty_hint: &'static str,
}

pub(crate) async fn checklists(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let rows = state
        .store
        .checklists()
        .await?
        .into_iter()
        .map(|c| DefinitionRow {
            href: format!("/settings/checklists/{}", encode(&c.checklist_id)),
            id: c.checklist_id,
            name: c.name,
            active: c.active,
            size: format!("этапов: {}", c.stages.len()),
            webhook: c.webhook.map(|w| w.url).unwrap_or_default(),
        })
        .collect();
    render(ListPage {
        chrome: Chrome::new(&viewer, "settings"),
        title: "Скрипты и промты",
        new_href: "/settings/checklists/new",
        new_label: "Новый чек-лист",
        rows,
        empty_hint: "Чек-листов пока нет. Создайте первый: этапы разговора, которые менеджер должен пройти, с примерами фраз — и звонки начнут получать оценку.",
    })
}

pub(crate) async fn tables(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let rows = state
        .store
        .tables()
        .await?
        .into_iter()
        .map(|t| DefinitionRow {
            href: format!("/settings/tables/{}", encode(t.table_id.as_str())),
            id: t.table_id.as_str().to_owned(),
            name: t.name,
            active: t.active,
            size: format!("колонок: {}", t.columns.len()),
            webhook: t.webhook.map(|w| w.url).unwrap_or_default(),
        })
        .collect();
    render(ListPage {
        chrome: Chrome::new(&viewer, "settings"),
        title: "Таблицы",
        new_href: "/settings/tables/new",
        new_label: "Новая таблица",
        rows,
        empty_hint: "Таблиц пока нет. Таблица — это факты, которые нужно достать из каждого звонка (бюджет, дата визита, возражения), с типом каждой колонки.",
    })
}

// --- shared form parts ------------------------------------------------------

/// The filters and webhook fields both editors share, as the form shows them.
pub(crate) struct CommonForm {
    pub active: bool,
    pub engine: &'static str,
    pub webhook_url: String,
    pub secret_set: bool,
    pub deal_stage_ids: String,
    pub stage_ids: String,
    pub office_ids: String,
    pub incoming: bool,
    pub outgoing: bool,
    pub min_duration: String,
}

impl CommonForm {
    fn of(active: bool, engine: EngineChoice, webhook: &Option<Webhook>, f: &Filters) -> Self {
        Self {
            active,
            engine: engine_value(engine),
            webhook_url: webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default(),
            secret_set: webhook.as_ref().is_some_and(|w| !w.secret.is_empty()),
            deal_stage_ids: f.deal_stage_ids.join(", "),
            stage_ids: f.stage_ids.join(", "),
            office_ids: f
                .office_ids
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            incoming: f.directions.contains(&Direction::Incoming),
            outgoing: f.directions.contains(&Direction::Outgoing),
            min_duration: f
                .min_duration_secs
                .map(|d| d.to_string())
                .unwrap_or_default(),
        }
    }
}

fn engine_value(engine: EngineChoice) -> &'static str {
    match engine {
        EngineChoice::Default => "default",
        EngineChoice::Llm => "llm",
        EngineChoice::Rules => "rules",
    }
}

fn list(raw: &str) -> Vec<String> {
    raw.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn lines(raw: &str) -> Vec<String> {
    raw.lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads the shared fields. The webhook secret is write-only: an empty
/// field keeps the stored one.
fn common(
    fields: &[(String, String)],
    stored: Option<&Webhook>,
) -> Result<(bool, EngineChoice, Option<Webhook>, Filters), InvalidDefinition> {
    let invalid = |field: &str, message: &str| InvalidDefinition {
        field: field.to_owned(),
        message: message.to_owned(),
    };
    let engine = match field(fields, "engine") {
        "" | "default" => EngineChoice::Default,
        "llm" => EngineChoice::Llm,
        "rules" => EngineChoice::Rules,
        _ => return Err(invalid("engine", "неизвестный движок")),
    };
    let url = field(fields, "webhook_url").trim();
    let secret = field(fields, "webhook_secret").trim();
    let webhook = (!url.is_empty()).then(|| Webhook {
        url: url.to_owned(),
        secret: if secret.is_empty() {
            stored.map(|w| w.secret.clone()).unwrap_or_default()
        } else {
            secret.to_owned()
        },
    });
    let office_ids = list(field(fields, "office_ids"))
        .into_iter()
        .map(|raw| {
            OfficeId::try_from(raw.clone())
                .map_err(|_| invalid("filters.office_ids", &format!("неверный id офиса «{raw}»")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut directions = Vec::new();
    if !all_fields(fields, "incoming").is_empty() {
        directions.push(Direction::Incoming);
    }
    if !all_fields(fields, "outgoing").is_empty() {
        directions.push(Direction::Outgoing);
    }
    let min_duration_secs = match field(fields, "min_duration").trim() {
        "" => None,
        raw => Some(
            raw.parse::<u32>()
                .map_err(|_| invalid("filters.min_duration_secs", "целое число секунд от 0"))?,
        ),
    };
    Ok((
        !all_fields(fields, "active").is_empty(),
        engine,
        webhook,
        Filters {
            deal_stage_ids: list(field(fields, "deal_stage_ids")),
            stage_ids: list(field(fields, "stage_ids")),
            office_ids,
            directions,
            min_duration_secs,
        },
    ))
}

#[derive(Template)]
#[template(path = "settings/test_result.html")]
struct TestResult {
    ok: bool,
    message: String,
}

async fn test_webhook(
    state: &WebState,
    viewer: &Viewer,
    webhook: Option<Webhook>,
    kind: &str,
    id: &str,
) -> Result<Response, PageError> {
    let Some(webhook) = webhook else {
        return render(TestResult {
            ok: false,
            message: "Адрес вебхука не задан — сохраните его сначала.".into(),
        });
    };
    let body = serde_json::json!({
        "event": "test",
        "kind": kind,
        "id": id,
        "message": "Проверка вебхука из настроек Цифрового РОПа",
        "sent_at": Utc::now().to_rfc3339(),
    })
    .to_string();
    let event = if kind == "table" {
        DeliveryEvent::TableResult
    } else {
        DeliveryEvent::ChecklistResult
    };
    let result = state
        .services
        .send_test_webhook(&webhook, event, body)
        .await;
    audit(
        state,
        viewer,
        "webhook.test",
        id,
        format!(
            "{} → {}",
            webhook.url,
            match &result {
                Ok(line) | Err(line) => line,
            }
        ),
    )
    .await?;
    let (ok, message) = match result {
        Ok(line) => (true, line),
        Err(line) => (false, line),
    };
    render(TestResult { ok, message })
}

async fn stored_checklist(state: &WebState, id: &str) -> Result<Checklist, PageError> {
    state.store.checklist(id).await?.ok_or(PageError::NotFound)
}

async fn stored_table(state: &WebState, id: &str) -> Result<Table, PageError> {
    state
        .store
        .table(&table_id(id)?)
        .await?
        .ok_or(PageError::NotFound)
}

// --- trying a definition on a call -----------------------------------------

/// How many recent processed calls the «try on a call» list offers.
const TRY_CALLS: u32 = 30;

async fn recent_calls(state: &WebState) -> Result<Vec<(String, String)>, PageError> {
    let page = state
        .store
        .list_calls(&CallFilter {
            status: Some(CallStatus::Done),
            limit: TRY_CALLS,
            ..CallFilter::default()
        })
        .await?;
    let names = super::Names::load(state).await?;
    Ok(page
        .calls
        .iter()
        .map(|c| {
            let occurred = c.call_started_at.unwrap_or(c.received_at);
            (
                c.call_id.as_str().to_owned(),
                format!(
                    "{} · {} · {}",
                    super::when(state, occurred),
                    names.of(&c.manager_id),
                    c.call_id.as_str()
                ),
            )
        })
        .collect())
}

/// The call the administrator chose, with its transcript.
async fn chosen_transcript(
    state: &WebState,
    body: &[u8],
) -> Result<Result<(rop_domain::Call, Transcript), String>, PageError> {
    let fields = form_fields(body);
    let raw = field(&fields, "call_id").trim();
    let Ok(call_id) = CallId::try_from(raw.to_owned()) else {
        return Ok(Err("Выберите звонок.".into()));
    };
    let Some(details) = state.store.call(&call_id).await? else {
        return Ok(Err(format!("Звонка «{raw}» нет.")));
    };
    match details.transcript {
        Some(transcript) => Ok(Ok((details.call, transcript))),
        None => Ok(Err(format!(
            "У звонка «{raw}» ещё нет расшифровки — выберите обработанный звонок."
        ))),
    }
}

const NOT_SAVED: &str = "Результат не сохранён и никуда не отправлен.";

#[derive(Template)]
#[template(path = "settings/try_result.html")]
struct TryResult {
    error: Option<String>,
    title: String,
    score: String,
    stages: Vec<super::calls::StageView>,
    cells: Vec<(String, String)>,
    note: String,
}

impl TryResult {
    fn failed(message: String) -> Self {
        Self {
            error: Some(message),
            title: String::new(),
            score: String::new(),
            stages: Vec::new(),
            cells: Vec::new(),
            note: String::new(),
        }
    }
}

pub(crate) async fn try_checklist(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let checklist = stored_checklist(&state, &id).await?;
    let (call, transcript) = match chosen_transcript(&state, &body).await? {
        Ok(found) => found,
        Err(message) => return render(TryResult::failed(message)),
    };
    let result = match state.services.try_checklist(&checklist, &transcript).await {
        Ok(result) => result,
        Err(message) => return render(TryResult::failed(format!("Не удалось оценить: {message}"))),
    };
    render(TryResult {
        error: None,
        title: format!("«{}» на звонке {}", checklist.name, call.call_id.as_str()),
        score: crate::format::percent(Some(result.completion_percentage)),
        stages: super::calls::stage_views(&result),
        cells: Vec::new(),
        note: NOT_SAVED.into(),
    })
}

pub(crate) async fn try_table(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let table = stored_table(&state, &id).await?;
    let (call, transcript) = match chosen_transcript(&state, &body).await? {
        Ok(found) => found,
        Err(message) => return render(TryResult::failed(message)),
    };
    let call_date = call.call_started_at.map(|t| {
        t.with_timezone(&crate::format::zone(state.settings.utc_offset_secs))
            .date_naive()
    });
    let result = match state.services.try_table(&table, &transcript, call_date).await {
        Ok(Some(result)) => result,
        Ok(None) => {
            return render(TryResult::failed(
                "Таблицы заполняет только языковая модель, а она не настроена (или для таблицы выбраны правила по фразам).".into(),
            ))
        }
        Err(message) => return render(TryResult::failed(format!("Не удалось заполнить: {message}"))),
    };
    render(TryResult {
        error: None,
        title: format!("«{}» на звонке {}", table.name, call.call_id.as_str()),
        score: String::new(),
        stages: Vec::new(),
        cells: super::calls::cells(&result),
        note: NOT_SAVED.into(),
    })
}

// --- saving either kind ------------------------------------------------------

/// What the two editors do alike with their definitions.
trait Definition: serde::Serialize + Sync {
    /// `checklist` or `table`: the audit actions' prefix.
    const KIND: &'static str;
    /// Generated ids are `<PREFIX>_<unix time>`.
    const PREFIX: &'static str;
    const TAKEN: &'static str;
    fn id(&self) -> &str;
    /// No id was given: one is generated.
    fn id_unset(&self) -> bool;
    fn set_generated_id(&mut self, id: &str);
    fn unset_id(&mut self);
    fn validate(&self) -> Result<(), InvalidDefinition>;
    async fn insert(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn update(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError>;
}

impl Definition for Checklist {
    const KIND: &'static str = "checklist";
    const PREFIX: &'static str = "CHK";
    const TAKEN: &'static str = "чек-лист с таким id уже есть";
    fn id(&self) -> &str {
        &self.checklist_id
    }
    fn id_unset(&self) -> bool {
        self.checklist_id.is_empty()
    }
    fn set_generated_id(&mut self, id: &str) {
        self.checklist_id = id.to_owned();
    }
    fn unset_id(&mut self) {
        self.checklist_id.clear();
    }
    fn validate(&self) -> Result<(), InvalidDefinition> {
        Checklist::validate(self)
    }
    async fn insert(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError> {
        state.store.insert_checklist(self, now).await
    }
    async fn update(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError> {
        state.store.update_checklist(self, now).await
    }
}

impl Definition for Table {
    const KIND: &'static str = "table";
    const PREFIX: &'static str = "TBL";
    const TAKEN: &'static str = "таблица с таким id уже есть";
    fn id(&self) -> &str {
        self.table_id.as_str()
    }
    fn id_unset(&self) -> bool {
        self.table_id.as_str() == rop_domain::analysis::UNSET_TABLE_ID
    }
    fn set_generated_id(&mut self, id: &str) {
        self.table_id = TableId::parse(id).expect("generated ids are valid");
    }
    fn unset_id(&mut self) {
        self.table_id = unset_table_id();
    }
    fn validate(&self) -> Result<(), InvalidDefinition> {
        Table::validate(self)
    }
    async fn insert(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError> {
        state.store.insert_table(self, now).await
    }
    async fn update(&self, state: &WebState, now: DateTime<Utc>) -> Result<(), StoreError> {
        state.store.update_table(self, now).await
    }
}

/// Validates and stores a definition, new or edited, and notes it in the
/// audit log. A new one without an id gets `<PREFIX>_<unix time>`, moving
/// to a later second while that id is taken. `Ok(Err(_))`: refused, with
/// the field to show the administrator.
async fn store_definition<D: Definition>(
    state: &WebState,
    viewer: &Viewer,
    definition: &mut D,
    is_new: bool,
) -> Result<Result<(), InvalidDefinition>, PageError> {
    let now = Utc::now();
    if !is_new {
        if let Err(error) = definition.validate() {
            return Ok(Err(error));
        }
        definition.update(state, now).await?;
        audit(
            state,
            viewer,
            &format!("{}.update", D::KIND),
            definition.id(),
            definition_details(definition),
        )
        .await?;
        return Ok(Ok(()));
    }
    let generated = definition.id_unset();
    for offset in 0..ID_ATTEMPTS {
        if generated {
            definition.set_generated_id(&format!("{}_{}", D::PREFIX, now.timestamp() + offset));
        }
        if let Err(error) = definition.validate() {
            if generated {
                definition.unset_id();
            }
            return Ok(Err(error));
        }
        match definition.insert(state, now).await {
            Ok(()) => {
                audit(
                    state,
                    viewer,
                    &format!("{}.create", D::KIND),
                    definition.id(),
                    definition_details(definition),
                )
                .await?;
                return Ok(Ok(()));
            }
            Err(StoreError::Duplicate) if generated => continue,
            Err(StoreError::Duplicate) => {
                return Ok(Err(InvalidDefinition {
                    field: format!("{}_id", D::KIND),
                    message: D::TAKEN.into(),
                }))
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(PageError::Internal(format!("no free {} id", D::KIND)))
}

// --- checklists -------------------------------------------------------------

pub(crate) struct StageForm {
    pub stage_id: String,
    pub name: String,
    pub instruction: String,
    pub weight: String,
    pub examples: String,
    pub forbidden: String,
}

#[derive(Template)]
#[template(path = "settings/checklist.html")]
struct ChecklistPage {
    chrome: Chrome,
    /// Empty for a new checklist.
    original_id: String,
    checklist_id: String,
    name: String,
    description: String,
    general_instruction: String,
    common: CommonForm,
    stages: Vec<StageForm>,
    error: Option<String>,
    /// Recent processed calls to try the saved checklist on: (id, label).
    try_calls: Vec<(String, String)>,
    try_action: String,
}

fn checklist_page(
    viewer: &Viewer,
    original_id: &str,
    c: &Checklist,
    error: Option<String>,
) -> ChecklistPage {
    let mut stages: Vec<StageForm> = c
        .stages
        .iter()
        .map(|s| StageForm {
            stage_id: s.stage_id.clone(),
            name: s.name.clone(),
            instruction: s.instruction.clone(),
            weight: s.weight.to_string(),
            examples: s.example_phrases.join("\n"),
            forbidden: s.forbidden_phrases.join("\n"),
        })
        .collect();
    if stages.is_empty() {
        stages.push(StageForm {
            stage_id: String::new(),
            name: String::new(),
            instruction: String::new(),
            weight: "1".into(),
            examples: String::new(),
            forbidden: String::new(),
        });
    }
    ChecklistPage {
        chrome: Chrome::new(viewer, "settings"),
        original_id: original_id.to_owned(),
        checklist_id: c.checklist_id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        general_instruction: c.general_instruction.clone(),
        common: CommonForm::of(c.active, c.engine, &c.webhook, &c.filters),
        stages,
        error,
        try_calls: Vec::new(),
        try_action: format!("/settings/checklists/{}/try", encode(original_id)),
    }
}

fn blank_checklist() -> Checklist {
    Checklist {
        checklist_id: String::new(),
        name: String::new(),
        description: String::new(),
        active: true,
        general_instruction: String::new(),
        stages: Vec::new(),
        filters: Filters::default(),
        webhook: None,
        engine: EngineChoice::Default,
    }
}

pub(crate) async fn new_checklist(viewer: Viewer) -> Result<Response, PageError> {
    viewer.require_admin()?;
    render(checklist_page(&viewer, "", &blank_checklist(), None))
}

pub(crate) async fn edit_checklist(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let checklist = stored_checklist(&state, &id).await?;
    let mut page = checklist_page(&viewer, &id, &checklist, None);
    page.try_calls = recent_calls(&state).await?;
    render(page)
}

fn checklist_from_form(
    fields: &[(String, String)],
    stored: Option<&Checklist>,
) -> (Checklist, Result<(), InvalidDefinition>) {
    let ids = all_fields(fields, "stage_id");
    let names = all_fields(fields, "stage_name");
    let instructions = all_fields(fields, "stage_instruction");
    let weights = all_fields(fields, "stage_weight");
    let examples = all_fields(fields, "stage_examples");
    let forbidden = all_fields(fields, "stage_forbidden");
    let at = |list: &[&str], i: usize| list.get(i).copied().unwrap_or_default().to_owned();
    let mut weight_error = None;
    let mut stages = Vec::new();
    for i in 0..names.len() {
        let (name, instruction) = (at(&names, i), at(&instructions, i));
        let (example_text, forbidden_text) = (at(&examples, i), at(&forbidden, i));
        if [&name, &instruction, &example_text, &forbidden_text]
            .iter()
            .all(|s| s.trim().is_empty())
        {
            continue; // an empty row the administrator added and left
        }
        let weight = match at(&weights, i).trim() {
            "" => 1,
            raw => raw.parse::<u32>().unwrap_or_else(|_| {
                weight_error.get_or_insert(InvalidDefinition {
                    field: format!("stages[{}].weight", stages.len()),
                    message: "вес — целое число от 1".into(),
                });
                1
            }),
        };
        let mut stage_id = at(&ids, i).trim().to_owned();
        if stage_id.is_empty() {
            stage_id = format!("stage_{}", stages.len() + 1);
        }
        stages.push(Stage {
            stage_id,
            name: name.trim().to_owned(),
            instruction: instruction.trim().to_owned(),
            weight,
            example_phrases: lines(&example_text),
            forbidden_phrases: lines(&forbidden_text),
        });
    }
    let common = common(fields, stored.and_then(|c| c.webhook.as_ref()));
    let (active, engine, webhook, filters) = match &common {
        Ok((a, e, w, f)) => (*a, *e, w.clone(), f.clone()),
        Err(_) => (true, EngineChoice::Default, None, Filters::default()),
    };
    let checklist = Checklist {
        checklist_id: field(fields, "checklist_id").trim().to_owned(),
        name: field(fields, "name").trim().to_owned(),
        description: field(fields, "description").trim().to_owned(),
        active,
        general_instruction: field(fields, "general_instruction").trim().to_owned(),
        stages,
        filters,
        webhook,
        engine,
    };
    let checked = match (common, weight_error) {
        (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        (Ok(_), None) => Ok(()),
    };
    (checklist, checked)
}

fn invalid_message(error: &InvalidDefinition) -> String {
    format!("Поле {}: {}", error.field, error.message)
}

pub(crate) async fn save_checklist(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let original_id = field(&fields, "original_id").trim().to_owned();
    let stored = if original_id.is_empty() {
        None
    } else {
        Some(
            state
                .store
                .checklist(&original_id)
                .await?
                .ok_or(PageError::NotFound)?,
        )
    };
    let (mut checklist, parsed) = checklist_from_form(&fields, stored.as_ref());
    if stored.is_some() {
        // The id of a stored checklist does not change: results refer to it.
        checklist.checklist_id = original_id.clone();
    }
    let refuse = |checklist: &Checklist, error: &InvalidDefinition| {
        let page = checklist_page(
            &viewer,
            &original_id,
            checklist,
            Some(invalid_message(error)),
        )
        .render()
        .map_err(PageError::from)?;
        Ok::<_, PageError>((axum::http::StatusCode::BAD_REQUEST, Html(page)).into_response())
    };
    if let Err(error) = &parsed {
        return refuse(&checklist, error);
    }
    if let Err(error) = store_definition(&state, &viewer, &mut checklist, stored.is_none()).await? {
        return refuse(&checklist, &error);
    }
    Ok(Redirect::to(&format!(
        "/settings/checklists/{}",
        encode(&checklist.checklist_id)
    ))
    .into_response())
}

pub(crate) async fn delete_checklist(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    if !state.store.delete_checklist(&id).await? {
        return Err(PageError::NotFound);
    }
    audit(&state, &viewer, "checklist.delete", &id, "").await?;
    Ok(Redirect::to("/settings/checklists").into_response())
}

pub(crate) async fn test_checklist_webhook(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let checklist = stored_checklist(&state, &id).await?;
    test_webhook(&state, &viewer, checklist.webhook, "checklist", &id).await
}

// --- tables -----------------------------------------------------------------

pub(crate) struct ColumnForm {
    pub key: String,
    pub title: String,
    pub kind: &'static str,
    pub description: String,
    pub values: String,
}

#[derive(Template)]
#[template(path = "settings/table.html")]
struct TablePage {
    chrome: Chrome,
    original_id: String,
    table_id: String,
    name: String,
    instruction: String,
    common: CommonForm,
    columns: Vec<ColumnForm>,
    kinds: Vec<(&'static str, &'static str)>,
    error: Option<String>,
    /// Recent processed calls to preview the saved table on: (id, label).
    try_calls: Vec<(String, String)>,
    try_action: String,
}

const KINDS: [(&str, &str); 6] = [
    ("string", "строка"),
    ("number", "число"),
    ("integer", "целое число"),
    ("boolean", "да/нет"),
    ("date", "дата"),
    ("enum", "один из вариантов"),
];

fn kind_value(kind: &ColumnType) -> &'static str {
    match kind {
        ColumnType::String => "string",
        ColumnType::Number => "number",
        ColumnType::Integer => "integer",
        ColumnType::Boolean => "boolean",
        ColumnType::Date => "date",
        ColumnType::Enum => "enum",
    }
}

fn table_page(viewer: &Viewer, original_id: &str, t: &Table, error: Option<String>) -> TablePage {
    let mut columns: Vec<ColumnForm> = t
        .columns
        .iter()
        .map(|c| ColumnForm {
            key: c.key.clone(),
            title: c.title.clone(),
            kind: kind_value(&c.kind),
            description: c.description.clone(),
            values: c.values.join(", "),
        })
        .collect();
    if columns.is_empty() {
        columns.push(ColumnForm {
            key: String::new(),
            title: String::new(),
            kind: "string",
            description: String::new(),
            values: String::new(),
        });
    }
    let table_id = t.table_id.as_str();
    TablePage {
        chrome: Chrome::new(viewer, "settings"),
        original_id: original_id.to_owned(),
        table_id: if table_id == rop_domain::analysis::UNSET_TABLE_ID {
            String::new()
        } else {
            table_id.to_owned()
        },
        name: t.name.clone(),
        instruction: t.instruction.clone(),
        common: CommonForm::of(t.active, t.engine, &t.webhook, &t.filters),
        columns,
        kinds: KINDS.to_vec(),
        error,
        try_calls: Vec::new(),
        try_action: format!("/settings/tables/{}/try", encode(original_id)),
    }
}

fn unset_table_id() -> TableId {
    TableId::parse(rop_domain::analysis::UNSET_TABLE_ID).expect("the placeholder id is valid")
}

pub(crate) async fn new_table(viewer: Viewer) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let table = Table {
        table_id: unset_table_id(),
        name: String::new(),
        instruction: String::new(),
        active: true,
        columns: Vec::new(),
        filters: Filters::default(),
        webhook: None,
        engine: EngineChoice::Default,
    };
    render(table_page(&viewer, "", &table, None))
}

fn table_id(raw: &str) -> Result<TableId, PageError> {
    TableId::parse(raw).map_err(|_| PageError::NotFound)
}

pub(crate) async fn edit_table(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let table = stored_table(&state, &id).await?;
    let mut page = table_page(&viewer, &id, &table, None);
    page.try_calls = recent_calls(&state).await?;
    render(page)
}

fn table_from_form(
    fields: &[(String, String)],
    stored: Option<&Table>,
) -> (Table, Result<(), InvalidDefinition>) {
    let keys = all_fields(fields, "column_key");
    let titles = all_fields(fields, "column_title");
    let kinds = all_fields(fields, "column_type");
    let descriptions = all_fields(fields, "column_description");
    let values = all_fields(fields, "column_values");
    let at = |list: &[&str], i: usize| list.get(i).copied().unwrap_or_default().trim().to_owned();
    let mut problem = None;
    let mut columns = Vec::new();
    for i in 0..keys.len().max(titles.len()) {
        let (key, title, description) = (at(&keys, i), at(&titles, i), at(&descriptions, i));
        if key.is_empty() && title.is_empty() && description.is_empty() {
            continue;
        }
        let kind = match at(&kinds, i).as_str() {
            "string" | "" => ColumnType::String,
            "number" => ColumnType::Number,
            "integer" => ColumnType::Integer,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "enum" => ColumnType::Enum,
            _ => {
                problem.get_or_insert(InvalidDefinition {
                    field: format!("columns[{}].type", columns.len()),
                    message: "неизвестный тип колонки".into(),
                });
                ColumnType::String
            }
        };
        columns.push(Column {
            key,
            title,
            kind,
            description,
            values: list(&at(&values, i)),
        });
    }
    let common = common(fields, stored.and_then(|t| t.webhook.as_ref()));
    let (active, engine, webhook, filters) = match &common {
        Ok((a, e, w, f)) => (*a, *e, w.clone(), f.clone()),
        Err(_) => (true, EngineChoice::Default, None, Filters::default()),
    };
    let raw_id = field(fields, "table_id").trim();
    let table_id = if raw_id.is_empty() {
        Ok(unset_table_id())
    } else {
        TableId::parse(raw_id).map_err(|_| InvalidDefinition {
            field: "table_id".into(),
            message: "id — латинские буквы, цифры, «_» и «-»".into(),
        })
    };
    let table = Table {
        table_id: table_id.clone().unwrap_or_else(|_| unset_table_id()),
        name: field(fields, "name").trim().to_owned(),
        instruction: field(fields, "instruction").trim().to_owned(),
        active,
        columns,
        filters,
        webhook,
        engine,
    };
    let checked = match (common, table_id, problem) {
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Some(e)) => Err(e),
        _ => Ok(()),
    };
    (table, checked)
}

pub(crate) async fn save_table(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let original_id = field(&fields, "original_id").trim().to_owned();
    let stored = if original_id.is_empty() {
        None
    } else {
        Some(
            state
                .store
                .table(&table_id(&original_id)?)
                .await?
                .ok_or(PageError::NotFound)?,
        )
    };
    let (mut table, parsed) = table_from_form(&fields, stored.as_ref());
    if let Some(stored) = &stored {
        table.table_id = stored.table_id.clone();
    }
    let refuse = |table: &Table, error: &InvalidDefinition| {
        let page = table_page(&viewer, &original_id, table, Some(invalid_message(error)))
            .render()
            .map_err(PageError::from)?;
        Ok::<_, PageError>((axum::http::StatusCode::BAD_REQUEST, Html(page)).into_response())
    };
    if let Err(error) = &parsed {
        return refuse(&table, error);
    }
    if let Err(error) = store_definition(&state, &viewer, &mut table, stored.is_none()).await? {
        return refuse(&table, &error);
    }
    Ok(Redirect::to(&format!(
        "/settings/tables/{}",
        encode(table.table_id.as_str())
    ))
    .into_response())
}

pub(crate) async fn delete_table(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    if !state.store.delete_table(&table_id(&id)?).await? {
        return Err(PageError::NotFound);
    }
    audit(&state, &viewer, "table.delete", &id, "").await?;
    Ok(Redirect::to("/settings/tables").into_response())
}

pub(crate) async fn test_table_webhook(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let table = stored_table(&state, &id).await?;
    test_webhook(&state, &viewer, table.webhook, "table", &id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stages_come_from_repeated_fields_and_empty_rows_are_dropped() {
        let fields = pairs(&[
            ("name", "Продажа окон"),
            ("active", "on"),
            ("stage_id", ""),
            ("stage_name", "Приветствие"),
            ("stage_instruction", "Назвать себя"),
            ("stage_weight", "2"),
            ("stage_examples", "здравствуйте\n\nменя зовут"),
            ("stage_forbidden", ""),
            ("stage_id", ""),
            ("stage_name", ""),
            ("stage_instruction", ""),
            ("stage_weight", "1"),
            ("stage_examples", ""),
            ("stage_forbidden", ""),
            ("incoming", "on"),
            ("min_duration", "30"),
        ]);
        let (checklist, checked) = checklist_from_form(&fields, None);
        checked.unwrap();
        assert_eq!(checklist.stages.len(), 1);
        let stage = &checklist.stages[0];
        assert_eq!(stage.stage_id, "stage_1");
        assert_eq!(stage.weight, 2);
        assert_eq!(stage.example_phrases, vec!["здравствуйте", "меня зовут"]);
        assert!(checklist.active);
        assert_eq!(checklist.filters.directions, vec![Direction::Incoming]);
        assert_eq!(checklist.filters.min_duration_secs, Some(30));
    }

    #[test]
    fn a_blank_secret_keeps_the_stored_one() {
        let stored = Webhook {
            url: "https://crm.example/old".into(),
            secret: "s3cret".into(),
        };
        let fields = pairs(&[("webhook_url", "https://crm.example/new")]);
        let (_, _, webhook, _) = common(&fields, Some(&stored)).unwrap();
        let webhook = webhook.unwrap();
        assert_eq!(webhook.url, "https://crm.example/new");
        assert_eq!(webhook.secret, "s3cret");
        assert!(!definition_details(&serde_json::json!({"webhook": webhook})).contains("s3cret"));
    }

    #[test]
    fn bad_numbers_name_their_field() {
        let fields = pairs(&[
            ("name", "x"),
            ("stage_name", "a"),
            ("stage_weight", "много"),
        ]);
        let (_, checked) = checklist_from_form(&fields, None);
        assert_eq!(checked.unwrap_err().field, "stages[0].weight");
        let fields = pairs(&[("min_duration", "-1")]);
        assert!(common(&fields, None).is_err());
        let fields = pairs(&[("column_key", "a"), ("column_type", "blob")]);
        assert_eq!(
            table_from_form(&fields, None).1.unwrap_err().field,
            "columns[0].type"
        );
    }
}
