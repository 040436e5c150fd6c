-- Advisors and their phones. An advisor's SIP credential is separate from any API
-- token: a username and H(username:realm:password) for the one digest algorithm the
-- phone uses (SHA-256, or MD5 for older phones); the password itself is never kept.
-- `skills` are the service codes whose queues the advisor answers, comma-separated.
CREATE TABLE advisors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sip_username TEXT NOT NULL UNIQUE,
    digest_algorithm TEXT NOT NULL,
    ha1 TEXT NOT NULL,
    realm TEXT NOT NULL,
    skills TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    credential_set_at BIGINT NOT NULL
);

-- Where an advisor's devices can be reached: one row per Contact a phone registered,
-- with the address and transport its REGISTER really came from (a phone behind NAT is
-- reached there), until `expires_at`. Kept in the database so that a restart (or
-- another instance) knows every phone without waiting for it to register again.
CREATE TABLE sip_registrations (
    advisor_id TEXT NOT NULL REFERENCES advisors(id),
    contact TEXT NOT NULL,
    source TEXT NOT NULL,
    transport TEXT NOT NULL,
    call_id TEXT NOT NULL,
    cseq BIGINT NOT NULL,
    user_agent TEXT,
    registered_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (advisor_id, contact)
);
CREATE INDEX sip_registrations_expiry ON sip_registrations(expires_at);
