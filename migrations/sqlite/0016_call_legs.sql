-- The call record's legs with advisors: each advisor a call was offered to, when
-- their phone rang, whether and when they answered, when the leg ended and how
-- (declined, no_answer, unreachable, caller_left while ringing; ended or
-- transferred, with where to, after a conversation).
CREATE TABLE call_legs (
    id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL REFERENCES contacts(id),
    advisor_id TEXT NOT NULL REFERENCES advisors(id),
    offered_at BIGINT NOT NULL,
    answered_at BIGINT,
    ended_at BIGINT,
    outcome TEXT NOT NULL,
    transferred_to TEXT
);
CREATE INDEX call_legs_contact ON call_legs(contact_id, offered_at);
