//! Dashboard figures on PostgreSQL, aggregated by the database: with many
//! calls, loading them would be far slower than grouping them.

use chrono::NaiveDate;
use rop_domain::store::{parse_stored_id, StoreResult};
use rop_domain::{
    Dashboard, DayStats, ManagerId, ManagerStats, OfficeStats, StageFailures, StatsQuery,
    StoreError, Totals,
};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::rows::backend;

/// Narrows `column` to `managers`: `None` is everyone, an empty list nobody.
pub(crate) fn push_managers(
    query: &mut QueryBuilder<'_, Postgres>,
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

/// The calls `query` covers, as conditions on `calls c`.
fn push_scope(query: &mut QueryBuilder<'_, Postgres>, stats: &StatsQuery) {
    query
        .push(" c.status <> 'skipped' AND c.occurred_at >= ")
        .push_bind(stats.from)
        .push(" AND c.occurred_at < ")
        .push_bind(stats.to);
    push_managers(query, "c.manager_id", stats.managers.as_deref());
}

/// The stage results of the calls `query` covers, as conditions on
/// `stage_results s`. (Stage results are those of analysed calls, which are
/// never skipped.)
fn push_stage_scope(query: &mut QueryBuilder<'_, Postgres>, stats: &StatsQuery) {
    query
        .push(" s.occurred_at >= ")
        .push_bind(stats.from)
        .push(" AND s.occurred_at < ")
        .push_bind(stats.to);
    push_managers(query, "s.manager_id", stats.managers.as_deref());
}

const TOTALS: &str = "COUNT(*) AS calls, COUNT(c.completion_percentage) AS analysed,
     AVG(c.completion_percentage) AS average";

/// Best average first, unscored last, then by id.
const RANKING: &str = "AVG(c.completion_percentage) IS NULL, AVG(c.completion_percentage) DESC";

fn count(row: &PgRow, column: &str) -> StoreResult<u64> {
    let count: i64 = row.try_get(column).map_err(backend)?;
    u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("{column} {count}")))
}

fn totals_from_row(row: &PgRow) -> StoreResult<Totals> {
    Ok(Totals {
        calls: count(row, "calls")?,
        analysed: count(row, "analysed")?,
        average_completion: row.try_get("average").map_err(backend)?,
    })
}

pub(crate) async fn dashboard(pool: &PgPool, stats: &StatsQuery) -> StoreResult<Dashboard> {
    // One snapshot: all figures describe the same moment.
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(backend)?;

    let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {TOTALS} FROM calls c WHERE"));
    push_scope(&mut query, stats);
    let totals = totals_from_row(&query.build().fetch_one(&mut *tx).await.map_err(backend)?)?;

    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT ((c.occurred_at AT TIME ZONE 'UTC') + make_interval(secs => ",
    );
    query
        .push_bind(f64::from(stats.utc_offset_secs))
        .push(format!(")) ::date AS day, {TOTALS} FROM calls c WHERE"));
    push_scope(&mut query, stats);
    query.push(" GROUP BY day ORDER BY day");
    let days = query
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            Ok(DayStats {
                day: row.try_get::<NaiveDate, _>("day").map_err(backend)?,
                totals: totals_from_row(row)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    let mut query =
        QueryBuilder::<Postgres>::new(format!("SELECT c.manager_id, {TOTALS} FROM calls c WHERE"));
    push_scope(&mut query, stats);
    query.push(format!(
        " GROUP BY c.manager_id ORDER BY {RANKING}, c.manager_id"
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

    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT o.office_id, o.title, {TOTALS}
         FROM offices o
         JOIN office_members m ON m.office_id = o.office_id AND m.role = 'manager'
         JOIN calls c ON c.manager_id = m.person_id
         WHERE"
    ));
    push_scope(&mut query, stats);
    query.push(format!(
        " GROUP BY o.office_id, o.title ORDER BY {RANKING}, o.office_id"
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

    // The ten stages first, then each one's newest name: a name lookup per
    // stage would be far slower inside the aggregate. The stage results carry
    // their call's time and manager, so the calls are not read at all.
    let mut query = QueryBuilder::<Postgres>::new(
        "WITH top AS (
             SELECT s.checklist_id, s.stage_id,
                    COUNT(CASE WHEN s.status = 'failed' THEN 1 END) AS failed,
                    COUNT(*) AS scored
             FROM stage_results s
             WHERE",
    );
    push_stage_scope(&mut query, stats);
    query.push(
        " GROUP BY s.checklist_id, s.stage_id
             HAVING COUNT(CASE WHEN s.status = 'failed' THEN 1 END) > 0
             ORDER BY failed DESC, s.checklist_id, s.stage_id
             LIMIT 10)
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
