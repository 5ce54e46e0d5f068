//! Dashboard figures on SQLite, aggregated by the database: with many
//! calls, loading them would be far slower than grouping them.

use chrono::NaiveDate;
use rop_domain::store::{parse_stored_id, StoreResult};
use rop_domain::{
    Dashboard, DayStats, ManagerId, ManagerStats, OfficeStats, StageFailures, StatsQuery,
    StoreError, Totals,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::rows::{backend, ms};

/// Narrows `column` to `managers`: `None` is everyone, an empty list nobody.
pub(crate) fn push_managers(
    query: &mut QueryBuilder<'_, Sqlite>,
    column: &str,
    managers: Option<&[ManagerId]>,
) {
    match managers {
        None => {}
        Some([]) => {
            query.push(" AND 1 = 0");
        }
        Some(managers) => {
            query.push(format!(" AND {column} IN ("));
            let mut list = query.separated(", ");
            for manager in managers {
                list.push_bind(manager.as_str().to_owned());
            }
            query.push(")");
        }
    }
}

/// The calls `query` covers, as conditions on `calls c`; `manager` is the
/// column that names their manager (`c.manager_id`, or that of the table
/// the query is driven by).
fn push_scope(query: &mut QueryBuilder<'_, Sqlite>, stats: &StatsQuery, manager: &str) {
    query
        .push(" c.status <> 'skipped' AND c.occurred_at >= ")
        .push_bind(ms(stats.from))
        .push(" AND c.occurred_at < ")
        .push_bind(ms(stats.to));
    push_managers(query, manager, stats.managers.as_deref());
}

/// The stage results of the calls `query` covers, as conditions on
/// `stage_results s`. (Stage results are those of analysed calls, which are
/// never skipped.)
fn push_stage_scope(query: &mut QueryBuilder<'_, Sqlite>, stats: &StatsQuery) {
    query
        .push(" s.occurred_at >= ")
        .push_bind(ms(stats.from))
        .push(" AND s.occurred_at < ")
        .push_bind(ms(stats.to));
    push_managers(query, "s.manager_id", stats.managers.as_deref());
}

const TOTALS: &str = "COUNT(*) AS calls, COUNT(c.completion_percentage) AS analysed,
     AVG(c.completion_percentage) AS average";

/// Best average first, unscored last, then by id.
const RANKING: &str = "AVG(c.completion_percentage) IS NULL, AVG(c.completion_percentage) DESC";

fn count(row: &SqliteRow, column: &str) -> StoreResult<u64> {
    let count: i64 = row.try_get(column).map_err(backend)?;
    u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("{column} {count}")))
}

fn totals_from_row(row: &SqliteRow) -> StoreResult<Totals> {
    Ok(Totals {
        calls: count(row, "calls")?,
        analysed: count(row, "analysed")?,
        average_completion: row.try_get("average").map_err(backend)?,
    })
}

