-- Appointments on a request (a bulky waste collection, a registrar's appointment, a
-- pest control visit). Each move makes a new version; reminders belong to the
-- version they were scheduled for, so only the new times ever send.
CREATE TABLE appointments (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES service_requests(id),
    starts_at BIGINT NOT NULL,
    place TEXT NOT NULL,
    notes TEXT,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX appointments_request ON appointments(request_id, starts_at);

-- A reminder is an outbox message of its appointment. `schedule_key` names the
-- occurrence (appointment, version, time): the same reminder twice is refused.
ALTER TABLE messages ADD COLUMN appointment_id TEXT REFERENCES appointments(id);
ALTER TABLE messages ADD COLUMN schedule_key TEXT;
CREATE UNIQUE INDEX messages_schedule_key ON messages(schedule_key);
CREATE INDEX messages_appointment ON messages(appointment_id, status);
