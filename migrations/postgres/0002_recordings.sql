-- Call recordings: the file's metadata, its life (recording, complete, purged) and
-- its expiry. A purged recording's row stays: it records that a recording existed
-- and when it was deleted.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    contact_id TEXT REFERENCES contacts(id),
    request_id TEXT REFERENCES service_requests(id),
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT,
    size_bytes BIGINT,
    sha256 TEXT,
    expires_at BIGINT NOT NULL,
    legal_hold INTEGER NOT NULL DEFAULT 0,
    legal_hold_reason TEXT,
    repaired INTEGER NOT NULL DEFAULT 0,
    purged_at BIGINT
);
CREATE INDEX recordings_expiry ON recordings(status, expires_at);
CREATE INDEX recordings_request ON recordings(request_id);
CREATE INDEX recordings_call ON recordings(call_id);
