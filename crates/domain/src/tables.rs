//! Analysis tables ("Таблицы"): the business's own fields extracted from calls.

use serde_json::Value;

/// Answer of `GET /api/v1/tables/call-ready`.
#[derive(Debug, Clone, PartialEq)]
pub enum TableReadiness {
    UnknownTable,
    UnknownCall,
    NotReady,
    Ready(Value),
}
