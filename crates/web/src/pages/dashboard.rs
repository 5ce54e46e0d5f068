//! Дашборд: the period's figures, the trend by day, offices and managers
//! ranked, and the stages most often failed — all aggregated by the store.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{Days, NaiveDate, TimeZone, Utc};
use rop_domain::{CallFilter, Dashboard, StatsQuery};
use serde::Deserialize;

use super::{render, Chrome, Names};
use crate::access::Viewer;
use crate::error::PageError;
use crate::format::{self, percent};
use crate::WebState;

/// The period of a figures page: the last `days` days, or `from`–`to`
/// (both inclusive, `YYYY-MM-DD` in the company's time zone).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PeriodQuery {
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

pub(crate) struct Period {
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// 7, 30, 90 or 365 when one of the presets was chosen.
    pub preset: Option<u32>,
}

impl Period {
    pub fn parse(query: &PeriodQuery, offset_secs: i32) -> Result<Self, PageError> {
        let today = Utc::now()
            .with_timezone(&format::zone(offset_secs))
            .date_naive();
        let date = |raw: &Option<String>| -> Result<Option<NaiveDate>, PageError> {
            match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| {
                        PageError::BadRequest(format!("Дата «{text}» — нужен вид ГГГГ-ММ-ДД."))
                    }),
            }
        };
        let (from, to) = (date(&query.from)?, date(&query.to)?);
        if from.is_some() || to.is_some() {
            let last = to.unwrap_or(today);
            let first = from.unwrap_or_else(|| last - Days::new(29));
            if first > last {
                return Err(PageError::BadRequest(
                    "Начало периода позже его конца.".into(),
                ));
            }
            return Ok(Self {
                first,
                last,
                preset: None,
            });
        }
        let days = query.days.unwrap_or(30).clamp(1, 3660);
        Ok(Self {
            first: today - Days::new(u64::from(days) - 1),
            last: today,
            preset: Some(days),
        })
    }

    pub fn stats(
        &self,
        offset_secs: i32,
        managers: Option<Vec<rop_domain::ManagerId>>,
    ) -> StatsQuery {
        let zone = format::zone(offset_secs);
        let start = |day: NaiveDate| {
            zone.from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .expect("fixed offsets have one midnight")
                .with_timezone(&Utc)
        };
        StatsQuery {
            from: start(self.first),
            to: start(self.last + Days::new(1)),
            managers,
            utc_offset_secs: offset_secs,
        }
    }

    /// The preset periods: days, label, chosen.
    pub fn presets(&self) -> Vec<(u32, &'static str, bool)> {
        [
            (7, "7 дней"),
            (30, "30 дней"),
            (90, "90 дней"),
            (365, "год"),
        ]
        .into_iter()
        .map(|(days, label)| (days, label, self.preset == Some(days)))
        .collect()
    }

    pub fn label(&self) -> String {
        format!(
            "{} — {}",
            self.first.format("%d.%m.%Y"),
            self.last.format("%d.%m.%Y")
        )
    }

    pub fn first_iso(&self) -> String {
        self.first.to_string()
    }

    pub fn last_iso(&self) -> String {
        self.last.to_string()
    }

    /// The query string that selects this period, for links.
    pub fn query(&self) -> String {
        match self.preset {
            Some(days) => format!("days={days}"),
            None => format!("from={}&to={}", self.first, self.last),
        }
    }
}

pub(crate) struct Ranked {
    pub href: String,
    pub name: String,
    pub calls: u64,
    pub analysed: u64,
    pub average: String,
}

pub(crate) struct FailedStage {
    pub name: String,
    pub checklist: String,
    pub failed: u64,
    pub share: String,
}

/// The trend chart's data as JSON for `app.js`: days as unix seconds (noon),
/// calls, and the average completion (null on days with no score); the
/// period's ends, so one busy day does not fill the axis; the time zone.
pub(crate) fn trend_json(figures: &Dashboard, period: &Period, offset_secs: i32) -> String {
    let zone = format::zone(offset_secs);
    let days: Vec<i64> = figures
        .days
        .iter()
        .map(|d| {
            zone.from_local_datetime(&d.day.and_hms_opt(12, 0, 0).expect("noon"))
                .single()
                .map(|t| t.timestamp())
                .unwrap_or_default()
        })
        .collect();
    let calls: Vec<u64> = figures.days.iter().map(|d| d.totals.calls).collect();
    let average: Vec<Option<f64>> = figures
        .days
        .iter()
        .map(|d| {
            d.totals
                .average_completion
                .map(|a| (a * 10.0).round() / 10.0)
        })
        .collect();
    let stats = period.stats(offset_secs, None);
    // IANA names whole-hour offsets with the sign reversed: UTC+3 is Etc/GMT-3.
    let hours = offset_secs / 3600;
    let tz = match hours {
        0 => "UTC".to_owned(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    };
    serde_json::json!({
        "days": days,
        "calls": calls,
        "average": average,
        "from": stats.from.timestamp(),
        "to": stats.to.timestamp(),
        "tz": tz,
    })
    .to_string()
}

pub(crate) fn failed_stages(figures: &Dashboard) -> Vec<FailedStage> {
    figures
        .failed_stages
        .iter()
        .map(|s| FailedStage {
            name: s.stage_name.clone(),
            checklist: s.checklist_id.clone(),
            failed: s.failed,
            share: percent((s.scored > 0).then(|| 100.0 * s.failed as f64 / s.scored as f64)),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    period: Period,
    calls: u64,
    analysed: u64,
    average: String,
    trend: String,
    offices: Vec<Ranked>,
    managers: Vec<Ranked>,
    failed: Vec<FailedStage>,
    /// No call at all has arrived yet: the empty state for a new installation.
    no_calls_ever: bool,
}

pub(crate) async fn page(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    let offset = state.settings.utc_offset_secs;
    let period = Period::parse(&query, offset)?;
    let figures = state
        .store
        .dashboard(&period.stats(offset, viewer.manager_filter()))
        .await?;
    let names = Names::load(&state).await?;
    let no_calls_ever = figures.totals.calls == 0
        && state
            .store
            .list_calls(&CallFilter {
                managers: viewer.manager_filter(),
                limit: 1,
                ..CallFilter::default()
            })
            .await?
            .calls
            .is_empty();
    let link = period.query();
    let offices = figures
        .offices
        .iter()
        .filter(|o| viewer.sees_office(&o.office_id))
        .map(|o| Ranked {
            href: format!("/offices/{}?{link}", o.office_id.as_str()),
            name: o
                .title
                .clone()
                .unwrap_or_else(|| o.office_id.as_str().to_owned()),
            calls: o.totals.calls,
            analysed: o.totals.analysed,
            average: percent(o.totals.average_completion),
        })
        .collect();
    let managers = figures
        .managers
        .iter()
        .map(|m| Ranked {
            href: format!("/managers/{}?{link}", m.manager_id.as_str()),
            name: names.of(&m.manager_id),
            calls: m.totals.calls,
            analysed: m.totals.analysed,
            average: percent(m.totals.average_completion),
        })
        .collect();
    render(DashboardPage {
        chrome: Chrome::new(&viewer, "dashboard"),
        calls: figures.totals.calls,
        analysed: figures.totals.analysed,
        average: percent(figures.totals.average_completion),
        trend: trend_json(&figures, &period, offset),
        failed: failed_stages(&figures),
        offices,
        managers,
        period,
        no_calls_ever,
    })
}
