-- Every message the SMTP receiver accepted, as it arrived, stored before the sender
-- heard 250: the contact is made from it, and it is kept whatever the parser made of
-- it (attachments, a broken MIME structure, a charset nobody knows). Keyed by the
-- hash of its bytes, so a retried delivery stores nothing twice.
CREATE TABLE inbound_mail (
    sha256 TEXT PRIMARY KEY,
    message_id TEXT,
    mail_from TEXT,
    rcpt_to TEXT NOT NULL,
    peer TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    raw BLOB NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX inbound_mail_message_id ON inbound_mail(message_id);
