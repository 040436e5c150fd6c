-- A contact exactly as it arrived — an email's raw message, as the receiver took it —
-- stored in the same transaction as the contact, before the sender hears 250, and
-- kept whatever the parser made of it (attachments, a broken MIME structure, a
-- charset nobody knows). Keyed like its contact (an email's Message-ID, or the hash
-- of its bytes), so a retried or second delivery stores nothing twice. A bounce is
-- kept here too, with no contact.
CREATE TABLE contact_originals (
    message_key TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    contact_id TEXT REFERENCES contacts(id),
    -- How it came: the SMTP envelope and client, or the mailbox it was fetched from.
    envelope TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    raw BYTEA NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX contact_originals_contact ON contact_originals(contact_id);
