-- Foundation schema: calls and their history, people and offices, settings,
-- API keys, web users and analysis tables.

CREATE TABLE managers (
    manager_id  TEXT PRIMARY KEY,
    name        TEXT,
    surname     TEXT,
    middlename  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE offices (
    office_id   TEXT PRIMARY KEY,
    title       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE office_members (
    office_id   TEXT NOT NULL REFERENCES offices (office_id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('leader', 'manager')),
    person_id   TEXT NOT NULL REFERENCES managers (manager_id),
    PRIMARY KEY (office_id, role, person_id)
);
CREATE INDEX office_members_by_person ON office_members (person_id, role);

CREATE TABLE calls (
    seq                   BIGSERIAL PRIMARY KEY,
    call_id               TEXT NOT NULL UNIQUE,
    manager_id            TEXT NOT NULL REFERENCES managers (manager_id),
    deal_id               TEXT,
    deal_stage_id         TEXT,
    stage_id              TEXT,
    direction             TEXT CHECK (direction IN ('incoming', 'outgoing')),
    client_phone          TEXT,
    client_name           TEXT,
    call_started_at       TIMESTAMPTZ,
    declared_duration     DOUBLE PRECISION,
    audio_url             TEXT,
    blob_key              TEXT,
    blob_bytes            BIGINT,
    metadata              JSONB NOT NULL DEFAULT '{}',
    status                TEXT NOT NULL,
    status_reason         TEXT,
    received_at           TIMESTAMPTZ NOT NULL,
    -- When the call happened: its start time, or receipt time when unknown.
    occurred_at           TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    completion_percentage DOUBLE PRECISION,
    CHECK ((audio_url IS NULL) <> (blob_key IS NULL))
);
CREATE INDEX calls_by_occurred ON calls (occurred_at, seq);
CREATE INDEX calls_by_manager ON calls (manager_id, seq);
CREATE INDEX calls_by_status ON calls (status, seq);

CREATE TABLE call_events (
    id        BIGSERIAL PRIMARY KEY,
    call_seq  BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    at        TIMESTAMPTZ NOT NULL,
    step      TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX call_events_by_call ON call_events (call_seq, id);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  JSONB NOT NULL
);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    secret      TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ
);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'leader', 'manager')),
    manager_id     TEXT REFERENCES managers (manager_id),
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE analysis_tables (
    table_id    TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    definition  JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE table_results (
    call_seq    BIGINT NOT NULL REFERENCES calls (seq) ON DELETE CASCADE,
    table_id    TEXT NOT NULL REFERENCES analysis_tables (table_id) ON DELETE CASCADE,
    data        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_seq, table_id)
);
