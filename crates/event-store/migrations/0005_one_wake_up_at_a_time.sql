-- A notification takes a database-wide lock from its transaction's commit to the commit's end
-- (WAL flush included), so every notifying commit waited for the one before: measured with
-- `loadgen in-process --tasks 8`, notifying on every append cost a third of the throughput.
-- One wake-up in flight is enough: a transaction that finds another one about to notify
-- leaves the wake-up to it. The relayer claims again after each non-empty batch, and polls.
CREATE OR REPLACE FUNCTION notify_events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock(hashtext('financing'), hashtext('events_appended')) THEN
        PERFORM pg_notify('events_appended', '');
    END IF;
    RETURN NULL;
END
$$;
