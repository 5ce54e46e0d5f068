-- Durable jobs: every step of a call's processing (PRODUCT.md §4).
-- A queued job is due at run_after; a running job's lease ends at run_after,
-- after which any worker may claim it again. So one condition
-- (state queued or running, run_after passed) finds every job to work on.
-- Workers claim with FOR UPDATE SKIP LOCKED and are woken by NOTIFY rop_jobs.

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    call_seq      BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    -- Tells apart jobs of one kind for one call (a webhook per checklist).
    target        TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_after     TIMESTAMPTZ NOT NULL,
    lease_owner   TEXT,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (call_seq, kind, target)
);
CREATE INDEX jobs_due ON jobs (run_after, id) WHERE state IN ('queued', 'running');

-- Machine-readable reason of a failed call, beside the message in status_reason.
ALTER TABLE calls ADD COLUMN failure_code TEXT;
-- The audio fetched by the download step (the upload's own file is blob_key).
ALTER TABLE calls ADD COLUMN audio_blob_key TEXT;

-- Calls accepted before the pipeline existed start it now.
INSERT INTO jobs (call_seq, kind, state, max_attempts, run_after, created_at, updated_at)
SELECT seq, 'download', 'queued', 5, received_at, received_at, received_at
FROM calls WHERE status = 'received';
