-- The scheduler (Redis, or this database when none is configured) claims a message
-- with a lease and a fencing token before its send begins. `claim_fence` is the
-- token of the claim that began (or may begin) the send: a claimant whose token is
-- older is refused, so an instance that stalled past its lease never sends.
-- `claimed_until`: the embedded scheduler's lease on a message not yet being sent.
ALTER TABLE messages ADD COLUMN claim_fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN claimed_until BIGINT;
