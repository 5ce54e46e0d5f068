//! Transcript search on SQLite: an FTS5 table of Snowball stems whose rowid
//! is the call's seq. The stems come from `rop_domain::search`, so this
//! backend and PostgreSQL find the same calls.

use rop_domain::search::{query_terms, transcript_terms};
use rop_domain::store::{parse_stored_json, StoreResult};
use rop_domain::Transcript;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::rows::backend;

/// Transcripts indexed per transaction by `backfill`, so that the writer
/// is not held for long at a time.
const BACKFILL_BATCH: i64 = 200;

/// Replaces the call's row: a call transcribed again is found by its new words.
pub(crate) async fn index_transcript(
    tx: &mut Transaction<'_, Sqlite>,
    call_seq: i64,
    transcript: &Transcript,
) -> StoreResult<()> {
    forget_call(tx, call_seq).await?;
    sqlx::query("INSERT INTO transcript_search (rowid, terms) VALUES ($1, $2)")
        .bind(call_seq)
        .bind(transcript_terms(transcript))
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

/// A virtual table has no foreign keys: deleting a call calls this.
pub(crate) async fn forget_call(
    tx: &mut Transaction<'_, Sqlite>,
    call_seq: i64,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM transcript_search WHERE rowid = $1")
        .bind(call_seq)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The FTS5 query for `text`: every stem quoted, so nothing a user types is
/// read as query syntax, and juxtaposed strings must all be present. `None`
/// when the text has no words.
pub(crate) fn match_query(text: &str) -> Option<String> {
    let terms = query_terms(text);
    (!terms.is_empty()).then(|| {
        terms
            .iter()
            .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Indexes the transcripts that have no search row: those stored before
/// migration 0005 created the index (its stems cannot be computed in SQL).
/// Runs on every `migrate()`, where it finds nothing to do after the first.
/// A transcript that no longer parses is left out and logged, rather than
/// stopping the start.
pub(crate) async fn backfill(writer: &SqlitePool) -> StoreResult<()> {
    let mut after = 0_i64;
    let mut indexed = 0_u64;
    loop {
        let mut tx = writer.begin().await.map_err(backend)?;
        let rows = sqlx::query(
            "SELECT call_seq, document FROM transcripts t
             WHERE call_seq > $1
               AND NOT EXISTS (SELECT 1 FROM transcript_search s WHERE s.rowid = t.call_seq)
             ORDER BY call_seq LIMIT $2",
        )
        .bind(after)
        .bind(BACKFILL_BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("call_seq").map_err(backend)?;
        for row in &rows {
            let call_seq: i64 = row.try_get("call_seq").map_err(backend)?;
            let document: String = row.try_get("document").map_err(backend)?;
            match parse_stored_json::<Transcript>(&document) {
                Ok(transcript) => {
                    index_transcript(&mut tx, call_seq, &transcript).await?;
                    indexed += 1;
                }
                Err(error) => {
                    tracing::warn!(call_seq, %error, "transcript left out of search")
                }
            }
        }
        tx.commit().await.map_err(backend)?;
    }
    if indexed > 0 {
        tracing::info!(indexed, "transcripts indexed for search");
    }
    Ok(())
}
