-- The web interface (PRODUCT.md §7): logins, the audit log, transcript
-- search and per-stage results for the dashboard.

-- The browser holds the token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    details  TEXT NOT NULL
);

-- Transcript search, one row per transcribed call (rowid = calls.seq).
-- `terms` holds the Snowball stems of the transcript's lines, computed in
-- Rust (rop_domain::search) so that PostgreSQL finds exactly the same
-- calls; FTS5 only matches whole terms. The stems cannot be computed here:
-- transcripts stored before this migration are indexed by `migrate()`
-- right after it. A virtual table cannot have a foreign key, so deleting
-- a call deletes its row explicitly.
CREATE VIRTUAL TABLE transcript_search USING fts5 (
    terms,
    tokenize = 'unicode61 remove_diacritics 0'
);

-- Every stage of every checklist result as a row, so the dashboard counts
-- the most failed stages with one aggregate instead of reading the JSON.
-- WITHOUT ROWID keeps a call's stages together in the primary key's tree:
-- the aggregate reads them with one seek per call.
CREATE TABLE stage_results (
    call_seq      INTEGER NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    checklist_id  TEXT NOT NULL,
    stage_id      TEXT NOT NULL,
    stage_name    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    -- When the result was stored: the newest result names the stage.
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (call_seq, checklist_id, stage_id)
) WITHOUT ROWID;
CREATE INDEX stage_results_by_stage ON stage_results (checklist_id, stage_id, created_at, call_seq);

-- Results stored before this migration. Rows whose JSON does not have the
-- expected shape are left out rather than failing the upgrade (the CASEs
-- keep malformed JSON away from the JSON functions, which would raise).
WITH stages AS (
    SELECT r.call_seq, r.checklist_id, r.created_at,
           CASE WHEN s.type = 'object' THEN s.value END AS stage
    FROM checklist_results r,
         json_each(CASE WHEN json_valid(r.result) THEN r.result ELSE '{}' END, '$.stages') s
)
INSERT INTO stage_results (call_seq, checklist_id, stage_id, stage_name, status, created_at)
SELECT call_seq, checklist_id, json_extract(stage, '$.stage_id'),
       json_extract(stage, '$.stage_name'), json_extract(stage, '$.status'), created_at
FROM stages
WHERE json_type(stage, '$.stage_id') = 'text'
  AND json_type(stage, '$.stage_name') = 'text'
  AND json_extract(stage, '$.status') IN ('completed', 'failed')
ON CONFLICT DO NOTHING;

-- The dashboard reads only these columns of the calls in a period, of
-- everyone or of some managers: both indexes cover it.
CREATE INDEX calls_stats_by_time ON calls (occurred_at, manager_id, status, completion_percentage);
CREATE INDEX calls_stats_by_manager ON calls (manager_id, occurred_at, status, completion_percentage);
