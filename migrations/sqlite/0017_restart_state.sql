-- What must outlive the daemon (a kill -9, a restart):
-- an advisor set away (by staff, or after offers left to ring) stays away until
-- someone says otherwise; NULL: not away.
ALTER TABLE advisors ADD COLUMN away_since BIGINT;
-- Which daemon placed a leg (its data directory's id): at start a daemon ends, as
-- interrupted, the legs it left open when it stopped without finishing them; legs of
-- other daemons sharing the database are theirs.
ALTER TABLE call_legs ADD COLUMN daemon TEXT NOT NULL DEFAULT '';
CREATE INDEX call_legs_open ON call_legs(daemon, ended_at);
