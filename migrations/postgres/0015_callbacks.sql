-- Callbacks owed to callers who could not reach an advisor: a voicemail they left
-- (where it is in the call's recording, which is attached to the request) or a
-- request to be called back on their number. Staff see the open ones and close each
-- with what they did.
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES service_requests(id),
    contact_id TEXT REFERENCES contacts(id),
    kind TEXT NOT NULL,
    number TEXT,
    recording_id TEXT REFERENCES recordings(id),
    voicemail_from_ms BIGINT,
    voicemail_to_ms BIGINT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT,
    outcome TEXT
);
CREATE INDEX callbacks_status ON callbacks(status, created_at);
CREATE INDEX callbacks_request ON callbacks(request_id);