pub(crate) async fn dashboard(reader: &SqlitePool, stats: &StatsQuery) -> StoreResult<Dashboard> {
    // One read transaction: all figures describe the same moment.
    let mut tx = reader.begin().await.map_err(backend)?;

    let mut query = QueryBuilder::<Sqlite>::new(format!("SELECT {TOTALS} FROM calls c WHERE"));
    push_scope(&mut query, stats, "c.manager_id");
    let totals = totals_from_row(&query.build().fetch_one(&mut *tx).await.map_err(backend)?)?;

    let mut query = QueryBuilder::<Sqlite>::new("SELECT date((c.occurred_at + ");
    query
        .push_bind(i64::from(stats.utc_offset_secs) * 1000)
        .push(format!(
            ") / 1000, 'unixepoch') AS day, {TOTALS} FROM calls c WHERE"
        ));
    push_scope(&mut query, stats, "c.manager_id");
    query.push(" GROUP BY day ORDER BY day");
    let days = query
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            let day: String = row.try_get("day").map_err(backend)?;
            Ok(DayStats {
                day: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|_| StoreError::Corrupt(format!("day {day}")))?,
                totals: totals_from_row(row)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    // Driven by the managers (CROSS JOIN fixes the order): a range of
    // `calls_stats_by_manager` each, in groups already, rather than the whole
    // period sorted by manager.
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT mg.manager_id, {TOTALS}
         FROM managers mg CROSS JOIN calls c ON c.manager_id = mg.manager_id
         WHERE"
    ));
    push_scope(&mut query, stats, "mg.manager_id");
    query.push(format!(
        " GROUP BY mg.manager_id ORDER BY {RANKING}, mg.manager_id"
    ));
    let managers = query
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            Ok(ManagerStats {
                manager_id: parse_stored_id(row.try_get("manager_id").map_err(backend)?)?,
                totals: totals_from_row(row)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT o.office_id, o.title, {TOTALS}
         FROM offices o
         CROSS JOIN office_members m ON m.office_id = o.office_id AND m.role = 'manager'
         CROSS JOIN calls c ON c.manager_id = m.person_id
         WHERE"
    ));
    // As for the managers: each member's calls are one index range, read
    // office by office, so that the groups need no sort (the title goes
    // with the id).
    push_scope(&mut query, stats, "m.person_id");
    query.push(format!(
        " GROUP BY o.office_id ORDER BY {RANKING}, o.office_id"
    ));
    let offices = query
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            Ok(OfficeStats {
                office_id: parse_stored_id(row.try_get("office_id").map_err(backend)?)?,
                title: row.try_get("title").map_err(backend)?,
                totals: totals_from_row(row)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    // The stages most often failed. Every (checklist, stage) pair is found
    // by a loose index scan — a seek per pair rather than a read of every
    // result — and each pair's failures and scores in the period are ranges
    // of `stage_results_by_period`: no sort of the period's results, which
    // took over a second with a year of 100 000 calls. Then the ten worst
    // pairs get their newest names (a lookup per pair is cheap only here).
    let mut query = QueryBuilder::<Sqlite>::new(
        "WITH RECURSIVE checklists (id) AS (
             SELECT MIN(checklist_id) FROM stage_results
             UNION ALL
             SELECT (SELECT MIN(checklist_id) FROM stage_results WHERE checklist_id > id)
             FROM checklists WHERE id IS NOT NULL
         ), pairs (checklist_id, stage_id) AS (
             SELECT id, (SELECT MIN(stage_id) FROM stage_results WHERE checklist_id = id)
             FROM checklists WHERE id IS NOT NULL
             UNION ALL
             SELECT p.checklist_id,
                 (SELECT MIN(s.stage_id) FROM stage_results s
                  WHERE s.checklist_id = p.checklist_id AND s.stage_id > p.stage_id)
             FROM pairs p WHERE p.stage_id IS NOT NULL
         ), counts AS MATERIALIZED (
             SELECT p.checklist_id, p.stage_id,
                 (SELECT COUNT(*) FROM stage_results s
                  WHERE s.checklist_id = p.checklist_id AND s.stage_id = p.stage_id
                    AND s.status = 'failed' AND",
    );
    push_stage_scope(&mut query, stats);
    query.push(
        ") AS failed,
                 (SELECT COUNT(*) FROM stage_results s
                  WHERE s.checklist_id = p.checklist_id AND s.stage_id = p.stage_id
                    AND s.status = 'completed' AND",
    );
    push_stage_scope(&mut query, stats);
    query.push(
        ") AS completed
             FROM pairs p WHERE p.stage_id IS NOT NULL
         ), top AS (
             SELECT checklist_id, stage_id, failed, failed + completed AS scored
             FROM counts WHERE failed > 0
             ORDER BY failed DESC, checklist_id, stage_id LIMIT 10
         )
         SELECT top.checklist_id, top.stage_id, top.failed, top.scored,
             (SELECT n.stage_name FROM stage_results n
              WHERE n.checklist_id = top.checklist_id AND n.stage_id = top.stage_id
              ORDER BY n.created_at DESC, n.call_seq DESC LIMIT 1) AS stage_name
         FROM top ORDER BY top.failed DESC, top.checklist_id, top.stage_id",
    );
    let failed_stages = query
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            Ok(StageFailures {
                checklist_id: row.try_get("checklist_id").map_err(backend)?,
                stage_id: row.try_get("stage_id").map_err(backend)?,
                stage_name: row.try_get("stage_name").map_err(backend)?,
                failed: count(row, "failed")?,
                scored: count(row, "scored")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    Ok(Dashboard {
        totals,
        days,
        managers,
        offices,
        failed_stages,
    })
}
