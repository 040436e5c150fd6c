-- A request's updated_at is the time of its latest timeline event. Kept by the
-- database, so appending an event is one statement, not two: intake writes several
-- events per contact.
CREATE FUNCTION timeline_touches_request() RETURNS trigger AS $$
BEGIN
    UPDATE service_requests SET updated_at = NEW.at
    WHERE id = NEW.request_id AND updated_at < NEW.at;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER timeline_touches_request AFTER INSERT ON timeline_events
FOR EACH ROW EXECUTE FUNCTION timeline_touches_request();
