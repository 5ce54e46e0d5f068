//! Aggregates for the dashboard and the people pages, computed by the
//! database so they stay fast with many calls.

use chrono::{DateTime, NaiveDate, Utc};

use crate::id::{ManagerId, OfficeId};

/// Which calls the figures cover.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    /// Calls that happened at or after this moment (call time, or receipt
    /// time when unknown), like `CallFilter`.
    pub from: DateTime<Utc>,
    /// Calls that happened before this moment.
    pub to: DateTime<Utc>,
    /// Only these managers' calls; `None` means everyone's.
    pub managers: Option<Vec<ManagerId>>,
    /// Days are counted in this offset from UTC (the company's time zone).
    pub utc_offset_secs: i32,
}

/// Counts over a set of calls. Skipped calls are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub calls: u64,
    /// Calls with a checklist score.
    pub analysed: u64,
    /// Mean checklist completion of the analysed calls, 0–100.
    pub average_completion: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DayStats {
    /// The day in the query's time zone.
    pub day: NaiveDate,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerStats {
    pub manager_id: ManagerId,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OfficeStats {
    pub office_id: OfficeId,
    pub title: Option<String>,
    /// Over the office's managers' calls.
    pub totals: Totals,
}

/// How often one checklist stage was not done.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFailures {
    pub checklist_id: String,
    pub stage_id: String,
    /// The stage's name at the time of the newest result.
    pub stage_name: String,
    pub failed: u64,
    /// How many times the stage was scored at all.
    pub scored: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    pub totals: Totals,
    /// Days with at least one call, oldest first.
    pub days: Vec<DayStats>,
    /// Managers with at least one call, best average first (unscored last).
    pub managers: Vec<ManagerStats>,
    /// Offices with at least one call, best average first (unscored last).
    pub offices: Vec<OfficeStats>,
    /// The most often failed stages first, at most 10.
    pub failed_stages: Vec<StageFailures>,
}
