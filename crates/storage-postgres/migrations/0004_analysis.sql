-- Checklists, analysis results and webhook deliveries (PRODUCT.md §5–6).

CREATE TABLE checklists (
    checklist_id  TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    -- The whole definition: stages, filters, webhook, engine.
    definition    JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- No foreign key to checklists: scores outlive a deleted script.
CREATE TABLE checklist_results (
    call_seq               BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    checklist_id           TEXT NOT NULL,
    completion_percentage  DOUBLE PRECISION NOT NULL,
    -- Stages, totals, engine.
    result                 JSONB NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_seq, checklist_id)
);

-- The whole table result (name, engine, time) beside the extracted data.
ALTER TABLE table_results ADD COLUMN result JSONB;

-- One webhook per checklist or table of an analysed call. Pending is due
-- at run_after; sending holds a lease until run_after, after which another
-- worker may send it again (at-least-once).
CREATE TABLE deliveries (
    delivery_id   TEXT PRIMARY KEY,
    call_seq      BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    event         TEXT NOT NULL,
    source_id     TEXT NOT NULL,
    url           TEXT NOT NULL,
    secret        TEXT NOT NULL,
    body          TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_after     TIMESTAMPTZ NOT NULL,
    lease_owner   TEXT,
    -- Retries stop 24 hours after this: creation, or an administrator's resend.
    retry_from    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    delivered_at  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (run_after) WHERE state IN ('pending', 'sending');
CREATE INDEX deliveries_by_call ON deliveries (call_seq);

-- Every attempt, in order; numbering starts again after a resend.
CREATE TABLE delivery_attempts (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES deliveries (delivery_id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  BIGINT NOT NULL
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);
