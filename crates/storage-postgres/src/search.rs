//! Transcript search on PostgreSQL: a `tsvector` of Snowball stems per
//! call under a GIN index. The stems come from `rop_domain::search`, and the
//! `simple` configuration only splits and lowercases them, so this backend
//! and SQLite find the same calls.

use rop_domain::search::{query_terms, transcript_terms};
use rop_domain::store::{parse_stored_json, StoreResult};
use rop_domain::Transcript;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::rows::backend;

/// Transcripts indexed per transaction by `backfill`, so that no
/// transaction runs long.
const BACKFILL_BATCH: i64 = 200;

/// Replaces the call's row: a call transcribed again is found by its new words.
pub(crate) async fn index_transcript(
    tx: &mut Transaction<'_, Postgres>,
    call_seq: i64,
    transcript: &Transcript,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO transcript_search (call_seq, terms) VALUES ($1, to_tsvector('simple', $2))
         ON CONFLICT (call_seq) DO UPDATE SET terms = excluded.terms",
    )
    .bind(call_seq)
    .bind(transcript_terms(transcript))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// The stems `plainto_tsquery('simple', …)` should require, all of them;
/// `None` when the text has no words.
pub(crate) fn tsquery_terms(text: &str) -> Option<String> {
    let terms = query_terms(text);
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Indexes the transcripts that have no search row: those stored before
/// migration 0005 created the index (its stems cannot be computed in SQL).
/// Runs on every `migrate()`, where it finds nothing to do after the first;
/// processes starting together may both index a transcript, harmlessly.
/// A transcript that no longer parses is left out and logged, rather than
/// stopping the start.
pub(crate) async fn backfill(pool: &PgPool) -> StoreResult<()> {
    let mut after = 0_i64;
    let mut indexed = 0_u64;
    loop {
        let rows = sqlx::query(
            "SELECT call_seq, document::text AS document FROM transcripts t
             WHERE call_seq > $1
               AND NOT EXISTS (SELECT 1 FROM transcript_search s WHERE s.call_seq = t.call_seq)
             ORDER BY call_seq LIMIT $2",
        )
        .bind(after)
        .bind(BACKFILL_BATCH)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("call_seq").map_err(backend)?;
        let mut seqs = Vec::with_capacity(rows.len());
        let mut terms = Vec::with_capacity(rows.len());
        for row in &rows {
            let call_seq: i64 = row.try_get("call_seq").map_err(backend)?;
            let document: String = row.try_get("document").map_err(backend)?;
            match parse_stored_json::<Transcript>(&document) {
                Ok(transcript) => {
                    seqs.push(call_seq);
                    terms.push(transcript_terms(&transcript));
                }
                Err(error) => {
                    tracing::warn!(call_seq, %error, "transcript left out of search")
                }
            }
        }
        // DO NOTHING: a row written meanwhile by the pipeline is newer.
        // The locked join skips calls deleted since they were read.
        let done = sqlx::query(
            "INSERT INTO transcript_search (call_seq, terms)
             SELECT batch.seq, to_tsvector('simple', batch.terms)
             FROM UNNEST($1::bigint[], $2::text[]) AS batch (seq, terms)
             JOIN calls ON calls.seq = batch.seq
             FOR KEY SHARE OF calls
             ON CONFLICT (call_seq) DO NOTHING",
        )
        .bind(&seqs)
        .bind(&terms)
        .execute(pool)
        .await
        .map_err(backend)?;
        indexed += done.rows_affected();
    }
    if indexed > 0 {
        tracing::info!(indexed, "transcripts indexed for search");
    }
    Ok(())
}
