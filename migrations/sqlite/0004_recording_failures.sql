-- Why a recording is incomplete or lost: a write that failed mid-call (a full disk),
-- or a file a crash left unreadable. NULL for a recording that went as it should.
-- A lost recording has status 'lost' and no file.
ALTER TABLE recordings ADD COLUMN failure TEXT;
