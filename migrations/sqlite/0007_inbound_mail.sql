-- Every message the SMTP receiver accepted, as it arrived, stored before the sender
-- heard 250: the contact is made from it, and it is kept whatever the parser made of
-- it (attachments, a broken MIME structure, a charset nobody knows). Keyed like its
-- contact (its Message-ID, or the hash of its bytes when it has none), so a retried
-- or second delivery of the same message stores nothing twice.
CREATE TABLE inbound_mail (
    message_key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    message_id TEXT,
    mail_from TEXT,
    rcpt_to TEXT NOT NULL,
    peer TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    raw BLOB NOT NULL,
    received_at BIGINT NOT NULL
);
