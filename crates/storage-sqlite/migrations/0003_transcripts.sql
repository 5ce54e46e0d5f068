-- Decode and transcribe (PRODUCT.md §4).

-- The recording as decoded (JSON: container, codec, channels, real duration).
ALTER TABLE calls ADD COLUMN audio TEXT;
-- Stereo channel of the manager for this call; NULL = the connection settings.
ALTER TABLE calls ADD COLUMN manager_channel INTEGER CHECK (manager_channel IN (0, 1));

-- One transcript per call, replaced when the call is transcribed again.
CREATE TABLE transcripts (
    call_seq    INTEGER PRIMARY KEY REFERENCES calls (seq) ON DELETE CASCADE,
    engine      TEXT NOT NULL,
    model       TEXT NOT NULL,
    language    TEXT NOT NULL,
    -- The dialogue as plain text, for search.
    text        TEXT NOT NULL,
    -- Segments, words and metrics (JSON).
    document    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
