-- Integrations with telephony and CRMs (PRODUCT.md §8): the clients
-- directory, the telephony journal and the durable queue of their
-- background work. Their settings are rows of `settings`.

-- Who a phone belongs to and which manager the client is assigned to.
CREATE TABLE clients (
    -- Digits only (rop_domain::normalize_phone).
    phone        TEXT PRIMARY KEY,
    name         TEXT,
    -- The name lower-cased in Rust, for case-insensitive search: SQLite's
    -- LOWER() and LIKE fold ASCII only, so «Иван» would not match «иван».
    name_folded  TEXT,
    manager_id   TEXT,
    source       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- A call as the PBX's notifications describe it, merged into one row.
CREATE TABLE telephony_calls (
    pbx_call_id    TEXT PRIMARY KEY,
    provider       TEXT NOT NULL,
    direction      TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    client_phone   TEXT,
    our_number     TEXT,
    extension      TEXT,
    manager_id     TEXT,
    client_name    TEXT,
    routed_to      TEXT,
    started_at     INTEGER NOT NULL,
    answered_at    INTEGER,
    ended_at       INTEGER,
    duration_secs  INTEGER,
    disposition    TEXT,
    recording_id   TEXT,
    -- No foreign key: the journal outlives a deleted call, and the call may
    -- be named before the pipeline has stored it.
    call_id        TEXT,
    last_event     TEXT NOT NULL,
    updated_at     INTEGER NOT NULL
);
-- The journal pages newest first, of everyone or of some managers.
CREATE INDEX telephony_calls_by_start ON telephony_calls (started_at DESC, pbx_call_id DESC);
CREATE INDEX telephony_calls_by_manager ON telephony_calls (manager_id, started_at);

-- Background work of the integrations, leased like `jobs`: a queued task
-- is due at due_at; a running one belongs to `worker` until lease_until,
-- after which another worker may claim it again.
CREATE TABLE integration_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    -- What the task is about, unique per kind: the same work is queued once.
    key           TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- The worker's input and progress (JSON).
    payload       TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    worker        TEXT,
    lease_until   INTEGER,
    last_error    TEXT,
    due_at        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (kind, key)
);
CREATE INDEX integration_tasks_due ON integration_tasks (state, due_at);
