//! Call analysis (PRODUCT.md §5): every transcribed call scored against
//! each matching checklist and mined for each matching table's fields.
//!
//! [`Analyzer`] chooses the engine per checklist or table: the language
//! model when one is configured (or asked for), phrase rules otherwise.
//! Whatever the engine, a quote is kept only when it really is in the
//! transcript: it is aligned to the transcript's words, and the exact words
//! and their time replace what the engine wrote.
//!
//! Every question about one call starts with the same system text and the
//! same rendering of the transcript; only the task after them differs, so
//! an engine that caches prompt prefixes reads the transcript once.

mod ask;
mod dialogue;
mod fill;
mod judge;
mod normalize;
mod quotes;
mod rules;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rop_domain::analysis::{
    AnalysisEngine, Checklist, ChecklistResult, EngineChoice, Stage, StageResult, StageStatus,
    Table, TableResult,
};
use rop_domain::transcript::Transcript;
use rop_llm::LanguageModel;

pub use dialogue::{Found, Speaker};
pub use normalize::{parse_date, parse_number};
pub use quotes::verify_quote;

use dialogue::Dialogue;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// The model is down, busy or slow: worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// Retrying will not help: the model answered off the schema twice,
    /// or no model is configured for a checklist that demands one.
    #[error("{0}")]
    Failed(String),
}

/// Scores checklists and fills tables for one installation.
#[derive(Clone)]
pub struct Analyzer {
    llm: Option<Arc<dyn LanguageModel>>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("llm", &self.llm.as_ref().map(|m| (m.name(), m.model())))
            .finish()
    }
}

impl Analyzer {
    /// `llm`: the configured model, if any; with one, it is the default
    /// engine, without one phrase rules are.
    pub fn new(llm: Option<Arc<dyn LanguageModel>>) -> Self {
        Self { llm }
    }

    pub fn has_llm(&self) -> bool {
        self.llm.is_some()
    }

    /// Scores one checklist on one call with the checklist's engine:
    /// `Default` is the model when there is one, phrase rules otherwise;
    /// `Llm` without a model fails.
    pub async fn checklist(
        &self,
        checklist: &Checklist,
        transcript: &Transcript,
        now: DateTime<Utc>,
    ) -> Result<ChecklistResult, AnalysisError> {
        let dialogue = Dialogue::new(transcript);
        let llm =
            match (checklist.engine, &self.llm) {
                (EngineChoice::Rules, _) | (EngineChoice::Default, None) => None,
                (EngineChoice::Llm | EngineChoice::Default, Some(llm)) => Some(llm),
                (EngineChoice::Llm, None) => return Err(AnalysisError::Failed(
                    "Для этого чек-листа выбран движок «языковая модель», но модель не настроена. \
                     Настройте модель или выберите движок «правила»."
                        .into(),
                )),
            };
        let Some(llm) = llm else {
            let stages = rules::checklist(&dialogue, checklist);
            return Ok(ChecklistResult::new(
                checklist,
                stages,
                AnalysisEngine::Rules,
                now,
            ));
        };
        let stages = if dialogue.lines.iter().all(|l| l.tokens.is_empty()) {
            silent(checklist)
        } else {
            judge::run(llm.as_ref(), &dialogue, checklist).await?
        };
        Ok(ChecklistResult::new(
            checklist,
            stages,
            AnalysisEngine::Llm,
            now,
        ))
    }

    /// Fills one table from one call. Only a model can: without one (or
    /// with the table set to rules) the answer is `Ok(None)`. `call_date`
    /// is the day relative dates («завтра», «в среду») count from; without
    /// it, the day of `now` (calls are analysed minutes after they end).
    pub async fn table(
        &self,
        table: &Table,
        transcript: &Transcript,
        call_date: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> Result<Option<TableResult>, AnalysisError> {
        let Some(llm) = self
            .llm
            .as_ref()
            .filter(|_| table.engine != EngineChoice::Rules)
        else {
            return Ok(None);
        };
        let dialogue = Dialogue::new(transcript);
        let extracted_data = if dialogue.lines.iter().all(|l| l.tokens.is_empty()) {
            table
                .columns
                .iter()
                .map(|c| (c.key.clone(), serde_json::Value::Null))
                .collect()
        } else {
            let call_date = call_date.unwrap_or_else(|| now.date_naive());
            fill::run(llm.as_ref(), &dialogue, table, call_date).await?
        };
        Ok(Some(TableResult {
            table_id: table.table_id.clone(),
            table_name: table.name.clone(),
            extracted_data,
            engine: AnalysisEngine::Llm,
            analyzed_at: now,
        }))
    }
}

/// Nothing was said: nothing to ask the model.
fn silent(checklist: &Checklist) -> Vec<StageResult> {
    checklist
        .stages
        .iter()
        .map(|stage| stage_result(stage, false, 0, "В расшифровке нет речи.".into(), None))
        .collect()
}

/// A stage's result with score and status agreeing, the quote and its
/// time taken from the transcript.
pub(crate) fn stage_result(
    stage: &Stage,
    done: bool,
    percentage: u8,
    comment: String,
    quote: Option<Found>,
) -> StageResult {
    let (quote, quote_start, quote_end) = match quote {
        Some(found) => (found.text, Some(found.start), Some(found.end)),
        None => (String::new(), None, None),
    };
    StageResult {
        stage_id: stage.stage_id.clone(),
        stage_name: stage.name.clone(),
        score: if done { 1 } else { -1 },
        percentage: if done { percentage.min(100) } else { 0 },
        status: if done {
            StageStatus::Completed
        } else {
            StageStatus::Failed
        },
        comment,
        quote,
        quote_start,
        quote_end,
        weight: stage.weight,
    }
}

#[cfg(test)]
mod tests;
