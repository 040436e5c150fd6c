-- The SMS channel: messages the council sends (with their delivery status), numbers
-- that have opted out (STOP), and keyword messages (kept apart: they never open a
-- request, and Twilio's retries of them must be recognised).
CREATE TABLE sms_messages (
    id TEXT PRIMARY KEY,
    request_id TEXT REFERENCES service_requests(id),
    customer_id TEXT REFERENCES customers(id),
    to_number TEXT NOT NULL,
    body TEXT NOT NULL,
    purpose TEXT NOT NULL,
    provider_sid TEXT UNIQUE,
    status TEXT NOT NULL,
    status_rank INTEGER NOT NULL,
    error_code BIGINT,
    sent_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sms_messages_to ON sms_messages(to_number, created_at);

-- Status reports that arrived before Twilio's answer to our send was stored (the two
-- race); applied as soon as the message learns its MessageSid.
CREATE TABLE sms_early_reports (
    provider_sid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    status_rank INTEGER NOT NULL,
    error_code BIGINT,
    received_at BIGINT NOT NULL
);

CREATE TABLE sms_suppressions (
    number TEXT PRIMARY KEY,
    suppressed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);

CREATE TABLE sms_keyword_messages (
    message_sid TEXT PRIMARY KEY,
    from_number TEXT NOT NULL,
    keyword TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

ALTER TABLE timeline_events ADD COLUMN message_id TEXT REFERENCES sms_messages(id);
