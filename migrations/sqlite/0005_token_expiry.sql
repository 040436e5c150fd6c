-- API tokens may expire: a token past expires_at authenticates nobody. NULL: the
-- token lives until revoked (or its user is disabled).
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
