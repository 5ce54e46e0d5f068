//! Managers, office leaders and offices, as the CRM describes them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::id::{ManagerId, OfficeId};

/// A person from the CRM (manager or office leader). People the CRM mentions
/// before naming them exist as placeholders with no names.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Manager {
    pub manager_id: ManagerId,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub middlename: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerUpdate {
    pub manager_id: ManagerId,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub middlename: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OfficeUpdate {
    pub office_id: OfficeId,
    pub title: Option<String>,
    /// `None` leaves the office's leaders as they are; `Some` replaces them.
    pub leader_ids: Option<Vec<ManagerId>>,
    /// `None` leaves the office's managers as they are; `Some` replaces them.
    pub manager_ids: Option<Vec<ManagerId>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Office {
    pub office_id: OfficeId,
    pub title: Option<String>,
    pub leader_ids: Vec<ManagerId>,
    pub manager_ids: Vec<ManagerId>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct UpsertCounts {
    pub created: u64,
    pub updated: u64,
}
