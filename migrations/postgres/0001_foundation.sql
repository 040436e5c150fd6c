-- The central record, service requests, contacts, staff and the audit log.
CREATE TABLE staff_users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES staff_users(id),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE services (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    retention_days INTEGER NOT NULL,
    special_category INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    title TEXT,
    given_name TEXT,
    family_name TEXT,
    name_key TEXT NOT NULL DEFAULT '',
    date_of_birth TEXT,
    preferred_channel TEXT,
    language TEXT,
    accessibility_needs TEXT,
    merged_into TEXT REFERENCES customers(id),
    version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_name_key ON customers(name_key);

CREATE TABLE customer_phones (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position INTEGER NOT NULL,
    e164 TEXT NOT NULL,
    PRIMARY KEY (customer_id, position)
);
CREATE INDEX customer_phones_e164 ON customer_phones(e164);

CREATE TABLE customer_emails (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position INTEGER NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (customer_id, position)
);
CREATE INDEX customer_emails_address ON customer_emails(address);

CREATE TABLE customer_addresses (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position INTEGER NOT NULL,
    line1 TEXT NOT NULL,
    line2 TEXT,
    town TEXT,
    postcode TEXT NOT NULL,
    uprn TEXT,
    PRIMARY KEY (customer_id, position)
);
CREATE INDEX customer_addresses_postcode ON customer_addresses(postcode);

CREATE TABLE customer_representatives (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    phone TEXT,
    email TEXT,
    scope_services TEXT NOT NULL,
    valid_until TEXT,
    PRIMARY KEY (customer_id, position)
);

-- Consent is append-only: the latest row per purpose is the current state, the rest
-- is the history of when and how it was given or withdrawn.
CREATE TABLE consents (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    purpose TEXT NOT NULL,
    granted INTEGER NOT NULL,
    method TEXT NOT NULL,
    note TEXT,
    recorded_by TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX consents_customer ON consents(customer_id, purpose, at);

CREATE TABLE customer_history (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    field TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX customer_history_customer ON customer_history(customer_id, changed_at);

CREATE TABLE service_requests (
    id TEXT PRIMARY KEY,
    number BIGINT NOT NULL UNIQUE,
    reference TEXT NOT NULL UNIQUE,
    customer_id TEXT REFERENCES customers(id),
    service_code TEXT NOT NULL REFERENCES services(code),
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    special_category INTEGER NOT NULL,
    identity_review INTEGER NOT NULL DEFAULT 0,
    opened_via TEXT NOT NULL,
    retention_days INTEGER NOT NULL,
    retain_until BIGINT,
    closed_at BIGINT,
    version BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX service_requests_customer ON service_requests(customer_id);
CREATE INDEX service_requests_status ON service_requests(status, created_at);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    external_id TEXT NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    content TEXT NOT NULL,
    customer_id TEXT REFERENCES customers(id),
    request_id TEXT REFERENCES service_requests(id),
    identity TEXT NOT NULL,
    candidate_customer_ids TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    UNIQUE (channel, external_id)
);
CREATE INDEX contacts_customer ON contacts(customer_id, received_at);
CREATE INDEX contacts_request ON contacts(request_id);

CREATE TABLE timeline_events (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES service_requests(id),
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    contact_id TEXT REFERENCES contacts(id),
    body TEXT,
    from_status TEXT,
    to_status TEXT
);
CREATE INDEX timeline_events_request ON timeline_events(request_id, at, id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_role TEXT,
    source TEXT,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_entity ON audit_log(entity, entity_id, at);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE request_numbers (n BIGINT GENERATED ALWAYS AS IDENTITY (START WITH 100000) PRIMARY KEY);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
