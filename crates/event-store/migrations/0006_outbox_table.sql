-- The relayer's outbox: the position of every event not published yet. An event row is
-- written once and never changed; marking it published deletes its narrow outbox row instead
-- of rewriting the event (a new version of the whole row and of each of its indexes, measured
-- to cost as much as the insert itself).
-- No event may commit between the copy below and the trigger (an old appender still running
-- while a new relayer migrates): it would never be queued.
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;

CREATE TABLE unpublished_events (
    global_position BIGINT PRIMARY KEY
);

INSERT INTO unpublished_events (global_position)
SELECT global_position FROM events WHERE published_at IS NULL;

DROP INDEX events_unpublished;
ALTER TABLE events DROP COLUMN published_at;

-- Whatever inserts events queues them for the relayer in the same statement (the wake-up
-- stays the trigger of 0001 and 0005).
CREATE FUNCTION queue_appended_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO unpublished_events (global_position) SELECT global_position FROM appended;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_queued AFTER INSERT ON events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION queue_appended_events();
