//! What an analysed call sends back to a CRM: the checklist summary as a
//! note (amoCRM) or a timeline comment (Bitrix24), and the values of the
//! fields an administrator mapped.

use rop_domain::analysis::StageStatus;
use rop_domain::{CallDetails, ChecklistResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a CRM field receives after analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteValue {
    /// The average completion of the call's checklists, `87`.
    Score,
    /// Each checklist's name and score on one line.
    Summary,
}

/// CRMs keep notes short enough to read in the card; a long checklist is
/// cut with a mark rather than refused.
const NOTE_LIMIT_CHARS: usize = 8000;

/// The text: one block per checklist with each stage done or not.
pub fn note_text(call: &CallDetails) -> String {
    let mut text = format!("Цифровой РОП — анализ звонка {}\n", call.call.call_id);
    if call.checklists.is_empty() {
        text.push_str("Звонок распознан; ни один чек-лист к нему не подошёл.\n");
    }
    for checklist in &call.checklists {
        text.push_str(&format!(
            "\n{}: {} из {} ({}%)\n",
            checklist.checklist_name,
            checklist.total_score,
            checklist.max_score,
            percent(checklist.completion_percentage)
        ));
        for stage in &checklist.stages {
            let mark = match stage.status {
                StageStatus::Completed => "✓",
                StageStatus::Failed => "✗",
            };
            text.push_str(&format!("{mark} {}", stage.stage_name));
            if !stage.comment.is_empty() {
                text.push_str(&format!(" — {}", stage.comment));
            }
            text.push('\n');
        }
    }
    if text.chars().count() > NOTE_LIMIT_CHARS {
        text = text.chars().take(NOTE_LIMIT_CHARS - 1).collect();
        text.push('…');
    }
    text.trim_end().to_owned()
}

/// A field's value, `None` when the call has nothing to give (no
/// checklist matched).
pub fn field_value(call: &CallDetails, value: WriteValue) -> Option<String> {
    let checklists: &[ChecklistResult] = &call.checklists;
    if checklists.is_empty() {
        return None;
    }
    Some(match value {
        WriteValue::Score => {
            let average = checklists
                .iter()
                .map(|c| c.completion_percentage)
                .sum::<f64>()
                / checklists.len() as f64;
            percent(average).to_string()
        }
        WriteValue::Summary => checklists
            .iter()
            .map(|c| format!("{} {}%", c.checklist_name, percent(c.completion_percentage)))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

fn percent(value: f64) -> i64 {
    if value.is_finite() {
        value.round() as i64
    } else {
        0
    }
}
