//! Менеджеры and Офисы: rankings for a period, and each person's and
//! office's trend, weak stages and latest calls.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rop_domain::{CallFilter, ManagerId, OfficeId, Totals};

use super::calls::{any_moving, row, Row};
use super::dashboard::{failed_stages, trend_json, FailedStage, Period, PeriodQuery, Ranked};
use super::{render, Chrome, Names};
use crate::access::Viewer;
use crate::error::PageError;
use crate::format::percent;
use crate::WebState;

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    chrome: Chrome,
    title: &'static str,
    period: Period,
    rows: Vec<Ranked>,
    empty_hint: &'static str,
}

fn ranked(href: String, name: String, totals: Option<&Totals>) -> Ranked {
    let totals = totals.copied().unwrap_or_default();
    Ranked {
        href,
        name,
        calls: totals.calls,
        analysed: totals.analysed,
        average: percent(totals.average_completion),
    }
}

pub(crate) async fn managers(
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
    let people = state.store.managers().await?;
    let names = Names::from(people.clone());
    let link = period.query();
    // Ranked managers first, then the visible ones with no calls.
    let mut rows: Vec<Ranked> = figures
        .managers
        .iter()
        .map(|m| {
            ranked(
                format!("/managers/{}?{link}", m.manager_id.as_str()),
                names.of(&m.manager_id),
                Some(&m.totals),
            )
        })
        .collect();
    for person in people.iter().filter(|p| viewer.sees_manager(&p.manager_id)) {
        if !figures
            .managers
            .iter()
            .any(|m| m.manager_id == person.manager_id)
        {
            rows.push(ranked(
                format!("/managers/{}?{link}", person.manager_id.as_str()),
                names.of(&person.manager_id),
                None,
            ));
        }
    }
    render(PeoplePage {
        chrome: Chrome::new(&viewer, "managers"),
        title: "Менеджеры",
        period,
        rows,
        empty_hint: "Менеджеров пока нет: они появляются с первым звонком из CRM или после синхронизации через API (settings/managers-update).",
    })
}

pub(crate) async fn offices(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    viewer.require_leader()?;
    let offset = state.settings.utc_offset_secs;
    let period = Period::parse(&query, offset)?;
    let figures = state
        .store
        .dashboard(&period.stats(offset, viewer.manager_filter()))
        .await?;
    let link = period.query();
    let mut rows: Vec<Ranked> = figures
        .offices
        .iter()
        .filter(|o| viewer.sees_office(&o.office_id))
        .map(|o| {
            ranked(
                format!("/offices/{}?{link}", o.office_id.as_str()),
                o.title
                    .clone()
                    .unwrap_or_else(|| o.office_id.as_str().to_owned()),
                Some(&o.totals),
            )
        })
        .collect();
    for office in &viewer.visible_offices(&state).await? {
        if !figures
            .offices
            .iter()
            .any(|o| o.office_id == office.office_id)
        {
            rows.push(ranked(
                format!("/offices/{}?{link}", office.office_id.as_str()),
                office
                    .title
                    .clone()
                    .unwrap_or_else(|| office.office_id.as_str().to_owned()),
                None,
            ));
        }
    }
    render(PeoplePage {
        chrome: Chrome::new(&viewer, "offices"),
        title: "Офисы",
        period,
        rows,
        empty_hint: "Офисов пока нет: передайте их из CRM методом settings/offices-update.",
    })
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage {
    chrome: Chrome,
    title: String,
    kind: &'static str,
    period: Period,
    calls: u64,
    analysed: u64,
    average: String,
    trend: String,
    /// The office's managers; empty on a manager's page.
    managers: Vec<Ranked>,
    failed: Vec<FailedStage>,
    recent: Vec<Row>,
    /// Some of the recent calls are still being processed.
    live_rows: bool,
}

pub(crate) async fn manager(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(manager_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    let manager_id = ManagerId::try_from(manager_id).map_err(|_| PageError::NotFound)?;
    if !viewer.sees_manager(&manager_id) {
        return Err(PageError::NotFound);
    }
    let offset = state.settings.utc_offset_secs;
    let period = Period::parse(&query, offset)?;
    let stats = period.stats(offset, Some(vec![manager_id.clone()]));
    let figures = state.store.dashboard(&stats).await?;
    let names = Names::load(&state).await?;
    let recent = state
        .store
        .list_calls(&CallFilter {
            from: Some(stats.from),
            to: Some(stats.to),
            manager_id: Some(manager_id.clone()),
            managers: viewer.manager_filter(),
            limit: 20,
            ..CallFilter::default()
        })
        .await?
        .calls
        .iter()
        .map(|c| row(c, &names, &state))
        .collect::<Vec<_>>();
    render(PersonPage {
        chrome: Chrome::new(&viewer, "managers"),
        title: names.of(&manager_id),
        kind: "Менеджер",
        calls: figures.totals.calls,
        analysed: figures.totals.analysed,
        average: percent(figures.totals.average_completion),
        trend: trend_json(&figures, &period, offset),
        managers: Vec::new(),
        failed: failed_stages(&figures),
        live_rows: any_moving(&recent),
        recent,
        period,
    })
}

pub(crate) async fn office(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(office_id): Path<String>,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    viewer.require_leader()?;
    let office_id = OfficeId::try_from(office_id).map_err(|_| PageError::NotFound)?;
    let office = state
        .store
        .office(&office_id)
        .await?
        .filter(|o| viewer.sees_office(&o.office_id))
        .ok_or(PageError::NotFound)?;
    let offset = state.settings.utc_offset_secs;
    let period = Period::parse(&query, offset)?;
    let members: Vec<ManagerId> = office
        .manager_ids
        .iter()
        .filter(|m| viewer.sees_manager(m))
        .cloned()
        .collect();
    let stats = period.stats(offset, Some(members.clone()));
    let figures = state.store.dashboard(&stats).await?;
    let names = Names::load(&state).await?;
    let link = period.query();
    let mut managers: Vec<Ranked> = figures
        .managers
        .iter()
        .map(|m| {
            ranked(
                format!("/managers/{}?{link}", m.manager_id.as_str()),
                names.of(&m.manager_id),
                Some(&m.totals),
            )
        })
        .collect();
    for member in &members {
        if !figures.managers.iter().any(|m| &m.manager_id == member) {
            managers.push(ranked(
                format!("/managers/{}?{link}", member.as_str()),
                names.of(member),
                None,
            ));
        }
    }
    let recent = state
        .store
        .list_calls(&CallFilter {
            from: Some(stats.from),
            to: Some(stats.to),
            managers: Some(members),
            limit: 20,
            ..CallFilter::default()
        })
        .await?
        .calls
        .iter()
        .map(|c| row(c, &names, &state))
        .collect::<Vec<_>>();
    render(PersonPage {
        chrome: Chrome::new(&viewer, "offices"),
        title: office
            .title
            .clone()
            .unwrap_or_else(|| office.office_id.as_str().to_owned()),
        kind: "Офис",
        calls: figures.totals.calls,
        analysed: figures.totals.analysed,
        average: percent(figures.totals.average_completion),
        trend: trend_json(&figures, &period, offset),
        managers,
        failed: failed_stages(&figures),
        live_rows: any_moving(&recent),
        recent,
        period,
    })
}
