-- When the caller behind a callback first joined the queue (ms since the epoch):
-- open callbacks are worked in that order, and a caller who rings back while theirs
-- is open keeps that place. NULL for callbacks recorded before this column.
ALTER TABLE callbacks ADD COLUMN queued_at BIGINT;
CREATE INDEX callbacks_by_number ON callbacks(number, status);
