-- A request's updated_at is the time of its latest timeline event. Kept by the
-- database, so appending an event is one statement, not two: intake writes several
-- events per contact, and on SQLite every statement waits its turn at the one writer.
CREATE TRIGGER timeline_touches_request AFTER INSERT ON timeline_events
BEGIN
    UPDATE service_requests SET updated_at = NEW.at
    WHERE id = NEW.request_id AND updated_at < NEW.at;
END;
