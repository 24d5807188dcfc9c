-- Views the projector cannot bring up to date: an event arrived after a gap that the event store
-- could not fill (the versions are not there, or they contradict the view). Logged as errors;
-- the row stays until a later fill succeeds or the read models are rebuilt.
CREATE TABLE stuck_views (
    aggregate_id   UUID        PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    at_version     BIGINT      NOT NULL,
    next_version   BIGINT      NOT NULL,
    reason         TEXT        NOT NULL,
    since          TIMESTAMPTZ NOT NULL DEFAULT now()
);
