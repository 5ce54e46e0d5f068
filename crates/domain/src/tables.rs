//! Analysis tables ("Таблицы"): the business's own fields extracted from calls.

use serde_json::Value;

use crate::id::TableId;

#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisTable {
    pub table_id: TableId,
    pub name: String,
    /// Columns, instruction, filters and webhook, as the table editor saves them.
    pub definition: Value,
}

/// Answer of `GET /api/v1/tables/call-ready`.
#[derive(Debug, Clone, PartialEq)]
pub enum TableReadiness {
    UnknownTable,
    UnknownCall,
    NotReady,
    Ready(Value),
}
