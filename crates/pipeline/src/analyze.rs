//! Step `analyze`: scores the transcript against every active checklist and
//! fills every active table whose filters admit the call, then plans one
//! webhook per checklist and table that has one. Results, the call's score
//! and the deliveries are stored together when the job finishes, replacing
//! an earlier analysis, so a failure half-way writes nothing.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use rop_analysis::{AnalysisError, Analyzer};
use rop_domain::{Call, CallAnalysis, JobKind, StepOutput, Store};

use crate::worker::{Next, Step, StepDone, StepError};

pub struct AnalyzeStep {
    pub store: Arc<dyn Store>,
    pub analyzer: Arc<Analyzer>,
}

fn explain(error: AnalysisError, what: &str) -> StepError {
    match error {
        AnalysisError::Unavailable(detail) => {
            StepError::Transient(format!("{what}: языковая модель недоступна: {detail}"))
        }
        AnalysisError::Failed(detail) => StepError::Permanent {
            code: "analysis_failed".into(),
            message: format!("{what}: анализ не удался: {detail}"),
        },
    }
}

#[async_trait]
impl Step for AnalyzeStep {
    fn kind(&self) -> JobKind {
        JobKind::Analyze
    }

    async fn run(&self, call: &Call) -> Result<StepDone, StepError> {
        let started = Instant::now();
        let details = self
            .store
            .call(&call.call_id)
            .await?
            .ok_or_else(|| StepError::Transient("звонок не найден".into()))?;
        let transcript = details.transcript.ok_or_else(|| StepError::Permanent {
            code: "not_transcribed".into(),
            message: "Нет расшифровки: анализировать нечего".into(),
        })?;
        let offices = self.store.manager_offices(&call.manager_id).await?;
        let checklists: Vec<_> = self
            .store
            .checklists()
            .await?
            .into_iter()
            .filter(|c| c.active && c.filters.admit(call, &offices))
            .collect();
        let tables: Vec<_> = self
            .store
            .tables()
            .await?
            .into_iter()
            .filter(|t| t.active && t.filters.admit(call, &offices))
            .collect();

        let mut scored = Vec::with_capacity(checklists.len());
        for checklist in checklists {
            let result = self
                .analyzer
                .checklist(&checklist, &transcript, Utc::now())
                .await
                .map_err(|e| explain(e, &format!("Чек-лист «{}»", checklist.name)))?;
            scored.push((checklist, result));
        }
        let call_date = call
            .call_started_at
            .unwrap_or(call.received_at)
            .date_naive();
        let mut filled = Vec::with_capacity(tables.len());
        let mut without_model = Vec::new();
        for table in tables {
            match self
                .analyzer
                .table(&table, &transcript, Some(call_date), Utc::now())
                .await
                .map_err(|e| explain(e, &format!("Таблица «{}»", table.name)))?
            {
                Some(result) => filled.push((table, result)),
                None => without_model.push(table.name),
            }
        }

        let deliveries = rop_delivery::plan(call, &scored, &filled, Utc::now());
        let mut message = format!(
            "Проанализировано за {:.1} с: чек-листов {}, таблиц {}",
            started.elapsed().as_secs_f64(),
            scored.len(),
            filled.len(),
        );
        for (_, result) in &scored {
            message.push_str(&format!(
                "; «{}» — {}/{} ({}%)",
                result.checklist_name,
                result.total_score,
                result.max_score,
                result.completion_percentage
            ));
        }
        if !without_model.is_empty() {
            message.push_str(&format!(
                "; без языковой модели не заполнены таблицы: {}",
                without_model.join(", ")
            ));
        }
        if !deliveries.is_empty() {
            message.push_str(&format!("; вебхуков к отправке: {}", deliveries.len()));
        }
        let crm_tasks: Vec<_> = rop_domain::integrations::write_back_task(call, Utc::now())
            .into_iter()
            .collect();
        if !crm_tasks.is_empty() {
            message.push_str("; результаты будут записаны в CRM");
        }
        let analysis = CallAnalysis {
            checklists: scored.into_iter().map(|(_, result)| result).collect(),
            tables: filled.into_iter().map(|(_, result)| result).collect(),
            deliveries,
            crm_tasks,
        };
        Ok(StepDone {
            next: Next::Finish,
            message,
            output: StepOutput::Analysis(Box::new(analysis)),
        })
    }
}
