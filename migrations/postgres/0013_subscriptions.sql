-- Subscriptions a resident renews (a garden waste collection each year, a blue
-- badge every three years). The renewal run reminds them at the configured offsets
-- before `expires_at`; each reminder is an outbox message of its subscription, named
-- by `schedule_key` (subscription, expiry, offset), so a run repeated — on another
-- instance, or after a restart — never queues it twice. A renewal moves
-- `expires_at`: the reminders of the old expiry not yet sent are cancelled.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    description TEXT,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_expiry ON subscriptions(status, expires_at);
CREATE INDEX subscriptions_customer ON subscriptions(customer_id);

ALTER TABLE messages ADD COLUMN subscription_id TEXT REFERENCES subscriptions(id);
CREATE INDEX messages_subscription ON messages(subscription_id, status);
