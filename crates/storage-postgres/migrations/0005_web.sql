-- The web interface (PRODUCT.md §7): logins, the audit log, transcript
-- search and per-stage results for the dashboard.

-- The browser holds the token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    details  TEXT NOT NULL
);

-- Transcript search, one row per transcribed call. `terms` is built with
-- to_tsvector('simple', …) from the Snowball stems of the transcript's
-- lines, computed in Rust (rop_domain::search) so that SQLite finds exactly
-- the same calls; the `simple` configuration only splits and lowercases.
-- The stems cannot be computed here: transcripts stored before this
-- migration are indexed by `migrate()` right after it.
CREATE TABLE transcript_search (
    call_seq  BIGINT PRIMARY KEY REFERENCES calls (seq) ON DELETE CASCADE,
    terms     TSVECTOR NOT NULL
);
CREATE INDEX transcript_search_terms ON transcript_search USING GIN (terms);

-- Every stage of every checklist result as a row, so the dashboard counts
-- the most failed stages with one aggregate instead of reading the JSON.
CREATE TABLE stage_results (
    call_seq      BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    checklist_id  TEXT NOT NULL,
    stage_id      TEXT NOT NULL,
    stage_name    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    -- When the result was stored: the newest result names the stage.
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_seq, checklist_id, stage_id)
);
CREATE INDEX stage_results_by_stage ON stage_results (checklist_id, stage_id, created_at, call_seq);

-- Results stored before this migration. Rows whose JSON does not have the
-- expected shape are left out rather than failing the upgrade.
INSERT INTO stage_results (call_seq, checklist_id, stage_id, stage_name, status, created_at)
SELECT r.call_seq, r.checklist_id, s ->> 'stage_id', s ->> 'stage_name', s ->> 'status',
       r.created_at
FROM checklist_results r
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(r.result -> 'stages') = 'array'
         THEN r.result -> 'stages' ELSE '[]'::jsonb END) AS s
WHERE jsonb_typeof(s -> 'stage_id') = 'string'
  AND jsonb_typeof(s -> 'stage_name') = 'string'
  AND s ->> 'status' IN ('completed', 'failed')
ON CONFLICT DO NOTHING;

-- The dashboard reads only these columns of the calls in a period, of
-- everyone or of some managers: both indexes cover it.
CREATE INDEX calls_stats_by_time ON calls (occurred_at, manager_id, status, completion_percentage);
CREATE INDEX calls_stats_by_manager ON calls (manager_id, occurred_at, status, completion_percentage);
