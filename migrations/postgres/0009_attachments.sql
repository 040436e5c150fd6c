-- Files residents attach (to emails, for now). The bytes are stored once per content
-- (keyed by their SHA-256), the attachment rows say which contact brought which file
-- under which name; both are written in the contact's own transaction.
CREATE TABLE attachment_blobs (
    sha256 TEXT PRIMARY KEY,
    size_bytes BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);
CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL REFERENCES contacts(id),
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES attachment_blobs(sha256),
    created_at BIGINT NOT NULL
);
CREATE INDEX attachments_contact ON attachments(contact_id);
