-- Every write runs `INSERT INTO events`, with no rows when it decided only rejections or found
-- its command processed before; the statement-level wake-up fired all the same (taking its
-- advisory lock and notifying the relayer for nothing). One trigger now queues the appended
-- events and wakes the relayer only when there are some.
DROP TRIGGER events_appended ON events;

CREATE OR REPLACE FUNCTION queue_appended_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO unpublished_events (global_position) SELECT global_position FROM appended;
    IF FOUND AND pg_try_advisory_xact_lock(hashtext('financing'), hashtext('events_appended')) THEN
        PERFORM pg_notify('events_appended', '');
    END IF;
    RETURN NULL;
END
$$;
