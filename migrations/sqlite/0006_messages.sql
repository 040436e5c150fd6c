-- One table for every message the council sends or receives, on every text channel
-- (SMS, email), which the timeline points at. Every SMS row is kept: it becomes a
-- message with channel 'sms', direction 'out'. `address` is the resident's end
-- (the number or mailbox sent to, or received from).
ALTER TABLE sms_messages RENAME TO messages;
ALTER TABLE messages RENAME COLUMN to_number TO address;
ALTER TABLE messages ADD COLUMN channel TEXT NOT NULL DEFAULT 'sms';
ALTER TABLE messages ADD COLUMN direction TEXT NOT NULL DEFAULT 'out';
-- A received message is also a contact (intake's record of it).
ALTER TABLE messages ADD COLUMN contact_id TEXT REFERENCES contacts(id);
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN html TEXT;
-- Email: the Message-ID (ours, or the sender's) and the thread it answers
-- (In-Reply-To then References, space-separated), so replies find their request.
ALTER TABLE messages ADD COLUMN internet_message_id TEXT;
ALTER TABLE messages ADD COLUMN thread_ids TEXT;
-- Outlook's Thread-Index (base64): the resident's, and ours extending it.
ALTER TABLE messages ADD COLUMN thread_index TEXT;
-- The outbox: a message is written 'pending' in the transaction that causes it;
-- the dispatcher claims it ('dispatching', lease_until), sends it and settles it.
-- A claim whose lease ran out is never resent blind: it becomes 'unknown'.
ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE messages ADD COLUMN lease_until BIGINT;
ALTER TABLE messages ADD COLUMN last_error TEXT;
DROP INDEX sms_messages_to;
CREATE INDEX messages_address ON messages(channel, address, created_at);
CREATE INDEX messages_internet_id ON messages(internet_message_id);
CREATE INDEX messages_due ON messages(status, next_attempt_at);
CREATE INDEX messages_request ON messages(request_id, direction, created_at);

-- Secrets the daemon makes for itself and every instance must share (the key that
-- signs reply tokens): made once, on first start.
CREATE TABLE hub_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
